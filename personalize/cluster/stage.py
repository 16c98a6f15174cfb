"""The cluster stage: fit taste clusters on the run date's profiled listeners, give them stable ids,
assign every listener (thin ones to the nearest cluster, cold ones to the largest) and store the clusters
in readable units with their quality and the taste space's scaler (``taste_runs``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Text, cast, delete, func, insert, select, text, update

from personalize.cluster.fit import CRITERION, fit_clusters
from personalize.cluster.ids import match_ids
from personalize.context import Context
from personalize.db.models import Cluster, TasteProfile, TasteRun
from personalize.music.gm import FAMILIES
from personalize.profile.vector import (
    FEATURE_NAMES,
    FEATURE_WEIGHTS,
    I_DENSITY,
    I_FAMILY0,
    I_TEMPO,
    I_TEMPO_SPREAD,
    TasteSpace,
    key_name_of_index,
    key_of_index,
)

log = logging.getLogger(__name__)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def parse_json_column(texts: list[str], width: int) -> np.ndarray:
    """JSON arrays of the same length (as text) to a matrix, parsed in one go: one ``json.loads`` call on
    the joined text costs a fraction of one call per row."""
    if not texts:
        return np.zeros((0, width))
    return np.asarray(json.loads("[" + ",".join(texts) + "]"), dtype=float).reshape(len(texts), width)


def load_profiles(ctx: Context, run_date: dt.date) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The date's profiles (id, listener_id, status) and, for those with history (not cold), their raw
    vectors and key weights, row-aligned with ``profiles[status != "cold"]``. Raises if there are none."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(
                TasteProfile.id,
                TasteProfile.listener_id,
                TasteProfile.status,
                cast(TasteProfile.vector, Text),
                cast(TasteProfile.key_weights, Text),
            )
            .where(TasteProfile.run_date == run_date)
            .order_by(TasteProfile.id)
        ).all()
    if not rows:
        raise LookupError(
            f"no taste profiles for {run_date}: run `personalize profile --date {run_date}` first"
        )
    prof = pd.DataFrame(rows, columns=["id", "listener_id", "status", "vector", "key_weights"])
    has = prof["status"] != "cold"
    vectors = parse_json_column(prof.loc[has, "vector"].tolist(), len(FEATURE_NAMES))
    key_weights = parse_json_column(prof.loc[has, "key_weights"].tolist(), 24)
    return prof[["id", "listener_id", "status"]], vectors, key_weights


def _previous(ctx: Context, run_date: dt.date) -> tuple[dt.date | None, list[int], np.ndarray, int]:
    """Latest earlier date with clusters: its ids and raw centroids, and the next id no earlier date used."""
    with ctx.engine.connect() as conn:
        prev_date = conn.execute(
            select(func.max(Cluster.run_date)).where(Cluster.run_date < run_date)
        ).scalar()
        # Ids chain from earlier dates only: a rerun of a past date numbers its clusters as it first did,
        # whatever later nights have added since.
        max_id = conn.execute(
            select(func.max(Cluster.cluster_id)).where(Cluster.run_date < run_date)
        ).scalar()
        prev = []
        if prev_date is not None:
            prev = conn.execute(
                select(Cluster.cluster_id, Cluster.centroid)
                .where(Cluster.run_date == prev_date)
                .order_by(Cluster.cluster_id)
            ).all()
    ids = [int(r[0]) for r in prev]
    centroids = np.array([_json(r[1]) for r in prev], dtype=float).reshape(len(prev), len(FEATURE_NAMES))
    return prev_date, ids, centroids, (int(max_id) + 1 if max_id is not None else 0)


def _write_assignments(conn, dialect: str, profile_ids: np.ndarray, cluster_ids: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    pairs = [(int(c), int(p)) for p, c in zip(profile_ids, cluster_ids, strict=True)]
    if dialect == "postgresql":
        # One UPDATE joined to a COPY-filled temp table: row-by-row UPDATEs cost ~100x more on PostgreSQL.
        conn.exec_driver_sql(
            "CREATE TEMP TABLE tmp_taste_assign (id integer PRIMARY KEY, cluster_id integer) ON COMMIT DROP"
        )
        cur = conn.connection.driver_connection.cursor()
        with cur.copy("COPY tmp_taste_assign (cluster_id, id) FROM STDIN") as copy:
            for row in pairs:
                copy.write_row(row)
        conn.exec_driver_sql(
            "UPDATE taste_profiles SET cluster_id = a.cluster_id FROM tmp_taste_assign a "
            "WHERE taste_profiles.id = a.id"
        )
    else:
        conn.execute(
            text("UPDATE taste_profiles SET cluster_id = :c WHERE id = :p"),
            [{"c": c, "p": p} for c, p in pairs],
        )


def run(ctx: Context, run_date: dt.date, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Cluster the profiles of ``run_date``; rewrites that date's clusters and assignments in one transaction."""
    say = progress or log.info
    s = ctx.settings
    t0 = time.perf_counter()
    prof, vectors, key_weights = load_profiles(ctx, run_date)
    has_vec = prof["status"] != "cold"
    vec_rows = np.flatnonzero(has_vec.to_numpy())
    status = prof["status"].to_numpy()
    fit_mask = status[vec_rows] == "profiled"
    fitted_on = "profiled"
    if not fit_mask.any() and len(vectors):
        # Nobody has a full history yet (a young service): thin listeners are all the evidence there is.
        fit_mask[:] = True
        fitted_on = "thin"
        say(
            f"no listener has {s.profile_min_events}+ events on {run_date}: fitting on {len(vectors)} thin ones"
        )
    X = vectors[fit_mask]
    if len(X) == 0:
        detail = (
            f"no listener on {run_date} has any positive engagement in the last {s.profile_window_days} days: "
            "no clusters tonight (ingest listening history, then rerun profile and cluster)"
        )
        say(detail)
        with ctx.engine.begin() as conn:
            conn.execute(delete(Cluster).where(Cluster.run_date == run_date))
            conn.execute(delete(TasteRun).where(TasteRun.run_date == run_date))
            conn.execute(
                update(TasteProfile).where(TasteProfile.run_date == run_date).values(cluster_id=None)
            )
        return {
            "stage": "cluster",
            "run_date": run_date.isoformat(),
            "k": 0,
            "cluster_ids": [],
            "sizes": {},
            "n_new_clusters": 0,
            "n_listeners": len(prof),
            "n_profiled": 0,
            "n_thin": 0,
            "n_cold": int((status == "cold").sum()),
            "detail": detail,
        }
    t_load = time.perf_counter() - t0
    weights = np.asarray(FEATURE_WEIGHTS, dtype=float)
    fit = fit_clusters(
        X,
        s.cluster_k_min,
        s.cluster_k_max,
        s.cluster_fit_sample,
        s.cluster_silhouette_sample,
        s.cluster_seed,
        weights,
    )
    t_fit = time.perf_counter() - t0 - t_load
    say(
        f"k={fit.k} by {CRITERION} over {sorted(fit.scores)} ({', '.join(f'{k}:{v:.3f}' for k, v in fit.scores.items())})"
    )

    scaler = fit.pipeline.named_steps["scale"]
    space = TasteSpace(mean=scaler.mean_, scale=scaler.scale_, weights=weights)
    # Labels for everyone with a vector: profiled keep their fit label, thin ones go to the nearest centroid.
    vec_labels = np.empty(len(vectors), dtype=int)
    vec_labels[fit_mask] = fit.labels
    if (~fit_mask).any():
        vec_labels[~fit_mask] = fit.pipeline.predict(vectors[~fit_mask])
    k = fit.k
    sizes_fit = np.bincount(fit.labels, minlength=k)
    largest = int(np.argmax(sizes_fit))
    labels = np.full(len(prof), largest, dtype=int)  # cold listeners: the largest cluster is the default
    labels[vec_rows] = vec_labels
    centroids_raw = np.array([X[fit.labels == c].mean(axis=0) for c in range(k)])

    prev_date, prev_ids, prev_centroids, next_id = _previous(ctx, run_date)
    match = match_ids(
        prev_ids,
        space.transform(prev_centroids) if len(prev_ids) else prev_centroids,
        space.transform(centroids_raw),
        next_id,
        s.cluster_match_ratio,
    )
    stable = np.asarray(match.ids)

    key_w = np.zeros((k, 24))
    np.add.at(key_w, vec_labels, key_weights)
    Z = space.transform(X)
    Zc = space.transform(centroids_raw)
    cluster_rows, by_status = [], {}
    for c in range(k):
        members = labels == c
        st = {name: int((status[members] == name).sum()) for name in ("profiled", "thin", "cold")}
        by_status[int(stable[c])] = st
        cen = centroids_raw[c]
        fam = cen[I_FAMILY0:]
        top = [FAMILIES[j] for j in np.argsort(-fam, kind="stable")[:3] if fam[j] > 0]
        kbest = int(np.argmax(key_w[c])) if key_w[c].sum() > 0 else 0
        pc, mode = key_of_index(kbest)
        in_c = fit.labels == c
        member_tempo = X[in_c, I_TEMPO]
        cluster_rows.append(
            {
                "run_date": run_date,
                "cluster_id": int(stable[c]),
                "size": int(members.sum()),
                "n_profiled": st["profiled"],
                "tempo_bpm": round(float(2.0 ** cen[I_TEMPO]), 3),
                "key_pc": pc,
                "mode": mode,
                "key_name": key_name_of_index(kbest),
                "top_families": ";".join(top),
                "density": round(float(2.0 ** cen[I_DENSITY]), 4),
                "silhouette": round(fit.silhouette_by_label[c], 4) if c in fit.silhouette_by_label else None,
                "is_new": bool(match.is_new[c]),
                "match_distance": None if match.distance[c] is None else round(match.distance[c], 4),
                "centroid": [round(float(x), 6) for x in cen],
                "quality": {
                    "n_thin": st["thin"],
                    "n_cold": st["cold"],
                    "rms_to_centroid": round(float(np.sqrt(((Z[in_c] - Zc[c]) ** 2).sum(axis=1).mean())), 4),
                    "tempo_spread_log2": round(
                        float(np.sqrt(member_tempo.var() + (X[in_c, I_TEMPO_SPREAD] ** 2).mean())), 5
                    ),
                    "key_share": round(float(key_w[c, kbest] / key_w[c].sum()), 4)
                    if key_w[c].sum() > 0
                    else None,
                    "previous_date": prev_date.isoformat() if prev_date else None,
                    "match_threshold": None if np.isinf(match.threshold) else round(match.threshold, 4),
                    "is_default_for_cold": c == largest,
                },
            }
        )
    n_by = {name: int((status == name).sum()) for name in ("profiled", "thin", "cold")}
    t_write0 = time.perf_counter()
    with ctx.engine.begin() as conn:
        conn.execute(delete(Cluster).where(Cluster.run_date == run_date))
        conn.execute(delete(TasteRun).where(TasteRun.run_date == run_date))
        conn.execute(insert(Cluster), cluster_rows)
        conn.execute(
            insert(TasteRun),
            [
                {
                    "run_date": run_date,
                    "feature_names": list(FEATURE_NAMES),
                    "scaler_mean": [float(x) for x in space.mean],
                    "scaler_scale": [float(x) for x in space.scale],
                    "feature_weights": [float(x) for x in weights],
                    "k": k,
                    "k_criterion": CRITERION,
                    "k_scores": {str(kk): round(v, 5) for kk, v in fit.scores.items()},
                    "n_listeners": len(prof),
                    "n_profiled": n_by["profiled"],
                    "n_thin": n_by["thin"],
                    "n_cold": n_by["cold"],
                    "previous_date": prev_date,
                    "n_new_clusters": int(sum(match.is_new)),
                }
            ],
        )
        _write_assignments(conn, ctx.dialect, prof["id"].to_numpy(), stable[labels])
    t_write = time.perf_counter() - t_write0
    say(
        f"{k} clusters for {run_date} ({sum(match.is_new)} new), sizes "
        + ", ".join(f"#{r['cluster_id']}:{r['size']}" for r in cluster_rows)
    )
    return {
        "stage": "cluster",
        "run_date": run_date.isoformat(),
        "k": k,
        "criterion": CRITERION,
        "k_scores": {str(kk): round(v, 4) for kk, v in fit.scores.items()},
        "cluster_ids": [int(i) for i in stable],
        "sizes": {str(r["cluster_id"]): r["size"] for r in cluster_rows},
        "n_new_clusters": int(sum(match.is_new)),
        "previous_date": prev_date.isoformat() if prev_date else None,
        "n_listeners": len(prof),
        "n_profiled": n_by["profiled"],
        "n_thin": n_by["thin"],
        "n_cold": n_by["cold"],
        "n_cold_default_cluster": int(stable[largest]),
        "fitted_on": fitted_on,
        "timings": {
            "load_s": round(t_load, 3),
            "fit_s": round(t_fit, 3),
            "write_s": round(t_write, 3),
            "total_s": round(time.perf_counter() - t0, 3),
        },
    }
