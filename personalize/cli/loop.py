"""``personalize loop``: run consecutive nights of the closed loop on the demo world (the world hears what
was published and answers through the app's ingest path) and write the loop's report page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def loop_command(
    nights: int = typer.Option(
        30, "--nights", min=1, help="Nights in all, night 0 (the history's last day) included."
    ),
    airflow: bool = typer.Option(
        False, "--airflow", help="Run each night through the real Airflow DAG (airflow dags test)."
    ),
    listeners: int = typer.Option(
        2000, "--listeners", min=1, help="Listeners of the world built when the data folder has none."
    ),
    seed: int = typer.Option(7, "--seed", help="Seed of the world built when the data folder has none."),
    catalog_size: int = typer.Option(600, "--catalog-size", min=10, help="Catalog of a world built here."),
) -> None:
    """Run the closed loop for --nights nights, continuing after the last night done.

    \b
    Uses the demo world under <data dir>/sim (`personalize simulate`); with none there, builds one whose
    history ends --nights + 1 days ago, so every night of the loop lies in the past. Each night: the
    world's listeners play what was published to them the night before (plus music of their own), their
    events go in through ingest, then the night runs every stage for that date. Measurements land in the
    loop_nights table and on <data dir>/reports/loop/index.html (curves, loop.json) after every night.
    Stopped? Run the same command again: it continues with the next night."""
    from personalize.config import get_settings
    from personalize.context import make_context
    from personalize.db.session import upgrade
    from personalize.simulate.loop import REPORT_FOLDER, run_in_process, run_loop, world_for
    from personalize.simulate.loop_report import write_report
    from personalize.simulate.world import WorldConfig, build_world, load_world

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    ctx = make_context(settings)
    sim = Path(settings.data_dir) / "sim"
    if not (sim / "truth" / "world.json").is_file():
        end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=nights + 1)
        console.print(f"no demo world in {sim}: building one of {listeners} listeners ending {end}")
        build_world(sim, WorldConfig(listeners=listeners, seed=seed, catalog_size=catalog_size, end_date=end))
        load_world(ctx, sim, progress=True)

    runner = run_in_process
    if airflow:
        from personalize.cli.run import run_with_airflow

        def runner(ctx, run_date: dt.date) -> None:  # type: ignore[no-untyped-def]
            log_path = Path(ctx.settings.data_dir) / "logs" / f"airflow-nightly-{run_date.isoformat()}.log"
            if run_with_airflow(ctx, run_date, log_path) != 0:
                raise RuntimeError(f"the Airflow night {run_date} failed: see {log_path}")

    world = world_for(ctx)
    folder = Path(settings.data_dir) / "reports" / REPORT_FOLDER
    knobs = {
        k: getattr(settings, k)
        for k in ("tracks_total", "playlist_size", "playlist_new_share", "playlist_history_days",
                  "personal_tracks_cpu_s", "personal_outlier_quantile", "retention_days",
                  "track_seconds_min", "track_seconds_max")
    } | {"world_end": world.end_date, "runner": "airflow" if airflow else "in-process"}  # fmt: skip

    def said(line: str) -> None:
        console.print(line)
        write_report(folder, _done(ctx, world), knobs)

    try:
        done = run_loop(ctx, nights, run_night=runner, say=said, world=world)
        page = write_report(folder, done, knobs)
    finally:
        ctx.engine.dispose()
    console.print(f"{len(done)} nights; report: {page}")


def _done(ctx, world):  # type: ignore[no-untyped-def]
    from personalize.simulate.loop import done_nights

    return dict(sorted(done_nights(ctx, world.tag).items()))


def register(app: typer.Typer) -> None:
    app.command("loop")(loop_command)
