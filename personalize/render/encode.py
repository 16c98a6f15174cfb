"""Encode rendered audio to Ogg Vorbis or Ogg Opus in memory, with title/artist/comment tags. No WAV is kept."""

from __future__ import annotations

import io
import json
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
    return buf.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int, dict[str, str]]:
    """(samples (frames, channels) float32, sample rate, tags) of encoded bytes: for checks and tests."""
    with soundfile.SoundFile(io.BytesIO(data)) as fh:
        samples = fh.read(dtype="float32", always_2d=True)
        return samples, fh.samplerate, fh.copy_metadata()
