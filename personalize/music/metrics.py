"""Quality metrics of a symbolic piece (pitch-class entropy, scale and groove consistency, empty beats,
polyphony, pitch range) and the Yang & Lerch (2018) overlap area for comparing two sets of pieces.

Every metric takes a ``pretty_midi.PrettyMIDI`` and returns a float in the unit its name or docstring gives.
They measure the music itself (notes, onsets, the beat grid), never the controls a generator was given, so
generated pieces and corpus pieces are measured the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pretty_midi
from scipy.stats import norm

# Pitch-class sets of the scales a "scale-consistent" piece may use, as offsets from the tonic.
# The natural minor shares its set with the relative major, so only harmonic minor adds new sets;
# it is what tonal minor-key music (Bach, hymns, folk) mostly uses around cadences.
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11)

# Onset grid for groove: positions per whole note (16 = sixteenth notes).
GROOVE_POSITIONS_PER_WHOLE = 16


def _all_notes(pm: pretty_midi.PrettyMIDI, *, pitched_only: bool) -> list[pretty_midi.Note]:
    return [n for inst in pm.instruments if not (pitched_only and inst.is_drum) for n in inst.notes]


def _require_notes(notes: Sequence[pretty_midi.Note], what: str) -> None:
    if len(notes) == 0:
        raise ValueError(f"{what}: the piece has no notes to measure")


def pitch_class_entropy(pm: pretty_midi.PrettyMIDI) -> float:
    """Shannon entropy of the pitch-class histogram of pitched notes, in bits (0 .. log2(12) = 3.585).

    Each note counts once whatever its duration (as in Wu & Yang 2020). One pitch class gives 0 bits,
    a diatonic scale played evenly gives log2(7) = 2.807 bits, all twelve evenly give 3.585 bits.
    """
    notes = _all_notes(pm, pitched_only=True)
    _require_notes(notes, "pitch-class entropy")
    counts = np.bincount([n.pitch % 12 for n in notes], minlength=12).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _scale_masks() -> np.ndarray:
    masks = []
    for steps in (MAJOR_STEPS, HARMONIC_MINOR_STEPS):
        for tonic in range(12):
            mask = np.zeros(12, dtype=bool)
            mask[[(tonic + s) % 12 for s in steps]] = True
            masks.append(mask)
    return np.array(masks)


_SCALE_MASKS = _scale_masks()


def scale_consistency(pm: pretty_midi.PrettyMIDI) -> float:
    """Largest share of pitched notes (0..1) that fall inside one scale, over all 12 major (= natural minor)
    and 12 harmonic minor scales (Mogren 2016). A piece in one key without accidentals scores 1.0."""
    notes = _all_notes(pm, pitched_only=True)
    _require_notes(notes, "scale consistency")
    counts = np.bincount([n.pitch % 12 for n in notes], minlength=12).astype(float)
    return float((_SCALE_MASKS @ counts).max() / counts.sum())


def _bar_onset_patterns(pm: pretty_midi.PrettyMIDI) -> list[np.ndarray]:
    """One boolean onset vector per bar on a sixteenth-note grid, read in ticks so tempo changes don't skew it."""
    notes = _all_notes(pm, pitched_only=False)
    ticks_per_quarter = pm.resolution
    signatures = sorted(pm.time_signature_changes, key=lambda ts: ts.time) or [
        pretty_midi.TimeSignature(4, 4, 0.0)
    ]
    onset_ticks = np.array(sorted(pm.time_to_tick(n.start) for n in notes), dtype=np.int64)
    last_tick = int(onset_ticks[-1])
    # Walk bar by bar through the time-signature map, collecting (start tick, length in ticks, grid size).
    bars: list[tuple[int, int, int]] = []
    sig_ticks = [pm.time_to_tick(ts.time) for ts in signatures]
    bar_start = 0
    sig_idx = 0
    while bar_start <= last_tick:
        while sig_idx + 1 < len(signatures) and bar_start >= sig_ticks[sig_idx + 1]:
            sig_idx += 1
        ts = signatures[sig_idx]
        bar_ticks = max(1, round(ticks_per_quarter * 4 * ts.numerator / ts.denominator))
        positions = max(1, round(GROOVE_POSITIONS_PER_WHOLE * ts.numerator / ts.denominator))
        bars.append((bar_start, bar_ticks, positions))
        bar_start += bar_ticks
    patterns = []
    starts = np.array([b[0] for b in bars])
    bar_of_onset = np.searchsorted(starts, onset_ticks, side="right") - 1
    for i, (start, length, positions) in enumerate(bars):
        pattern = np.zeros(positions, dtype=bool)
        local = onset_ticks[bar_of_onset == i] - start
        slots = np.minimum((local * positions + length // 2) // length, positions - 1)
        pattern[slots] = True
        patterns.append(pattern)
    return patterns


def groove_consistency(pm: pretty_midi.PrettyMIDI) -> float:
    """1 - mean normalized Hamming distance between the onset patterns of adjacent bars (Wu & Yang 2020), 0..1.

    Onsets of all parts (drums too) are placed on a sixteenth-note grid per bar. A piece repeating one rhythm
    in every bar scores 1.0. Pieces shorter than two bars have no groove to compare and give NaN.
    """
    notes = _all_notes(pm, pitched_only=False)
    _require_notes(notes, "groove consistency")
    patterns = _bar_onset_patterns(pm)
    distances = [np.mean(a != b) for a, b in itertools.pairwise(patterns) if a.shape == b.shape]
    if not distances:
        return float("nan")
    return float(1.0 - np.mean(distances))


def _note_intervals(pm: pretty_midi.PrettyMIDI, *, pitched_only: bool) -> np.ndarray:
    notes = _all_notes(pm, pitched_only=pitched_only)
    return np.array([(n.start, n.end) for n in notes if n.end > n.start], dtype=float).reshape(-1, 2)


def empty_beat_rate(pm: pretty_midi.PrettyMIDI) -> float:
    """Share of beats (0..1), from the first beat to the end of the last note, during which no note sounds.

    Beats follow the file's tempo map and meter (a dotted quarter in 6/8). A beat counts as empty when no note
    of any part overlaps it at all; rests shorter than a beat never make one empty.
    """
    intervals = _note_intervals(pm, pitched_only=False)
    _require_notes(intervals, "empty-beat rate")
    end_s = float(intervals[:, 1].max())
    beats = pm.get_beats()
    beats = beats[beats < end_s]
    if len(beats) == 0:
        return 0.0
    beat_ends = np.append(beats[1:], end_s)
    starts, ends = intervals[:, 0], intervals[:, 1]
    sounding = (starts[None, :] < beat_ends[:, None]) & (ends[None, :] > beats[:, None])
    return float(1.0 - sounding.any(axis=1).mean())


def polyphony(pm: pretty_midi.PrettyMIDI) -> float:
    """Mean number of notes sounding at once, over the time when at least one sounds (notes, >= 1.0).

    Computed exactly: total note duration divided by the length of the union of all note intervals.
    A melody alone gives 1.0, four-part chords held together give 4.0.
    """
    intervals = _note_intervals(pm, pitched_only=False)
    _require_notes(intervals, "polyphony")
    order = np.argsort(intervals[:, 0])
    union_s = 0.0
    cur_start, cur_end = intervals[order[0]]
    for start, end in intervals[order[1:]]:
        if start > cur_end:
            union_s += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    union_s += cur_end - cur_start
    return float((intervals[:, 1] - intervals[:, 0]).sum() / union_s)


def pitch_range(pm: pretty_midi.PrettyMIDI) -> float:
    """Highest minus lowest pitched note, in semitones (drums excluded)."""
    notes = _all_notes(pm, pitched_only=True)
    _require_notes(notes, "pitch range")
    pitches = [n.pitch for n in notes]
    return float(max(pitches) - min(pitches))


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    fn: Callable[[pretty_midi.PrettyMIDI], float]
    description: str


METRICS: tuple[Metric, ...] = (
    Metric("pitch_class_entropy_bits", "bits", pitch_class_entropy, "entropy of the pitch-class histogram"),
    Metric("scale_consistency", "share", scale_consistency, "largest share of notes inside one scale"),
    Metric("groove_consistency", "share", groove_consistency, "1 - Hamming distance of adjacent bars"),
    Metric("empty_beat_rate", "share", empty_beat_rate, "beats in which nothing sounds"),
    Metric("polyphony_notes", "notes", polyphony, "mean notes sounding together"),
    Metric("pitch_range_semitones", "semitones", pitch_range, "highest minus lowest pitch"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)


def quality_metrics(pm: pretty_midi.PrettyMIDI) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one piece, keyed by name (unit in the name or in ``Metric.unit``).

    Raises ``ValueError`` when the piece has no pitched notes.
    """
    if not _all_notes(pm, pitched_only=True):
        raise ValueError("quality metrics: the piece has no pitched notes to measure")
    return {m.name: m.fn(pm) for m in METRICS}


def _bandwidth(samples: np.ndarray, floor: float) -> float:
    # Scott's rule; the floor keeps a set of identical values (std 0) a narrow bump rather than a spike.
    scott = float(np.std(samples, ddof=1)) * len(samples) ** (-1 / 5) if len(samples) > 1 else 0.0
    return max(scott, floor)


def _binned_kde(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE on an even grid: samples binned onto the grid, then convolved with the kernel.

    Linear in the number of samples, so tens of thousands of pairwise distances stay cheap; the kernel is
    renormalized on the grid so the estimate integrates to exactly 1 even when it is narrower than a bin.
    """
    dx = grid[1] - grid[0]
    edges = np.append(grid - dx / 2, grid[-1] + dx / 2)
    counts, _ = np.histogram(samples, bins=edges)
    half_width = max(1, int(np.ceil(5 * bandwidth / dx)))
    offsets = np.arange(-half_width, half_width + 1) * dx
    kernel = norm.pdf(offsets / bandwidth)
    kernel /= kernel.sum()
    return np.convolve(counts / counts.sum(), kernel, mode="same") / dx


def kde_overlap(a: Sequence[float], b: Sequence[float], grid_points: int = 4096) -> float:
    """Area under the smaller of the two Gaussian kernel density estimates of ``a`` and ``b`` (0..1).

    1.0 means the two samples look drawn from one distribution, 0.0 means they never meet.
    NaNs are ignored; either sample empty raises ``ValueError``.
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
    if len(xa) == 0 or len(xb) == 0:
        raise ValueError("kde_overlap needs at least one finite value in each sample")
    both = np.concatenate([xa, xb])
    floor = 1e-3 * float(max(np.ptp(both), np.abs(both).max(), 1e-9))
    ha, hb = _bandwidth(xa, floor), _bandwidth(xb, floor)
    lo = min(xa.min() - 5 * ha, xb.min() - 5 * hb)
    hi = max(xa.max() + 5 * ha, xb.max() + 5 * hb)
    grid = np.linspace(lo, hi, grid_points)
    overlap = np.minimum(_binned_kde(xa, grid, ha), _binned_kde(xb, grid, hb))
    return float(np.clip(overlap.sum() * (grid[1] - grid[0]), 0.0, 1.0))


def yang_lerch_overlap(generated: Sequence[float], reference: Sequence[float]) -> float:
    """Yang & Lerch (2018) overlap area of one metric between a generated set and a reference set (0..1).

    Their method compares distances rather than raw values: the intra-set distances of the reference
    (|x_i - x_j|, i != j) against the inter-set distances (|g_i - x_j|), each smoothed by a Gaussian KDE;
    the area both curves share is the overlap. A generated set that looks like the reference gives ~1,
    one far from it gives ~0.
    """
    g = np.asarray(generated, dtype=float)
    r = np.asarray(reference, dtype=float)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    if len(g) == 0 or len(r) < 2:
        raise ValueError("yang_lerch_overlap needs >= 1 generated and >= 2 reference values")
    i, j = np.triu_indices(len(r), k=1)
    intra = np.abs(r[i] - r[j])
    inter = np.abs(g[:, None] - r[None, :]).ravel()
    return kde_overlap(intra, inter)
