"""Two-sample test: can a classifier tell a system's pieces from held-out corpus pieces of the same texture?

Each piece becomes one feature vector: every metric of :mod:`personalize.music.metrics` (NaN where
it does not apply, imputed with a missing-value flag; a metric the corpus pieces of the texture do not
have at all is left out) plus its normalized melodic-interval and duration histograms. A random forest is cross-validated (stratified folds that keep a corpus group, the versions of one
piece, inside one fold) and its out-of-fold ROC AUC reported: 0.5 means the system cannot be told from the corpus,
1.0 that it always can. The corpus's own second sample (the train split) sets the floor to expect.
``tells`` names the features the forest leans on most (impurity importance, fitted once on all pieces):
where a system gives itself away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from personalize.music.metrics import (
    DURATION_CLIP,
    INTERVAL_CLIP,
    METRICS,
    duration_histogram,
    interval_histogram,
)
from personalize.music.score import Score

# Performance metrics are left out: neither the corpus nor today's generator carries velocity or timing
# data, so they would only tell the classifier how a file was written, not how the music goes.
FEATURE_METRICS = tuple(m.name for m in METRICS if m.family != "performance")
CV_FOLDS = 5
TELLS = 6  # features named as the classifier's main tells


def feature_names() -> list[str]:
    """Names of :func:`feature_vector`'s entries, in order."""
    intervals = [f"interval_{i:+d}_share" for i in range(-INTERVAL_CLIP, INTERVAL_CLIP + 1)]
    durations = [f"duration_{d}_sixteenths_share" for d in range(1, DURATION_CLIP + 1)]
    return [*FEATURE_METRICS, *intervals, *durations]


def feature_vector(score: Score, metrics: dict[str, float]) -> np.ndarray:
    """One piece's features: metric values (NaN where not applicable) then the two normalized histograms."""
    iv, du = interval_histogram(score), duration_histogram(score)
    iv = iv / iv.sum() if iv.sum() else iv
    du = du / du.sum() if du.sum() else du
    return np.concatenate([[metrics[m] for m in FEATURE_METRICS], iv, du])


def two_sample_auc(
    system: Sequence[np.ndarray],
    corpus: Sequence[np.ndarray],
    seed: int = 0,
    corpus_groups: Sequence[str] | None = None,
    system_groups: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    strata: Sequence[str] | None = None,
) -> dict[str, object]:
    """Cross-validated ROC AUC of a classifier telling ``system`` feature vectors from ``corpus`` ones.

    ``corpus_groups`` and ``system_groups`` (one label per vector) keep versions of one piece inside one fold:
    the corpus holds the same tune in two books, and a classifier that met one version in training would
    recognise the other. Returns the mean AUC over folds, its spread, the folds used and the sample sizes;
    AUC is None when either side has fewer pieces than folds. ``names`` (one per feature column) turns
    on the ``tells``.

    ``strata`` (one label per vector, system's then corpus's: the texture) pools several textures into one
    test where each texture's two sides weigh the same: every piece is weighted by one over its side's count
    in its stratum, in the fit and in the AUC. Unweighted, a pool whose sides mix the textures differently
    (80 generated tracks per texture against 300 held-out tunes and 35 chorales) is told apart by the
    texture alone (AUC 0.72), whatever the music.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    n_sys, n_corp = len(system), len(corpus)
    folds = min(CV_FOLDS, n_sys, n_corp)
    if folds < 2:
        return {"auc": None, "auc_std": None, "folds": folds, "n_system": n_sys, "n_corpus": n_corp}
    x = np.vstack([*system, *corpus]).astype(float)
    y = np.r_[np.ones(n_sys, dtype=int), np.zeros(n_corp, dtype=int)]
    groups = np.array(
        [f"s{g}" for g in (system_groups or range(n_sys))]
        + [f"c{g}" for g in (corpus_groups or range(n_corp))]
    )
    # A feature the corpus side (almost) never has is dropped: held-out tunes are single lines, so the
    # voice-leading of an accompanied generated tune has nothing to be compared with, and would only tell the
    # classifier that a track is accompanied. A feature the corpus has and only some pieces lack is imputed,
    # and its missing-value flag kept, since "does not apply" there can itself be a tell.
    weights = np.ones(len(y))
    if strata is not None:
        labels = np.asarray(list(strata))
        if len(labels) != len(y):
            raise ValueError(f"strata: {len(labels)} labels for {len(y)} feature vectors")
        for label in np.unique(labels):
            for side in (0, 1):
                here = (labels == label) & (y == side)
                weights[here] = 1.0 / here.sum()
        weights *= len(y) / weights.sum()
    corpus_has = np.isfinite(x[n_sys:]).mean(axis=0)
    x = x[:, corpus_has >= 0.1]
    names = [n for n, keep in zip(names or [], corpus_has >= 0.1, strict=False) if keep]
    model = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
    )
    if corpus_groups is not None or system_groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, groups)
    else:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
    aucs = []
    out_of_fold = np.zeros(len(y))
    for train, test in splits:
        if len(set(y[test])) < 2:
            continue
        model.fit(x[train], y[train], randomforestclassifier__sample_weight=weights[train])
        proba = model.predict_proba(x[test])[:, 1]
        out_of_fold[test] = proba
        aucs.append(roc_auc_score(y[test], proba, sample_weight=weights[test]))
    if not aucs:
        return {"auc": None, "auc_std": None, "folds": 0, "n_system": n_sys, "n_corpus": n_corp}
    tells: list[dict[str, object]] = []
    if names and len(names) == x.shape[1]:
        model.fit(x, y, randomforestclassifier__sample_weight=weights)
        forest = model[-1]
        importance = forest.feature_importances_[: len(names)]  # the imputer's flags come after
        for k in np.argsort(importance)[::-1][:TELLS]:
            col = x[:, k]
            tells.append(
                {
                    "feature": names[k],
                    "importance": round(float(importance[k]), 4),
                    "system_median": _median(col[:n_sys]),
                    "corpus_median": _median(col[n_sys:]),
                }
            )
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "folds": len(aucs),
        "n_system": n_sys,
        "n_corpus": n_corp,
        "tells": tells,
    }


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.median(finite)), 4) if len(finite) else None
