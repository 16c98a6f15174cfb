"""Chords relative to a key: a small vocabulary, Roman-numeral names, and chord estimation from notes.

A :class:`Chord` is a root in semitones above the tonic plus a quality, so one progression serves every key
(``Chord(7, "dom7")`` is V7 in any major or minor key). Estimation (:func:`estimate_chords`) reads a piece's
notes span by span (a half bar or a bar) and picks the chord whose tones carry most of the span's sounding
time, with weight on notes that start on the span's downbeat and, in a multi-part texture, on the bass.
It works for a chorale (real four-part harmony) and gives an estimated harmony for a single-line tune.

>>> Chord(7, "dom7").roman("major"), Chord(9, "min").roman("major"), Chord(2, "dim").roman("minor")
('V7', 'vi', 'ii°')
>>> Chord(7, "maj").pitch_classes(key_pc=2)   # A major triad in D
(9, 1, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUALITIES = ("maj", "min", "dim", "dom7")
INTERVALS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "dom7": (0, 4, 7, 10)}
N_CHORDS = 12 * len(QUALITIES)  # every root x quality: the token vocabulary of chords
_NUMERALS = ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII")
_MINOR_NUMERALS = ("I", "bII", "II", "III", "#III", "IV", "#IV", "V", "VI", "#VI", "VII", "#VII")


@dataclass(frozen=True, order=True)
class Chord:
    """A chord relative to the tonic: ``root`` in semitones above it (0-11) and a quality."""

    root: int
    quality: str

    def pitch_classes(self, key_pc: int = 0) -> tuple[int, ...]:
        """Pitch classes (0 = C) of the chord in the key whose tonic is ``key_pc``, root first."""
        return tuple((key_pc + self.root + i) % 12 for i in INTERVALS[self.quality])

    @property
    def index(self) -> int:
        """0..N_CHORDS-1, the chord's token index."""
        return self.root * len(QUALITIES) + QUALITIES.index(self.quality)

    @classmethod
    def from_index(cls, index: int) -> Chord:
        return cls(int(index) // len(QUALITIES), QUALITIES[int(index) % len(QUALITIES)])

    def roman(self, mode: str) -> str:
        """Roman numeral in ``mode`` (``"major"``/``"minor"``): upper case for major, ° for diminished."""
        base = (_NUMERALS if mode == "major" else _MINOR_NUMERALS)[self.root % 12]
        if self.quality in ("min", "dim"):
            base = base.lower()
        return base + {"maj": "", "min": "", "dim": "°", "dom7": "7"}[self.quality]


# Chords estimation chooses among: the key's diatonic triads, the dominant seventh, and the secondary
# dominant of V (the chromatic chord cadences lean on most often in this repertoire).
DIATONIC: dict[str, tuple[Chord, ...]] = {
    "major": (
        Chord(0, "maj"), Chord(2, "min"), Chord(4, "min"), Chord(5, "maj"), Chord(7, "maj"),
        Chord(7, "dom7"), Chord(9, "min"), Chord(11, "dim"), Chord(2, "maj"),
    ),
    "minor": (
        Chord(0, "min"), Chord(2, "dim"), Chord(3, "maj"), Chord(5, "min"), Chord(7, "maj"),
        Chord(7, "dom7"), Chord(8, "maj"), Chord(10, "maj"), Chord(11, "dim"), Chord(2, "maj"),
    ),
}  # fmt: skip
TONIC = {"major": Chord(0, "maj"), "minor": Chord(0, "min")}
DOMINANT = Chord(7, "maj")
DOMINANT7 = Chord(7, "dom7")

# Small preferences between chords that fit a span equally well: the primary triads first.
_PRIOR = {0: 0.06, 7: 0.05, 5: 0.04}


def spans_per_bar(meter: str) -> int:
    """Harmonic rhythm used throughout: two chords a bar in duple meters, one in triple ones."""
    num = int(meter.split("/")[0])
    return 1 if num in (3, 9) else 2


def estimate_chords(
    parts: Sequence[Sequence[tuple[int, int, int]]],
    key_pc: int,
    mode: str,
    span_ticks: int,
    n_spans: int,
) -> list[Chord]:
    """One chord per span of ``span_ticks`` for notes given as ``(onset_tick, duration_tick, midi_pitch)``
    per part (parts ordered high to low, as the corpus stores them).

    A span without notes keeps the chord before it (the first span defaults to the tonic). The weight of a
    note is its sounding time inside the span, x1.5 when it starts on the span's first tick, and x2 in the
    lowest of two or more parts (the bass names the chord's root most often).
    """
    weights = np.zeros((n_spans, 12))
    lowest = len(parts) - 1
    for p, notes in enumerate(parts):
        bass_weight = 2.0 if len(parts) > 1 and p == lowest else 1.0
        for onset, dur, pitch in notes:
            end = onset + dur
            first, last = onset // span_ticks, (end - 1) // span_ticks
            for s in range(max(0, first), min(n_spans - 1, last) + 1):
                lo, hi = max(onset, s * span_ticks), min(end, (s + 1) * span_ticks)
                w = (hi - lo) / span_ticks * bass_weight
                if onset == s * span_ticks:
                    w *= 1.5
                weights[s, (pitch - key_pc) % 12] += w
    candidates = DIATONIC[mode]
    member = np.zeros((len(candidates), 12))
    for i, chord in enumerate(candidates):
        member[i, [(chord.root + k) % 12 for k in INTERVALS[chord.quality]]] = 1.0
    # A seventh chord must earn its fourth tone: without the seventh it is a plain triad.
    size_penalty = np.array([0.15 if len(INTERVALS[c.quality]) == 4 else 0.0 for c in candidates])
    prior = np.array([_PRIOR.get(c.root, 0.0) if c.quality != "dom7" else 0.0 for c in candidates])
    out: list[Chord] = []
    previous = TONIC[mode]
    for s in range(n_spans):
        total = weights[s].sum()
        if total <= 0:
            out.append(previous)
            continue
        share = weights[s] / total
        score = member @ share - 0.6 * ((1 - member) @ share) - size_penalty + prior
        score += np.array([0.04 if c == previous else 0.0 for c in candidates])
        previous = candidates[int(np.argmax(score))]
        out.append(previous)
    return out
