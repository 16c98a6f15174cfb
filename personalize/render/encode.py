"""Encode rendered audio to Ogg Vorbis or Ogg Opus in memory, with title/artist/comment tags. No WAV is kept.

The bytes are reproducible: the same audio and tags always give the same file. libsndfile picks the Ogg
stream serial number at random on every encode, so each page's serial is rewritten afterwards to one
derived from the file's content, and each page's CRC computed again (RFC 3533). Nothing else in the file
varies: no dates are written, and the encoders (libvorbis, libopus) add no random noise.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import soundfile
from scipy.signal import resample_poly

from personalize.render.engine import RenderedAudio

CODECS = {"ogg": ("OGG", "VORBIS", ".ogg"), "opus": ("OGG", "OPUS", ".opus")}
OPUS_RATE_HZ = 48_000  # Opus runs at 48 kHz (or a divisor); 44.1 kHz is not among its rates
BLOCK_FRAMES = 16_384  # libsndfile's Vorbis encoder has crashed on single very long writes: feed it blocks
TAGS = ("title", "artist", "album", "comment", "date", "genre", "software", "copyright")


def codec_rate_hz(codec: str, sample_rate_hz: int) -> int:
    """The sample rate a codec will be fed at: Opus needs 48 kHz, Vorbis keeps ``sample_rate_hz``."""
    _check_codec(codec)
    return OPUS_RATE_HZ if codec == "opus" else sample_rate_hz


def suffix_for(codec: str) -> str:
    _check_codec(codec)
    return CODECS[codec][2]


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}: use one of {', '.join(CODECS)}")


def encode(audio: RenderedAudio, codec: str = "ogg", metadata: dict[str, Any] | None = None) -> bytes:
    """Ogg Vorbis (``codec="ogg"``) or Ogg Opus (``"opus"``) bytes of ``audio``.

    ``metadata`` keys title/artist/album/comment/date/genre/software/copyright become Vorbis comments;
    a non-string value (such as the controls a track was generated with) is written as JSON.
    Audio at another rate than Opus's 48 kHz is resampled for Opus; render at 48 kHz to avoid it.
    """
    _check_codec(codec)
    fmt, subtype, _ = CODECS[codec]
    samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
    rate = audio.sample_rate_hz
    if codec == "opus" and rate != OPUS_RATE_HZ:
        g = np.gcd(OPUS_RATE_HZ, rate)
        samples = resample_poly(samples, OPUS_RATE_HZ // g, rate // g, axis=0).astype(np.float32)
        rate = OPUS_RATE_HZ
    buf = io.BytesIO()
    with soundfile.SoundFile(
        buf, "w", samplerate=rate, channels=samples.shape[1], format=fmt, subtype=subtype
    ) as fh:
        # tags must be set before the first audio block: Ogg writes its header pages then
        for key, value in (metadata or {}).items():
            if key not in TAGS or value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            setattr(fh, key, text)
        for start in range(0, len(samples), BLOCK_FRAMES):
            fh.write(samples[start : start + BLOCK_FRAMES])
    return with_content_serial(buf.getvalue())


OGG_HEADER_BYTES = 27  # capture pattern .. number of segments; the segment table follows
_SERIAL = slice(14, 18)
_CRC = slice(22, 26)
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(page: bytes | bytearray) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, MSB first, no initial value or final XOR) of
    ``page`` with its CRC field zeroed: zlib's reflected CRC-32 of the bit-reversed bytes, its initial
    value and final XOR cancelled out, bit-reversed back."""
    reflected = zlib.crc32(bytes(page).translate(_BIT_REVERSED)) ^ zlib.crc32(bytes(len(page)))
    return int(f"{reflected:032b}"[::-1], 2)


def ogg_pages(data: bytes | bytearray) -> list[tuple[int, int]]:
    """(start, end) of every page of an Ogg stream; raises ValueError where it is not one."""
    pages = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS" or pos + OGG_HEADER_BYTES > len(data):
            raise ValueError(f"no Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        end = (
            pos
            + OGG_HEADER_BYTES
            + n_segments
            + sum(data[pos + OGG_HEADER_BYTES : pos + OGG_HEADER_BYTES + n_segments])
        )
        if end > len(data):
            raise ValueError(f"the Ogg page at byte {pos} runs past the end of the data")
        pages.append((pos, end))
        pos = end
    return pages


def with_content_serial(data: bytes) -> bytes:
    """``data`` (one Ogg logical stream) with the stream serial number derived from its content.

    The serial is the first 4 bytes of the SHA-256 of the stream with every page's serial and CRC zeroed,
    so it depends only on the audio and tags; every page's CRC is computed again.
    """
    pages = ogg_pages(data)
    out = bytearray(data)
    for start, _ in pages:
        out[start + _SERIAL.start : start + _SERIAL.stop] = bytes(4)
        out[start + _CRC.start : start + _CRC.stop] = bytes(4)
    serial = hashlib.sha256(out).digest()[:4]
    for start, end in pages:
        out[start + _SERIAL.start : start + _SERIAL.stop] = serial
        out[start + _CRC.start : start + _CRC.stop] = struct.pack("<I", ogg_crc(out[start:end]))
    return bytes(out)


def decode(data: bytes) -> tuple[np.ndarray, int, dict[str, str]]:
    """(samples (frames, channels) float32, sample rate, tags) of encoded bytes: for checks and tests."""
    with soundfile.SoundFile(io.BytesIO(data)) as fh:
        samples = fh.read(dtype="float32", always_2d=True)
        return samples, fh.samplerate, fh.copy_metadata()
