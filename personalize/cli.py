"""The ``personalize`` command line. Every command is a thin call into the library; heavy imports stay inside."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()

app = typer.Typer(
    help="Nightly personalization: listening history in, new music per listener out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
eval_app = typer.Typer(help="Measure the product against ground truth and baselines.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision (default: newest).")) -> None:
    """Create or migrate the schema of PERSONALIZE_DATABASE_URL (default: SQLite under PERSONALIZE_DATA_DIR)."""
    from personalize.config import get_settings
    from personalize.db.session import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, revision)
    console.print(f"[green]schema at {revision}[/] on {_redact(settings.resolved_database_url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _register() -> None:
    """Attach each domain's commands. Each module keeps its heavy imports inside its command functions."""
    # Each domain adds its own line here (ingest, simulate, taste, generate, render, pipeline, api, ...).
    # --- taste: profile, cluster, eval taste, taste-plots
    from personalize.features.commands import register as register_taste

    register_taste(app, eval_app)
    # --- end taste
    from personalize.ingest import cli as ingest_cli

    app.add_typer(ingest_cli.app, name="ingest")
    from personalize.simulate import cli as simulate_cli

    app.command("simulate")(simulate_cli.simulate)
    from personalize.api.commands import register as register_api

    register_api(app)
    from personalize.render.cli import register as register_render

    register_render(app)
    # --- generator: corpus build, train transformer|vae, generate
    from personalize.generate.cli import register as register_generate

    register_generate(app)
    # --- eval generator: control fidelity, quality metrics vs corpus, NLL against the baselines
    from personalize.generate.eval_cli import register as register_eval_generator

    register_eval_generator(eval_app)
    # --- nightly run: run, report, eval playlists
    from personalize.pipeline_cli import register as register_nightly

    register_nightly(app, eval_app)
    return None


_register()

if __name__ == "__main__":
    app()
