"""Loudness to the streaming norm: ITU-R BS.1770 integrated loudness, 4x-oversampled true peak, look-ahead limiter.

The gain that brings a track to the target loudness (-14 LUFS) can push its peaks past the ceiling
(-1 dBTP) when the music is sparse and percussive. Capping the gain would leave such tracks quieter than
the rest of a playlist, so peaks above the ceiling are limited instead: a smooth gain curve that starts
falling before each peak (look-ahead) and recovers after a hold. The small loss of loudness the limiter
causes is made up, a few rounds at most, and the result is measured again.

A track is filtered once for its loudness; the true peak is oversampled only where it could matter; and
a track that needs no limiting is scaled in place: about a millisecond of work per second of music.
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
    equal), computed in one ``sosfilt`` pass and running sums instead of a Python loop per block.
    """
    _check_length(samples, sample_rate_hz)
    return loudness_from_energy(_weighted_energy(samples, sample_rate_hz), sample_rate_hz)


def _check_length(samples: np.ndarray, rate: int) -> None:
    if len(samples) < int(BLOCK_S * rate) + 1:
        raise RenderRejected(
            TOO_SHORT,
            f"the render is {len(samples) / rate:.2f} s long, shorter than the 0.4 s a loudness "
            "measurement needs: the piece is (nearly) empty; regenerate it.",
        )


def loudness_from_energy(energy: np.ndarray, rate: int) -> tuple[float, np.ndarray]:
    """Gated integrated loudness and block loudness from per-frame K-weighted energy (``_weighted_energy``)."""
    n = len(energy)
    duration_s = n / rate
    step = 1.0 - BLOCK_OVERLAP
    n_blocks = int(np.round((duration_s - BLOCK_S) / (BLOCK_S * step))) + 1
    j = np.arange(n_blocks)
    lower = np.minimum((BLOCK_S * (j * step) * rate).astype(np.int64), n)
    upper = np.minimum((BLOCK_S * (j * step + 1) * rate).astype(np.int64), n)
    # energy up to each block edge: sums between consecutive edges (one pass), then a short running sum
    edges = np.unique(np.r_[lower, upper, n])
    between = np.add.reduceat(energy, edges[:-1], dtype=np.float64) if len(edges) > 1 else energy[:0]
    cumulative = np.zeros(len(edges), dtype=np.float64)
    np.cumsum(between, out=cumulative[1:])
    at_upper, at_lower = np.searchsorted(edges, upper), np.searchsorted(edges, lower)
    # each block's channel-weighted mean square: every gate and mean below is linear in it
    z = (cumulative[at_upper] - cumulative[at_lower]) / (BLOCK_S * rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        blocks = -0.691 + 10.0 * np.log10(z)
        above_absolute = blocks >= ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return float("-inf"), blocks
        relative_gate = -0.691 + 10.0 * np.log10(z[above_absolute].mean()) - 10.0
        gated = (blocks > relative_gate) & (blocks > ABSOLUTE_GATE_LUFS)
        mean_square = float(z[gated].mean()) if gated.any() else 0.0
        lufs = -0.691 + 10.0 * np.log10(mean_square)
    return float(lufs), blocks


CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770: L, R, C, Ls, Rs


def _weighted_energy(samples: np.ndarray, rate: int) -> np.ndarray:
    """Per frame, the K-weighted signal's square summed over channels with BS.1770's channel gains."""
    sos = _k_weighting(rate).astype(np.float32)
    if (
        samples.ndim == 2
        and samples.shape[1] == 2
        and samples.dtype == np.float32
        and samples.flags.c_contiguous
    ):
        # Stereo frames read as one complex signal (left + i right): the filter's real coefficients act
        # on both parts alike, so one pass filters both channels, with no copy into channel rows and in
        # about 70 % of two real passes' time; the results are bit-identical. Both gains are 1.
        filtered = sosfilt(sos, samples.view(np.complex64).reshape(-1))
        parts = filtered.view(np.float32).reshape(-1, 2)
        np.square(parts, out=parts)
        return parts[:, 0] + parts[:, 1]
    data = samples if samples.ndim == 2 else samples[:, None]
    # channels as contiguous rows: filtering along a row is several times faster than down a column
    weighted = sosfilt(sos, np.ascontiguousarray(data.T, np.float32), axis=-1)
    np.square(weighted, out=weighted)
    energy = np.zeros(len(data), dtype=np.float32)
    for channel, gain in zip(weighted, CHANNEL_GAINS, strict=False):
        energy += np.float32(gain) * channel
    return energy


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


class TruePeak:
    """A track's per-frame true peak (the largest of all channels' 4 oversampled points from each frame on),
    made exact lazily: only where a caller's threshold can be reached.

    Elsewhere the envelope holds the plain sample peak, which is all a caller comparing against that
    threshold needs. Widening the threshold later oversamples only the blocks not done yet.
    """

    def __init__(self, samples: np.ndarray, level: np.ndarray | None = None) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        self.samples = samples if samples.ndim == 2 else samples[:, None]
        self.level = peak_level(self.samples) if level is None else level
        n = len(self.level)
        width = 2 * HALF_WIDTH
        self._n_blocks = -(-n // width)
        self._envelope = np.zeros(self._n_blocks * width, dtype=np.float32)
        self._envelope[:n] = self.level
        # The samples frame n's points read (n-7 .. n+8) lie in its 16-frame block or the two beside it, so
        # the loudest of those three blocks, times the interpolator's overshoot bound, bounds them.
        block_peak = _row_maxima(self._envelope.reshape(self._n_blocks, width))
        near = block_peak.copy()
        np.maximum(near[1:], block_peak[:-1], out=near[1:])
        np.maximum(near[:-1], block_peak[1:], out=near[:-1])
        self._bound = near * _OVERSHOOT_BOUND
        self._done = np.zeros(self._n_blocks, dtype=bool)

    @property
    def envelope(self) -> np.ndarray:
        return self._envelope[: len(self.level)]

    def exact_above(self, floor: float) -> np.ndarray:
        """The envelope, exact at every frame whose true peak could reach ``floor``."""
        todo = np.flatnonzero((self._bound >= floor) & ~self._done)
        for start in range(0, len(todo), _BLOCKS_PER_PASS):
            self._oversample(todo[start : start + _BLOCKS_PER_PASS])
        self._done[todo] = True
        return self.envelope

    def _oversample(self, blocks: np.ndarray) -> None:
        """Raise the envelope of the 16-frame ``blocks`` to their oversampled points' peak.

        A block's in-between points are the 32 samples from 7 frames before it on, times the (32, 48)
        kernel: the blocks gathered from anywhere in the track go through one matrix product per channel.
        """
        width = 2 * HALF_WIDTH
        peak = None
        for window in self._windows(blocks):  # (blocks, 32) per channel
            # (48, blocks): the transposed product keeps each phase's points contiguous for the maxima
            points = _KERNEL_T @ window.T
            np.abs(points, out=points)
            if peak is None:
                peak = np.maximum(points[:width], points[width : 2 * width])
            else:
                np.maximum(peak, points[:width], out=peak)
                np.maximum(peak, points[width : 2 * width], out=peak)
            np.maximum(peak, points[2 * width :], out=peak)
        rows_of_envelope = self._envelope.reshape(self._n_blocks, width)
        rows_of_envelope[blocks] = np.maximum(rows_of_envelope[blocks], peak.T)

    def _windows(self, blocks: np.ndarray) -> np.ndarray:
        """(channels, blocks, 32): for each block m, samples 16m-7 .. 16m+24 of each channel, zeros outside."""
        width = 2 * HALF_WIDTH
        samples = self.samples
        n, channels = samples.shape
        windows = np.empty((len(blocks), 2 * width, channels), dtype=np.float32)
        # blocks 1 .. last_inner have their whole window inside the track: rows of one strided view
        last_inner = max(0, (n - width - HALF_WIDTH - 1) // width)
        inner = (blocks >= 1) & (blocks <= last_inner)
        if inner.any():
            frame_bytes, sample_bytes = samples.strides
            view = np.lib.stride_tricks.as_strided(
                samples[HALF_WIDTH + 1 :],
                shape=(last_inner, 2 * width, channels),
                strides=(width * frame_bytes, frame_bytes, sample_bytes),
                writeable=False,
            )
            windows[inner] = view[blocks[inner] - 1]
        edge = np.flatnonzero(~inner)
        if len(edge):
            frames = blocks[edge, None] * width + np.arange(-(HALF_WIDTH - 1), 2 * width - HALF_WIDTH + 1)
            outside = (frames < 0) | (frames >= n)
            gathered = samples[np.clip(frames, 0, n - 1)]
            gathered[outside] = 0.0
            windows[edge] = gathered
        return np.ascontiguousarray(windows.transpose(2, 0, 1))


def _row_maxima(rows: np.ndarray) -> np.ndarray:
    """``rows.max(axis=1)`` for short rows, as column-by-column maxima: about four times faster."""
    peak = rows[:, 0].copy()
    for column in range(1, rows.shape[1]):
        np.maximum(peak, rows[:, column], out=peak)
    return peak


def _block_kernel() -> np.ndarray:
    """The interpolator as one (32, 3*16) matrix: for a row of 32 samples starting 7 before a 16-frame
    block, the row times the matrix is the block's in-between points (phase by phase, frame by frame).
    Matrix products over gathered rows run at full SIMD speed; a sliding dot product per frame does not."""
    width = 2 * HALF_WIDTH
    phases = _PHASES[1:]  # phase 0 of the interpolator is the sample itself (its other taps sit on zeros)
    kernel = np.zeros((2 * width, len(phases) * width))
    for k, taps in enumerate(phases):
        for r in range(width):  # frame r of the block reads row samples r .. r + 15
            kernel[r : r + width, k * width + r] = taps
    return kernel.astype(np.float32)


_KERNEL_T = np.ascontiguousarray(_block_kernel().T)  # (48, 32)
# Blocks oversampled per matrix product: bounds its memory (4096 blocks x 48 points x 4 bytes = 0.75 MiB).
_BLOCKS_PER_PASS = 4096


def true_peak_dbtp(samples: np.ndarray) -> float:
    """Highest 4x-oversampled peak over all channels, in dBTP (dB relative to full scale)."""
    if len(samples) == 0:
        return float("-inf")
    meter = TruePeak(samples)
    sample_peak = float(meter.level.max())
    if sample_peak <= 0:
        return float("-inf")
    # frames that cannot beat the loudest plain sample are not interpolated
    peak = float(meter.exact_above(sample_peak).max())
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
    *,
    level: np.ndarray | None = None,
    in_place: bool = False,
) -> LoudnessResult:
    """Bring ``samples`` to ``target_lufs`` with true peaks at or under ``true_peak_max_dbtp``.

    Raises :class:`RenderRejected` for renders under ``min_lufs``. When even the deepest allowed limiting
    (``MAX_MAKEUP_DB``) cannot reach the target, the track stays that much quieter rather than distort.

    ``level`` is the per-frame sample peak when the caller has it (:func:`peak_level`); with ``in_place``
    a track that needs no limiting is scaled in its own buffer instead of a copy.
    """
    samples = np.asarray(samples, dtype=np.float32)
    _check_length(samples, sample_rate_hz)
    energy = _weighted_energy(samples, sample_rate_hz)
    measured, blocks = loudness_from_energy(energy, sample_rate_hz)
    if not np.isfinite(measured) or measured < min_lufs:
        described = "silent" if not np.isfinite(measured) else f"{measured:.1f} LUFS"
        raise RenderRejected(
            SILENT,
            f"the render is {described}, under the {min_lufs:g} LUFS floor: raising it to {target_lufs:g} "
            "LUFS would only amplify noise; check velocities, volume controllers and programs.",
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
    gain = 10 ** (gain_db / 20)
    ceiling = 10 ** ((true_peak_max_dbtp - LIMITER_MARGIN_DB) / 20)
    # The true peak is linear in the gain, so it is measured once, on the unscaled track, against
    # thresholds divided by the gain. First exact wherever a point could beat the loudest plain sample or
    # the ceiling: that gives the true peak, and whether any limiting is needed at all.
    meter = TruePeak(samples, level)
    sample_peak = float(meter.level.max())
    peak = float(meter.exact_above(min(ceiling / gain, sample_peak)).max()) * gain
    limited_db = 0.0
    if peak > ceiling:
        # Then exact wherever the limiter would act with up to FIRST_MAKEUP_DB of make-up gain.
        envelope = meter.exact_above(ceiling * 10 ** (-FIRST_MAKEUP_DB / 20) / gain) * gain
        out, limited_db, short = _limit_to_target(
            samples, energy, gain, envelope, ceiling, target_lufs, sample_rate_hz, FIRST_MAKEUP_DB
        )
        if short:  # needs more make-up than the envelope was made exact for: widen it once
            envelope = meter.exact_above(ceiling * 10 ** (-MAX_MAKEUP_DB / 20) / gain) * gain
            out, limited_db, _ = _limit_to_target(
                samples, energy, gain, envelope, ceiling, target_lufs, sample_rate_hz, MAX_MAKEUP_DB
            )
        loudness = integrated_loudness(out, sample_rate_hz)  # measured exactly on what is delivered
        peak_db = true_peak_dbtp(out)
    else:
        out = samples if in_place else samples.copy()
        out *= np.float32(gain)
        peak_db = 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")
    if peak_db > true_peak_max_dbtp:
        # what the approximations above left: a fraction of a dB, taken off the whole track
        trim_db = true_peak_max_dbtp - peak_db - 0.01
        out *= np.float32(10 ** (trim_db / 20))
        loudness += trim_db
        peak_db += trim_db
    return LoudnessResult(
        samples=out,
        loudness_lufs=float(loudness),
        true_peak_dbtp=float(peak_db),
        gain_db=float(gain_db),
        limited_db=limited_db,
    )


def _limit_to_target(
    samples: np.ndarray,
    energy: np.ndarray,
    gain: float,
    envelope: np.ndarray,
    ceiling: float,
    target_lufs: float,
    sample_rate_hz: int,
    max_makeup_db: float,
) -> tuple[np.ndarray, float, bool]:
    """Find the make-up gain that, after limiting, lands on the target (secant steps on loudness(makeup)).

    ``samples`` times ``gain`` is the track at the target loudness before limiting, ``energy`` the
    unscaled track's per-frame K-weighted energy, ``envelope`` the true-peak envelope at ``gain``.
    Returns the limited audio, the deepest gain reduction in dB, and whether the target was missed
    because ``max_makeup_db`` was not enough.

    The limiter's gain moves over milliseconds, far slower than the K-weighting filter's response, so
    each round's loudness comes from the energy times the squared gain curve instead of filtering the
    track again: within 0.01 LU (a test holds it), and the caller measures the result exactly once.
    """
    tried: list[tuple[float, float]] = []
    makeup_db = 0.0
    curve = np.ones(len(samples))
    capped = False
    limited_db = 0.0
    for _ in range(MAX_ROUNDS):
        scale = 10 ** (makeup_db / 20)
        curve = limiter_gain(envelope * scale, ceiling, sample_rate_hz) * scale
        track_gain = (curve * gain).astype(np.float32)
        loudness = loudness_from_energy(energy * np.square(track_gain), sample_rate_hz)[0]
        limited_db = float(-20 * np.log10(max(float(curve.min()) / scale, 1e-12)))
        error = target_lufs - loudness
        capped = error > 0.1 and makeup_db >= max_makeup_db
        tried.append((makeup_db, loudness))
        if abs(error) < 0.1 or capped:
            break
        slope = 1.0
        if len(tried) >= 2 and tried[-1][0] != tried[-2][0]:
            slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
        makeup_db = float(np.clip(makeup_db + error / np.clip(slope, 0.2, 1.0), 0.0, max_makeup_db))
    out = samples * (curve * gain).astype(np.float32)[:, None]
    return out, limited_db, capped
