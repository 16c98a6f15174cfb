"""Audio delivery: media type from the codec, HTTP Range parsing (RFC 9110) and chunked reads via fsspec."""

from __future__ import annotations

import re
from collections.abc import Iterator

import fsspec

CHUNK_BYTES = 64 * 1024
INLINE_MAX_BYTES = 1024 * 1024  # a local read this small is faster inline than through a worker thread

# Ogg Vorbis and Ogg Opus files are both audio/ogg (RFC 5334, RFC 7845); the codecs parameter tells them apart.
_MEDIA_TYPES = {
    "vorbis": "audio/ogg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg; codecs=opus",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
}
_SUFFIX_CODEC = {
    ".ogg": "vorbis",
    ".oga": "vorbis",
    ".opus": "opus",
    ".flac": "flac",
    ".mp3": "mp3",
    ".wav": "wav",
}
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def media_type(codec: str | None, uri: str | None) -> str:
    """The Content-Type for a track's audio, from its codec column, else its file suffix."""
    if codec and codec.lower() in _MEDIA_TYPES:
        return _MEDIA_TYPES[codec.lower()]
    if uri:
        for suffix, name in _SUFFIX_CODEC.items():
            if uri.lower().endswith(suffix):
                return _MEDIA_TYPES[name]
    return "application/octet-stream"


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive byte positions for a single ``bytes=`` range, or None to send everything.

    Several ranges in one header, or a unit other than bytes, are answered with the whole file (a server
    may ignore Range). A syntactically valid range that lies past the end raises RangeNotSatisfiable.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last N bytes
        n = int(last_s)
        if n == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid range spec: ignore the header
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


class AudioObject:
    """One stored audio file, its filesystem resolved once per request (local folder or any fsspec URL)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.path = fsspec.core.url_to_fs(uri)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.local = protocol in ("file", "local")

    def size(self) -> int:
        """Size in bytes; raises FileNotFoundError when the object is gone."""
        return int(self.fs.size(self.path))

    def read(self, first: int, last: int) -> bytes:
        """Bytes ``first..last`` (inclusive) in one read."""
        with self.fs.open(self.path, "rb") as fh:
            fh.seek(first)
            return fh.read(last - first + 1)

    def chunks(self, first: int, last: int) -> Iterator[bytes]:
        """Bytes ``first..last`` (inclusive) in chunks, without loading them whole."""
        remaining = last - first + 1
        with self.fs.open(self.path, "rb") as fh:
            fh.seek(first)
            while remaining > 0:
                chunk = fh.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
