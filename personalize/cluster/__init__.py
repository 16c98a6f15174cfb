"""Taste clusters: listeners grouped by taste with ids stable from night to night.

``run(ctx, run_date)`` is the cluster stage; ``taste_distribution`` / ``cluster_distributions`` say what a
cluster likes (for planning tracks); ``listener_vectors`` gives each listener's vector for ranking.
"""

from personalize.cluster.distribution import cluster_distributions, listener_vectors, taste_distribution
from personalize.cluster.stage import run

__all__ = ["cluster_distributions", "listener_vectors", "run", "taste_distribution"]
