"""``personalize simulate``: build the demo world (catalog from real music, listeners, history, ground truth),
load it through ingest and print what was made."""

from __future__ import annotations

import datetime as dt
import time

import typer
from rich.console import Console
from rich.table import Table

from personalize.cli.errors import parse_date

console = Console()
err_console = Console(stderr=True)

SIMULATE_HELP = """Build the demo world and load it into the database.

\b
Writes into <data dir>/sim/ (replacing an older world there):
  catalog.csv          the catalog (track_id,title,duration_s,tempo_bpm,key,meter,programs,density),
                       each track a public-domain corpus piece (Bach chorales, Ryan's Mammoth fiddle
                       tunes) transposed, orchestrated and timed, its features measured from its MIDI
  midi/<track_id>.mid  the tracks themselves
  events.parquet       listening history (event_id,listener_id,track_id,ts,ms_played,kind)
  truth/               ground truth, never read by the pipeline: listeners.parquet (segment, true
                       tempo/key/families/density, drift), segments.json, world.json, catalog.parquet

\b
Then loads catalog.csv and events.parquet with the ingest functions (skip with --no-load) and prints
a summary. The same --seed (and --end-date) writes the same files. Parsed corpus pieces are cached in
~/.cache/personalize (or $XDG_CACHE_HOME/personalize)."""


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    return parse_date(value, "--end-date")


def simulate(
    listeners: int = typer.Option(2000, "--listeners", min=1, help="Number of listeners."),
    days: int = typer.Option(30, "--days", min=1, help="Days of listening history, ending on --end-date."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed gives the same files."),
    overlap: bool = typer.Option(
        False, "--overlap", help="Overlapping taste segments (default: well separated)."
    ),
    end_date: str | None = typer.Option(
        None, "--end-date", help="Last day of history, YYYY-MM-DD (default: yesterday, UTC)."
    ),
    catalog_size: int = typer.Option(600, "--catalog-size", min=10, help="Number of catalog tracks."),
    plays_per_day: float = typer.Option(
        6.0, "--plays-per-day", min=0.1, help="Median plays on an active day."
    ),
    load: bool = typer.Option(True, "--load/--no-load", help="Load the files into the database afterwards."),
    corpus_limit: int | None = typer.Option(
        None,
        "--corpus-limit",
        min=1,
        hidden=True,
        help="Use only the first pieces of each collection (tests).",
    ),
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from personalize.config import get_settings
    from personalize.simulate.world import WorldConfig, build_world, load_world

    settings = get_settings()
    out_dir = settings.data_dir / "sim"
    config = WorldConfig(
        listeners=listeners, days=days, seed=seed, overlap=overlap, end_date=_date(end_date),
        catalog_size=catalog_size, plays_per_day=plays_per_day, corpus_limit=corpus_limit,
    )  # fmt: skip
    if config.resolved_end_date() >= dt.datetime.now(dt.UTC).date():
        raise typer.BadParameter("--end-date must be before today (UTC): ingest refuses events in the future")
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)  # type: ignore[arg-type]

        summary = build_world(out_dir, config, progress=progress)
    reports = {}
    if load:
        from personalize.context import make_context
        from personalize.ingest import IngestFileError

        ctx = make_context(settings)
        try:
            t = time.perf_counter()
            reports = load_world(ctx, out_dir, progress=True)
            summary.timings_s["load_s"] = round(time.perf_counter() - t, 3)
        except (IngestFileError, ValueError) as exc:
            err_console.print(f"[red]could not load the world:[/] {exc}")
            raise typer.Exit(2) from None
        finally:
            ctx.engine.dispose()
    elapsed_s = time.perf_counter() - started
    console.print(_summary_table(summary, reports, elapsed_s))
    console.print(_segments_table(out_dir))


def _segments_table(out_dir) -> Table:  # type: ignore[no-untyped-def]
    from personalize.simulate.truth import load_truth

    table = Table(
        title="Latent taste segments (ground truth, never read by the pipeline)", header_style="bold"
    )
    for col in ("segment", "listeners", "tempo BPM", "keys", "families", "notes/s"):
        table.add_column(col, justify="right" if col in ("listeners", "tempo BPM", "notes/s") else "left")
    for seg in load_truth(out_dir).segments:
        families = sorted(seg["family_weights"].items(), key=lambda kv: -kv[1])
        table.add_row(
            f"{seg['segment_id']} {seg['name']}", f"{seg['listeners']:,}", f"{seg['tempo_bpm']:.0f}",
            ", ".join(seg["keys"]), ", ".join(f for f, _ in families[:3]), f"{seg['density']:.1f}",
        )  # fmt: skip
    return table


def _summary_table(summary, reports: dict, elapsed_s: float) -> Table:  # type: ignore[no-untyped-def]
    rates = summary.rates
    table = Table(title=f"Demo world in {summary.out_dir}", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("listeners", f"{summary.listeners:,}")
    table.add_row("segments (latent)", str(summary.segments))
    table.add_row("catalog tracks", f"{summary.tracks:,}")
    table.add_row("measured key = assigned key", f"{summary.catalog_key_agreement:.1%}")
    table.add_row("days", f"{summary.start_date} .. {summary.end_date}")
    table.add_row("events", f"{summary.events:,}")
    table.add_row("plays", f"{summary.plays:,}")
    table.add_row("skipped in the first seconds", f"{rates['skip_early']:.1%}")
    table.add_row("ended before the end (incl. skips)", f"{rates['ended_early']:.1%}")
    table.add_row("played to the end", f"{rates['complete']:.1%}")
    table.add_row("likes / dislikes / saves per play",
                  f"{rates['like']:.1%} / {rates['dislike']:.1%} / {rates['save']:.1%}")  # fmt: skip
    if reports.get("replaced_events"):
        table.add_row("replaced events of an older world", f"{reports['replaced_events']:,}")
    for name in ("catalog", "events"):
        if name not in reports:
            continue
        report = reports[name]
        quarantined = report.quarantined_total
        table.add_row(
            f"loaded {name}",
            f"{report.ingested:,} new, {report.already_present:,} already there, {quarantined:,} quarantined",
        )
    for stage, seconds in summary.timings_s.items():
        table.add_row(f"time: {stage.removesuffix('_s')}", f"{seconds:.1f} s")
    table.add_row("elapsed", f"{elapsed_s:.1f} s")
    return table


simulate.__doc__ = SIMULATE_HELP
