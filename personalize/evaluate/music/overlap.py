"""Per-metric comparison of a system's pieces with the corpus: median, 5-95 % band and Yang & Lerch overlap.

The overlap area (Yang & Lerch 2018) compares distances: the Gaussian KDE of the reference's intra-set
distances ``|r_i - r_j|`` against that of the distances between the sets ``|s_i - r_j|``; the area both
curves share is 1 when the system looks drawn from the corpus and near 0 when it never does. Its ceiling in
practice is the corpus's *self-overlap*: a second corpus sample (the train split, same texture) against the
held-out pieces; a system is judged against that figure, not against 1.

Why not :func:`personalize.music.metrics.yang_lerch_overlap` as it is: several metrics here are shares of a
few bars or yes/no flags, so most distances are exactly 0 and that function's bandwidth floor (a
thousandth of the range) turns them into spikes that two samples of one corpus barely share (a self-overlap
of 0.06 on a metric where both samples sit at 1.0). Here the bandwidth is at least a fixed fraction of the
metric's spread over every system (``floor``), the same kernel for every system compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BANDWIDTH_FLOOR = 0.02  # of the metric's spread over every system: the narrowest kernel the overlap uses


def finite(values: Sequence[float]) -> np.ndarray:
    """The finite values of a sample as a float array (NaN marks "does not apply")."""
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Quantiles ``q`` (0..1) of ``values`` where each value counts with its weight (midpoint rule)."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, cum, v)


def summary(values: Sequence[float], weights: Sequence[float] | None = None) -> dict[str, float | int | None]:
    """Median, 5th/25th/75th/95th percentiles, mean and count of the finite values (None when there are none).

    ``weights`` (one per value) let a pooled set count each texture equally.
    """
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = np.isfinite(x)
    x, w = x[keep], w[keep]
    if not len(x):
        return {"n": 0, "median": None, "p5": None, "p25": None, "p75": None, "p95": None, "mean": None}
    p5, p25, med, p75, p95 = weighted_quantiles(x, w, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "n": len(x),
        "median": float(med),
        "p5": float(p5),
        "p25": float(p25),
        "p75": float(p75),
        "p95": float(p95),
        "mean": float(np.average(x, weights=w)),
    }


def _kde_on_grid(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE of ``samples`` on an even ``grid``: binned, then convolved with the kernel (linear in
    the number of samples, which are tens of thousands of distances)."""
    dx = grid[1] - grid[0]
    counts, _ = np.histogram(samples, bins=np.append(grid - dx / 2, grid[-1] + dx / 2))
    half = max(1, int(np.ceil(5 * bandwidth / dx)))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * dx / bandwidth) ** 2)
    kernel /= kernel.sum()
    return np.convolve(counts / counts.sum(), kernel, mode="same") / dx


def _scott(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) * len(x) ** (-1 / 5) if len(x) > 1 else 0.0


def overlap(system: Sequence[float], reference: Sequence[float], floor: float | None = None) -> float | None:
    """Yang & Lerch overlap area (0..1) of one metric, or None when either side has fewer than two values.

    ``floor`` is the smallest kernel bandwidth (default: ``BANDWIDTH_FLOOR`` of the two samples' pooled
    spread); pass the same one for every system compared on a metric.
    """
    s, r = finite(system), finite(reference)
    if len(s) < 2 or len(r) < 2:
        return None
    if floor is None:
        floor = BANDWIDTH_FLOOR * spread(np.concatenate([s, r]))
    i, j = np.triu_indices(len(r), k=1)
    intra = np.abs(r[i] - r[j])
    inter = np.abs(s[:, None] - r[None, :]).ravel()
    floor = max(floor, 1e-9)
    h_intra, h_inter = max(_scott(intra), floor), max(_scott(inter), floor)
    lo = -5 * max(h_intra, h_inter)
    hi = max(intra.max() + 5 * h_intra, inter.max() + 5 * h_inter)
    grid = np.linspace(lo, hi, 4096)
    shared = np.minimum(_kde_on_grid(intra, grid, h_intra), _kde_on_grid(inter, grid, h_inter))
    return float(np.clip(shared.sum() * (grid[1] - grid[0]), 0.0, 1.0))


def spread(values: np.ndarray) -> float:
    """The width a metric's values span: 1st to 99th percentile (the full range when that is 0; 1 when the
    values are all one number)."""
    x = finite(values)
    if not len(x):
        return 1.0
    lo, hi = np.percentile(x, [1, 99])
    width = float(hi - lo) or float(np.ptp(x))
    return width or 1.0


def histogram_overlap(a: np.ndarray, b: np.ndarray) -> float | None:
    """Shared area of two pooled histograms (each normalized to 1): 1 - total variation distance, 0..1."""
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())
