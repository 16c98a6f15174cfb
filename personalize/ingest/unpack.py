"""Files as people have them: a compressed file (.gz, .bz2, .zst, or a .zip holding one data file) is unpacked
to a temporary plain copy, and a text file's encoding is detected (or given), so the readers only ever see a
plain file and every message still names the file the user gave."""

from __future__ import annotations

import bz2
import codecs
import gzip
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from personalize.ingest.report import IngestFileError

MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"))
COMPRESSED_SUFFIXES = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".zip": "zip",
}
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".json", ".jsonl", ".ndjson")
_SAMPLE_BYTES = 1 << 20
CHAOS_MARGIN = 0.1  # charset-normalizer's "mess" ratio (0 clean .. 1): how much worse cp1252 may read
# Names of the files in Spotify's and ListenBrainz's export zips
EXPORT_MEMBER = re.compile(r"Streaming_?History|endsong_\d|(^|/)listens/", re.IGNORECASE)


@dataclass
class InputFile:
    """A file to read: ``path`` is plain (the file itself, or an unpacked temporary copy); ``name`` is what
    the user gave, for messages and as the default source."""

    name: Path
    path: Path
    compression: str | None = None
    member: str | None = None  # the file inside a zip


def compression_of(path: Path) -> str | None:
    """``gzip``, ``bz2``, ``zstd`` or ``zip`` from the file's first bytes; None for a plain file."""
    with path.open("rb") as fh:
        head = fh.read(4)
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return None


def _stream(path: Path, compression: str):  # type: ignore[no-untyped-def]
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)


def zip_members(path: Path, suffixes: tuple[str, ...] = DATA_SUFFIXES) -> list[str]:
    """Names of the data files inside a zip (folders and other files left out), in archive order."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [
                i.filename
                for i in archive.infolist()
                if not i.is_dir()
                and Path(i.filename).suffix.lower() in suffixes
                and "__MACOSX" not in i.filename
            ]
    except zipfile.BadZipFile as exc:
        raise IngestFileError(f"{path}: not a readable zip file ({exc}); copy or download it again.") from exc


@contextmanager
def open_input(path: Path, member: str | None = None) -> Iterator[InputFile]:
    """``path`` as a plain file (see :class:`InputFile`); a temporary copy is removed on exit.

    A zip must hold exactly one data file, unless ``member`` names the one to read. Raises
    :class:`IngestFileError` for a corrupt or cut-off archive (nothing of it is read then).
    """
    path = Path(path)
    compression = compression_of(path)
    if compression is None:
        yield InputFile(name=path, path=path)
        return
    if compression == "zip" and member is None:
        members = zip_members(path)
        if any(EXPORT_MEMBER.search(m) for m in members):
            raise IngestFileError(
                f"{path}: this zip is a listening-history export, not a file of events. Import it with "
                "`personalize ingest spotify FILE` (or `listenbrainz`)."
            )
        if len(members) != 1:
            listed = ", ".join(members[:8]) + (f" and {len(members) - 8} more" if len(members) > 8 else "")
            raise IngestFileError(
                f"{path}: the zip holds {len(members)} data files ({listed or 'none'}); "
                "unpack it and ingest the files one by one."
            )
        member = members[0]
    inner = member or (path.stem if path.suffix.lower() in COMPRESSED_SUFFIXES else path.name)
    folder = Path(tempfile.mkdtemp(prefix="personalize-unpack-"))
    plain = folder / Path(inner).name
    try:
        try:
            if compression == "zip":
                with zipfile.ZipFile(path) as archive, archive.open(member) as src, plain.open("wb") as dst:  # type: ignore[arg-type]
                    shutil.copyfileobj(src, dst, 1 << 20)
            else:
                with _stream(path, compression) as src, plain.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise IngestFileError(
                f"{path}: the {compression} data is corrupt or cut off ({type(exc).__name__}: {exc}); "
                "nothing of it was ingested. Copy or download the file again."
            ) from exc
        yield InputFile(name=path, path=plain, compression=compression, member=member)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def detect_encoding(path: Path) -> tuple[str, bool]:
    """The text encoding of ``path`` and whether it was guessed: UTF-8 (with or without a BOM) and UTF-16
    with a BOM are certain; anything else is charset-normalizer's best guess from the first megabyte and
    the last 64 KiB, Windows-1252 when it reads nearly as well or there is no guess (a file with NUL bytes is read as UTF-8, so
    the reader refuses it as binary)."""
    with path.open("rb") as fh:
        head = fh.read(_SAMPLE_BYTES)
        size = fh.seek(0, 2)
        tail = b""
        if size > _SAMPLE_BYTES:
            fh.seek(max(_SAMPLE_BYTES, size - 65536))
            tail = fh.read()
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", False
    if b"\x00" in head[:4096]:
        return "utf-8-sig", False  # binary, or UTF-16 without a BOM: the reader refuses it with a reason
    if _is_utf8(head) and _is_utf8(tail, start_may_split=True):
        return "utf-8-sig", False
    text = head.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    if sum(ord(ch) > 0x7F for ch in text) - bad > 2 * bad:
        return "utf-8-sig", False  # UTF-8 with a few bad bytes: those rows are flagged, the rest is read
    from charset_normalizer import from_bytes

    results = from_bytes(head + b"\n" + tail)
    best = results.best()
    if best is None:
        return "cp1252", True  # no confident guess: Windows-1252 reads nearly every byte; --encoding to say
    # Western text scores about the same in several single-byte code pages (cp1250 reads "è" as "č",
    # ISO 8859-14 "°" as "Ḟ", hardly less plausible to the detector): when Windows-1252, what spreadsheets
    # on most PCs write, reads the sample nearly as plausibly as the best guess, it wins.
    close = [m.encoding for m in results if m.chaos <= best.chaos + CHAOS_MARGIN]
    return ("cp1252" if "cp1252" in close else best.encoding), True


def _is_utf8(data: bytes, start_may_split: bool = False) -> bool:
    if start_may_split:
        # a tail sample may begin inside a character: skip continuation bytes
        i = 0
        while i < min(3, len(data)) and 0x80 <= data[i] < 0xC0:
            i += 1
        data = data[i:]
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)  # a cut-off last character is fine
        return True
    except UnicodeDecodeError:
        return False
