"""Calibrate the melody prior: fit per-style biases so that written melodies move as the corpus's do.

The model and the counted prior each lean their own way, and together they leave marks the two-sample test
reads: the shipped model's dance tunes climbed by step and fell by leap, where the corpus's tunes fall by
step and climb by leap, and put the tonic on a third of their downbeats, where the corpus's tunes put it on
a quarter. Neither table alone says how far off the mix is; only writing says so.

So the calibration writes: for each style, songs of that style are generated for requests matched to
training pieces (their mode, meter, density and length), and two statistics of their melodies are
compared with the same statistics of the training pieces' melodies:

- the share of each melodic interval (-12..+12 semitones, clipped);
- the share of each degree above the tonic, on the downbeat, on another beat and off the beat.

The style's biases (:attr:`MelodyPrior.interval_bias`, :attr:`MelodyPrior.degree_bias`) then move by
``eta`` times the log ratio of corpus to written share, and the next round writes again with them
(iterative proportional fitting of the decoder's marginals). A few rounds bring the written shares to the
corpus's within the noise of the sample; the report gives each round's distance (L1) so a run can be
judged. Only the training pieces are read: the evaluation's held-out pieces stay unseen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from personalize.generate.song import tokens as S
from personalize.generate.song.prior import MAX_INTERVAL, STRENGTHS, MelodyPrior, beat_ticks_of, strength
from personalize.generate.song.tokens import style_of
from personalize.music.controls import Controls, density_bin

N_INTERVALS = 2 * MAX_INTERVAL + 1
ROUNDS = 4
ETA = 0.7  # share of the log ratio moved each round (1.0 overshoots on a sample of a hundred songs)
REQUESTS = 96  # songs written per style and round
SMOOTHING = 0.5  # added to every count before shares are taken
MIN_BARS, MAX_BARS = 8, 32
# Instruments of the requests per style: a dance tune alone or with an accompanying instrument, and the
# chorale's four-part ensembles (band songs sing in the chorales' style and share its calibration).
PROGRAMS = {
    "tune": ((73,), (40,), (71,), (0,), (73, 42)),
    "chorale": ((40, 41, 42, 43), (68, 71, 70, 43), (56, 60, 57, 58)),
}
TEMPI = (72, 88, 100, 112, 126, 140)


@dataclass
class Line:
    """One melody to count: its notes ``(onset, duration, pitch)`` in sixteenths, tonic and meter."""

    notes: Sequence[tuple[int, int, int]]
    key_pc: int
    meter: str


def statistics(lines: Iterable[Line]) -> tuple[np.ndarray, np.ndarray]:
    """Interval shares (25) and degree shares by strength (3 x 12) of ``lines``' melodies."""
    intervals = np.full(N_INTERVALS, SMOOTHING)
    degrees = np.full((len(STRENGTHS), 12), SMOOTHING)
    for line in lines:
        notes = sorted(line.notes)
        bar, beat = S.bar_ticks_of(line.meter), beat_ticks_of(line.meter)
        pitches = [p for _, _, p in notes]
        for a, b in itertools.pairwise(pitches):
            intervals[int(np.clip(b - a, -MAX_INTERVAL, MAX_INTERVAL)) + MAX_INTERVAL] += 1
        for onset, _, pitch in notes:
            degrees[strength(onset % bar, bar, beat), (pitch - line.key_pc) % 12] += 1
    return intervals / intervals.sum(), degrees / degrees.sum(axis=1, keepdims=True)


def corpus_lines(pieces: Iterable[object], style: str) -> list[Line]:
    """The top lines of the training pieces of ``style``, in the meters the song model writes."""
    return [
        Line(p.parts[0], p.found_key_pc, p.meter)  # type: ignore[attr-defined]
        for p in pieces
        if p.parts and style_of(p) == style and p.meter in S.METERS  # type: ignore[attr-defined]
    ]


def requests_for(pieces: Sequence[object], style: str, n: int, seed: int) -> list[Controls]:
    """``n`` requests of ``style`` matched to training pieces drawn at random (mode, meter, density bin,
    length), keys through all twelve tonics, tempi and instruments rotating."""
    pool = [
        p
        for p in pieces
        if p.parts and style_of(p) == style and p.meter in S.METERS  # type: ignore[attr-defined]
    ]
    if not pool:
        raise ValueError(f"no training pieces of style {style!r} in a meter the song model writes")
    rng = np.random.default_rng(seed)
    sets = PROGRAMS[style]
    out = []
    for i, k in enumerate(rng.choice(len(pool), size=n, replace=len(pool) < n)):
        piece = pool[int(k)]
        quarters = piece.n_bars * piece.bar_ticks / S.TICKS_PER_QUARTER  # type: ignore[attr-defined]
        rate = len(piece.parts[0]) / max(quarters, 1e-9)  # type: ignore[attr-defined]
        out.append(
            Controls(
                (i * 7) % 12,
                piece.found_mode,  # type: ignore[attr-defined]
                TEMPI[i % len(TEMPI)],
                piece.meter,  # type: ignore[attr-defined]
                density_bin(rate),
                list(sets[i % len(sets)]),
                bars=int(np.clip(piece.n_bars, MIN_BARS, MAX_BARS)),  # type: ignore[attr-defined]
            )
        )
    return out


def calibrate(
    generator: object,
    pieces: Sequence[object],
    styles: Sequence[str] = ("tune", "chorale"),
    n_requests: int = REQUESTS,
    rounds: int = ROUNDS,
    eta: float = ETA,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Fit the calibration of ``generator``'s melody prior (a :class:`SongGenerator`) in place, style by
    style, from the training ``pieces``; returns per style each round's L1 distances to the corpus (the
    distances the last biases were fitted from, and those after them)."""
    from personalize.generate.song.writer import melody_line

    melody = generator.melody  # type: ignore[attr-defined]
    prior: MelodyPrior | None = melody.prior
    if prior is None or melody.prior_weight <= 0:
        raise ValueError("this song model writes without a melody prior: there is nothing to calibrate")
    report: dict[str, object] = {}
    for s_index, style in enumerate(styles):
        own = prior.for_style(style)
        if own is prior and style not in prior.styles and prior.styles:
            raise ValueError(f"the melody prior has no tables of style {style!r}")
        target_iv, target_dg = statistics(corpus_lines(pieces, style))
        requests = requests_for(pieces, style, n_requests, seed + 101 * s_index)
        own.interval_bias = np.zeros(N_INTERVALS)
        own.degree_bias = np.zeros((len(STRENGTHS), 12))
        rows = []
        for r in range(rounds + 1):
            songs = generator.generate(requests, seed=seed + 1000 * r)  # type: ignore[attr-defined]
            written = [
                Line(melody_line(pm), c.key_pc, c.meter) for c, pm in zip(requests, songs, strict=True)
            ]
            iv, dg = statistics(written)
            rows.append(
                {
                    "round": r,
                    "interval_l1": round(float(np.abs(iv - target_iv).sum()), 4),
                    "degree_l1": round(float(np.abs(dg - target_dg).sum(axis=1).mean()), 4),
                    "tonic_on_downbeats": round(float(dg[0, 0]), 4),
                }
            )
            if progress is not None:
                progress(
                    f"{style} round {r}: "
                    + ", ".join(f"{k} {v}" for k, v in rows[-1].items() if k != "round")
                )
            if r == rounds:
                break  # the last round only measures what the fitted biases write
            # Prior scores enter the decoder times the prior weight: the bias moves in those units.
            step = eta / melody.prior_weight
            own.interval_bias = own.interval_bias + step * (np.log(target_iv) - np.log(iv))
            own.degree_bias = own.degree_bias + step * (np.log(target_dg) - np.log(dg))
            own.interval_bias -= own.interval_bias.max()
            own.degree_bias -= own.degree_bias.max(axis=1, keepdims=True)
        report[style] = {
            "requests": n_requests,
            "rounds": rows,
            "corpus_tonic_on_downbeats": round(float(target_dg[0, 0]), 4),
        }
    return report
