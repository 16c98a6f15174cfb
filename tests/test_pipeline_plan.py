"""Planning the night: tracks per cluster proportional to its size within the min/max, each track's controls
drawn from the cluster's taste distribution (varied, not the centroid over and over), reproducible from the
run date and cluster, and a plan stage that is safe to rerun (on both engines)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from synthetic_taste import make_world, write_world

import personalize.cluster.stage as cluster
import personalize.plan.stage as plan
import personalize.profile.stage as profile
from personalize.db.models import Cluster, TrackPlan
from personalize.music.controls import bar_quarters, density_bin_for
from personalize.music.gm import DRUMS
from personalize.plan.draw import allocate, draw_controls

DAY = dt.date(2026, 3, 1)

DIST = {
    "tempo_bpm": {"mean": 96.0, "mean_log2": 6.585, "spread_log2": 0.3, "p10": 88.0, "p90": 104.0},
    "keys": {"D minor": 0.5, "G minor": 0.3, "A minor": 0.2},
    "meters": {"4/4": 0.7, "3/4": 0.3},
    "programs": {"40": 0.4, "42": 0.3, "0": 0.2, "73": 0.1, "drums": 0.2},
    "families": {"strings": 0.5, "piano": 0.2, "pipe": 0.1, "drums": 0.2},
    "density_nps": {"mean": 6.0, "mean_log2": 2.585, "spread_log2": 0.2},
}


def test_tracks_are_allocated_by_cluster_size_within_the_bounds():
    got = allocate({1: 500, 2: 300, 3: 150, 4: 40, 5: 10}, total=100, minimum=4, maximum=40)
    assert got[1] == 40  # capped
    assert got[2] == 30 and got[3] == 15
    assert got[4] == 4 and got[5] == 4  # small clusters still get fresh music
    assert allocate({1: 1, 2: 1, 3: 1}, total=10, minimum=1, maximum=10) in (
        {1: 4, 2: 3, 3: 3},
        {1: 3, 2: 4, 3: 3},
        {1: 3, 2: 3, 3: 4},
    )
    with pytest.raises(ValueError, match="above"):
        allocate({1: 1}, total=5, minimum=6, maximum=5)


def test_controls_vary_across_a_cluster_and_repeat_for_the_same_date_and_slot():
    drawn = [draw_controls(DIST, DAY, 3, slot, seconds=(120.0, 180.0))[0] for slot in range(40)]
    keys = {(c.key_pc, c.mode) for c in drawn}
    assert keys <= {(2, "minor"), (7, "minor"), (9, "minor")} and len(keys) == 3
    tempi = [c.tempo_bpm for c in drawn]
    # Spread like the members' own tempi (10-90 %: 88-104 BPM), not their wider listening (0.3 octaves).
    assert len(set(tempi)) > 30 and 80 < min(tempi) and max(tempi) < 115
    assert {c.meter for c in drawn} == {"4/4", "3/4"}
    for c in drawn:
        assert set(c.programs) <= {40, 42, 0, 73, DRUMS} and len(c.pitched_programs) >= 2
        minutes = c.bars * bar_quarters(c.meter) / c.tempo_bpm
        assert 2.0 - 0.05 <= minutes <= 3.0 + 0.05  # two to three minutes of music, in whole bars
    with_drums = sum(c.has_drums for c in drawn) / len(drawn)
    assert 0.2 < with_drums < 0.9
    again = draw_controls(DIST, DAY, 3, 7, seconds=(120.0, 180.0))
    assert again == draw_controls(DIST, DAY, 3, 7, seconds=(120.0, 180.0))
    assert again[0] != draw_controls(DIST, DAY + dt.timedelta(days=1), 3, 7, seconds=(120.0, 180.0))[0]
    controls, density_nps, _ = again
    assert controls.density_bin == density_bin_for(
        density_nps, controls.tempo_bpm, len(controls.pitched_programs)
    )


def test_plan_stage_follows_cluster_sizes_and_is_rerun_safe(ctx):
    world, tracks, events = make_world(160, 25, DAY, n_segments=3, seed=4)
    write_world(ctx, tracks, events, world.listener_ids)
    profile.run(ctx, DAY)
    cluster.run(ctx, DAY)
    summary = plan.run(ctx, DAY)
    with ctx.sessions() as s:
        sizes = {
            c.cluster_id: c.size for c in s.execute(select(Cluster).where(Cluster.run_date == DAY)).scalars()
        }
        rows = s.execute(select(TrackPlan).where(TrackPlan.run_date == DAY)).scalars().all()
    # The cluster's own tracks (the tracks written for one outlier listener come on top, within a budget).
    per_cluster = {c: sum(r.cluster_id == c and r.listener_id is None for r in rows) for c in sizes}
    assert summary["clusters"] == sorted(sizes) and summary["tracks_planned"] == len(rows)
    biggest, smallest = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    assert per_cluster[biggest] >= per_cluster[smallest]
    s = ctx.settings
    assert all(s.tracks_per_cluster_min <= n <= s.tracks_per_cluster_max for n in per_cluster.values())
    assert all(r.status == "planned" for r in rows)
    # Each track asks for a length inside the song-length band, in bars of its own meter and tempo.
    from personalize.music.controls import bar_quarters

    for r in rows:
        seconds = r.controls["bars"] * bar_quarters(r.meter) * 60.0 / r.tempo_bpm
        slack = bar_quarters(r.meter) * 60.0 / r.tempo_bpm  # rounding to whole bars
        assert s.track_seconds_min - slack <= seconds <= s.track_seconds_max + slack, (r.controls, seconds)
    before = sorted((r.cluster_id, r.slot, r.seed, r.tempo_bpm, r.key_pc, r.programs) for r in rows)
    plan.run(ctx, DAY)
    with ctx.sessions() as s2:
        after = sorted(
            (r.cluster_id, r.slot, r.seed, r.tempo_bpm, r.key_pc, r.programs)
            for r in s2.execute(select(TrackPlan).where(TrackPlan.run_date == DAY)).scalars()
        )
    assert after == before
