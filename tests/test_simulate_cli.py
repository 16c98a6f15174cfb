"""``personalize simulate`` builds a world, loads it and says what it did; a bad date is refused clearly."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from personalize.cli import app
from personalize.context import make_context
from personalize.db.models import ListeningEvent
from personalize.simulate.truth import load_truth

ARGS = ["simulate", "--listeners", "30", "--days", "5", "--seed", "3", "--catalog-size", "20",
        "--end-date", "2026-10-31", "--corpus-limit", "2"]  # fmt: skip


def test_simulate_writes_loads_and_prints_a_summary(db_url: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PERSONALIZE_DATABASE_URL", db_url)
    result = CliRunner().invoke(app, ARGS, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for needle in ("listeners", "skipped in the first seconds", "loaded events", "0 quarantined", "elapsed"):
        assert needle in result.output
    assert (tmp_path / "sim" / "catalog.csv").is_file()
    assert len(load_truth(tmp_path).listeners) == 30
    ctx = make_context(data_dir=tmp_path, database_url=db_url)
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ListeningEvent)) > 0
    ctx.engine.dispose()


def test_end_date_in_the_future_or_malformed_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    bad = CliRunner().invoke(app, ["simulate", "--end-date", "2026-13-01", "--no-load"])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output
    future = CliRunner().invoke(app, ["simulate", "--end-date", "2999-01-01", "--no-load"])
    assert future.exit_code != 0 and "before today" in future.output
