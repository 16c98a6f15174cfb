"""Loudness to the streaming norm: ITU-R BS.1770 integrated loudness, 4x-oversampled true peak, look-ahead limiter.

The gain that brings a track to the target loudness (-14 LUFS) can push its peaks past the ceiling
(-1 dBTP) when the music is sparse and percussive. Capping the gain would leave such tracks quieter than
the rest of a playlist, so peaks above the ceiling are limited instead: a smooth gain curve that starts
falling before each peak (look-ahead) and recovers after a hold. Loudness is measured again afterwards and
the small loss the limiter causes is made up, a few rounds at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import firwin, sosfilt

from personalize.render.errors import SILENT, TOO_SHORT, RenderRejected

OVERSAMPLE = 4  # BS.1770-4 Annex 2: a 4x oversampled peak is the true-peak estimate at 44.1/48 kHz
LIMITER_LOOKAHEAD_S = 0.005
LIMITER_HOLD_S = 0.050
LIMITER_MARGIN_DB = 0.3  # aim under the ceiling: the final check scales down whatever still sticks out
MAX_ROUNDS = 6  # loudness measurements while searching the make-up gain
FIRST_MAKEUP_DB = 3.0  # make-up most limited tracks need; more widens the exact envelope
MAX_MAKEUP_DB = 12.0  # deepest limiting allowed; past it a track stays quieter than the target
ABSOLUTE_GATE_LUFS = -70.0
BLOCK_S = 0.400  # BS.1770 gating block
MERGE_GAP_BLOCKS = 48  # one run's fixed cost is about that of oversampling 48 blocks of 16 frames
BLOCK_OVERLAP = 0.75


@dataclass(frozen=True)
class LoudnessResult:
    samples: np.ndarray  # (frames, 2) float32, normalized
    loudness_lufs: float
    true_peak_dbtp: float
    gain_db: float  # static gain applied (before limiting)
    limited_db: float  # deepest limiter gain reduction, 0 when the limiter never acted


@lru_cache(maxsize=8)
def _k_weighting(sample_rate_hz: int) -> np.ndarray:
    """pyloudnorm's BS.1770 K-weighting (high shelf, then high pass) as second-order sections."""
    meter = pyloudnorm.Meter(sample_rate_hz)
    sections = []
    for stage in meter._filters.values():
        b, a = np.asarray(stage.b, dtype=np.float64), np.asarray(stage.a, dtype=np.float64)
        sections.append(np.r_[stage.passband_gain * b / a[0], a / a[0]])
    return np.asarray(sections)


def measure_loudness(samples: np.ndarray, sample_rate_hz: int) -> tuple[float, np.ndarray]:
    """BS.1770 gated integrated loudness in LUFS (``-inf`` for silence) and the 400 ms blocks' loudness.

    The same filters, blocks and gates as ``pyloudnorm.Meter.integrated_loudness`` (a test holds the two
    equal), computed in one ``sosfilt`` pass and running sums instead of a Python loop per block: the
    measurement runs two or more times per track, and this makes it about five times cheaper.
    """
    rate = sample_rate_hz
    if len(samples) < int(BLOCK_S * rate) + 1:
        raise RenderRejected(
            TOO_SHORT,
            f"the render is {len(samples) / rate:.2f} s long, shorter than the 0.4 s a loudness "
            "measurement needs: the piece is (nearly) empty; regenerate it.",
        )
    data = samples if samples.ndim == 2 else samples[:, None]
    # channels as contiguous rows: filtering and running sums along a row are several times faster. Single
    # precision filters twice as fast and moves the result by under 0.001 LU (the test against pyloudnorm
    # holds it to 0.01); block energies are summed in double precision below.
    weighted = sosfilt(
        _k_weighting(rate).astype(np.float32), np.ascontiguousarray(data.T, np.float32), axis=-1
    )
    np.square(weighted, out=weighted)
    n = len(data)
    duration_s = n / rate
    step = 1.0 - BLOCK_OVERLAP
    n_blocks = int(np.round((duration_s - BLOCK_S) / (BLOCK_S * step))) + 1
    j = np.arange(n_blocks)
    lower = np.minimum((BLOCK_S * (j * step) * rate).astype(np.int64), n)
    upper = np.minimum((BLOCK_S * (j * step + 1) * rate).astype(np.int64), n)
    # energy up to each block edge: sums between consecutive edges (one pass), then a short running sum
    edges = np.unique(np.r_[lower, upper, n])
    between = (
        np.add.reduceat(weighted, edges[:-1], axis=-1, dtype=np.float64)
        if len(edges) > 1
        else weighted[:, :0]
    )
    energy = np.zeros((data.shape[1], len(edges)), dtype=np.float64)
    np.cumsum(between, axis=-1, out=energy[:, 1:])
    at_upper, at_lower = np.searchsorted(edges, upper), np.searchsorted(edges, lower)
    z = ((energy[:, at_upper] - energy[:, at_lower]) / (BLOCK_S * rate)).T  # (blocks, channels) mean square
    gains = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[: data.shape[1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        blocks = -0.691 + 10.0 * np.log10(z @ gains)
        above_absolute = blocks >= ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return float("-inf"), blocks
        relative_gate = -0.691 + 10.0 * np.log10(z[above_absolute].mean(axis=0) @ gains) - 10.0
        gated = (blocks > relative_gate) & (blocks > ABSOLUTE_GATE_LUFS)
        mean_square = np.nan_to_num(z[gated].mean(axis=0)) if gated.any() else np.zeros(data.shape[1])
        lufs = -0.691 + 10.0 * np.log10(mean_square @ gains)
    return float(lufs), blocks


def gated_loudness(blocks: np.ndarray) -> float:
    """BS.1770 integrated loudness from the 400 ms blocks' loudness alone (as :func:`measure_loudness` gives
    them). K-weighting is linear, so a gain shifts every block by exactly its dB: the loudness after a gain
    is ``gated_loudness(blocks + gain_db)``, with the gates re-drawn, and no filtering again."""
    with np.errstate(divide="ignore", invalid="ignore"):
        above_absolute = blocks >= ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return float("-inf")
        power = 10.0 ** ((blocks + 0.691) / 10.0)  # the blocks' channel-weighted mean squares
        relative_gate = -0.691 + 10.0 * np.log10(power[above_absolute].mean()) - 10.0
        gated = (blocks > relative_gate) & (blocks > ABSOLUTE_GATE_LUFS)
        if not gated.any():
            return float("-inf")
        return float(-0.691 + 10.0 * np.log10(power[gated].mean()))


def integrated_loudness(samples: np.ndarray, sample_rate_hz: int) -> float:
    """BS.1770 gated integrated loudness in LUFS (``-inf`` for silence)."""
    return measure_loudness(samples, sample_rate_hz)[0]


HALF_WIDTH = 8  # input samples each side of an oversampled point the interpolator reads


def _phase_kernels() -> np.ndarray:
    """(OVERSAMPLE, 2*HALF_WIDTH) weights giving the points n + k/4 from samples n-7 .. n+8.

    A 65-tap Kaiser low-pass at the original Nyquist split into its 4 phases, like the 48-tap filter of
    BS.1770-4 Annex 2 but flatter up to 20 kHz: cymbals and hi-hats peak up there, and a shorter filter
    under-reads them by a few tenths of a dB.
    """
    taps = 4 * 2 * HALF_WIDTH + 1
    fir = firwin(taps, 1.0 / OVERSAMPLE, window=("kaiser", 5.0))
    fir /= fir[4 * HALF_WIDTH]  # phase 0 passes each sample through unchanged
    j = np.arange(2 * HALF_WIDTH)
    return np.stack([fir[8 * HALF_WIDTH - 4 - 4 * j + k] for k in range(OVERSAMPLE)])


_PHASES = _phase_kernels()
# An oversampled point is a weighted sum of 16 neighbours: it cannot exceed their peak times this bound.
_OVERSHOOT_BOUND = float(np.abs(_PHASES).sum(axis=1).max())


def peak_level(samples: np.ndarray) -> np.ndarray:
    """Per-frame sample peak over channels, |x| (computed channel by channel: fast on (frames, 2))."""
    samples = samples if samples.ndim == 2 else samples[:, None]
    level = np.abs(samples[:, 0])
    for ch in range(1, samples.shape[1]):
        np.maximum(level, np.abs(samples[:, ch]), out=level)
    return level


def true_peak_envelope(samples: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Per-frame absolute true peak: the largest of both channels' 4 oversampled points from each frame on.

    Only frames whose neighbourhood peak times the interpolator's overshoot bound can reach ``floor`` are
    interpolated (run by run of 16-frame blocks); elsewhere the envelope is the plain sample peak, which
    is all a caller comparing against ``floor`` needs.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    level = peak_level(samples)
    if len(level) == 0:
        return level
    width = 2 * HALF_WIDTH
    # The samples frame n's points read (n-7 .. n+8) lie in its 16-frame block or the two beside it, so
    # the loudest of those three blocks bounds them: coarser than a sliding maximum, but far cheaper.
    n_blocks = -(-len(level) // width)
    blocks = np.zeros(n_blocks * width, dtype=level.dtype)
    blocks[: len(level)] = level
    block_peak = blocks.reshape(n_blocks, width).max(axis=1)
    near = block_peak.copy()
    np.maximum(near[1:], block_peak[:-1], out=near[1:])
    np.maximum(near[:-1], block_peak[1:], out=near[:-1])
    hot = near * _OVERSHOOT_BOUND >= floor
    if not hot.any():
        return level
    edges = np.flatnonzero(np.diff(np.r_[0, hot.astype(np.int8), 0]))
    starts, ends = edges[::2], edges[1::2]
    # join runs separated by a few cool blocks: fewer, longer correlations cost less than many short ones
    keep = np.r_[True, starts[1:] - ends[:-1] > MERGE_GAP_BLOCKS]
    group_starts = np.flatnonzero(keep)
    starts, ends = starts[group_starts], ends[np.r_[group_starts[1:] - 1, len(ends) - 1]]
    envelope = level.copy()
    for ch in range(samples.shape[1]):
        padded = np.pad(samples[:, ch], (HALF_WIDTH, HALF_WIDTH))
        for start_block, end_block in zip(starts.tolist(), ends.tolist(), strict=True):
            lo, hi = start_block * width, min(len(level), end_block * width)
            segment = padded[lo + 1 : hi + width]  # the samples frames lo .. hi-1 read
            np.maximum(envelope[lo:hi], _oversampled_peak(segment, hi - lo), out=envelope[lo:hi])
    return envelope


def _block_kernels() -> tuple[np.ndarray, np.ndarray]:
    """The interpolator as two (16, 3*16) matrices: with the signal cut into rows of 16 samples X, the three
    in-between points of the 16 frames of row m are ``X[m] @ A + X[m + 1] @ B``. Two matrix products over
    contiguous rows run at full SIMD speed; a sliding dot product per frame (``np.correlate``) does not."""
    width = 2 * HALF_WIDTH
    phases = _PHASES[1:]  # phase 0 of the interpolator is the sample itself (its other taps sit on zeros)
    a = np.zeros((width, len(phases) * width))
    b = np.zeros_like(a)
    for k, kernel in enumerate(phases):
        for r in range(width):  # output frame r of a row reads row samples r .. r + 15
            for j in range(width):
                c = r + j
                if c < width:
                    a[c, k * width + r] = kernel[j]
                else:
                    b[c - width, k * width + r] = kernel[j]
    return a.astype(np.float32), b.astype(np.float32)


_BLOCK_A, _BLOCK_B = _block_kernels()


def _oversampled_peak(segment: np.ndarray, n: int) -> np.ndarray:
    """Per frame, the largest |value| of the 3 in-between oversampled points, for ``n`` frames whose 16 input
    samples each are ``segment[i : i + 16]``."""
    width = 2 * HALF_WIDTH
    rows = -(-n // width) + 1
    x = np.zeros(rows * width, dtype=np.float32)
    x[: len(segment)] = segment[: rows * width]
    x = x.reshape(rows, width)
    y = x[:-1] @ _BLOCK_A
    y += x[1:] @ _BLOCK_B
    np.abs(y, out=y)
    return y.reshape(rows - 1, -1, width).max(axis=1).reshape(-1)[:n]


def true_peak_dbtp(samples: np.ndarray) -> float:
    """Highest 4x-oversampled peak over all channels, in dBTP (dB relative to full scale)."""
    if len(samples) == 0:
        return float("-inf")
    sample_peak = float(np.abs(samples).max())
    if sample_peak <= 0:
        return float("-inf")
    # frames that cannot beat the loudest plain sample are not interpolated
    peak = float(true_peak_envelope(samples, floor=sample_peak).max())
    return 20.0 * float(np.log10(peak))


def limiter_gain(envelope: np.ndarray, ceiling: float, sample_rate_hz: int) -> np.ndarray:
    """Smooth gain (<= 1) that keeps ``envelope * gain`` under ``ceiling`` at every frame.

    The required gain is min-filtered over [n - hold, n + lookahead) and then box-averaged over the
    look-ahead length: every frame of the average window sees frame n, so the average never exceeds what
    frame n requires while the ramps stay as long as the look-ahead.
    """
    need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if need.min() >= 1.0:
        return np.ones_like(envelope)
    lookahead = max(1, int(LIMITER_LOOKAHEAD_S * sample_rate_hz))
    hold = int(LIMITER_HOLD_S * sample_rate_hz)
    size = lookahead + hold
    # origin shifts scipy's centred windows: min over [n - hold, n + lookahead - 1] ...
    held = minimum_filter1d(need, size=size, origin=hold - size // 2, mode="nearest")
    # ... then a causal box average over [n - lookahead + 1, n]
    return uniform_filter1d(held, size=lookahead, origin=(lookahead - 1) // 2, mode="nearest")


def normalize(
    samples: np.ndarray,
    sample_rate_hz: int,
    target_lufs: float,
    true_peak_max_dbtp: float,
    min_lufs: float,
) -> LoudnessResult:
    """Bring ``samples`` to ``target_lufs`` with true peaks at or under ``true_peak_max_dbtp``.

    Raises :class:`RenderRejected` for renders under ``min_lufs``. When even the deepest allowed limiting
    (``MAX_MAKEUP_DB``) cannot reach the target, the track stays that much quieter rather than distort.
    """
    measured, blocks = measure_loudness(samples, sample_rate_hz)
    if not np.isfinite(measured) or measured < min_lufs:
        level = "silent" if not np.isfinite(measured) else f"{measured:.1f} LUFS"
        raise RenderRejected(
            SILENT,
            f"the render is {level}, under the {min_lufs:g} LUFS floor: raising it to {target_lufs:g} LUFS "
            "would only amplify noise; check velocities, volume controllers and programs.",
        )
    gain_db = target_lufs - measured
    loudness = target_lufs
    for _ in range(3):
        # Loudness follows gain exactly except for BS.1770's absolute gate at -70 LUFS: quiet blocks that
        # the gain lifts over it (or drops under it) join (or leave) the average: draw the gates again.
        crossing = (blocks < ABSOLUTE_GATE_LUFS) != (blocks + gain_db < ABSOLUTE_GATE_LUFS)
        if not crossing.any():
            break
        loudness = gated_loudness(blocks + gain_db)
        if abs(target_lufs - loudness) < 0.02:
            break
        gain_db += target_lufs - loudness
    base = samples * np.float32(10 ** (gain_db / 20))
    ceiling = 10 ** ((true_peak_max_dbtp - LIMITER_MARGIN_DB) / 20)
    # One envelope answers both "does anything cross the ceiling?" and "what is the true peak?": every
    # frame that could beat the ceiling or the loudest plain sample is oversampled.
    # The envelope is exact wherever it can matter: at frames that could beat the loudest plain sample,
    # or that the limiter would touch with up to FIRST_MAKEUP_DB of make-up gain.
    sample_peak = float(peak_level(base).max())
    envelope = true_peak_envelope(base, floor=min(ceiling * 10 ** (-FIRST_MAKEUP_DB / 20), sample_peak))
    out, limited_db = base, 0.0
    peak = float(envelope.max())
    if peak > ceiling:
        out, loudness, limited_db, short = _limit_to_target(
            base, envelope, ceiling, target_lufs, sample_rate_hz, FIRST_MAKEUP_DB
        )
        if short:  # needs more make-up than the envelope was made exact for: widen it once
            envelope = true_peak_envelope(base, floor=ceiling * 10 ** (-MAX_MAKEUP_DB / 20))
            out, loudness, limited_db, _ = _limit_to_target(
                base, envelope, ceiling, target_lufs, sample_rate_hz, MAX_MAKEUP_DB
            )
        peak_db = true_peak_dbtp(out)
    else:
        peak_db = 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")
    if peak_db > true_peak_max_dbtp:
        # what the approximations above left: a fraction of a dB, taken off the whole track
        trim_db = true_peak_max_dbtp - peak_db - 0.01
        out = out * np.float32(10 ** (trim_db / 20))
        loudness += trim_db
        peak_db += trim_db
    return LoudnessResult(
        samples=out.astype(np.float32, copy=False),
        loudness_lufs=float(loudness),
        true_peak_dbtp=float(peak_db),
        gain_db=float(gain_db),
        limited_db=limited_db,
    )


def _limit_to_target(
    base: np.ndarray,
    envelope: np.ndarray,
    ceiling: float,
    target_lufs: float,
    sample_rate_hz: int,
    max_makeup_db: float,
) -> tuple[np.ndarray, float, float, bool]:
    """Find the make-up gain that, after limiting, lands on the target (secant steps on loudness(makeup)).

    Returns the limited audio, its loudness, the deepest gain reduction in dB, and whether the target
    was missed because ``max_makeup_db`` was not enough.
    """
    tried: list[tuple[float, float]] = []
    makeup_db = 0.0
    best: tuple[np.ndarray, float, float, bool] | None = None
    for _ in range(MAX_ROUNDS):
        scale = 10 ** (makeup_db / 20)
        gain = limiter_gain(envelope * scale, ceiling, sample_rate_hz) * scale
        out = base * gain[:, None].astype(np.float32)
        loudness = integrated_loudness(out, sample_rate_hz)
        limited_db = float(-20 * np.log10(max(float(gain.min()) / scale, 1e-12)))
        error = target_lufs - loudness
        capped = error > 0.1 and makeup_db >= max_makeup_db
        best = (out, loudness, limited_db, capped)
        tried.append((makeup_db, loudness))
        if abs(error) < 0.1 or capped:
            break
        slope = 1.0
        if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
            slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
        makeup_db = float(np.clip(makeup_db + error / np.clip(slope, 0.2, 1.0), 0.0, max_makeup_db))
    assert best is not None
    return best
