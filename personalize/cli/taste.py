"""``personalize profile``, ``cluster`` (one stage each, claimed and recorded like a nightly run),
``eval taste`` and ``taste-plots``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from personalize.cli.errors import parse_date

console = Console()

DATE_HELP = "Run date YYYY-MM-DD: events of the profile window ending with this day count."


def _context():  # type: ignore[no-untyped-def]
    from personalize.context import make_context

    return make_context()


def profile(date: str = typer.Option(..., "--date", help=DATE_HELP)) -> None:
    """Build every listener's taste profile for a date (idempotent: reruns replace that date's profiles)."""
    day = parse_date(date)
    from personalize.pipeline import run_stage

    ctx = _context()
    with console.status(f"profiling listeners for {day}"):
        summary = run_stage(ctx, "profile", day, progress=console.log)
    console.print_json(json.dumps(summary))


def cluster(date: str = typer.Option(..., "--date", help=DATE_HELP)) -> None:
    """Fit taste clusters on a date's profiles, keep ids stable against the previous date, assign listeners."""
    day = parse_date(date)
    from personalize.pipeline import run_stage

    ctx = _context()
    with console.status(f"clustering listeners for {day}"):
        summary = run_stage(ctx, "cluster", day, progress=console.log)
    console.print_json(json.dumps(summary))


def eval_taste(
    date: str = typer.Option(..., "--date", help=DATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON."),
    truth: Path | None = typer.Option(None, help="Ground-truth folder (default: <data dir>/sim/truth)."),
) -> None:
    """Score profiles and clusters against the demo world's truth: ARI, tempo MAE, key top-1, family recall."""
    from personalize.evaluate.taste import evaluate

    result = evaluate(_context(), parse_date(date), truth)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print_json(json.dumps(result))


def taste_plots(
    date: str = typer.Option(..., "--date", help=DATE_HELP),
    out: Path | None = typer.Option(
        None, help="Folder for the PNGs (default: <data dir>/reports/<date>/taste)."
    ),
) -> None:
    """Write the taste plots of a date: taste map coloured by cluster, per-cluster tempo, key and instruments."""
    day = parse_date(date)
    from personalize.report.taste import write_taste_plots

    ctx = _context()
    folder = out or ctx.settings.data_dir / "reports" / f"{day}" / "taste"
    for path in write_taste_plots(ctx, day, folder):
        console.print(str(path))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("profile")(profile)
    app.command("cluster")(cluster)
    app.command("taste-plots")(taste_plots)
    eval_app.command("taste")(eval_taste)
