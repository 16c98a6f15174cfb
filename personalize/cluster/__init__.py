"""Taste clusters: listeners grouped by taste with ids stable from night to night.

``run(ctx, run_date)`` is the cluster stage; ``taste_distribution`` / ``cluster_distributions`` say what a
cluster likes (to draw planned tracks' controls from); ``listener_vectors`` gives each listener's vector
for ranking. Imports stay light here; the work lives in the submodules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from personalize.context import Context


def run(ctx: Context, run_date: dt.date, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The cluster stage: see :func:`personalize.cluster.stage.run`."""
    from personalize.cluster.stage import run as run_clusters

    return run_clusters(ctx, run_date, progress=progress)


def cluster_distributions(ctx: Context, run_date: dt.date) -> dict[int, dict[str, Any]]:
    """Every cluster's taste distribution: see :func:`personalize.cluster.distribution.cluster_distributions`."""
    from personalize.cluster.distribution import cluster_distributions as dists

    return dists(ctx, run_date)


def taste_distribution(ctx: Context, run_date: dt.date, cluster_id: int) -> dict[str, Any]:
    """One cluster's taste distribution (tempo, 24 keys, families, programs, meters, density)."""
    from personalize.cluster.distribution import taste_distribution as dist

    return dist(ctx, run_date, cluster_id)


def listener_vectors(ctx: Context, run_date: dt.date) -> pd.DataFrame:
    """Each listener's raw taste vector (cold listeners: their cluster's centroid)."""
    from personalize.cluster.distribution import listener_vectors as vectors

    return vectors(ctx, run_date)


__all__ = ["cluster_distributions", "listener_vectors", "run", "taste_distribution"]
