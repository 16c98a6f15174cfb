"""Tracks written for one listener: the listeners a cluster serves worst (farthest from its centroid in
the date's taste space) get a track drawn from their own taste, as many as the night's budget buys.

The budget is ``personal_tracks_cpu_s`` seconds of generate and render time; a track's cost is what the
last night with generated tracks measured (its ``generate:c*`` and ``render:c*`` stage seconds over the
tracks it made), else :data:`FALLBACK_S_PER_MUSIC_S` times the planned length. Only listeners with a
profile of their own (``profiled``) qualify, and only beyond the ``personal_outlier_quantile`` of all
listeners' distances to their centroid; the farthest come first.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
from sqlalchemy import func, select

from personalize.context import Context
from personalize.db.models import Cluster, PipelineRun, TasteProfile, TrackPlan
from personalize.music.gm import FAMILIES
from personalize.profile.vector import I_DENSITY, I_FAMILY0, I_TEMPO, key_name_of_index, load_space

PERSONAL_SLOT0 = 500  # slots of personal tracks start here, after any cluster's own slots
FALLBACK_S_PER_MUSIC_S = (
    0.15  # generate + render seconds per second of music before a night measured it (cautious)
)
PERSONAL_TEMPO_SPREAD_LOG2 = 0.03  # a personal track stays near the listener's own tempo (about 2 %)
PERSONAL_DENSITY_SPREAD_LOG2 = 0.05
PERSONAL_KEYS = 3  # the listener's three strongest keys


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def track_cost_s(ctx: Context, run_date: dt.date) -> tuple[float, str]:
    """Seconds of generate + render one track cost on the last earlier night that made tracks, and where
    the figure comes from."""
    with ctx.engine.connect() as conn:
        last = conn.execute(
            select(func.max(TrackPlan.run_date)).where(
                TrackPlan.run_date < run_date, TrackPlan.status == "generated"
            )
        ).scalar_one_or_none()
        if last is not None:
            if isinstance(last, str):
                last = dt.date.fromisoformat(last[:10])
            made = conn.execute(
                select(func.count())
                .select_from(TrackPlan)
                .where(TrackPlan.run_date == last, TrackPlan.status == "generated")
            ).scalar_one()
            seconds = conn.execute(
                select(func.sum(PipelineRun.duration_s)).where(
                    PipelineRun.run_date == last,
                    PipelineRun.status == "ok",
                    PipelineRun.stage.like("generate:%") | PipelineRun.stage.like("render:%"),
                )
            ).scalar_one_or_none()
            if made and seconds:
                return float(seconds) / int(made), f"measured on {last}"
    s = ctx.settings
    mean_length_s = (s.track_seconds_min + s.track_seconds_max) / 2.0
    return FALLBACK_S_PER_MUSIC_S * mean_length_s, "estimate before any measured night"


def outliers(ctx: Context, run_date: dt.date) -> list[dict[str, Any]]:
    """Profiled listeners beyond the outlier quantile of distance to their cluster's centroid, farthest
    first: ``listener_id``, ``cluster_id``, ``distance`` and their profile columns."""
    space = load_space(ctx, run_date)
    with ctx.engine.connect() as conn:
        centroids = {
            int(c): np.asarray(_json(v), dtype=float)
            for c, v in conn.execute(
                select(Cluster.cluster_id, Cluster.centroid).where(Cluster.run_date == run_date)
            )
        }
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    TasteProfile.listener_id, TasteProfile.cluster_id, TasteProfile.vector,
                    TasteProfile.key_weights, TasteProfile.program_weights, TasteProfile.meter_weights,
                    TasteProfile.key_pc, TasteProfile.mode,
                )
                .where(
                    TasteProfile.run_date == run_date,
                    TasteProfile.status == "profiled",
                    TasteProfile.cluster_id.is_not(None),
                )
                .order_by(TasteProfile.listener_id)
            )
        ]  # fmt: skip
    rows = [r for r in rows if int(r["cluster_id"]) in centroids and r["vector"] is not None]
    if not rows:
        return []
    vectors = np.vstack([np.asarray(_json(r["vector"]), dtype=float) for r in rows])
    own = np.vstack([centroids[int(r["cluster_id"])] for r in rows])
    distance = np.linalg.norm(space.transform(vectors) - space.transform(own), axis=1)
    threshold = float(np.quantile(distance, ctx.settings.personal_outlier_quantile))
    order = np.argsort(-distance, kind="stable")
    out = []
    for i in order:
        if distance[i] <= threshold:
            break
        out.append({**rows[i], "vector": vectors[i], "distance": float(distance[i])})
    return out


def listener_distribution(profile: dict[str, Any]) -> dict[str, Any]:
    """One listener's taste in the shape of a cluster's distribution (``plan.draw.draw_controls`` reads
    it): tight around their own tempo and density, their strongest keys, their instruments and meters."""
    vector = np.asarray(profile["vector"], dtype=float)
    key_w = np.asarray(_json(profile["key_weights"]) or np.zeros(24), dtype=float)
    top = np.argsort(-key_w, kind="stable")[:PERSONAL_KEYS]
    keys = {key_name_of_index(int(i)): float(key_w[i]) for i in top if key_w[i] > 0}
    families = {f: float(v) for f, v in zip(FAMILIES, vector[I_FAMILY0:], strict=True) if v > 0}
    return {
        "tempo_bpm": {"mean_log2": float(vector[I_TEMPO]), "spread_log2": PERSONAL_TEMPO_SPREAD_LOG2},
        "density_nps": {"mean_log2": float(vector[I_DENSITY]), "spread_log2": PERSONAL_DENSITY_SPREAD_LOG2},
        "keys": keys,
        "programs": dict(_json(profile["program_weights"]) or {}),
        "families": families,
        "meters": dict(_json(profile["meter_weights"]) or {}),
    }


def budget_tracks(ctx: Context, run_date: dt.date) -> tuple[int, float, str]:
    """How many personal tracks tonight's budget buys: ``(tracks, seconds per track, where from)``."""
    budget_s = ctx.settings.personal_tracks_cpu_s
    if budget_s <= 0:
        return 0, 0.0, "no budget"
    cost_s, source = track_cost_s(ctx, run_date)
    return math.floor(budget_s / max(cost_s, 1e-6)), cost_s, source
