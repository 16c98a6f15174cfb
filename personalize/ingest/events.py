"""Listening events in: validate a file (or a frame from the API or the simulator) chunk by chunk, insert the
good rows in bulk and quarantine every bad row with its reason, row number and raw content."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.context import Context
from personalize.db.models import EVENT_KINDS
from personalize.ids import ID_MAX_CHARS, unservable_id
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
from personalize.ingest.report import DETAIL_MAX_CHARS, IngestFileError, IngestReport, MostlyBadError, clip
from personalize.ingest.store import EventWriter, TrackDurations, bulk_load_wanted
from personalize.ingest.unpack import InputFile, detect_encoding, open_input
from personalize.ingest.validate import (
    control_characters,
    first_control_character,
    first_reason,
    hash_ids,
    id_column,
    number_column,
    text_column,
    timestamp_column,
)

EVENT_COLUMNS = ("event_id", "listener_id", "track_id", "ts", "ms_played", "kind")
EARLIEST_TS = pd.Timestamp("2000-01-01", tz="UTC")
FUTURE_TOLERANCE_S = 300  # clocks of phones and servers disagree by a few minutes; more is a bad timestamp
MS_PLAYED_MAX = 2**31 - 1  # listening_events.ms_played is a 32-bit integer
FIX_AND_RETRY = "Correct the row in the source file and ingest it again (rows already in are skipped)."
# A file whose first chunk is mostly refused is almost always read wrongly as a whole (a timestamp format, a
# catalog not loaded yet): stop before storing anything rather than quarantine a million rows.
MOSTLY_BAD_SHARE = 0.5
MOSTLY_BAD_MIN_ROWS = 20
# Month-first or day-first dates as spreadsheets write them: the --ts-format hint of the stop message.
SLASH_DATE = r"^\s*\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}"


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
        # Looked up in sorted order, neighbouring hashes land on neighbouring memory: the binary searches
        # into millions of hashes seen so far stay in cache.
        order = np.argsort(hashes, kind="stable")
        sorted_h, sorted_rows, at_idx = hashes[order], rows[order], idx[order]
        seen = np.zeros(len(sorted_h), dtype=np.int64)  # earlier row number, in sorted order
        if len(self.hashes):
            pos = np.minimum(np.searchsorted(self.hashes, sorted_h), len(self.hashes) - 1)
            hit = self.hashes[pos] == sorted_h
            seen[hit] = self.rows[pos[hit]]
        # Duplicates inside this chunk: equal hashes sit side by side, the earliest row first (a stable sort
        # of rows in file order); every later occurrence points at the first.
        starts = np.r_[True, sorted_h[1:] != sorted_h[:-1]] if len(sorted_h) else np.zeros(0, dtype=bool)
        run_first = sorted_rows[np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))]
        inner = ~starts & (seen == 0)
        seen[inner] = run_first[inner]
        first_seen[at_idx] = seen
        new = starts & (seen == 0)
        # Inserting sorted new hashes at their places is a linear copy; re-sorting everything seen so far for
        # every chunk would make a 10M-row file quadratic.
        at = np.searchsorted(self.hashes, sorted_h[new])
        self.hashes = np.insert(self.hashes, at, sorted_h[new])
        self.rows = np.insert(self.rows, at, sorted_rows[new])
        return first_seen


_PIPELINE_DEPTH = 2  # validated chunks waiting to be written (bounds memory: a chunk is ingest_chunk_rows)


@dataclass
class _Prepared:
    part: IngestReport
    good: object  # the validated rows as EventWriter.encode made them; None when the chunk had none
    n_good: int
    quarantined: list[Quarantine]
    bytes_done: int


class EventIngest:
    """One source's ingest: holds the per-run state (now, track cache, duplicate finder, report)."""

    def __init__(
        self,
        ctx: Context,
        source: str,
        expected_rows: int | None = None,
        *,
        ts_format: str | None = None,
        stop_if_mostly_bad: bool = False,
    ) -> None:
        self.ctx = ctx
        self.source = source[-300:]
        self.ts_format = ts_format
        self.stop_if_mostly_bad = stop_if_mostly_bad
        self._chunks_prepared = 0
        bulk = bulk_load_wanted(ctx, expected_rows)
        self.tracks = TrackDurations(ctx)
        if bulk and ctx.dialect == "postgresql":
            self.tracks.load_all()  # the load will hold the tracks table until it commits
        self.writer = EventWriter(ctx, self.source, bulk=bulk)
        self.report = IngestReport(source=self.source)
        self.duplicates = _DuplicateFinder()
        self.now = pd.Timestamp.now(tz="UTC")
        self.run_date = self.now.date()
        self.slack_s = float(ctx.settings.ms_played_slack_s)

    def add(self, chunk: Chunk) -> None:
        self.store(self.prepare(chunk))

    def prepare(self, chunk: Chunk) -> _Prepared:
        """Validate a chunk (no writes): the rows to insert, the rows to quarantine and the chunk's counts."""
        part = IngestReport(source=self.source)
        quarantined = list(chunk.quarantined)
        frame = chunk.frame
        part.rows_read = len(frame) + len(quarantined)
        good = None
        first = self._chunks_prepared == 0
        self._chunks_prepared += 1
        counts: dict[str, int] | None = None
        if len(frame):
            good, refused, counts = self._validate(frame, chunk, guard=first and self.stop_if_mostly_bad)
            quarantined.extend(refused)
        if counts is None:
            for q in quarantined:
                part.add_quarantined(q.reason)
        else:
            for q in chunk.quarantined:
                part.add_quarantined(q.reason)
            for reason, n in counts.items():
                part.add_quarantined(reason, n)
        quarantined.sort(key=lambda q: q.row_number)
        if first:
            self.check_first(part, quarantined)
        part.examples = [(q.row_number, q.reason, q.detail) for q in quarantined[:5]]
        n_good = 0 if good is None else len(good)
        payload = None if good is None else self.writer.encode(good)
        return _Prepared(part, payload, n_good, quarantined, chunk.bytes_done)

    def store(self, prepared: _Prepared) -> None:
        """Write a prepared chunk: good rows, then its quarantined rows; then count it in the report."""
        part = prepared.part
        if prepared.good is not None:
            part.ingested = self.writer.insert(prepared.good)
            part.already_present = prepared.n_good - part.ingested
        self.writer.quarantine(prepared.quarantined, self.run_date)
        self.report.merge(part)

    def _validate(
        self, frame: pd.DataFrame, chunk: Chunk, guard: bool = False
    ) -> tuple[pd.DataFrame, list[Quarantine], dict[str, int] | None]:
        """The good rows, the refused ones and, when ``guard`` finds most of the chunk bad (the run is about
        to stop), the counts per reason with only the first few refused rows spelled out."""
        n = len(frame)
        event_id, event_missing, event_long = text_column(frame["event_id"], ID_MAX_CHARS)
        listener_id, listener_missing, listener_long, listener_chars = id_column(frame["listener_id"])
        track_id, track_missing, track_long, track_chars = id_column(frame["track_id"])
        kind, kind_missing, _ = text_column(frame["kind"], lower=True)
        kind_text = frame["kind"]
        ts_us, ts_missing, ts_bad = timestamp_column(frame["ts"], self.ts_format)
        ms, ms_missing, ms_bad = number_column(frame["ms_played"])
        ms_bad |= ~ms_missing & ~ms_bad & (~np.isfinite(ms) | (np.floor(ms) != ms))
        # Listener and track ids have their own rule (odd_id below), which refuses these too.
        control = {col: control_characters(frame[col]) for col in ("event_id", "ts", "ms_played", "kind")}
        long_id = {"event_id": event_long, "listener_id": listener_long, "track_id": track_long}
        # ids the API could not serve back (an app fetches playlists and tracks by them)
        odd_id = {"listener_id": listener_chars, "track_id": track_chars}
        missing = {
            "event_id": event_missing,
            "listener_id": listener_missing,
            "track_id": track_missing,
            "ts": ts_missing,
            "ms_played": ms_missing,
            "kind": kind_missing,
        }
        any_missing = np.logical_or.reduce(list(missing.values()))
        unparseable = ts_bad | ms_bad | np.logical_or.reduce([*long_id.values(), *odd_id.values()])
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
                ("control_character", np.logical_or.reduce(list(control.values()))),
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
        counts = None
        n_read = n + len(chunk.quarantined)
        if (
            guard
            and n_read >= MOSTLY_BAD_MIN_ROWS
            and len(bad_idx) + len(chunk.quarantined) > MOSTLY_BAD_SHARE * n_read
        ):
            codes, found = np.unique(reason[bad_idx].astype(str), return_counts=True)
            counts = {str(c): int(k) for c, k in zip(codes, found, strict=True)}
            bad_idx = bad_idx[:50]  # enough for the message; nothing will be stored
        refused: list[Quarantine] = []
        if len(bad_idx):
            records = frame.iloc[bad_idx].to_dict(orient="records")
            for j, i in enumerate(bad_idx):
                row_number = int(chunk.row_numbers[i])
                code = str(reason[i])
                detail = self._detail(
                    code, row_number, i, event_id, track_id, kind_text, frame, missing, long_id, odd_id, ts_bad,
                    ms_bad, ms_safe, durations, earlier, control,
                )  # fmt: skip
                refused.append(
                    Quarantine(row_number, raw_json(records[j]), code, clip(detail, DETAIL_MAX_CHARS))
                )
        if counts is not None:
            return frame.iloc[:0], refused, counts
        ok = reason == None  # noqa: E711
        # For PostgreSQL the Python strings stay Python strings (dtype object): its COPY encoder takes them
        # straight to Arrow, and letting pandas turn them into Arrow strings here and back again cost 0.3 µs
        # a row. SQLite keeps pandas' Arrow strings: sorted there by event_id and turned into Python strings
        # only then, the objects it binds lie in memory in the order it reads them (about 25 % faster).
        keep = self.ctx.dialect == "postgresql"

        def text(values: np.ndarray) -> object:
            return pd.Series(values, dtype=object, copy=False) if keep else values

        good = pd.DataFrame(
            {
                "event_id": text(event_id[ok].to_numpy(dtype=object)),
                "listener_id": text(listener_id[ok].to_numpy(dtype=object)),
                "track_id": text(track_id[ok].to_numpy(dtype=object)),
                "ts": _sqlalchemy_utc_text(ts_us[ok]) if self.ctx.dialect == "sqlite" else None,
                "ts_us": ts_us[ok],
                "ms_played": ms_safe[ok].astype(np.int64),
                "kind": text(kind[ok].to_numpy(dtype=object)),
            }
        )
        return good, refused, None

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
        odd_id: dict[str, np.ndarray],
        ts_bad: np.ndarray,
        ms_bad: np.ndarray,
        ms: np.ndarray,
        durations: np.ndarray,
        earlier: np.ndarray,
        control: dict[str, np.ndarray],
    ) -> str:
        where = f"{self.source} row {row_number}"
        if code == "control_character":
            found = [
                f"{c} holds {first_control_character(frame[c].iloc[i])}" for c, m in control.items() if m[i]
            ]
            return (
                f"{where}: {'; '.join(found)}; control characters (NUL, tab, newline, ...) cannot be stored. "
                f"{FIX_AND_RETRY}"
            )
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
                wanted = (
                    f"does not match --ts-format {self.ts_format!r}"
                    if self.ts_format
                    else "is not an ISO 8601 timestamp (e.g. 2026-11-20T18:04:05Z; give --ts-format for others)"
                )
                problems.append(f"ts {clip(str(frame['ts'].iloc[i]), 60)!r} {wanted}")
            if ms_bad[i]:
                problems.append(
                    f"ms_played {frame['ms_played'].iloc[i]!r} is not a whole number of milliseconds"
                )
            for col, mask in long_id.items():
                if mask[i]:
                    problems.append(f"{col} is longer than {ID_MAX_CHARS} characters")
            for col, mask in odd_id.items():
                if mask[i]:
                    problems.append(unservable_id(col, frame[col].iloc[i]))
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

    def check_first(self, part: IngestReport, quarantined: list[Quarantine]) -> None:
        """Stop before anything is stored when most of the first chunk was refused (see MOSTLY_BAD_SHARE)."""
        bad = part.quarantined_total
        if not self.stop_if_mostly_bad or part.rows_read < MOSTLY_BAD_MIN_ROWS:
            return
        if bad <= MOSTLY_BAD_SHARE * part.rows_read:
            return
        top = sorted(part.quarantined.items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in top[:3])
        first = next((q for q in quarantined if q.reason == top[0][0]), quarantined[0])
        example = first.detail.removeprefix(f"{self.source} ")
        raise MostlyBadError(
            f"{self.source}: {bad:,} of the first {part.rows_read:,} rows would be quarantined ({reasons}); "
            f"nothing was stored. {self._fix_hint(top[0][0], quarantined)}To store the good rows anyway, add "
            f"--accept-bad-rows. First: {clip(example, 160)}"
        )

    def _fix_hint(self, reason: str, quarantined: list[Quarantine]) -> str:
        if reason == "unparseable_field":
            import json
            import re

            stamps = [json.loads(q.raw).get("ts") for q in quarantined[:50]]
            if any(isinstance(t, str) and re.match(SLASH_DATE, t) for t in stamps):
                return (
                    "The timestamps look like a spreadsheet's: give their format, e.g. "
                    "--ts-format '%m/%d/%Y %H:%M' (month first) or '%d/%m/%Y %H:%M' (day first). "
                )
        if reason == "unknown_track":
            return "Ingest the catalog first (personalize ingest catalog FILE). "
        if reason == "bad_encoding":
            return "Give the file's encoding (--encoding cp1252, latin-1, ...). "
        return ""

    def finish(self, started: float) -> IngestReport:
        present = self.writer.close()
        self.report.ingested -= present
        self.report.already_present += present
        self.report.elapsed_s = time.perf_counter() - started
        return self.report


def ingest_chunks(
    ctx: Context,
    source: str,
    chunks: Iterable[Chunk],
    total: int | None,
    progress: bool,
    expected_rows: int | None = None,
    **options: object,
) -> IngestReport:
    """Validate and store ``chunks`` of one source (see :class:`EventIngest`; ``options`` are its keyword
    arguments). ``expected_rows`` decides a bulk load and reading ahead in a second thread; ``total`` and
    each chunk's ``bytes_done`` drive the progress bar."""
    started = time.perf_counter()
    job = EventIngest(ctx, source, expected_rows, **options)  # type: ignore[arg-type]
    # Only a source of several chunks gains from validating ahead; one chunk (an API batch) would only pay
    # for starting the thread.
    overlap = expected_rows is not None and expected_rows > ctx.settings.ingest_chunk_rows
    try:
        return _feed(job, chunks, total, progress, started, overlap)
    except MostlyBadError:
        job.writer.close(commit=False)  # nothing was stored: a bulk load has nothing to build again
        raise
    except IngestFileError:
        # The file broke off part-way: the rows read before stay in, as the error message promises.
        job.writer.close(commit=True)
        raise
    except BaseException:
        job.writer.close(commit=False)
        raise


def _prepared(job: EventIngest, chunks: Iterable[Chunk], overlap: bool) -> Iterator[_Prepared]:
    """Validated chunks in file order. With ``overlap``, a helper thread reads and validates the next chunks
    while the caller writes this one: reading, validation (numpy, pyarrow) and the database (SQLite's
    B-tree work, PostgreSQL's server) all let go of the GIL for most of their time, so on two cores a big
    file goes in about a third faster. An error on either side stops both and is raised here, after every
    chunk before it was handed over."""
    if not overlap:
        for chunk in chunks:
            yield job.prepare(chunk)
        return
    handoff: queue.Queue = queue.Queue(maxsize=_PIPELINE_DEPTH)
    stop = threading.Event()
    done = object()

    def offer(item: object) -> bool:
        """Hand ``item`` over; False once the writing side has stopped (it will take nothing more)."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(job.prepare(chunk)):
                    return
            offer(done)
        except BaseException as exc:  # handed to the writing side, which raises it
            offer(exc)

    worker = threading.Thread(target=produce, name="ingest-validate", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _feed(
    job: EventIngest,
    chunks: Iterable[Chunk],
    total: int | None,
    progress: bool,
    started: float,
    overlap: bool = False,
) -> IngestReport:
    if not progress:
        with closing(_prepared(job, chunks, overlap)) as ready:
            for prepared in ready:
                job.store(prepared)
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
    # Two refreshes a second: each one takes the GIL from the thread doing the work.
    with Progress(*columns, transient=True, refresh_per_second=2) as bar:
        task = bar.add_task("events", total=total, rows=0)
        with closing(_prepared(job, chunks, overlap)) as ready:
            for prepared in ready:
                job.store(prepared)
                bar.update(task, completed=prepared.bytes_done, rows=job.report.rows_read)
    return job.finish(started)


def ingest_events(
    ctx: Context,
    path: Path,
    *,
    source: str | None = None,
    progress: bool = False,
    encoding: str | None = None,
    ts_format: str | None = None,
    accept_bad_rows: bool = False,
) -> IngestReport:
    """Ingest a CSV or Parquet file of listening events (columns: event_id, listener_id, track_id, ts,
    ms_played, kind), plain or compressed (.gz, .bz2, .zst, a .zip of one file). Good rows go to
    listening_events (listeners created on first sight), bad rows to quarantined_rows.

    ``encoding`` is the CSV's text encoding (default: detected); ``ts_format`` a strftime format for
    timestamps that are not ISO 8601 (``%m/%d/%Y %H:%M``). When most of the first chunk would be quarantined
    nothing is stored and :class:`~personalize.ingest.IngestFileError` says why, unless ``accept_bad_rows``.
    Raises it too when the file cannot be read."""
    path = Path(path)
    check_readable(path)
    source = source or str(path.resolve())
    with open_input(path) as plain:
        notes, encoding = _reading_notes(plain, encoding)
        chunks = read_chunks(
            plain.path, EVENT_COLUMNS, ctx.settings.ingest_chunk_rows, encoding=encoding, name=plain.name
        )
        total = None
        if progress:
            parquet = plain.path.suffix.lower() in (".parquet", ".pq")
            total = count_rows(plain.path) if parquet else plain.path.stat().st_size
        report = ingest_chunks(
            ctx, source, chunks, total, progress, estimate_rows(plain.path),
            ts_format=ts_format, stop_if_mostly_bad=not accept_bad_rows,
        )  # fmt: skip
    report.notes = notes
    return report


def _reading_notes(plain: InputFile, encoding: str | None) -> tuple[list[str], str]:
    """How ``plain`` will be read (notes for the report) and the text encoding to read it in."""
    notes = []
    if plain.compression:
        notes.append(f"unpacked from {plain.compression}" + (f" ({plain.member})" if plain.member else ""))
    if encoding is None and plain.path.suffix.lower() not in (".parquet", ".pq"):
        encoding, guessed = detect_encoding(plain.path)
        if guessed:
            notes.append(f"read as {encoding} (detected; give --encoding if accents look wrong)")
    return notes, encoding or "utf-8-sig"


def ingest_events_frame(
    ctx: Context, frame: pd.DataFrame, *, source: str, first_row_number: int = 1
) -> IngestReport:
    """Ingest events held in a DataFrame, validated exactly like a file. ``source`` names where they came
    from and, with the row number, keys the quarantine: give each batch its own source (e.g. ``api:<id>``)."""
    columns = [str(c).strip().lower() for c in frame.columns]
    check_columns(Path(source), columns, EVENT_COLUMNS)
    chunks = frame_chunks(frame, first_row_number, ctx.settings.ingest_chunk_rows)
    return ingest_chunks(ctx, source, chunks, None, False, len(frame))
