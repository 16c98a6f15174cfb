"""The plan stage: how many fresh tracks each taste cluster gets tonight and the controls of each one,
drawn from the cluster's taste distribution, stored in ``track_plans`` for the generate stage.

``run(ctx, run_date)`` plans the date. Rerun-safe: slots already generated (or failed) are kept as they
are; slots still only planned are rewritten from the same seeded draw, so an unchanged night plans the
same tracks again.

Besides each cluster's tracks, the listeners a cluster serves worst get a track of their own taste within a
nightly budget (:mod:`personalize.plan.personal`); such a plan row names its listener in ``listener_id``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, insert, select

from personalize.context import Context
from personalize.db.models import Cluster, TrackPlan
from personalize.music.gm import format_programs
from personalize.plan.draw import allocate, draw_controls
from personalize.plan.personal import PERSONAL_SLOT0, budget_tracks, listener_distribution, outliers

log = logging.getLogger(__name__)


def plan_rows(ctx: Context, run_date: dt.date) -> list[dict[str, Any]]:
    """The date's plan as ``track_plans`` rows (nothing written)."""
    from personalize.cluster.distribution import cluster_distributions

    s = ctx.settings
    with ctx.sessions() as session:
        clusters = session.execute(select(Cluster).where(Cluster.run_date == run_date)).scalars().all()
    if not clusters:
        raise LookupError(f"no clusters for {run_date}: run the cluster stage (`personalize run`) first")
    dists = cluster_distributions(ctx, run_date)
    counts = allocate(
        {int(c.cluster_id): int(c.size) for c in clusters},
        s.tracks_total,
        s.tracks_per_cluster_min,
        s.tracks_per_cluster_max,
    )
    rows: list[dict[str, Any]] = []
    for c in sorted(clusters, key=lambda c: c.cluster_id):
        cid = int(c.cluster_id)
        for slot in range(counts[cid]):
            controls, density_nps, seed = draw_controls(
                dists[cid],
                run_date,
                cid,
                slot,
                (s.track_seconds_min, s.track_seconds_max),
                fallback_key=(int(c.key_pc), c.mode),
            )
            rows.append(_plan_row(run_date, cid, slot, seed, controls, density_nps, None))
    return rows + personal_rows(ctx, run_date)


def _plan_row(
    run_date: dt.date,
    cluster_id: int,
    slot: int,
    seed: int,
    controls: Any,
    density_nps: float,
    listener_id: str | None,
) -> dict[str, Any]:
    """One ``track_plans`` row: a planned track for a cluster (or for one listener of it)."""
    return {
        "run_date": run_date,
        "cluster_id": cluster_id,
        "slot": slot,
        "seed": seed,
        "controls": controls.to_dict(),
        "tempo_bpm": controls.tempo_bpm,
        "key_pc": controls.key_pc,
        "mode": controls.mode,
        "meter": controls.meter,
        "programs": format_programs(controls.programs),
        "density": density_nps,
        "status": "planned",
        "listener_id": listener_id,
    }


def personal_rows(ctx: Context, run_date: dt.date) -> list[dict[str, Any]]:
    """One track for each of the farthest outlier listeners, as many as the night's budget buys."""
    s = ctx.settings
    n_tracks, _, _ = budget_tracks(ctx, run_date)
    if n_tracks <= 0:
        return []
    rows: list[dict[str, Any]] = []
    for rank, profile in enumerate(outliers(ctx, run_date)[:n_tracks]):
        cid, slot = int(profile["cluster_id"]), PERSONAL_SLOT0 + rank
        fallback = (int(profile["key_pc"] or 0), profile["mode"] or "major")
        controls, density_nps, seed = draw_controls(
            listener_distribution(profile), run_date, cid, slot,
            (s.track_seconds_min, s.track_seconds_max), fallback_key=fallback,
        )  # fmt: skip
        rows.append(_plan_row(run_date, cid, slot, seed, controls, density_nps, profile["listener_id"]))
    return rows


def run(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """Plan the date's tracks per cluster; returns the cluster ids to generate for (XCom-sized)."""
    rows = plan_rows(ctx, run_date)
    with ctx.engine.begin() as conn:
        done = {
            (int(c), int(s))
            for c, s in conn.execute(
                select(TrackPlan.cluster_id, TrackPlan.slot).where(
                    TrackPlan.run_date == run_date, TrackPlan.status != "planned"
                )
            )
        }
        conn.execute(delete(TrackPlan).where(TrackPlan.run_date == run_date, TrackPlan.status == "planned"))
        fresh = [r for r in rows if (r["cluster_id"], r["slot"]) not in done]
        if fresh:
            conn.execute(insert(TrackPlan), fresh)
    per_cluster: dict[int, int] = {}
    for r in rows:
        per_cluster[r["cluster_id"]] = per_cluster.get(r["cluster_id"], 0) + 1
    keys = {(r["key_pc"], r["mode"]) for r in rows}
    personal = [r for r in rows if r["listener_id"] is not None]
    log.info("planned %d tracks over %d clusters for %s", len(rows), len(per_cluster), run_date)
    return {
        "stage": "plan",
        "run_date": run_date.isoformat(),
        "clusters": sorted(per_cluster),
        "tracks_planned": len(rows),
        "tracks_per_cluster": {str(c): n for c, n in sorted(per_cluster.items())},
        "already_done": len(done),
        "personal_tracks": len(personal),
        "distinct_keys": len(keys),
        "distinct_tempi_bpm": len({round(r["tempo_bpm"]) for r in rows}),
    }
