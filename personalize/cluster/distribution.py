"""What a taste cluster likes, as distributions to draw a track's controls from (not only the centroid),
and each listener's vector for ranking (their own, or their cluster's centroid when they are cold)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from personalize.context import Context
from personalize.db.models import Cluster, TasteProfile
from personalize.music.gm import FAMILIES
from personalize.profile.vector import FEATURE_NAMES, I_DENSITY, I_FAMILY0, I_TEMPO, key_name_of_index


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _pooled(means: np.ndarray, spreads: np.ndarray) -> dict[str, float]:
    """Mean and spread (log2 units) over members: spread = sqrt(mean within-listener var + var of means)."""
    return {
        "mean_log2": float(means.mean()),
        "spread_log2": float(np.sqrt((spreads**2).mean() + means.var())),
        "p10": float(2.0 ** np.quantile(means, 0.1)),
        "p90": float(2.0 ** np.quantile(means, 0.9)),
    }


def _normalized(weights: dict[str, float], top: int | None = None) -> dict[str, float]:
    total = sum(weights.values())
    items = sorted(weights.items(), key=lambda kv: -kv[1])[:top]
    return {k: round(v / total, 5) for k, v in items if v > 0} if total > 0 else {}


def cluster_distributions(ctx: Context, run_date: dt.date) -> dict[int, dict[str, Any]]:
    """Every cluster's taste distribution on ``run_date`` from its members with evidence (profiled + thin).

    Per cluster: ``tempo_bpm`` (``mean`` = geometric mean BPM, ``spread_log2`` = std of log2 BPM to draw
    from, p10/p90 of members' means), ``keys`` (24 key names -> weight), ``modes``, ``families`` (17 ->
    share), ``programs`` (GM program or "drums" -> share, top 24), ``meters``, ``density_nps`` (like tempo),
    ``centroid`` (raw taste vector) and ``size``.
    """
    with ctx.engine.connect() as conn:
        clusters = conn.execute(
            select(Cluster.cluster_id, Cluster.size, Cluster.centroid).where(Cluster.run_date == run_date)
        ).all()
        rows = conn.execute(
            select(
                TasteProfile.cluster_id,
                TasteProfile.tempo_spread,
                TasteProfile.density_spread,
                TasteProfile.vector,
                TasteProfile.key_weights,
                TasteProfile.program_weights,
                TasteProfile.meter_weights,
            ).where(TasteProfile.run_date == run_date, TasteProfile.status != "cold")
        ).all()
    if not clusters:
        raise LookupError(f"no clusters for {run_date}: run `personalize cluster --date {run_date}` first")
    df = pd.DataFrame(
        rows,
        columns=[
            "cluster_id",
            "tempo_spread",
            "density_spread",
            "vector",
            "key_weights",
            "program_weights",
            "meter_weights",
        ],
    )
    out: dict[int, dict[str, Any]] = {}
    for cluster_id, size, centroid in clusters:
        members = df[df["cluster_id"] == cluster_id]
        centroid = np.asarray(_json(centroid), dtype=float)
        if members.empty:  # only cold members: the centroid is all there is
            vecs = centroid[None, :]
            t_spread = d_spread = np.zeros(1)
            key_w = np.zeros(24)
            progs: dict[str, float] = {}
            meters: dict[str, float] = {}
        else:
            vecs = np.array([_json(v) for v in members["vector"]], dtype=float)
            t_spread = members["tempo_spread"].to_numpy(dtype=float)
            d_spread = members["density_spread"].to_numpy(dtype=float)
            key_w = np.sum([np.asarray(_json(k), dtype=float) for k in members["key_weights"]], axis=0)
            progs, meters = {}, {}
            for pw, mw in zip(members["program_weights"], members["meter_weights"], strict=True):
                for p, w in (_json(pw) or {}).items():
                    progs[p] = progs.get(p, 0.0) + w
                for m, w in (_json(mw) or {}).items():
                    meters[m] = meters.get(m, 0.0) + w
        tempo = _pooled(vecs[:, I_TEMPO], t_spread)
        density = _pooled(vecs[:, I_DENSITY], d_spread)
        keys = {key_name_of_index(i): float(w) for i, w in enumerate(key_w)}
        fam = vecs[:, I_FAMILY0:].mean(axis=0)
        out[int(cluster_id)] = {
            "cluster_id": int(cluster_id),
            "run_date": run_date.isoformat(),
            "size": int(size),
            "n_members_with_history": len(members),
            "tempo_bpm": {"mean": float(2.0 ** tempo["mean_log2"]), **tempo},
            "keys": _normalized(keys),
            "modes": _normalized({"major": float(key_w[:12].sum()), "minor": float(key_w[12:].sum())}),
            "families": _normalized(dict(zip(FAMILIES, fam.tolist(), strict=True))),
            "programs": _normalized(progs, top=24),
            "meters": _normalized(meters),
            "density_nps": {"mean": float(2.0 ** density["mean_log2"]), **density},
            "centroid": centroid.tolist(),
            "feature_names": list(FEATURE_NAMES),
        }
    return out


def taste_distribution(ctx: Context, run_date: dt.date, cluster_id: int) -> dict[str, Any]:
    """One cluster's taste distribution (see :func:`cluster_distributions`)."""
    dists = cluster_distributions(ctx, run_date)
    if cluster_id not in dists:
        raise LookupError(f"cluster {cluster_id} does not exist on {run_date} (there: {sorted(dists)})")
    return dists[cluster_id]


def listener_vectors(ctx: Context, run_date: dt.date) -> pd.DataFrame:
    """Per listener: ``listener_id, status, cluster_id, vector`` (raw units, a numpy array). Cold listeners
    get their cluster's centroid: the default profile of the cold-start rule."""
    with ctx.engine.connect() as conn:
        prof = conn.execute(
            select(
                TasteProfile.listener_id, TasteProfile.status, TasteProfile.cluster_id, TasteProfile.vector
            )
            .where(TasteProfile.run_date == run_date)
            .order_by(TasteProfile.listener_id)
        ).all()
        cents = dict(
            conn.execute(
                select(Cluster.cluster_id, Cluster.centroid).where(Cluster.run_date == run_date)
            ).all()
        )
    if not prof or not cents:
        raise LookupError(f"no clustered profiles for {run_date}: run the profile and cluster stages first")
    df = pd.DataFrame(prof, columns=["listener_id", "status", "cluster_id", "vector"])
    df["vector"] = [
        np.asarray(_json(v) if v is not None else _json(cents[c]), dtype=float)
        for v, c in zip(df["vector"], df["cluster_id"], strict=True)
    ]
    return df
