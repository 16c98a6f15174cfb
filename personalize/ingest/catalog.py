"""The catalog in: tracks from a CSV/Parquet file, or measured from a folder of MIDI files. Tracks whose
track_id is already stored are left as they are (counted as already present); bad rows are quarantined."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.context import Context
from personalize.ids import ID_MAX_CHARS, normal_id, unservable_id
from personalize.ingest.match import external_id
from personalize.ingest.midi import MidiMeasurer, find_midi_files, midi_track_id
from personalize.ingest.read import (
    Chunk,
    Quarantine,
    check_columns,
    check_readable,
    frame_chunks,
    raw_json,
    read_chunks,
)
from personalize.ingest.report import DETAIL_MAX_CHARS, IngestFileError, IngestReport, clip
from personalize.ingest.store import insert_external_ids, insert_tracks, write_quarantine
from personalize.ingest.unpack import open_input
from personalize.ingest.validate import first_reason, id_column, number_column, text_column
from personalize.music.gm import format_programs, parse_programs
from personalize.music.keys import parse_key, parse_meter

log = logging.getLogger(__name__)

CATALOG_COLUMNS = ("track_id", "title", "duration_s", "tempo_bpm", "key", "meter", "programs")
OPTIONAL_COLUMNS = ("density",)  # notes per second; NULL when the file has no such column
# Optional too, for matching plays exported from other services (personalize ingest spotify/listenbrainz/lastfm)
ARTIST_MAX_CHARS = 300
EXTERNAL_ID_COLUMNS = {"spotify_uri": "spotify", "isrc": "isrc", "mbid": "mbid"}
TITLE_MAX_CHARS = 300
PROGRAMS_MAX_CHARS = 200
# Sensible bounds; a value outside is almost always a unit mistake (ms for s, beats per second for BPM).
DURATION_S_RANGE = (0.5, 24 * 3600.0)
TEMPO_BPM_RANGE = (10.0, 400.0)
DENSITY_RANGE = (0.0, 1000.0)


def _parse_each(values: pd.Series, missing: np.ndarray, parse) -> tuple[list[object], np.ndarray, list[str]]:  # type: ignore[no-untyped-def]
    """Apply ``parse`` once per distinct value; returns parsed values, an error mask and error messages."""
    cache: dict[str, tuple[object, str]] = {}
    parsed: list[object] = []
    errors: list[str] = []
    bad = np.zeros(len(values), dtype=bool)
    for i, text in enumerate(values.tolist()):
        if missing[i]:
            parsed.append(None)
            errors.append("")
            continue
        if text not in cache:
            try:
                cache[text] = (parse(text), "")
            except (ValueError, TypeError) as exc:
                cache[text] = (None, str(exc))
        value, error = cache[text]
        parsed.append(value)
        errors.append(error)
        bad[i] = bool(error)
    return parsed, bad, errors


class CatalogIngest:
    def __init__(self, ctx: Context, source: str) -> None:
        self.ctx = ctx
        self.source = source[-300:]
        self.report = IngestReport(source=self.source)
        self.seen: dict[str, int] = {}
        self.run_date = pd.Timestamp.now(tz="UTC").date()

    def add(self, chunk: Chunk, extra: dict[str, list[object]] | None = None) -> None:
        part = IngestReport(source=self.source)
        quarantined = list(chunk.quarantined)
        part.rows_read = len(chunk.frame) + len(quarantined)
        if len(chunk.frame):
            tracks, refused = self._validate(chunk, extra or {})
            quarantined.extend(refused)
            part.ingested = insert_tracks(self.ctx, tracks)
            part.already_present = len(tracks) - part.ingested
            insert_external_ids(self.ctx, self._external_ids(chunk.frame, {t["track_id"] for t in tracks}))
        for q in quarantined:
            part.add_quarantined(q.reason)
        quarantined.sort(key=lambda q: q.row_number)
        part.examples = [(q.row_number, q.reason, q.detail) for q in quarantined[:5]]
        write_quarantine(self.ctx, self.source, quarantined, self.run_date)
        self.report.merge(part)

    def _external_ids(self, frame: pd.DataFrame, accepted: set[object]) -> list[dict[str, str]]:
        """(scheme, value, track_id) rows of the accepted tracks' external id columns."""
        rows = []
        columns = [c for c in EXTERNAL_ID_COLUMNS if c in frame.columns]
        if not columns:
            return rows
        ids = [normal_id(str(t).strip()) for t in frame["track_id"].tolist()]
        for column in columns:
            scheme = EXTERNAL_ID_COLUMNS[column]
            for track_id, value in zip(ids, frame[column].tolist(), strict=True):
                stored = external_id(scheme, value)
                if stored and track_id in accepted:
                    rows.append({"scheme": scheme, "value": stored, "track_id": track_id})
        return rows

    def _validate(
        self, chunk: Chunk, extra: dict[str, list[object]]
    ) -> tuple[list[dict[str, object]], list[Quarantine]]:
        frame = chunk.frame
        n = len(frame)
        artist = None
        if "artist" in frame.columns:
            artist, artist_missing, artist_long = text_column(frame["artist"], ARTIST_MAX_CHARS)
        bad_external = np.zeros(n, dtype=bool)
        external_errors: list[list[str]] = [[] for _ in range(n)]
        for column, scheme in EXTERNAL_ID_COLUMNS.items():
            if column not in frame.columns:
                continue
            for i, value in enumerate(frame[column].tolist()):
                given = (
                    value is not None
                    and not (isinstance(value, float) and np.isnan(value))
                    and str(value).strip()
                )
                if given and external_id(scheme, value) is None:
                    bad_external[i] = True
                    external_errors[i].append(f"{column} {str(value)[:60]!r} is not a {scheme} id")
        track_id, id_missing, id_long, id_chars = id_column(frame["track_id"])
        title, title_missing, title_long = text_column(frame["title"], TITLE_MAX_CHARS)
        duration_s, dur_missing, dur_bad = number_column(frame["duration_s"])
        tempo_bpm, tempo_missing, tempo_bad = number_column(frame["tempo_bpm"])
        key_text, key_missing, _ = text_column(frame["key"])
        meter_text, meter_missing, _ = text_column(frame["meter"])
        programs_text, programs_missing, _ = text_column(frame["programs"])
        keys, key_bad, key_err = _parse_each(key_text, key_missing, parse_key)
        meters, meter_bad, meter_err = _parse_each(meter_text, meter_missing, parse_meter)
        programs, programs_bad, programs_err = _parse_each(
            programs_text, programs_missing, lambda t: format_programs(parse_programs(t))
        )
        if "density" in frame.columns:
            density, _, density_bad = number_column(frame["density"])  # empty density is allowed: NULL
        else:
            density, density_bad = np.full(n, np.nan), np.zeros(n, dtype=bool)
        missing = {
            "track_id": id_missing,
            "title": title_missing,
            "duration_s": dur_missing,
            "tempo_bpm": tempo_missing,
            "key": key_missing,
            "meter": meter_missing,
            "programs": programs_missing,
        }
        too_long = {
            "track_id": id_long,
            "title": title_long,
            "programs": np.array(
                [p is not None and len(p) > PROGRAMS_MAX_CHARS for p in programs], dtype=bool
            ),
        }
        unparseable = {
            "duration_s": dur_bad | (~dur_missing & ~np.isfinite(np.nan_to_num(duration_s, nan=0.0))),
            "tempo_bpm": tempo_bad | (~tempo_missing & ~np.isfinite(np.nan_to_num(tempo_bpm, nan=0.0))),
            "density": density_bad,
        }

        def outside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                return ~np.isnan(values) & ((values < bounds[0]) | (values > bounds[1]))

        ranges = {
            "duration_s": (outside(duration_s, DURATION_S_RANGE), DURATION_S_RANGE, "s"),
            "tempo_bpm": (outside(tempo_bpm, TEMPO_BPM_RANGE), TEMPO_BPM_RANGE, "BPM"),
            "density": (outside(density, DENSITY_RANGE), DENSITY_RANGE, "notes/s"),
        }
        dup_of = np.zeros(n, dtype=np.int64)
        for i, t in enumerate(track_id.tolist()):
            if id_missing[i] or chunk.bad_encoding[i]:
                continue
            if t in self.seen:
                dup_of[i] = self.seen[t]
            else:
                self.seen[t] = int(chunk.row_numbers[i])
        any_missing = np.logical_or.reduce(list(missing.values()))
        if artist is not None:
            too_long["artist"] = artist_long
        any_unparseable = (
            key_bad
            | meter_bad
            | programs_bad
            | id_chars
            | bad_external
            | np.logical_or.reduce(list(unparseable.values()))
        ) | np.logical_or.reduce(list(too_long.values()))
        reason = first_reason(
            [
                ("bad_encoding", chunk.bad_encoding),
                ("missing_field", any_missing),
                ("unparseable_field", any_unparseable),
                ("out_of_range", np.logical_or.reduce([m for m, _, _ in ranges.values()])),
                ("duplicate_track_id", dup_of > 0),
            ],
            n,
        )
        if chunk.truncated_at is not None:
            reason[(chunk.row_numbers == chunk.truncated_at) & (reason != None)] = "truncated_row"  # noqa: E711
        refused: list[Quarantine] = []
        tracks: list[dict[str, object]] = []
        records = frame.to_dict(orient="records") if (reason != None).any() else []  # noqa: E711
        for i in range(n):
            row_number = int(chunk.row_numbers[i])
            where = f"{self.source} row {row_number}"
            code = reason[i]
            if code is None:
                key_pc, mode = keys[i]  # type: ignore[misc]
                num, den = meters[i]  # type: ignore[misc]
                track = {
                    "track_id": track_id.iat[i],
                    "title": title.iat[i],
                    "source": "catalog",
                    "duration_s": float(duration_s[i]),
                    "tempo_bpm": float(tempo_bpm[i]),
                    "key_pc": int(key_pc),
                    "mode": mode,
                    "meter": f"{num}/{den}",
                    "programs": programs[i],
                    "density": None if np.isnan(density[i]) else float(density[i]),
                }
                if artist is not None:
                    track["artist"] = None if artist_missing[i] else artist.iat[i]
                for name, values in extra.items():
                    track[name] = values[i]
                tracks.append(track)
                continue
            if code == "bad_encoding":
                detail = (
                    f"{where} holds bytes that are not UTF-8. Save the file as UTF-8 and ingest it again."
                )
            elif code == "truncated_row":
                detail = f"{where} is the file's last line, has no final newline and does not validate: the file was cut off. Re-export it."
            elif code == "missing_field":
                empty = [c for c, m in missing.items() if m[i]]
                detail = f"{where}: {', '.join(empty)} empty or missing; every track needs {', '.join(CATALOG_COLUMNS)}."
            elif code == "unparseable_field":
                problems = [e for e in (key_err[i], meter_err[i], programs_err[i], *external_errors[i]) if e]
                problems += [
                    f"{c} {frame[c].iloc[i]!r} is not a number" for c, m in unparseable.items() if m[i]
                ]
                limits = {
                    "track_id": ID_MAX_CHARS,
                    "title": TITLE_MAX_CHARS,
                    "programs": PROGRAMS_MAX_CHARS,
                    "artist": ARTIST_MAX_CHARS,
                }
                problems += [
                    f"{c} is longer than {limits[c]} characters" for c, m in too_long.items() if m[i]
                ]
                if id_chars[i]:
                    problems.append(unservable_id("track_id", frame["track_id"].iloc[i]))
                detail = f"{where}: {'; '.join(problems)}. Correct the row and ingest the file again."
            elif code == "out_of_range":
                problems = [
                    f"{c} {float(frame[c].iloc[i]):.6g} is outside {lo:g}..{hi:g} {unit}"
                    for c, (m, (lo, hi), unit) in ranges.items()
                    if m[i]
                ]
                detail = f"{where}: {'; '.join(problems)} (a unit mistake?). Correct the row and ingest the file again."
            else:
                detail = (
                    f"{where}: track_id {track_id.iat[i]!r} already appeared at row {int(dup_of[i])} of this "
                    "file; the first occurrence counts. Give each track its own id."
                )
            refused.append(Quarantine(row_number, raw_json(records[i]), str(code), detail))
        return tracks, refused


def ingest_catalog(
    ctx: Context, path: Path, *, source: str | None = None, encoding: str | None = None
) -> IngestReport:
    """Ingest a CSV or Parquet catalog (track_id, title, duration_s, tempo_bpm, key, meter, programs and the
    optional density, artist, spotify_uri, isrc, mbid), plain or compressed; ``encoding`` as for events
    (default: detected). Raises :class:`~personalize.ingest.IngestFileError` when the file cannot be read."""
    from personalize.ingest.events import _reading_notes

    path = Path(path)
    check_readable(path)
    started = time.perf_counter()
    job = CatalogIngest(ctx, source or str(path.resolve()))
    with open_input(path) as plain:
        job.report.notes, encoding = _reading_notes(plain, encoding)
        for chunk in read_chunks(
            plain.path, CATALOG_COLUMNS, ctx.settings.ingest_chunk_rows, encoding=encoding, name=plain.name
        ):
            job.add(chunk)
    job.report.elapsed_s = time.perf_counter() - started
    return job.report


def ingest_catalog_frame(ctx: Context, frame: pd.DataFrame, *, source: str) -> IngestReport:
    """Ingest catalog rows held in a DataFrame, validated exactly like a file."""
    started = time.perf_counter()
    check_columns(Path(source), [str(c).strip().lower() for c in frame.columns], CATALOG_COLUMNS)
    job = CatalogIngest(ctx, source)
    for chunk in frame_chunks(frame, 1, ctx.settings.ingest_chunk_rows):
        job.add(chunk)
    job.report.elapsed_s = time.perf_counter() - started
    return job.report


def ingest_catalog_midi(
    ctx: Context, directory: Path, *, progress: bool = False, ids_csv: Path | None = None
) -> IngestReport:
    """Measure every MIDI file under ``directory`` (tempo from the whole tempo map, key by key-finding,
    meter, programs, duration to the last note's end, note density) and ingest them as catalog tracks.
    track_id is the slug of the file's path relative to ``directory`` (see
    :func:`~personalize.ingest.midi.midi_track_id`); the file itself goes to storage (``midi_uri``). Files
    that cannot be used are quarantined with a ``midi_*`` reason; a file the parser warned about is logged
    once with its name. ``ids_csv`` receives ``path,track_id,outcome`` for every file, so event files can
    name the tracks."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IngestFileError(f"{directory}: not a folder. Give the folder that holds the .mid files.")
    started = time.perf_counter()
    files = find_midi_files(directory)
    job = CatalogIngest(ctx, str(directory.resolve()))
    rows: list[dict[str, object]] = []
    refused: list[Quarantine] = []
    uris: list[object] = []
    outcomes: list[tuple[Path, str, str]] = []
    warned = 0
    settings = ctx.settings
    with MidiMeasurer(settings.midi_parse_timeout_s, settings.midi_max_bytes) as measurer:
        iterator = files
        bar = None
        if progress and files:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("measure MIDI", total=len(files))
        try:
            for number, path in enumerate(iterator, start=1):
                relative = path.relative_to(directory)
                outcome = measurer.measure(path)
                if bar is not None:
                    bar.advance(task)
                if outcome.warnings:
                    warned += 1
                    log.warning("%s: %s", path, clip("; ".join(outcome.warnings), DETAIL_MAX_CHARS))
                outcomes.append((relative, midi_track_id(relative), outcome.reason or "measured"))
                if outcome.features is None:
                    raw = raw_json({"file": str(relative), "bytes": path.stat().st_size})
                    detail = f"{relative}: {outcome.detail}"
                    refused.append(Quarantine(number, raw, str(outcome.reason), detail))
                    continue
                stored = ctx.storage.put_bytes("midi", path.read_bytes(), ".mid")
                rows.append({"track_id": midi_track_id(relative), "title": path.stem, **outcome.features})
                uris.append(stored.uri)
                rows[-1]["_row"] = number
        finally:
            if bar is not None:
                bar.stop()
    frame = pd.DataFrame(rows, columns=[*CATALOG_COLUMNS, *OPTIONAL_COLUMNS, "_row"])
    chunk = Chunk(
        frame=frame.drop(columns="_row"),
        row_numbers=frame["_row"].to_numpy(dtype=np.int64),
        bad_encoding=np.zeros(len(frame), dtype=bool),
        quarantined=refused,
    )
    job.add(chunk, extra={"midi_uri": uris})
    if warned:
        job.report.notes.append(f"{warned} file(s) parsed with warnings, each logged with its name")
    if ids_csv is not None:
        ids_csv = Path(ids_csv)
        ids_csv.parent.mkdir(parents=True, exist_ok=True)
        with ids_csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "track_id", "outcome"])
            writer.writerows((str(rel), track_id, what) for rel, track_id, what in outcomes)
        job.report.notes.append(f"track ids of the files in {ids_csv}")
    job.report.elapsed_s = time.perf_counter() - started
    return job.report
