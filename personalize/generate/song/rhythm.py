"""How many notes each bar of a melody gets: counted from the corpus, asked of the song model bar by bar.

The song model reads a ``NOTES_<n>`` token at the head of every bar (:mod:`personalize.generate.song.tokens`)
and has learned to write that many notes there. This module decides the ``n``: for a section of a song in
a given style, meter and density bin it draws each bar's count from the counts that bars at the same
place in a four-bar phrase have in training pieces of that style, meter and bin (a phrase's last bar is
sparser: it lands), then moves the counts a note at a time, on bars drawn in proportion to their count,
until the section's notes per quarter equal what the song asks for. What comes out sounds like the corpus's
rhythm (busy and held bars where the corpus has them) and has exactly the asked density.

Counts are kept for every (style, meter, density bin, bar of the phrase); a combination the corpus lacks
falls back to the same style and meter with any bin, then to any piece, scaled to the aim.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.generate.song import tokens as S
from personalize.music.controls import density_bin

PHRASE = 4  # bars of a phrase: counts are kept by the bar's place in it


def _key(style: str, meter: str, bin_: int | str) -> str:
    return f"{style}|{meter}|{bin_}"


@dataclass
class BarCounts:
    """Histograms of notes per bar: ``table[key][place]`` counts bars with 0..16 notes (16: 16 or more)."""

    table: dict[str, list[list[float]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, pieces: Iterable[object]) -> BarCounts:
        """Count the top line of corpus pieces (``parts``, ``bar_ticks``, ``n_bars``, ``meter``), each piece
        under its style (a single line is a tune, several parts a chorale) and its own density bin."""
        n = S.MAX_NOTES_TOKEN + 1
        table: dict[str, np.ndarray] = {}
        for piece in pieces:
            parts = piece.parts  # type: ignore[attr-defined]
            if not parts or not parts[0]:
                continue
            line, bar_ticks, n_bars = parts[0], piece.bar_ticks, piece.n_bars  # type: ignore[attr-defined]
            style = "chorale" if len(parts) > 1 else "tune"
            quarters = n_bars * bar_ticks / S.TICKS_PER_QUARTER
            bin_ = density_bin(len(line) / max(quarters, 1e-9))
            per_bar = np.bincount([min(o // bar_ticks, n_bars - 1) for o, _, _ in line], minlength=n_bars)
            for key in (_key(style, piece.meter, bin_), _key(style, piece.meter, "any"), "any"):  # type: ignore[attr-defined]
                hist = table.setdefault(key, np.zeros((PHRASE, n)))
                for b, count in enumerate(per_bar):
                    hist[b % PHRASE, min(int(count), n - 1)] += 1
        return cls({k: v.tolist() for k, v in table.items()})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"phrase": PHRASE, "table": self.table}))

    @classmethod
    def load(cls, path: Path) -> BarCounts:
        data = json.loads(Path(path).read_text())
        return cls({k: v for k, v in data["table"].items()})

    def _histogram(self, style: str, meter: str, bin_: int) -> np.ndarray:
        for key in (_key(style, meter, bin_), _key(style, meter, "any"), "any"):
            if key in self.table and np.asarray(self.table[key]).sum() >= 8 * PHRASE:
                return np.asarray(self.table[key], dtype=float)
        # No counts at all (a corpus without this vocabulary): every count alike, the aim decides.
        return np.ones((PHRASE, S.MAX_NOTES_TOKEN + 1))

    def typical(self, style: str, meter: str, bin_: int) -> float | None:
        """Mean notes per bar of the corpus's bars of this style, meter and density bin; None where the
        corpus has too few of them (a fallback table belongs to no bin, so says nothing of its density)."""
        table = self.table.get(_key(style, meter, bin_))
        if table is None:
            return None
        hist = np.asarray(table, dtype=float)
        if hist.sum() < 8 * PHRASE:
            return None
        return float((hist * np.arange(hist.shape[1])).sum() / hist.sum())

    def draw(
        self,
        style: str,
        meter: str,
        bin_: int,
        n_bars: int,
        per_bar: float,
        rng: np.random.Generator,
        most: int = S.MAX_NOTES_TOKEN,
        fixed: Sequence[int | None] = (),
    ) -> list[int]:
        """Counts for ``n_bars`` bars with ``per_bar`` notes a bar on average (rounded over the section).

        ``fixed[b]``, where given, is a bar whose count is already known (a bar copied from an earlier
        section): it is kept and counts toward the aim. Counts stay within 0..``most``."""
        hist = self._histogram(style, meter, bin_)
        counts = []
        for b in range(n_bars):
            known = fixed[b] if b < len(fixed) else None
            if known is not None:
                counts.append(int(known))
                continue
            p = hist[b % PHRASE] / hist[b % PHRASE].sum()
            counts.append(int(rng.choice(len(p), p=p)))
        free = [b for b in range(n_bars) if not (b < len(fixed) and fixed[b] is not None)]
        total = round(per_bar * n_bars)
        # Move one note at a time, on a free bar drawn in proportion to its count, so the shape the draw
        # gave (held bars stay held, busy bars carry the change) survives the scaling.
        for _ in range(4 * S.MAX_NOTES_TOKEN * max(1, n_bars)):
            gap = total - sum(counts)
            room = [b for b in free if (counts[b] < most if gap > 0 else counts[b] > 1)]
            if gap == 0 or not room:
                break
            weight = np.array([counts[b] + (1.0 if gap > 0 else 0.0) for b in room])
            b = room[int(rng.choice(len(room), p=weight / weight.sum()))]
            counts[b] += 1 if gap > 0 else -1
        return counts
