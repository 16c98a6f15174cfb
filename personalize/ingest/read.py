"""Read CSV or Parquet files in chunks, keeping each data row's 1-based number and flagging rows that are
broken at the byte level (bad encoding, wrong field count, a last row cut off) before any validation."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from personalize.ingest.report import DETAIL_MAX_CHARS, IngestFileError, clip

PARQUET_MAGIC = b"PAR1"
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Quarantine:
    """One row that will not be ingested: where it came from, the raw row as JSON, and why."""

    row_number: int
    raw: str
    reason: str
    detail: str


@dataclass
class Chunk:
    """Rows of one file slice. ``frame`` holds the rows that reached validation; ``bad_encoding`` marks those
    holding undecodable bytes; ``truncated_at`` is the row number of a last row that may be cut off."""

    frame: pd.DataFrame
    row_numbers: np.ndarray
    bad_encoding: np.ndarray
    quarantined: list[Quarantine] = field(default_factory=list)
    truncated_at: int | None = None
    bytes_done: int = 0


def raw_json(record: dict[str, object]) -> str:
    """The row as JSON text; undecodable bytes appear as ``\\udcXX`` escapes so the raw row is never lost."""

    def _plain(value: object) -> object:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        return value

    return json.dumps({str(k): _plain(v) for k, v in record.items()}, default=str, ensure_ascii=True)


def file_format(path: Path) -> str:
    """``"parquet"`` or ``"csv"``, from the suffix, else from the file's first bytes."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    with path.open("rb") as fh:
        return "parquet" if fh.read(4) == PARQUET_MAGIC else "csv"


def check_readable(path: Path) -> None:
    if not path.exists():
        raise IngestFileError(f"{path}: no such file. Check the path.")
    if not path.is_file():
        raise IngestFileError(f"{path}: not a file. Give a CSV or Parquet file.")
    if path.stat().st_size == 0:
        raise IngestFileError(f"{path}: the file is empty (not even a header row).")


def check_columns(
    path: Path, columns: list[str], required: tuple[str, ...], header: list[str] | None = None
) -> None:
    """Raise when a required column is missing, quoting (shortened) the header as the file has it."""
    missing = [c for c in required if c not in columns]
    if missing:
        shown = ", ".join(clip(h, 40) for h in (header if header is not None else columns)[:20])
        raise IngestFileError(
            f"{path}: missing column(s) {', '.join(missing)}. The file's header is: {clip(shown, 200) or 'empty'}; "
            f"it needs {', '.join(required)}."
        )


# Keys that give away an export format: a JSON file handed to the CSV reader is named with its importer.
EXPORT_HINTS = (
    ("master_metadata_track_name", "a Spotify extended streaming history", "spotify"),
    ("spotify_track_uri", "a Spotify extended streaming history", "spotify"),
    ("endTime", "a Spotify streaming history", "spotify"),
    ("listened_at", "a ListenBrainz", "listenbrainz"),
)


def looks_like_json(path: Path, name: Path, encoding: str) -> None:
    """Raise a clear error when a CSV was expected but ``path`` holds JSON (an export of some service)."""
    with path.open("rb") as fh:
        head = fh.read(64 * 1024).decode(encoding, "replace").lstrip("\ufeff \t\r\n")
    if not head.startswith(("[", "{")):
        return
    for key, what, command in EXPORT_HINTS:
        if f'"{key}"' in head:
            raise IngestFileError(
                f"{name}: this is JSON, {what} export, not a CSV of events. Import it with "
                f"`personalize ingest {command} {name}` (add --listener ID when the export names no user)."
            )
    raise IngestFileError(f"{name}: this is JSON, not CSV or Parquet. Give a CSV or Parquet file.")


def count_rows(path: Path) -> int | None:
    """Rows in a Parquet file from its footer; None for CSV (the progress bar counts bytes instead)."""
    if file_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


def estimate_rows(path: Path) -> int | None:
    """About how many data rows ``path`` holds: exact for Parquet (footer), for CSV the file size over the
    mean length of the first megabyte's lines. Good enough to choose how to load, not for counting."""
    if file_format(path) == "parquet":
        return count_rows(path)
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    lines = head.count(b"\n")
    if not lines:
        return 1
    return int(path.stat().st_size / (len(head) / lines))


def read_chunks(
    path: Path,
    required: tuple[str, ...],
    chunk_rows: int,
    *,
    encoding: str = "utf-8-sig",
    name: Path | None = None,
) -> Iterator[Chunk]:
    """Chunks of the plain file ``path`` (CSV in ``encoding``, or Parquet); messages name ``name`` (the file
    as the user gave it, default ``path``). Raises :class:`IngestFileError` when the file cannot be read."""
    check_readable(path)
    if file_format(path) == "parquet":
        yield from _parquet_chunks(path, required, chunk_rows, name or path)
    else:
        looks_like_json(path, name or path, encoding)
        yield from _csv_chunks(path, required, chunk_rows, encoding, name or path)


def _parquet_chunks(path: Path, required: tuple[str, ...], chunk_rows: int, name: Path) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:
        raise IngestFileError(
            f"{name}: not a readable Parquet file ({clip(str(exc), 150)}). It may be truncated; write it again."
        ) from exc
    columns = [str(c).strip().lower() for c in pfile.schema_arrow.names]
    check_columns(name, columns, required, list(pfile.schema_arrow.names))
    next_row = 1
    try:
        for batch in pfile.iter_batches(batch_size=chunk_rows):
            # Binary (not string) columns may hold bytes that are not UTF-8: decode them, marking bad rows.
            bad = np.zeros(batch.num_rows, dtype=bool)
            arrays = []
            for col in batch.columns:
                if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                    values = [
                        None if v is None else v.decode("utf-8", "surrogateescape") for v in col.to_pylist()
                    ]
                    bad |= np.array([v is not None and not _encodable(v) for v in values], dtype=bool)
                    arrays.append(pa.array(values, type=pa.string()))
                else:
                    arrays.append(col)
            table = pa.Table.from_arrays(arrays, names=columns)
            frame = table.to_pandas()
            n = len(frame)
            yield Chunk(
                frame=frame,
                row_numbers=np.arange(next_row, next_row + n, dtype=np.int64),
                bad_encoding=bad,
                bytes_done=next_row - 1 + n,  # rows so far: the progress bar counts rows for Parquet
            )
            next_row += n
    except IngestFileError:
        raise
    except Exception as exc:
        raise IngestFileError(
            f"{name}: Parquet data unreadable after row {next_row - 1} ({clip(str(exc), 150)}). The rows before were kept; "
            "write the file again and re-ingest it (rows already in are skipped)."
        ) from exc


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _escape_bytes(text: str) -> str:
    """Undecodable bytes (held as lone surrogates) written as ``\\xNN`` so the row can be stored and shown."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, io.SEEK_END)
        return fh.read(1) in (b"\n", b"\r")


def _delimiter(sample: str, required: tuple[str, ...], default: str) -> str:
    """The separator whose header holds the required columns (spreadsheets in some locales write ';')."""
    first_line = sample.splitlines()[0] if sample else ""
    for candidate in (default, ",", ";", "\t", "|"):
        header = next(csv.reader([first_line], delimiter=candidate), [])
        if set(required) <= {h.strip().lower() for h in header}:
            return candidate
    return default


def _csv_chunks(
    path: Path, required: tuple[str, ...], chunk_rows: int, encoding: str, name: Path
) -> Iterator[Chunk]:
    may_be_truncated = not _ends_with_newline(path)
    binary = path.open("rb")
    # surrogateescape keeps undecodable bytes (as lone surrogates) so the row is flagged, not lost.
    text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
    try:
        sample = text.read(64 * 1024)
        delimiter = _delimiter(sample, required, "\t" if name.suffix.lower() == ".tsv" else ",")
        text.seek(0)
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise IngestFileError(f"{name}: no header row.") from None
        except csv.Error as exc:
            raise IngestFileError(f"{name}: not readable as CSV ({clip(str(exc), 150)}).") from exc
        columns = [h.strip().lower() for h in header]
        # a NUL in the header means UTF-16 or a binary file; one in a data row only quarantines that row
        if "\x00" in "".join(header) or (sample and not _encodable("".join(header))):
            raise IngestFileError(
                f"{name}: the header is not {'UTF-8' if encoding.startswith('utf-8') else encoding} text; is this a CSV file? Save it as UTF-8 CSV, "
                "or give its encoding (--encoding cp1252, utf-16, ...)."
            )
        check_columns(name, columns, required, header)
        # Only the columns ingest uses decide whether a row's bytes are bad: an accent mangled in a
        # comment column is no reason to refuse the event.
        used = [columns.index(c) for c in required if c in columns]
        width = len(columns)
        row_number = 0
        pending: Chunk | None = None
        while True:
            good: list[list[str]] = []
            numbers: list[int] = []
            quarantined: list[Quarantine] = []
            last_partial: tuple[int, list[str]] | None = None
            try:
                for record in reader:
                    row_number += 1
                    if not record:
                        continue  # a blank line carries no data
                    if len(record) == width:
                        good.append(record)
                        numbers.append(row_number)
                    else:
                        last_partial = (row_number, record)
                        quarantined.append(
                            Quarantine(
                                row_number,
                                raw_json({f"field_{i + 1}": v for i, v in enumerate(record)}),
                                "malformed_row",
                                clip(
                                    f"{name} row {row_number} has {len(record)} field(s) but the header has "
                                    f"{width} ({', '.join(columns)}); fix the row's commas or quoting.",
                                    DETAIL_MAX_CHARS,
                                ),
                            )
                        )
                    if len(good) >= chunk_rows:
                        break
            except csv.Error as exc:
                raise IngestFileError(
                    f"{name}: CSV unreadable at row {row_number} ({clip(str(exc), 150)}). Rows before it were kept."
                ) from exc
            bad = np.zeros(len(good), dtype=bool)
            if good and not _encodable("\x1f".join("\x1f".join(r) for r in good)):
                bad = np.fromiter(
                    (not _encodable("\x1f".join(r[j] for j in used)) for r in good),
                    dtype=bool,
                    count=len(good),
                )
                for i in np.flatnonzero(bad):
                    good[i] = [_escape_bytes(v) for v in good[i]]
            chunk = Chunk(
                frame=pd.DataFrame(good, columns=columns, dtype=object)
                if good
                else pd.DataFrame(columns=columns, dtype=object),
                row_numbers=np.asarray(numbers, dtype=np.int64),
                bad_encoding=bad,
                quarantined=quarantined,
                bytes_done=binary.tell(),
            )
            finished = len(good) < chunk_rows
            if may_be_truncated and finished:
                # The file does not end with a newline: its last row may have been cut off mid-way.
                last = row_number
                if last_partial is not None and last_partial[0] == last:
                    chunk.quarantined[-1].reason = "truncated_row"
                    chunk.quarantined[-1].detail = (
                        f"{name} row {last} is the file's last line and ends early ({len(last_partial[1])} of {width} "
                        "fields, no final newline): the file was cut off. Re-export the whole file."
                    )
                else:
                    chunk.truncated_at = last
            if pending is not None:
                if finished and not len(chunk.frame) and not chunk.quarantined:
                    # Nothing after the previous chunk: it holds the last row, so hand it the truncation flag.
                    pending.truncated_at = chunk.truncated_at
                    yield pending
                    pending = None
                    break
                yield pending
            pending = chunk
            if finished:
                break
        if pending is not None:
            yield pending
    finally:
        text.close()


def frame_chunks(frame: pd.DataFrame, first_row_number: int, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of an in-memory frame, numbered from ``first_row_number`` (column names normalized)."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower()).reset_index(drop=True)
    for start in range(0, max(len(frame), 1), chunk_rows):
        part = frame.iloc[start : start + chunk_rows]
        if part.empty:
            return
        yield Chunk(
            frame=part.reset_index(drop=True),
            row_numbers=np.arange(
                first_row_number + start, first_row_number + start + len(part), dtype=np.int64
            ),
            bad_encoding=np.zeros(len(part), dtype=bool),
            bytes_done=len(part),
        )
