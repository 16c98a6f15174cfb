"""Does a melody copy its training data? The longest run of bars it shares with any training piece.

Two bars are "the same" when their notes have the same onsets, lengths and pitches relative to the first
note of the run, so a copy in another key is still a copy (the search is transposition-invariant). The
index holds every two-bar window of every training melody as a hash; a generated melody's windows are
looked up, and consecutive hits in the same piece at consecutive bars chain into longer runs.

Real tunes share short figures (a cadence, a two-bar motif), so the anchor is the same search run for
held-out corpus pieces against the training set; the verification gate refuses a melody that shares more
than ``MAX_SHARED_BARS`` consecutive bars with any one training piece.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_SHARED_BARS = 2
Line = Sequence[tuple[int, int, int]]  # (onset tick, duration ticks, MIDI pitch)


def _bars(line: Line, bar_ticks: int, n_bars: int) -> list[list[tuple[int, int, int]]]:
    bars: list[list[tuple[int, int, int]]] = [[] for _ in range(n_bars)]
    for onset, dur, pitch in line:
        b = onset // bar_ticks
        if 0 <= b < n_bars:
            bars[b].append((onset - b * bar_ticks, dur, pitch))
    return bars


def window_hashes(line: Line, bar_ticks: int, n_bars: int) -> np.ndarray:
    """One 64-bit hash per two-bar window starting at each bar (0 where the window has no notes)."""
    bars = _bars(sorted(line), bar_ticks, n_bars)
    out = np.zeros(max(0, n_bars - 1), dtype=np.int64)
    for b in range(n_bars - 1):
        notes = bars[b] + [(o + bar_ticks, d, p) for o, d, p in bars[b + 1]]
        if len(notes) < 2:
            continue
        ref = notes[0][2]
        key = ";".join(f"{o},{d},{p - ref}" for o, d, p in notes).encode()
        out[b] = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True)
    return out


@dataclass
class OriginalityIndex:
    """Every two-bar window of the training melodies: sorted hashes with the piece and bar of each."""

    hashes: np.ndarray  # int64, sorted
    pieces: np.ndarray  # int32, the piece each hash comes from
    bars: np.ndarray  # int32, its first bar
    names: list[str]

    @classmethod
    def build(cls, melodies: Iterable[tuple[str, Line, int, int]]) -> OriginalityIndex:
        """From ``(name, line, bar_ticks, n_bars)`` per training melody."""
        hs, ps, bs, names = [], [], [], []
        for k, (name, line, bar_ticks, n_bars) in enumerate(melodies):
            h = window_hashes(line, bar_ticks, n_bars)
            keep = np.flatnonzero(h)
            hs.append(h[keep])
            ps.append(np.full(len(keep), k, dtype=np.int32))
            bs.append(keep.astype(np.int32))
            names.append(name)
        hashes = np.concatenate(hs) if hs else np.zeros(0, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        pieces = np.concatenate(ps)[order] if ps else np.zeros(0, dtype=np.int32)
        bars = np.concatenate(bs)[order] if bs else np.zeros(0, dtype=np.int32)
        return cls(hashes[order], pieces, bars, names)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, hashes=self.hashes, pieces=self.pieces, bars=self.bars, names=np.array(self.names)
        )

    @classmethod
    def load(cls, path: Path) -> OriginalityIndex:
        data = np.load(path, allow_pickle=False)
        return cls(data["hashes"], data["pieces"], data["bars"], [str(n) for n in data["names"]])

    def _hits(self, h: int) -> list[tuple[int, int]]:
        lo, hi = np.searchsorted(self.hashes, h, "left"), np.searchsorted(self.hashes, h, "right")
        return list(zip(self.pieces[lo:hi].tolist(), self.bars[lo:hi].tolist(), strict=True))

    def longest_run(
        self, line: Line, bar_ticks: int, n_bars: int, exclude: str | None = None
    ) -> tuple[int, str | None]:
        """``(bars, piece name)`` of the longest run of consecutive bars ``line`` shares with one training
        piece (0 and None when no two-bar window matches). ``exclude`` skips a piece by name (a training
        piece searched against its own index)."""
        skip = self.names.index(exclude) if exclude in self.names else -1
        best, best_piece = 0, None
        runs: dict[tuple[int, int], int] = {}  # (piece, bar in piece) -> windows chained so far
        for h in window_hashes(line, bar_ticks, n_bars):
            current: dict[tuple[int, int], int] = {}
            if h:
                for piece, bar in self._hits(int(h)):
                    if piece == skip:
                        continue
                    length = runs.get((piece, bar - 1), 0) + 1
                    current[(piece, bar)] = length
                    if length + 1 > best:
                        best, best_piece = length + 1, self.names[piece]
            runs = current
        return best, best_piece
