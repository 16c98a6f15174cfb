"""The analyst views' SQL, read from ``sql/views/`` by the migrations that create them."""

from __future__ import annotations

from pathlib import Path

VIEWS_DIR = Path(__file__).resolve().parents[2] / "sql" / "views"


def view_sql(name: str, dialect: str) -> str:
    """``sql/views/<name>.<dialect>.sql`` where a view needs engine-specific SQL, else ``<name>.sql``."""
    for candidate in (VIEWS_DIR / f"{name}.{dialect}.sql", VIEWS_DIR / f"{name}.sql"):
        if candidate.is_file():
            return candidate.read_text()
    raise FileNotFoundError(f"view {name}: no {VIEWS_DIR / (name + '.sql')} (the repository's sql/ folder)")
