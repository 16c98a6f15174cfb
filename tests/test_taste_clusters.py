"""Taste clusters on both engines: segments recovered, ids stable from one date to the next, a truly new
taste gets a new id, and each cluster's taste distribution is there for planning."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import select
from synthetic_taste import make_world, write_world

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
from personalize.cluster.distribution import listener_vectors, taste_distribution
from personalize.cluster.ids import match_ids
from personalize.db.models import Cluster, TasteRun
from personalize.profile.vector import FEATURE_NAMES, load_space, track_vector

DAY1 = dt.date(2026, 3, 1)
_CLUSTER_FIELDS = (
    "cluster_id", "size", "n_profiled", "tempo_bpm", "key_pc", "mode", "key_name", "top_families", "density",
    "silhouette", "is_new", "match_distance", "centroid", "quality",
)  # fmt: skip


def _night(ctx, run_date):
    profile.run(ctx, run_date)
    return cluster.run(ctx, run_date)


def _clusters(ctx, run_date) -> list[Cluster]:
    with ctx.sessions() as s:
        return list(
            s.scalars(select(Cluster).where(Cluster.run_date == run_date).order_by(Cluster.cluster_id))
        )


def test_clusters_recover_segments_and_keep_their_ids_the_next_night(ctx):
    world, tracks, events = make_world(240, 30, DAY1, n_segments=4, seed=3)
    write_world(ctx, tracks, events, world.listener_ids)
    first = _night(ctx, DAY1)
    assert first["k"] == 4 and first["n_new_clusters"] == 4 and first["previous_date"] is None
    lv = listener_vectors(ctx, DAY1)
    assert adjusted_rand_score([world.segment_of[lid] for lid in lv["listener_id"]], lv["cluster_id"]) == 1.0
    by_segment_day1 = {
        world.segment_of[lid]: cid for lid, cid in zip(lv["listener_id"], lv["cluster_id"], strict=True)
    }

    # Next night: the same listeners with a fresh day of history (different draws).
    day2 = DAY1 + dt.timedelta(days=1)
    _, _, events2 = make_world(240, 5, day2, n_segments=4, seed=3, event_seed=1, days=1)
    write_world(ctx, tracks.iloc[:0], events2, [])
    second = _night(ctx, day2)
    assert second["n_new_clusters"] == 0 and second["previous_date"] == DAY1.isoformat()
    lv2 = listener_vectors(ctx, day2)
    by_segment_day2 = {
        world.segment_of[lid]: cid for lid, cid in zip(lv2["listener_id"], lv2["cluster_id"], strict=True)
    }
    assert by_segment_day2 == by_segment_day1
    assert all(c.match_distance is not None and not c.is_new for c in _clusters(ctx, day2))

    # Third night: listeners of a taste nobody had arrive; that cluster alone gets a new, unused id.
    day3 = day2 + dt.timedelta(days=1)
    newcomers, tracks3, events3 = make_world(80, 30, day3, n_segments=6, seed=3, prefix="N", segments=[5])
    write_world(ctx, tracks3, events3, newcomers.listener_ids)
    third = _night(ctx, day3)
    assert third["k"] == 5 and third["n_new_clusters"] == 1
    new = [c for c in _clusters(ctx, day3) if c.is_new]
    assert len(new) == 1 and new[0].cluster_id == 4 and new[0].tempo_bpm == pytest.approx(140.0, rel=0.05)
    assert {c.cluster_id for c in _clusters(ctx, day3) if not c.is_new} == set(by_segment_day1.values())

    # Rerun the third night after a fourth: its new cluster keeps id 4, whatever the fourth night numbered
    # since (ids chain from earlier dates only, so a past date reruns as it first ran).
    day4 = day3 + dt.timedelta(days=1)
    with ctx.sessions() as s, s.begin():
        for c in _clusters(ctx, day3):
            s.add(Cluster(**{k: getattr(c, k) for k in _CLUSTER_FIELDS}, run_date=day4))
        s.add(
            Cluster(
                **{k: getattr(new[0], k) for k in _CLUSTER_FIELDS if k != "cluster_id"},
                run_date=day4,
                cluster_id=9,
            )
        )
    rerun = _night(ctx, day3)
    assert rerun["n_new_clusters"] == 1
    assert [c.cluster_id for c in _clusters(ctx, day3) if c.is_new] == [4]


def test_cluster_rows_are_readable_and_rerun_gives_the_same_answer(ctx):
    world, tracks, events = make_world(160, 25, DAY1, n_segments=2, seed=5)
    write_world(ctx, tracks, events, world.listener_ids)
    _night(ctx, DAY1)
    rows = _clusters(ctx, DAY1)
    slow = min(rows, key=lambda c: c.tempo_bpm)
    assert slow.tempo_bpm == pytest.approx(64.0, rel=0.05) and slow.key_name in ("D minor", "G minor")
    assert slow.top_families.split(";")[0] in ("strings", "piano", "pipe") and slow.silhouette > 0.5
    assert sum(c.size for c in rows) == 160
    again = _night(ctx, DAY1)
    assert [(c.cluster_id, c.size, c.centroid) for c in _clusters(ctx, DAY1)] == [
        (c.cluster_id, c.size, c.centroid) for c in rows
    ]
    assert again["n_new_clusters"] == 2  # a rerun of the first date still has no earlier date to match
    with ctx.sessions() as s:
        run = s.scalar(select(TasteRun).where(TasteRun.run_date == DAY1))
    assert run.k == 2 and run.k_criterion == "silhouette" and set(run.k_scores) >= {"2", "3"}


def test_taste_distribution_and_track_ranking_share_one_space(ctx):
    world, tracks, events = make_world(160, 25, DAY1, n_segments=2, seed=5)
    write_world(ctx, tracks, events, world.listener_ids)
    _night(ctx, DAY1)
    lv = listener_vectors(ctx, DAY1)
    slow_cluster = int(
        lv.loc[
            lv["listener_id"] == next(lid for lid, s in world.segment_of.items() if s == 0), "cluster_id"
        ].iloc[0]
    )
    dist = taste_distribution(ctx, DAY1, slow_cluster)
    assert dist["tempo_bpm"]["mean"] == pytest.approx(64.0, rel=0.05) and dist["tempo_bpm"]["spread_log2"] > 0
    assert (
        sum(dist["keys"].values()) == pytest.approx(1.0, abs=1e-3)
        and max(dist["keys"], key=dist["keys"].get) == "D minor"
    )
    assert set(dist["programs"]) <= {"40", "0", "73"} and dist["meters"] == {"3/4": 1.0}
    assert sum(dist["families"].values()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(LookupError, match="does not exist"):
        taste_distribution(ctx, DAY1, 99)

    # A slow string track ranks closer to a slow-cluster listener than a fast synth track does.
    space = load_space(ctx, DAY1)
    listener = lv.loc[lv["cluster_id"] == slow_cluster, "vector"].iloc[0]
    near = track_vector(66.0, 2, "minor", "40;0", 3.0)
    far = track_vector(150.0, 6, "minor", "81;drums", 12.0)
    d_near, d_far = space.distance(listener, np.stack([near, far]))
    assert d_near < d_far and len(listener) == len(FEATURE_NAMES)


def test_hungarian_matching_keeps_ids_and_only_far_centroids_are_new():
    previous = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    tonight = np.array([[0.0, 9.8], [0.2, 0.1], [30.0, 30.0], [10.1, 0.0]])
    match = match_ids([7, 3, 5], previous, tonight, next_id=8, ratio=0.5)
    assert match.ids == [5, 7, 8, 3] and match.is_new == [False, False, True, False]


def test_taste_plots_are_written_for_a_date(ctx, tmp_path):
    world, tracks, events = make_world(120, 20, DAY1, n_segments=3, seed=4)
    write_world(ctx, tracks, events, world.listener_ids)
    _night(ctx, DAY1)
    from personalize.report.taste import taste_map_png, write_taste_plots

    paths = write_taste_plots(ctx, DAY1, tmp_path / "plots")
    assert {p.name for p in paths} == {
        "taste_map.png",
        "cluster_tempo.png",
        "cluster_keys.png",
        "cluster_families.png",
        "cluster_sizes.png",
    }
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000 for p in paths)
    assert taste_map_png(ctx, DAY1)[:4] == b"\x89PNG"
