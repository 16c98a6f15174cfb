"""The render stage (:func:`personalize.render.stage.run`): generated MIDI to loudness-normalized Ogg Vorbis/Opus in content-addressed storage."""

from personalize.render.batch import RenderJob, RenderOutcome, render_batch
from personalize.render.encode import decode, encode
from personalize.render.engine import RenderedAudio, render_midi
from personalize.render.errors import RenderRejected

__all__ = [
    "RenderJob",
    "RenderOutcome",
    "RenderRejected",
    "RenderedAudio",
    "decode",
    "encode",
    "render_batch",
    "render_midi",
]
