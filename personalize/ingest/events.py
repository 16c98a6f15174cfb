"""Listening events in: validate a file (or a frame from the API or the simulator) chunk by chunk, insert the
good rows in bulk and quarantine every bad row with its reason, row number and raw content."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.context import Context
from personalize.db.models import EVENT_KINDS
from personalize.ingest.read import (
    Chunk,
    Quarantine,
    check_columns,
    check_readable,
    count_rows,
    estimate_rows,
    frame_chunks,
    raw_json,
    read_chunks,
)
from personalize.ingest.report import IngestFileError, IngestReport
from personalize.ingest.store import EventWriter, TrackDurations, bulk_load_wanted
from personalize.ingest.validate import first_reason, hash_ids, number_column, text_column, timestamp_column

EVENT_COLUMNS = ("event_id", "listener_id", "track_id", "ts", "ms_played", "kind")
ID_MAX_CHARS = 64  # listeners.listener_id, tracks.track_id and listening_events.event_id are String(64)
EARLIEST_TS = pd.Timestamp("2000-01-01", tz="UTC")
FUTURE_TOLERANCE_S = 300  # clocks of phones and servers disagree by a few minutes; more is a bad timestamp
MS_PLAYED_MAX = 2**31 - 1  # listening_events.ms_played is a 32-bit integer
FIX_AND_RETRY = "Correct the row in the source file and ingest it again (rows already in are skipped)."


def _sqlalchemy_utc_text(ts_us: np.ndarray) -> np.ndarray:
    """UTC microseconds as ``YYYY-MM-DD HH:MM:SS.ffffff``: SQLAlchemy's own SQLite storage format, so ORM
    reads and string comparisons agree with rows the ORM wrote."""
    text = np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us")
    if len(text):
        text.view(np.uint32).reshape(len(text), -1)[:, 10] = ord(" ")  # the ISO "T" becomes a space
    return text.astype(object)


class _DuplicateFinder:
    """Remembers every event_id of a file (as 64-bit hashes with their first row number, sorted), so a
    duplicate is caught even when its first occurrence was millions of rows and many chunks earlier."""

    def __init__(self) -> None:
        self.hashes = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)

    def check(self, event_ids: pd.Series, present: np.ndarray, row_numbers: np.ndarray) -> np.ndarray:
        """Row number of an earlier occurrence of each row's event_id (0 where it is the first)."""
        first_seen = np.zeros(len(event_ids), dtype=np.int64)
        if not present.any():
            return first_seen
        idx = np.flatnonzero(present)
        hashes = hash_ids(event_ids.to_numpy(dtype=object)[idx])
        rows = row_numbers[idx]
        if len(self.hashes):
            pos = np.searchsorted(self.hashes, hashes)
            pos_c = np.minimum(pos, len(self.hashes) - 1)
            hit = self.hashes[pos_c] == hashes
            first_seen[idx[hit]] = self.rows[pos_c[hit]]
        # Duplicates inside this chunk: every occurrence after the first points at the first.
        frame = pd.DataFrame({"h": hashes, "row": rows})
        first_row = frame.groupby("h", sort=False)["row"].transform("min").to_numpy()
        inner = (first_row != rows) & (first_seen[idx] == 0)
        first_seen[idx[inner]] = first_row[inner]
        new = first_seen[idx] == 0
        uniq_h, uniq_pos = np.unique(hashes[new], return_index=True)
        # Inserting sorted new hashes at their places is a linear copy; re-sorting everything seen so far for
        # every chunk would make a 10M-row file quadratic.
        at = np.searchsorted(self.hashes, uniq_h)
        self.hashes = np.insert(self.hashes, at, uniq_h)
        self.rows = np.insert(self.rows, at, rows[new][uniq_pos])
        return first_seen


class EventIngest:
    """One source's ingest: holds the per-run state (now, track cache, duplicate finder, report)."""

    def __init__(self, ctx: Context, source: str, expected_rows: int | None = None) -> None:
        self.ctx = ctx
        self.source = source[-300:]
        self.writer = EventWriter(ctx, self.source, bulk=bulk_load_wanted(ctx, expected_rows))
        self.report = IngestReport(source=self.source)
        self.tracks = TrackDurations(ctx)
        self.duplicates = _DuplicateFinder()
        self.now = pd.Timestamp.now(tz="UTC")
        self.run_date = self.now.date()
        self.slack_s = float(ctx.settings.ms_played_slack_s)

    def add(self, chunk: Chunk) -> None:
        part = IngestReport(source=self.source)
        quarantined = list(chunk.quarantined)
        frame = chunk.frame
        n = len(frame)
        part.rows_read = n + len(quarantined)
        if n:
            good, refused = self._validate(frame, chunk)
            quarantined.extend(refused)
            part.ingested = self.writer.insert(good)
            part.already_present = len(good) - part.ingested
        for q in quarantined:
            part.add_quarantined(q.reason)
        quarantined.sort(key=lambda q: q.row_number)
        part.examples = [(q.row_number, q.reason, q.detail) for q in quarantined[:5]]
        self.writer.quarantine(quarantined, self.run_date)
        self.report.merge(part)

    def _validate(self, frame: pd.DataFrame, chunk: Chunk) -> tuple[pd.DataFrame, list[Quarantine]]:
        n = len(frame)
        event_id, event_missing, event_long = text_column(frame["event_id"], ID_MAX_CHARS)
        listener_id, listener_missing, listener_long = text_column(frame["listener_id"], ID_MAX_CHARS)
        track_id, track_missing, track_long = text_column(frame["track_id"], ID_MAX_CHARS)
        kind, kind_missing, _ = text_column(frame["kind"], lower=True)
        kind_text = frame["kind"]
        ts_us, ts_missing, ts_bad = timestamp_column(frame["ts"])
        ms, ms_missing, ms_bad = number_column(frame["ms_played"])
        ms_bad |= ~ms_missing & ~ms_bad & (~np.isfinite(ms) | (np.floor(ms) != ms))
        long_id = {"event_id": event_long, "listener_id": listener_long, "track_id": track_long}
        missing = {
            "event_id": event_missing,
            "listener_id": listener_missing,
            "track_id": track_missing,
            "ts": ts_missing,
            "ms_played": ms_missing,
            "kind": kind_missing,
        }
        any_missing = np.logical_or.reduce(list(missing.values()))
        unparseable = ts_bad | ms_bad | np.logical_or.reduce(list(long_id.values()))
        usable = ~chunk.bad_encoding & ~any_missing & ~unparseable
        earlier = self.duplicates.check(
            event_id, ~chunk.bad_encoding & ~event_missing & ~event_long, chunk.row_numbers
        )
        low = int(EARLIEST_TS.value // 1000)
        high = int((self.now + pd.Timedelta(seconds=FUTURE_TOLERANCE_S)).value // 1000)
        ms_safe = np.where(np.isfinite(ms), ms, 0)
        candidates = usable & (earlier == 0) & kind.isin(EVENT_KINDS).to_numpy() & (ms_safe >= 0)
        candidates &= (ts_us >= low) & (ts_us <= high)
        durations = np.full(n, np.nan)
        if candidates.any():
            durations[candidates] = self.tracks.lookup(track_id[candidates]).to_numpy()
        unknown_track = candidates & np.isnan(durations)
        limit_ms = (np.nan_to_num(durations, nan=0.0) + self.slack_s) * 1000.0
        absurd = candidates & ~unknown_track & ((ms_safe > limit_ms) | (ms_safe > MS_PLAYED_MAX))
        reason = first_reason(
            [
                ("bad_encoding", chunk.bad_encoding),
                ("missing_field", any_missing),
                ("unparseable_field", unparseable),
                ("duplicate_event_id", earlier > 0),
                ("unknown_kind", ~kind.isin(EVENT_KINDS).to_numpy()),
                ("negative_ms_played", ms_safe < 0),
                ("ts_before_2000", ts_us < low),
                ("ts_future", ts_us > high),
                ("unknown_track", unknown_track),
                ("absurd_ms_played", absurd),
            ],
            n,
        )
        if chunk.truncated_at is not None:
            # A last line without a newline that also fails a check was most likely cut off mid-row.
            cut = (chunk.row_numbers == chunk.truncated_at) & (reason != None)  # noqa: E711
            reason[cut] = "truncated_row"
        bad_idx = np.flatnonzero(reason != None)  # noqa: E711
        refused: list[Quarantine] = []
        if len(bad_idx):
            records = frame.iloc[bad_idx].to_dict(orient="records")
            for j, i in enumerate(bad_idx):
                row_number = int(chunk.row_numbers[i])
                code = str(reason[i])
                detail = self._detail(
                    code, row_number, i, event_id, track_id, kind_text, frame, missing, long_id, ts_bad, ms_bad,
                    ms_safe, durations, earlier,
                )  # fmt: skip
                refused.append(Quarantine(row_number, raw_json(records[j]), code, detail))
        ok = reason == None  # noqa: E711
        good = pd.DataFrame(
            {
                "event_id": event_id[ok].to_numpy(dtype=object),
                "listener_id": listener_id[ok].to_numpy(dtype=object),
                "track_id": track_id[ok].to_numpy(dtype=object),
                "ts": _sqlalchemy_utc_text(ts_us[ok]) if self.ctx.dialect == "sqlite" else None,
                "ts_us": ts_us[ok],
                "ms_played": ms_safe[ok].astype(np.int64),
                "kind": kind[ok].to_numpy(dtype=object),
            }
        )
        return good, refused

    def _detail(
        self,
        code: str,
        row_number: int,
        i: int,
        event_id: pd.Series,
        track_id: pd.Series,
        kind: pd.Series,
        frame: pd.DataFrame,
        missing: dict[str, np.ndarray],
        long_id: dict[str, np.ndarray],
        ts_bad: np.ndarray,
        ms_bad: np.ndarray,
        ms: np.ndarray,
        durations: np.ndarray,
        earlier: np.ndarray,
    ) -> str:
        where = f"{self.source} row {row_number}"
        if code == "bad_encoding":
            return f"{where} holds bytes that are not UTF-8. Save the file as UTF-8 and ingest it again."
        if code == "truncated_row":
            return (
                f"{where} is the file's last line, has no final newline and does not validate: the file was "
                "cut off. Re-export the whole file and ingest it again."
            )
        if code == "missing_field":
            empty = [c for c, m in missing.items() if m[i]]
            return f"{where}: {', '.join(empty)} empty or missing; every event needs all of {', '.join(EVENT_COLUMNS)}. {FIX_AND_RETRY}"
        if code == "unparseable_field":
            problems = []
            if ts_bad[i]:
                problems.append(
                    f"ts {frame['ts'].iloc[i]!r} is not an ISO 8601 timestamp (e.g. 2026-11-20T18:04:05Z)"
                )
            if ms_bad[i]:
                problems.append(
                    f"ms_played {frame['ms_played'].iloc[i]!r} is not a whole number of milliseconds"
                )
            for col, mask in long_id.items():
                if mask[i]:
                    problems.append(f"{col} is longer than {ID_MAX_CHARS} characters")
            return f"{where}: {'; '.join(problems)}. {FIX_AND_RETRY}"
        if code == "duplicate_event_id":
            return (
                f"{where}: event_id {event_id.iloc[i]!r} already appeared at row {int(earlier[i])} of this file; "
                "the first occurrence counts. Give each event its own id."
            )
        if code == "unknown_kind":
            return f"{where}: kind {kind.iloc[i]!r} is not one of {', '.join(EVENT_KINDS)}. {FIX_AND_RETRY}"
        if code == "negative_ms_played":
            return f"{where}: ms_played {int(ms[i])} is negative. {FIX_AND_RETRY}"
        if code == "ts_before_2000":
            return f"{where}: ts {frame['ts'].iloc[i]!s} is before 2000-01-01; check the clock or the date format. {FIX_AND_RETRY}"
        if code == "ts_future":
            return (
                f"{where}: ts {frame['ts'].iloc[i]!s} is in the future (now {self.now:%Y-%m-%d %H:%M:%S} UTC); "
                f"timestamps without an offset are read as UTC. {FIX_AND_RETRY}"
            )
        if code == "unknown_track":
            return (
                f"{where}: track_id {track_id.iloc[i]!r} is not in the catalog. Ingest the catalog first "
                "(personalize ingest catalog FILE), then this file again."
            )
        if code == "absurd_ms_played":
            return (
                f"{where}: ms_played {int(ms[i])} is longer than track {track_id.iloc[i]!r} "
                f"({durations[i]:.1f} s) plus {self.slack_s:g} s of slack. {FIX_AND_RETRY}"
            )
        return f"{where}: {code}"

    def finish(self, started: float) -> IngestReport:
        self.writer.close()
        self.report.elapsed_s = time.perf_counter() - started
        return self.report


def _run(
    ctx: Context,
    source: str,
    chunks: Iterable[Chunk],
    total: int | None,
    progress: bool,
    expected_rows: int | None = None,
) -> IngestReport:
    started = time.perf_counter()
    job = EventIngest(ctx, source, expected_rows)
    try:
        return _feed(job, chunks, total, progress, started)
    except IngestFileError:
        # The file broke off part-way: the rows read before stay in, as the error message promises.
        job.writer.close(commit=True)
        raise
    except BaseException:
        job.writer.close(commit=False)
        raise


def _feed(
    job: EventIngest, chunks: Iterable[Chunk], total: int | None, progress: bool, started: float
) -> IngestReport:
    if not progress:
        for chunk in chunks:
            job.add(chunk)
        return job.finish(started)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]ingest events"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("events", total=total, rows=0)
        for chunk in chunks:
            job.add(chunk)
            bar.update(task, completed=chunk.bytes_done, rows=job.report.rows_read)
    return job.finish(started)


def ingest_events(
    ctx: Context, path: Path, *, source: str | None = None, progress: bool = False
) -> IngestReport:
    """Ingest a CSV or Parquet file of listening events (columns: event_id, listener_id, track_id, ts,
    ms_played, kind). Good rows go to listening_events (listeners created on first sight), bad rows to
    quarantined_rows. Raises :class:`~personalize.ingest.IngestFileError` when the file cannot be read."""
    path = Path(path)
    check_readable(path)
    source = source or str(path.resolve())
    chunks = read_chunks(path, EVENT_COLUMNS, ctx.settings.ingest_chunk_rows)
    total = None
    if progress:
        total = count_rows(path) if path.suffix.lower() in (".parquet", ".pq") else path.stat().st_size
    return _run(ctx, source, chunks, total, progress, estimate_rows(path))


def ingest_events_frame(
    ctx: Context, frame: pd.DataFrame, *, source: str, first_row_number: int = 1
) -> IngestReport:
    """Ingest events held in a DataFrame, validated exactly like a file. ``source`` names where they came
    from and, with the row number, keys the quarantine: give each batch its own source (e.g. ``api:<id>``)."""
    columns = [str(c).strip().lower() for c in frame.columns]
    check_columns(Path(source), columns, EVENT_COLUMNS)
    chunks = frame_chunks(frame, first_row_number, ctx.settings.ingest_chunk_rows)
    return _run(ctx, source, chunks, None, False, len(frame))
