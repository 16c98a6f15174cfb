"""A melody prior counted from the corpus, fused with the Transformer's pitch choices while decoding.

Shallow fusion: when the melody model picks a pitch, its logits get ``weight x log P_prior(pitch)`` added,
where the prior is two small tables counted in the training melodies:

- ``interval``: P(next melodic interval | previous interval), intervals clipped to +-12 semitones (how
  melodies move: mostly steps, a leap usually turns back);
- ``chord_tone``: P(the note is a tone of the chord sounding under it | metric position: downbeat, other
  beat, off the beat) (where melodies meet the harmony).

Both tables are counted over all training melodies and again per style (``chorale``: the chorales'
soprano lines; ``tune``: the fiddle tunes); a request is steered by its own style's tables
(:meth:`MelodyPrior.for_style`), so a hymn-like song melody moves by step as the chorales do.

Why: the Transformer trained on this machine's CPU learns the chords and the form it is given, but a
small model with a few million training tokens has not yet learned how melodies move from note to note
(teacher-forced, it gives the corpus's stepwise continuations 23 % of its probability, where the corpus
takes them 58 % of the time). The counted prior carries that local knowledge; the model still chooses every
onset, length and bar end, and every pitch together with the prior. ``weight=0`` turns it off; the model
card gives the figures with and without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.generate.song.tokens import counted_by_style
from personalize.music.chords import Chord, estimate_chords, spans_per_bar

MAX_INTERVAL = 12
STRENGTHS = ("downbeat", "beat", "offbeat")


def strength(pos: int, bar_ticks: int, beat_ticks: int) -> int:
    """0 on the downbeat, 1 on another beat, 2 off the beat."""
    if pos == 0:
        return 0
    return 1 if pos % beat_ticks == 0 else 2


def beat_ticks_of(meter: str, ticks_per_quarter: int = 4) -> int:
    num, den = (int(x) for x in meter.split("/"))
    compound = den == 8 and num % 3 == 0 and num > 3
    return 3 * ticks_per_quarter // 2 if compound else 4 * ticks_per_quarter // den


def _clip(interval: int) -> int:
    return int(np.clip(interval, -MAX_INTERVAL, MAX_INTERVAL)) + MAX_INTERVAL


@dataclass
class MelodyPrior:
    interval: np.ndarray  # (25, 25): log P(next interval | previous interval), index = interval + 12
    chord_tone: np.ndarray  # (3, 2): log P(not chord tone, chord tone | strength)
    # The same two tables counted in each style's melodies alone (a chorale's soprano moves by step seven
    # times in ten, a fiddle tune's under six): a request of that style is steered by its own.
    styles: dict[str, MelodyPrior] = field(default_factory=dict)

    def for_style(self, style: str) -> MelodyPrior:
        """The prior of ``style``'s melodies, or the pooled one where that style was not counted."""
        return self.styles.get(style, self)

    @classmethod
    def fit(cls, pieces: Iterable[object], smoothing: float = 1.0, per_style: bool = True) -> MelodyPrior:
        """Count the top line of corpus pieces (``parts``, ``bar_ticks``, ``n_bars``, ``meter``,
        ``found_key_pc``, ``found_mode``, 4 ticks a quarter) against chords estimated as the tokenizer does;
        with ``per_style``, each style's pieces are counted on their own too."""
        pooled, styles = counted_by_style(lambda group: cls._count(group, smoothing), pieces, per_style)
        pooled.styles = styles
        return pooled

    @classmethod
    def _count(cls, pieces: Iterable[object], smoothing: float) -> MelodyPrior:
        n = 2 * MAX_INTERVAL + 1
        iv = np.full((n, n), smoothing)
        ct = np.full((len(STRENGTHS), 2), smoothing)
        for piece in pieces:
            line = sorted(piece.parts[0]) if piece.parts else []  # type: ignore[attr-defined]
            if len(line) < 3:
                continue
            spans = spans_per_bar(piece.meter)  # type: ignore[attr-defined]
            span_ticks = piece.bar_ticks // spans  # type: ignore[attr-defined]
            chords = estimate_chords(
                piece.parts,  # type: ignore[attr-defined]
                piece.found_key_pc,  # type: ignore[attr-defined]
                piece.found_mode,  # type: ignore[attr-defined]
                span_ticks,
                piece.n_bars * spans,  # type: ignore[attr-defined]
            )
            beat = beat_ticks_of(piece.meter)  # type: ignore[attr-defined]
            pitches = [p for _, _, p in line]
            for k in range(2, len(pitches)):
                iv[_clip(pitches[k - 1] - pitches[k - 2]), _clip(pitches[k] - pitches[k - 1])] += 1
            for onset, _, pitch in line:
                s = onset // span_ticks
                if s >= len(chords):
                    continue
                tones = chords[s].pitch_classes(piece.found_key_pc)  # type: ignore[attr-defined]
                pos = onset % piece.bar_ticks  # type: ignore[attr-defined]
                ct[strength(pos, piece.bar_ticks, beat), int(pitch % 12 in tones)] += 1  # type: ignore[attr-defined]
        return cls(np.log(iv / iv.sum(axis=1, keepdims=True)), np.log(ct / ct.sum(axis=1, keepdims=True)))

    def _tables(self) -> dict[str, object]:
        return {
            "interval": np.round(self.interval, 5).tolist(),
            "chord_tone": np.round(self.chord_tone, 5).tolist(),
        }

    def save(self, path: Path) -> None:
        data = self._tables()
        if self.styles:
            data["styles"] = {name: prior._tables() for name, prior in self.styles.items()}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> MelodyPrior:
        """A saved prior; one saved before the styles were counted apart steers every style alike."""
        data = json.loads(Path(path).read_text())
        styles = {
            name: cls(np.asarray(t["interval"]), np.asarray(t["chord_tone"]))
            for name, t in data.get("styles", {}).items()
        }
        return cls(np.asarray(data["interval"]), np.asarray(data["chord_tone"]), styles)

    def log_probs(
        self,
        candidates: np.ndarray,
        previous: int | None,
        before: int | None,
        chord: Chord | None,
        metric: int,
    ) -> np.ndarray:
        """Prior log-probability (up to a constant) of each candidate pitch (relative to the tonic), given
        the previous two melody pitches (None at the start) and the chord and metric position of the note."""
        out = np.zeros(len(candidates))
        if previous is not None:
            row = (
                self.interval[_clip(previous - before)] if before is not None else self.interval.mean(axis=0)
            )
            out += row[np.clip(candidates - previous, -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL]
        if chord is not None:
            tones = np.isin(candidates % 12, chord.pitch_classes(0))
            out += np.where(tones, self.chord_tone[metric, 1], self.chord_tone[metric, 0])
        return out
