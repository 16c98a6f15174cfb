"""``personalize db``: the schema of the product's database (Alembic migrations)."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision (default: newest).")) -> None:
    """Create or migrate the schema of PERSONALIZE_DATABASE_URL (default: SQLite under PERSONALIZE_DATA_DIR)."""
    from sqlalchemy.engine import make_url

    from personalize.config import get_settings
    from personalize.db.session import upgrade as upgrade_schema

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(settings.resolved_database_url, revision)
    shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    console.print(f"[green]schema at {revision}[/] on {shown}")
