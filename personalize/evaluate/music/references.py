"""Corpus pieces as the music evaluation's references, one texture at a time, written as MIDI like any track.

The corpus holds two kinds of music: four-part Bach chorales and solo fiddle tunes (O'Neill, Ryan). They
serve the product's textures as follows:

- ``chorale``: a chorale with its four voices;
- ``tune``: a fiddle tune's melody;
- ``band``: a chorale's outer voices (soprano and bass, every other piece with the alto as a middle line)
  plus the product's drum part. The corpus has no band music; what the metrics read of a band track is its
  pitched lines (melody, bass, a middle part), and the chorale's outer voices are the closest licensed
  example of a melody over a bass.

A piece longer than ``max_bars`` is cut to its last ``max_bars`` bars (on a bar line), so its ending, and
the cadence there, is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import pretty_midi

from personalize.corpus import Piece
from personalize.generate import Controls
from personalize.music.score import TEXTURES, Note, meter_ticks, score_to_midi

CHORALE_COLLECTIONS = ("bach_chorales",)
TUNE_COLLECTIONS = ("oneills1850", "ryans_mammoth")
MAX_BARS = 32
MIN_BARS = 6
DEFAULT_TEMPO_BPM = 100.0


@dataclass
class Track:
    """One piece of one system, with what the metrics need: texture, key, meter and length."""

    system: str  # corpus | corpus_train | generated | random_in_scale | markov
    texture: str
    key_pc: int
    mode: str
    meter: str
    bars: int
    midi: pretty_midi.PrettyMIDI
    source: str  # the corpus piece id, or the request's controls
    group: str = ""  # the corpus group (versions of one piece share it); empty for generated pieces


def _last_bars(
    parts: list[list[Note]], bar_ticks: int, n_bars: int, max_bars: int
) -> tuple[list[list[Note]], int]:
    if n_bars <= max_bars:
        return parts, n_bars
    start = (n_bars - max_bars) * bar_ticks
    cut = [[(o - start, d, p) for o, d, p in part if o >= start] for part in parts]
    return cut, max_bars


def texture_parts(piece: Piece, texture: str, index: int) -> list[list[Note]] | None:
    """The lines of a corpus piece that stand for ``texture`` (see the module docstring), or None.

    ``piece`` is in the corpus's first view (``load_pieces(view="v1")``): monophonic lines of
    ``(onset, duration, pitch)`` in sixteenths. Other collections (madrigals, quartets) stand for no
    texture yet.
    """
    parts = [list(p) for p in piece.parts if p]
    chorale = piece.collection in CHORALE_COLLECTIONS
    if texture == "chorale":
        return parts if chorale and len(parts) == 4 else None
    if texture == "tune":
        return parts[:1] if piece.collection in TUNE_COLLECTIONS and len(parts) == 1 else None
    if texture == "band":
        if not chorale or len(parts) != 4:
            return None
        return [parts[0], parts[1], parts[3]] if index % 2 else [parts[0], parts[3]]
    raise ValueError(f"unknown texture {texture!r}: choose from {', '.join(TEXTURES)}")


def corpus_tracks(
    pieces: list[object],
    texture: str,
    system: str = "corpus",
    max_bars: int = MAX_BARS,
    limit: int | None = None,
) -> list[Track]:
    """Corpus pieces standing for ``texture`` as tracks (pieces of other textures, fewer than ``MIN_BARS``
    bars or a meter off the sixteenth grid are skipped), at most ``limit`` of them, in the given order."""
    from personalize.generate.drums import drum_part

    out: list[Track] = []
    for i, piece in enumerate(pieces):
        if limit is not None and len(out) >= limit:
            break
        parts = texture_parts(piece, texture, i)
        if parts is None or piece.n_bars < MIN_BARS:
            continue
        meter = piece.meter
        try:
            bar_ticks = meter_ticks(meter)[0]
        except ValueError:
            continue
        if bar_ticks != piece.bar_ticks:
            continue
        parts, bars = _last_bars(parts, bar_ticks, piece.n_bars, max_bars)
        if any(not p for p in parts):
            continue
        tempo = float(piece.tempo_bpm or DEFAULT_TEMPO_BPM)
        pm = score_to_midi(parts, [0] * len(parts), tempo, meter)
        if texture == "band":
            pm.instruments.append(drum_part(meter, tempo, 1, bars, i))
        group = piece.group or piece.piece_id
        out.append(Track(system, texture, piece.key_pc, piece.mode, meter, bars, pm, piece.piece_id, group))
    return out


def track_from_request(system: str, texture: str, controls: Controls, midi: pretty_midi.PrettyMIDI) -> Track:
    """A generated (or baseline) piece as a track, described by the request that made it."""
    return Track(
        system,
        texture,
        controls.key_pc,
        controls.mode,
        controls.meter,
        controls.bars,
        midi,
        controls.describe(),
    )
