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

Each (style, meter, bin) also keeps the spread of its pieces' own rates (notes per bar, as quantiles), so a
song can be as busy as one corpus piece of its bin drawn at random (:meth:`BarCounts.draw_rate`) rather than
as the bin's average: one jig of the bin runs in sixteenths, another in plain eighths. And it keeps how
long its pieces' last notes are (:meth:`BarCounts.draw_last`): a reel stops on a quarter, a 2/4 reel in
sixteenths on an eighth.
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
RATE_QUANTILES = 21  # quantiles kept of the pieces' rates per (style, meter, bin)
MIN_RATE_PIECES = 8  # a bin needs this many pieces before its spread is used
# A bin's histogram mixes its pieces: a reel in running eighths and one with rolls in sixteenths. Drawn bar by
# bar from it, a song's counts spread as the whole bin's do (a median standard deviation of 1.5 notes a bar
# in 2/2 reels, 1.0 in chorales) where one corpus piece's spread less (0.85 and 0.85): bars of one piece
# keep to its own pace. Each bar's draw is therefore weighed by a Gaussian of this width (in notes) around
# its place's count at the song's pace, by style: 0.8 in planned 4/4 chorales and band songs (band lab AUC
# 0.884 / 0.882 -> 0.864 / 0.839, seeds 0 / 1). Dance tunes are left to the bin's mix: at 1.0 their spread
# matched the reels' (0.86) but their note lengths grew too even (duration entropy 0.67 against the
# corpus's 0.72; tune lab 0.764 / 0.760 -> 0.801 / 0.792).
COUNT_SPREAD = {"tune": 0.0, "chorale": 1.5}


def _key(style: str, meter: str, bin_: int | str) -> str:
    return f"{style}|{meter}|{bin_}"


@dataclass
class BarCounts:
    """Histograms of notes per bar: ``table[key][place]`` counts bars with 0..16 notes (16: 16 or more)."""

    table: dict[str, list[list[float]]] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)  # key -> quantiles of pieces' notes per bar
    last: dict[str, list[int]] = field(
        default_factory=dict
    )  # key -> pieces whose last note lasts 1..24 ticks

    @classmethod
    def fit(cls, pieces: Iterable[object]) -> BarCounts:
        """Count the top line of corpus pieces (``parts``, ``bar_ticks``, ``n_bars``, ``meter``), each piece
        under its style (a single line is a tune, several parts a chorale) and its own density bin."""
        n = S.MAX_NOTES_TOKEN + 1
        table: dict[str, np.ndarray] = {}
        rates: dict[str, list[float]] = {}
        last: dict[str, np.ndarray] = {}
        for piece in pieces:
            parts = piece.parts  # type: ignore[attr-defined]
            if not parts or not parts[0]:
                continue
            line, bar_ticks, n_bars = parts[0], piece.bar_ticks, piece.n_bars  # type: ignore[attr-defined]
            style = "chorale" if len(parts) > 1 else "tune"
            quarters = n_bars * bar_ticks / S.TICKS_PER_QUARTER
            bin_ = density_bin(len(line) / max(quarters, 1e-9))
            per_bar = np.bincount([min(o // bar_ticks, n_bars - 1) for o, _, _ in line], minlength=n_bars)
            rates.setdefault(_key(style, piece.meter, bin_), []).append(len(line) / max(n_bars, 1))  # type: ignore[attr-defined]
            final = int(np.clip(max(line)[1], 1, S.MAX_BAR_TICKS))
            last.setdefault(_key(style, piece.meter, bin_), np.zeros(S.MAX_BAR_TICKS, dtype=int))[
                final - 1
            ] += 1  # type: ignore[attr-defined]
            # A piece that opens on an upbeat starts with a bar of a note or two after a rest. A song's bars
            # are whole, so that bar is not counted: in the chorales' 4/4 pieces it was half of the one-note
            # bars, and asked of a song's section it opened with three beats' rest and an upbeat,
            # right after the phrase before had led in with a pickup of its own.
            upbeat = min(o for o, _, _ in line) > 0
            for key in (_key(style, piece.meter, bin_), _key(style, piece.meter, "any"), "any"):  # type: ignore[attr-defined]
                hist = table.setdefault(key, np.zeros((PHRASE, n)))
                for b, count in enumerate(per_bar):
                    if not (b == 0 and upbeat):
                        hist[b % PHRASE, min(int(count), n - 1)] += 1
        spread = {
            k: np.round(np.quantile(v, np.linspace(0.0, 1.0, RATE_QUANTILES)), 4).tolist()
            for k, v in sorted(rates.items())
            if len(v) >= MIN_RATE_PIECES
        }
        endings = {k: v.tolist() for k, v in sorted(last.items()) if v.sum() >= MIN_RATE_PIECES}
        return cls({k: v.tolist() for k, v in table.items()}, spread, endings)

    def save(self, path: Path) -> None:
        data = {"phrase": PHRASE, "table": self.table, "rates": self.rates, "last": self.last}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> BarCounts:
        """Saved counts; a file saved before the rates' spread was kept draws every song at its bin's mean."""
        data = json.loads(Path(path).read_text())
        return cls({k: v for k, v in data["table"].items()}, data.get("rates", {}), data.get("last", {}))

    def draw_last(self, style: str, meter: str, bin_: int, rng: np.random.Generator) -> int | None:
        """The length in ticks of a piece's last note, drawn from the corpus's pieces of this style, meter
        and bin; None where too few were counted."""
        counts = np.asarray(self.last.get(_key(style, meter, bin_), ()), dtype=float)
        if not counts.sum():
            return None
        return int(rng.choice(len(counts), p=counts / counts.sum())) + 1

    def draw_rate(self, style: str, meter: str, bin_: int, rng: np.random.Generator) -> float | None:
        """Notes per bar of one corpus piece of this style, meter and bin drawn at random (interpolated
        between the kept quantiles); the bin's mean (:meth:`typical`) where its spread was not kept."""
        quantiles = self.rates.get(_key(style, meter, bin_))
        if not quantiles:
            return self.typical(style, meter, bin_)
        return float(np.interp(rng.random(), np.linspace(0.0, 1.0, len(quantiles)), quantiles))

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
        sizes = np.arange(hist.shape[1])
        places = hist / hist.sum(axis=1, keepdims=True)
        means = places @ sizes  # each place's mean count in the bin: a landing bar holds fewer notes
        pace = per_bar / max(float(means.mean()), 1e-9)
        spread = COUNT_SPREAD.get(style, 0.0)
        counts = []
        for b in range(n_bars):
            known = fixed[b] if b < len(fixed) else None
            if known is not None:
                counts.append(int(known))
                continue
            p = places[b % PHRASE]
            if spread > 0:
                near = p * np.exp(-0.5 * ((sizes - means[b % PHRASE] * pace) / spread) ** 2)
                p = near / near.sum() if near.sum() > 0 else p
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
