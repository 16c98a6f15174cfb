"""Audio delivery: what to send for one audio request (whole file, byte range or 304, RFC 9110), the media
type from the codec, and reads of the stored file via fsspec."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from fastapi import Response
from fastapi.responses import StreamingResponse

from personalize.api.errors import NotFound, RangeNotSatisfiable

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
# A byte position with more digits than this is no position in any file (10^18 bytes is an exabyte): such a
# range is answered 416 like any other that lies past the end, and never reaches int() (which refuses
# numbers over 4,300 digits).
POSITION_MAX_DIGITS = 18


def media_type(codec: str | None, uri: str | None) -> str:
    """The Content-Type for a track's audio, from its codec column, else its file suffix."""
    if codec and codec.lower() in _MEDIA_TYPES:
        return _MEDIA_TYPES[codec.lower()]
    if uri:
        for suffix, name in _SUFFIX_CODEC.items():
            if uri.lower().endswith(suffix):
                return _MEDIA_TYPES[name]
    return "application/octet-stream"


class _PastTheEnd(Exception):
    """The range starts past the last byte: nothing of it can be sent (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive byte positions for a single ``bytes=`` range, or None to send everything.

    Several ranges in one header, or a unit other than bytes, are answered with the whole file (a server
    may ignore Range). A syntactically valid range that lies past the end, or names a position of more
    than ``POSITION_MAX_DIGITS`` digits, raises ``_PastTheEnd``.

    >>> parse_range("bytes=-500", 2000), parse_range("bytes=100-", 2000), parse_range("bytes=0-1,5-9", 2000)
    ((1500, 1999), (100, 1999), None)
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if len(first_s) > POSITION_MAX_DIGITS or len(last_s) > POSITION_MAX_DIGITS:
        raise _PastTheEnd
    if not first_s:  # suffix range: the last N bytes
        n = int(last_s)
        if n == 0:
            raise _PastTheEnd
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid range spec: ignore the header
    if first >= size:
        raise _PastTheEnd
    return first, min(last, size - 1)


class AudioObject:
    """One stored audio file, its filesystem resolved once per request (local folder or any fsspec URL)."""

    def __init__(self, uri: str) -> None:
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


@dataclass(frozen=True)
class StoredAudio:
    """A track's audio as its row describes it; ``uri`` (from the database only) is the one path ever opened."""

    track_id: str
    uri: str
    sha256: str | None
    codec: str | None


@dataclass(frozen=True)
class AudioRequest:
    """The request headers that decide what to send: ``Range``, ``If-None-Match`` and ``If-Range``."""

    range: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None
    head: bool = False  # HEAD: the same status and headers, no body (nothing is read but the size)


def respond(stored: StoredAudio, asked: AudioRequest) -> Response:
    """The whole file (200), the asked byte range (206), or 304 when the client's copy is current.

    Raises NotFound when the file is gone from storage and RangeNotSatisfiable (with ``Content-Range:
    bytes */size``) when the range starts past the end.
    """
    audio = AudioObject(stored.uri)
    try:
        size = audio.size()
    except FileNotFoundError:
        raise NotFound(
            "audio_missing", f"The audio file of track {stored.track_id} is missing from storage."
        ) from None
    etag = f'"{stored.sha256 or hashlib.sha256(f"{stored.uri}|{size}".encode()).hexdigest()}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if asked.if_none_match and (
        asked.if_none_match.strip() == "*" or etag in [t.strip() for t in asked.if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    # If-Range names the version the client holds part of: a range of another version would corrupt it.
    wanted = asked.range if (asked.if_range is None or asked.if_range.strip() == etag) else None
    try:
        span = parse_range(wanted, size)
    except _PastTheEnd:
        shown = asked.range if len(asked.range or "") <= 80 else f"{(asked.range or '')[:60]}..."
        raise RangeNotSatisfiable(
            "range_not_satisfiable",
            f"The range {shown!r} lies outside the file ({size} bytes): ask for bytes=0-{size - 1} or part of it.",
            headers={"Content-Range": f"bytes */{size}", **headers},
        ) from None
    if span is None:
        first, last, status = 0, size - 1, 200
    else:
        (first, last), status = span, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    content_type = media_type(stored.codec, stored.uri)
    if asked.head:
        return Response(status_code=status, headers=headers, media_type=content_type)
    if audio.local and last - first < INLINE_MAX_BYTES:
        return Response(audio.read(first, last), status_code=status, headers=headers, media_type=content_type)
    # Large or remote reads stream chunk by chunk from a worker thread, never blocking the event loop.
    return StreamingResponse(
        audio.chunks(first, last), status_code=status, headers=headers, media_type=content_type
    )
