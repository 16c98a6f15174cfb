"""Training examples for the token models: random windows of corpus pieces with their control prefix.

Every example is drawn afresh, so each epoch sees new variations of a piece:

- a subset of its parts (a chorale gives 1 to 4 voices; a tune its one line), kept high to low;
- a transposition to one of the keys that keep every note on the piano (about all 12), with the key token
  moved along: this is how the key control is learned;
- for every part a General MIDI program drawn among those whose playable range covers that part's notes
  (a soprano line may become flute, violin or trumpet; a bass line cello, bassoon or bass guitar), so a
  program token tells the model the range to write in;
- the piece's tempo where the score gives one, else a tempo drawn from 50-160 bpm (most corpus scores
  carry none, so the tempo token is only a weak style cue; the tempo itself is written into the MIDI);
- the density bin measured on the window's own bars.
"""

from __future__ import annotations

import numpy as np

from personalize.corpus import Piece
from personalize.generate import tokens as T
from personalize.music.gm import program_range

_RANGES = np.array([program_range(p) for p in range(128)])


def programs_covering(lo: int, hi: int) -> np.ndarray:
    """GM programs whose comfortable range holds every pitch from ``lo`` to ``hi``."""
    return np.flatnonzero((_RANGES[:, 0] <= lo) & (_RANGES[:, 1] >= hi))


def _part_count_weights(n: int) -> np.ndarray:
    # Requests are mostly two to four parts; keep some solo lines so one-part requests stay fluent.
    w = np.array([0.15, 0.25, 0.3, 0.3][:n])
    return w / w.sum()


def sample_example(piece: Piece, rng: np.random.Generator, block_size: int) -> list[int]:
    """One training sequence (prefix + body, at most ``block_size + 1`` tokens) from ``piece``."""
    n = len(piece.parts)
    k = int(rng.choice(np.arange(1, n + 1), p=_part_count_weights(n))) if n > 1 else 1
    chosen = sorted(rng.choice(n, size=k, replace=False).tolist())
    parts = [piece.parts[i] for i in chosen if piece.parts[i]]
    if not parts:
        parts = [p for p in piece.parts if p][:1]
    lo = min(nt[2] for p in parts for nt in p)
    hi = max(nt[2] for p in parts for nt in p)
    shifts = [s for s in range(-6, 6) if lo + s >= T.PITCH_LO and hi + s <= T.PITCH_HI] or [0]
    shift = int(rng.choice(shifts))
    parts = [[(o, d, p + shift) for o, d, p in part] for part in parts]
    programs = []
    for part in parts:
        cands = programs_covering(min(nt[2] for nt in part), max(nt[2] for nt in part))
        programs.append(int(rng.choice(cands)) if len(cands) else 0)
    tempo_bpm = piece.tempo_bpm if piece.tempo_bpm else float(rng.uniform(50, 160))

    start_bar = int(rng.integers(0, max(1, piece.n_bars - 2)))
    body: list[int] = []
    n_bars = 0
    for bar in range(start_bar, piece.n_bars):
        body += T.bars_tokens(parts, piece.bar_ticks, bar, 1)
        n_bars += 1
        if len(body) >= block_size:
            break
    else:
        body.append(T.EOS)
    full_bars = max(1, n_bars - 1) if len(body) > block_size else n_bars
    dens = T.window_density_bin(parts, piece.bar_ticks, start_bar, full_bars)
    # The key token is the key as heard (key-finding on the notes): it equals the encoded key signature
    # wherever the two agree, and where they do not (modal tunes, chorales ending on the dominant) the
    # notes are what a listener and the verification hear.
    key_pc, mode = (piece.found_key_pc + shift) % 12, piece.found_mode
    prefix = T.prefix_tokens(key_pc, mode, tempo_bpm, piece.meter, dens, programs)
    if rng.random() < 0.25 and len(body) > 8:
        # Sometimes start mid-stream, as generation does after it slides its context window forward.
        body = body[int(rng.integers(1, min(64, len(body) - 4))) :]
    return (prefix + body)[: block_size + 1]


def collate(
    seqs: list[list[int]], n_prefix_free: bool = True, pad: int = T.PAD, sep: int = T.SEP
) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence: inputs and next-token targets, with -100 where no loss is taken
    (padding, and the prefix up to ``sep``, which generation is given rather than asked to predict)."""
    t = max(len(s) for s in seqs) - 1
    x = np.full((len(seqs), t), pad, dtype=np.int64)
    y = np.full((len(seqs), t), -100, dtype=np.int64)
    for i, s in enumerate(seqs):
        arr = np.asarray(s, dtype=np.int64)
        x[i, : len(arr) - 1] = arr[:-1]
        y[i, : len(arr) - 1] = arr[1:]
        if n_prefix_free:
            at = np.flatnonzero(arr == sep)
            if len(at):
                y[i, : at[0]] = -100
    return x, y
