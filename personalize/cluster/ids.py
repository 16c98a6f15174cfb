"""Stable cluster ids from night to night: tonight's centroids are matched to the previous date's by the
Hungarian assignment on centroid distance (both measured in tonight's standardized taste space).

A match is kept only when its distance is below ``ratio`` x the smallest distance between two centroids
of either night, so a previous cluster can never be the plausible ancestor of two of tonight's; the
rest are truly new and get ids never used before (``next_id`` and up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist


@dataclass
class IdMatch:
    ids: list[int]  # stable id per tonight's cluster (in the order given)
    is_new: list[bool]
    distance: list[float | None]  # to the matched previous centroid
    threshold: float


def match_ids(
    previous_ids: list[int],
    previous_centroids: np.ndarray,
    current_centroids: np.ndarray,
    next_id: int,
    ratio: float,
) -> IdMatch:
    k = len(current_centroids)
    gaps = [pdist(c).min() for c in (current_centroids, previous_centroids) if len(c) >= 2]
    threshold = ratio * float(min(gaps)) if gaps else float("inf")
    ids: list[int | None] = [None] * k
    dist: list[float | None] = [None] * k
    if len(previous_ids):
        cost = cdist(current_centroids, previous_centroids)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < threshold:
                ids[r] = int(previous_ids[c])
                dist[r] = float(cost[r, c])
    is_new = [i is None for i in ids]
    for r in range(k):
        if ids[r] is None:
            ids[r] = next_id
            next_id += 1
    return IdMatch([int(i) for i in ids], is_new, dist, threshold)  # type: ignore[arg-type]
