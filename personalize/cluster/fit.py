"""Fitting taste clusters: a scikit-learn pipeline (standardize, weight, k-means) and the choice of k.

k is chosen over ``[cluster_k_min, cluster_k_max]`` by the mean silhouette of a fit on a sample of
listeners (silhouette itself on a smaller sample, as it costs n^2): the k whose clusters are most
compact and best apart wins; ties go to the smaller k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

CRITERION = "silhouette"


def _apply_weights(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return X * weights


def make_pipeline(k: int, weights: np.ndarray, seed: int, n_init: int = 4) -> Pipeline:
    """Standardize, weight the features (``FEATURE_WEIGHTS``), k-means with ``n_init`` restarts."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("weight", FunctionTransformer(_apply_weights, kw_args={"weights": np.asarray(weights)})),
            ("kmeans", KMeans(n_clusters=k, n_init=n_init, random_state=seed)),
        ]
    )


@dataclass
class ClusterFit:
    pipeline: Pipeline
    k: int
    scores: dict[int, float]  # k -> silhouette on the selection sample
    labels: np.ndarray  # 0..k-1 per fitted row
    silhouette_by_label: dict[int, float]  # mean silhouette of each cluster's sampled members

    def standardized(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline[:-1].transform(X)


def fit_clusters(
    X: np.ndarray,
    k_min: int,
    k_max: int,
    fit_sample: int,
    silhouette_sample: int,
    seed: int,
    weights: np.ndarray,
) -> ClusterFit:
    """Choose k on a sample, then fit the pipeline on all of ``X`` (rows: listeners, raw vectors)."""
    # One BLAS/OpenMP thread: on a small shared machine, k-means' spinning worker threads made the fit
    # 30x slower (22 s instead of 0.7 s for 2,000 listeners and 11 values of k) whenever other work ran.
    with threadpool_limits(limits=1):
        return _fit_clusters(X, k_min, k_max, fit_sample, silhouette_sample, seed, weights)


def _fit_clusters(
    X: np.ndarray,
    k_min: int,
    k_max: int,
    fit_sample: int,
    silhouette_sample: int,
    seed: int,
    weights: np.ndarray,
) -> ClusterFit:
    n = len(X)
    if n == 0:
        raise ValueError("no profiled listeners to cluster")
    rng = np.random.default_rng(seed)
    sample = X[rng.choice(n, size=min(n, fit_sample), replace=False)]
    # More clusters than distinct tastes cannot be told apart (k-means would warn and duplicate centres).
    n_distinct = len(np.unique(np.round(sample, 6), axis=0))
    k_hi = min(k_max, n - 1, n_distinct)
    k_lo = min(k_min, k_hi)
    scores: dict[int, float] = {}
    if k_hi < 2:
        k_best = 1
    else:
        for k in range(max(2, k_lo), k_hi + 1):
            # Two restarts suffice to rank the values of k; the final fit below gets four.
            pipe = make_pipeline(k, weights, seed, n_init=2)
            labels = pipe.fit_predict(sample)
            if len(np.unique(labels)) < 2:
                continue
            Z = pipe[:-1].transform(sample)
            scores[k] = float(
                silhouette_score(Z, labels, sample_size=min(len(Z), silhouette_sample), random_state=seed)
            )
        k_best = max(scores, key=lambda k: (round(scores[k], 4), -k)) if scores else 1
    pipe = make_pipeline(k_best, weights, seed)
    labels = pipe.fit_predict(X)
    sil_by_label: dict[int, float] = {}
    if k_best >= 2:
        idx = rng.choice(n, size=min(n, silhouette_sample), replace=False)
        if len(np.unique(labels[idx])) >= 2:
            sil = silhouette_samples(pipe[:-1].transform(X[idx]), labels[idx])
            for label in np.unique(labels[idx]):
                sil_by_label[int(label)] = float(sil[labels[idx] == label].mean())
    return ClusterFit(pipe, k_best, scores, labels, sil_by_label)
