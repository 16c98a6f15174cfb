"""``personalize ingest ...``: load a catalog or listening events from a file and print what happened."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Load the catalog and listening history (CSV or Parquet; MIDI folders).", no_args_is_help=True
)

EVENTS_HELP = """Ingest listening events from a CSV or Parquet FILE (plain, .gz, .bz2, .zst, or a .zip of one file).

\b
Columns (header row required, extra columns ignored):
  event_id     unique id of the event (text, up to 64 characters)
  listener_id  who listened (text, up to 64); new listeners are created
  track_id     a track already in the catalog (text, up to 64)
  ts           ISO 8601 timestamp, e.g. 2026-11-20T18:04:05Z (UTC when no offset),
               or as --ts-format says, e.g. --ts-format '%m/%d/%Y %H:%M' for 11/20/2026 18:04
  ms_played    whole milliseconds played, 0 .. track length + slack
  kind         play, skip, like, dislike, complete or save

\b
Bad rows are kept in quarantined_rows with a reason code and what to fix; the rest is ingested.
The text encoding is detected (Windows-1252 and others) unless --encoding gives it. When most of the
first chunk would be quarantined nothing is stored and the run exits 2 with the fix (--accept-bad-rows
ingests the good rows anyway). Re-ingesting the same file adds nothing. Exit 0 when the file was read
(even with quarantined rows), 2 when it could not be read at all."""

CATALOG_HELP = """Ingest the catalog from a CSV or Parquet FILE, or measure it from a folder of MIDI files (--midi DIR).

\b
Columns (header row required, extra columns ignored):
  track_id    unique id (text, up to 64 characters)
  title       text, up to 300 characters
  duration_s  seconds (0.5 .. 86400)
  tempo_bpm   beats per minute (10 .. 400)
  key         e.g. "D minor", "F# major", "Bb"
  meter       e.g. "3/4", "6/8"
  programs    General MIDI programs separated by ';', drums as "drums", e.g. "0;33;drums"
  density     optional: notes per second (empty = unknown)

\b
With --midi, every .mid/.midi file under DIR is measured (tempo, key by key-finding, meter, programs,
duration, density) in a worker with a time limit and a size cap; track_id is "midi-" plus the slug of the
file's path relative to DIR (listed in --ids-csv, so event files can name them). The tempo map is read
from every track; duration runs to the end of the last note. Files that cannot be used are quarantined
with a midi_* reason; a file the parser warns about is logged once, by name."""


ENCODING_OPTION = typer.Option(
    None, "--encoding", help="Text encoding of a CSV, e.g. cp1252 (default: detected; UTF-8 when unsure)."
)


def _show(report, verbose_examples: bool = True) -> None:  # type: ignore[no-untyped-def]
    console.print(report.to_table())
    for note in report.notes:  # how the file was read, what was matched, where the lists went
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    if report.quarantined and verbose_examples:
        console.print("[yellow]First quarantined rows:[/]")
        for row_number, reason, detail in report.examples:
            console.print(f"  row {row_number} [bold]{reason}[/]: {detail}", highlight=False, soft_wrap=True)
        console.print(
            f"All of them: SELECT row_number, reason, detail FROM quarantined_rows WHERE source = '{report.source}'",
            highlight=False,
            soft_wrap=True,
        )


@app.command("events", help=EVENTS_HELP)
def events(
    file: Path = typer.Argument(..., help="CSV or Parquet file of listening events."),
    source: str | None = typer.Option(
        None, help="Name recorded as the source (default: the file's absolute path)."
    ),
    encoding: str | None = ENCODING_OPTION,
    ts_format: str | None = typer.Option(
        None, "--ts-format", help="strftime format of ts when not ISO 8601, e.g. '%d/%m/%Y %H:%M' (UTC)."
    ),
    accept_bad_rows: bool = typer.Option(
        False, "--accept-bad-rows", help="Ingest the good rows even when most of the first chunk is bad."
    ),
) -> None:
    from personalize.context import make_context
    from personalize.ingest import IngestFileError, ingest_events

    ctx = make_context()
    try:
        report = ingest_events(
            ctx, file, source=source, progress=True, encoding=encoding, ts_format=ts_format,
            accept_bad_rows=accept_bad_rows,
        )  # fmt: skip
    except IngestFileError as exc:
        err_console.print(f"[red]cannot ingest:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        ctx.engine.dispose()
    _show(report)


@app.command("catalog", help=CATALOG_HELP)
def catalog(
    file: Path | None = typer.Argument(None, help="CSV or Parquet catalog file."),
    midi: Path | None = typer.Option(
        None, "--midi", help="Folder of MIDI files to measure instead of a file."
    ),
    encoding: str | None = ENCODING_OPTION,
    ids_csv: Path = typer.Option(
        Path("midi_track_ids.csv"), "--ids-csv", help="With --midi: where to write path,track_id,outcome."
    ),
) -> None:
    from personalize.context import make_context
    from personalize.ingest import IngestFileError, ingest_catalog, ingest_catalog_midi

    if (file is None) == (midi is None):
        err_console.print("[red]give either a catalog FILE or --midi DIR[/] (see --help)")
        raise typer.Exit(2)
    ctx = make_context()
    try:
        report = (
            ingest_catalog_midi(ctx, midi, progress=True)
            if midi
            else ingest_catalog(ctx, file, encoding=encoding)
        )  # type: ignore[arg-type]
    except IngestFileError as exc:
        err_console.print(f"[red]cannot ingest:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        ctx.engine.dispose()
    _show(report)


EXPORT_HELP = """Import {what} from FILE(s) as listening events.

\b
{files}
Plays are matched to the catalog by external id (Spotify URI, ISRC, MusicBrainz id), else by
normalized artist + title (exact, then fuzzy at --match-threshold). Unmatched plays are quarantined
as unmatched_track and their tracks listed in the unmatched CSV, ready to become catalog rows.
Re-importing adds nothing. Exit 2 when a file cannot be read."""


def _import(
    fmt: str, files: list[Path], listener: str | None, threshold: float, unmatched: Path | None
) -> None:
    from personalize.context import make_context
    from personalize.ingest import IngestFileError
    from personalize.ingest.exports import import_export

    ctx = make_context()
    failed = False
    try:
        for file in files:
            target = unmatched or Path.cwd() / f"{file.name.split('.')[0]}.unmatched.csv"
            try:
                report = import_export(
                    ctx,
                    file,
                    fmt,
                    listener=listener,
                    threshold=threshold,
                    unmatched_csv=target,
                    progress=True,
                )
            except IngestFileError as exc:
                err_console.print(f"[red]cannot import:[/] {exc}", highlight=False, soft_wrap=True)
                failed = True
                continue
            _show(report)
    finally:
        ctx.engine.dispose()
    if failed:
        raise typer.Exit(2)


LISTENER_OPTION = typer.Option(
    None, "--listener", help="Listener id for these plays (required when the export names no user)."
)
THRESHOLD_OPTION = typer.Option(
    90.0, "--match-threshold", min=0, max=100, help="Fuzzy artist+title similarity (0..100) a match needs."
)
UNMATCHED_OPTION = typer.Option(
    None, "--unmatched-csv", help="Where to list unmatched tracks (default: ./<file>.unmatched.csv)."
)


@app.command(
    "spotify",
    help=EXPORT_HELP.format(
        what="a Spotify listening history",
        files="Extended streaming history (Streaming_History_Audio_*.json, or the zip holding them) or the\n"
        "older account data (StreamingHistory*.json). Kind: skipped or reason_end fwdbtn/backbtn -> skip,\n"
        "trackdone -> complete, else play (older format: under 30 s -> skip, else play).\n",
    ),
)
def spotify(
    files: list[Path] = typer.Argument(..., help="JSON files or the export's zip."),
    listener: str | None = LISTENER_OPTION,
    threshold: float = THRESHOLD_OPTION,
    unmatched: Path | None = UNMATCHED_OPTION,
) -> None:
    _import("spotify", files, listener, threshold, unmatched)


@app.command(
    "listenbrainz",
    help=EXPORT_HELP.format(
        what="a ListenBrainz export",
        files="A JSON array or JSON Lines of listens, or the export's zip. Each listen is a play of the\n"
        "whole track; the user_name is the listener unless --listener says otherwise.\n",
    ),
)
def listenbrainz(
    files: list[Path] = typer.Argument(..., help="JSON/JSONL files or the export's zip."),
    listener: str | None = LISTENER_OPTION,
    threshold: float = THRESHOLD_OPTION,
    unmatched: Path | None = UNMATCHED_OPTION,
) -> None:
    _import("listenbrainz", files, listener, threshold, unmatched)


@app.command(
    "lastfm",
    help=EXPORT_HELP.format(
        what="a Last.fm scrobble CSV",
        files="artist, album, track, date (e.g. 31 Jan 2021 16:20, UTC), with or without a header; a header\n"
        "may also name uts and track_mbid. Each scrobble is a play of the whole track.\n",
    ),
)
def lastfm(
    files: list[Path] = typer.Argument(..., help="Scrobble CSV files."),
    listener: str | None = LISTENER_OPTION,
    threshold: float = THRESHOLD_OPTION,
    unmatched: Path | None = UNMATCHED_OPTION,
) -> None:
    _import("lastfm", files, listener, threshold, unmatched)


PULL_HELP = """Pull listening events from the databases described in a sources file (TOML).

\b
Each [sources.NAME] gives url (or url_env), table (or query), watermark (a column that grows in
commit order: a serial id or a server-set insert time), [sources.NAME.columns] mapping event_id,
listener_id, track_id, ts and ms_played to the source's columns, and [sources.NAME.kind] with either
value = "play" or column = "action" plus map = { finished = "complete", ... } and an optional default.
Only rows past the source's watermark are read; pulling again with nothing new reads nothing, and rows
pulled twice are stored once. The nightly ingest stage pulls every source of the same file
(PERSONALIZE_SOURCES_FILE, default <data_dir>/sources.toml) before the inbox's events."""


@app.command("pull", help=PULL_HELP)
def pull(
    sources: Path | None = typer.Option(
        None, "--sources", help="Sources file (default: as the nightly stage)."
    ),
    only: list[str] = typer.Option([], "--source", help="Pull only this source (repeatable)."),
) -> None:
    from personalize.context import make_context
    from personalize.ingest import IngestFileError
    from personalize.ingest.pull import load_sources, pull, sources_file

    ctx = make_context()
    failed = False
    try:
        path = sources or sources_file(ctx)
        try:
            chosen = [s for s in load_sources(path) if not only or s.name in only]
        except IngestFileError as exc:
            err_console.print(f"[red]cannot pull:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        for source in chosen:
            try:
                _show(pull(ctx, source, progress=False))
            except IngestFileError as exc:
                err_console.print(f"[red]cannot pull:[/] {exc}", highlight=False, soft_wrap=True)
                failed = True
    finally:
        ctx.engine.dispose()
    if failed:
        raise typer.Exit(2)
