"""Audio stage: generated MIDI to loudness-normalized Ogg Vorbis/Opus in content-addressed storage."""

from personalize.render.batch import RenderJob, RenderOutcome, render_batch
from personalize.render.encode import decode, encode
from personalize.render.engine import RenderedAudio, render_midi
from personalize.render.errors import RenderRejected
from personalize.render.stage import run

__all__ = [
    "RenderJob",
    "RenderOutcome",
    "RenderRejected",
    "RenderedAudio",
    "decode",
    "encode",
    "render_batch",
    "render_midi",
    "run",
]
