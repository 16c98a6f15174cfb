"""Per-metric comparison of a system's pieces with the corpus: median, 5-95 % band and Yang & Lerch overlap.

The overlap area (Yang & Lerch 2018) is :func:`personalize.music.metrics.yang_lerch_overlap`: the Gaussian
KDE of the reference's intra-set distances against that of the distances between the two sets, 1 when the
system looks drawn from the corpus, near 0 when it never does. Its ceiling in practice is the corpus's
*self-overlap*: a second corpus sample (the train split, same texture and lengths) against the held-out
pieces; a system is judged against that figure, not against 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from personalize.music.metrics import kde_overlap, yang_lerch_overlap


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


def overlap(system: Sequence[float], reference: Sequence[float]) -> float | None:
    """Yang & Lerch overlap area (0..1) of one metric, or None when either side has too few values.

    A metric constant over both sets (every piece 0, say) has nothing to tell apart: 1.0 when the constants
    agree, 0.0 when they differ.
    """
    s, r = finite(system), finite(reference)
    if len(s) < 2 or len(r) < 2:
        return None
    if np.ptp(r) == 0 and np.ptp(s) == 0:
        return 1.0 if s[0] == r[0] else 0.0
    return float(yang_lerch_overlap(s, r))


def value_overlap(system: Sequence[float], reference: Sequence[float]) -> float | None:
    """Overlap of the two value distributions themselves (KDE of each, area under the smaller), 0..1."""
    s, r = finite(system), finite(reference)
    if len(s) < 2 or len(r) < 2:
        return None
    if np.ptp(r) == 0 and np.ptp(s) == 0:
        return 1.0 if s[0] == r[0] else 0.0
    return float(kde_overlap(s, r))


def histogram_overlap(a: np.ndarray, b: np.ndarray) -> float | None:
    """Shared area of two pooled histograms (each normalized to 1): 1 - total variation distance, 0..1."""
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())
