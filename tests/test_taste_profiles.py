"""Taste profiles on both engines: what listeners played shows up in their tempo, key and instruments; the
cold-start rule; reruns; bad catalog rows quarantined; listener and track vectors share one space."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from synthetic_taste import write_world

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
from personalize.cluster.distribution import listener_vectors
from personalize.db.models import QuarantinedRow, TasteProfile
from personalize.profile.vector import FEATURE_NAMES, track_vector

RUN_DATE = dt.date(2026, 3, 1)
END = pd.Timestamp("2026-03-02", tz="UTC")

SLOW = {
    "track_id": "slow",
    "tempo_bpm": 70.0,
    "key_pc": 2,
    "mode": "minor",
    "programs": "40;42",
    "density": 3.0,
}
FAST = {
    "track_id": "fast",
    "tempo_bpm": 170.0,
    "key_pc": 7,
    "mode": "major",
    "programs": "81;drums",
    "density": 9.0,
}


def _catalog(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"title": r["track_id"], "source": "catalog", "duration_s": 200.0, "meter": "4/4", **r}
            for r in rows
        ]
    )[
        [
            "track_id",
            "title",
            "source",
            "duration_s",
            "tempo_bpm",
            "key_pc",
            "mode",
            "meter",
            "programs",
            "density",
        ]
    ]


def _events(rows: list[tuple[str, str, float, int, str]]) -> pd.DataFrame:
    """(listener, track, days before the end of the run date, ms_played, kind) -> events."""
    return pd.DataFrame(
        [
            {"event_id": f"e{i}", "listener_id": lid, "track_id": tid, "ts": END - pd.Timedelta(days=age),
             "ms_played": ms, "kind": kind}
            for i, (lid, tid, age, ms, kind) in enumerate(rows)
        ]
    )  # fmt: skip


def _profiles(ctx) -> dict[str, TasteProfile]:
    with ctx.sessions() as s:
        return {
            p.listener_id: p for p in s.scalars(select(TasteProfile).where(TasteProfile.run_date == RUN_DATE))
        }


def test_a_listener_who_enjoys_fast_tracks_gets_a_fast_profile(ctx):
    rows = []
    for day in range(10):
        rows += [
            ("speedy", "fast", day + 0.5, 200_000, "complete"),
            ("speedy", "slow", day + 0.6, 3_000, "skip"),
        ]
        rows += [("calm", "slow", day + 0.5, 200_000, "complete"), ("calm", "fast", day + 0.6, 4_000, "skip")]
    rows.append(("speedy", "fast", 1.0, 0, "like"))
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), ["speedy", "calm"])
    summary = profile.run(ctx, RUN_DATE)
    assert summary["n_profiled"] == 2 and summary["n_events"] == len(rows)
    prof = _profiles(ctx)
    assert prof["speedy"].tempo_bpm == pytest.approx(170.0, rel=0.01)
    assert prof["speedy"].key_name == "G major" and prof["speedy"].top_families.split(";")[0] in (
        "synth_lead",
        "drums",
    )
    assert prof["calm"].tempo_bpm == pytest.approx(70.0, rel=0.01)
    assert prof["calm"].key_name == "D minor" and prof["calm"].top_families == "strings"
    assert prof["calm"].density == pytest.approx(3.0, rel=0.01)


def test_recent_plays_count_more_than_old_ones(ctx):
    rows = [("drifter", "slow", 25.0 + d * 0.1, 200_000, "complete") for d in range(6)]
    rows += [("drifter", "fast", 1.0 + d * 0.1, 200_000, "complete") for d in range(6)]
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), ["drifter"])
    profile.run(ctx, RUN_DATE)
    tempo = _profiles(ctx)["drifter"].tempo_bpm
    # Same number of full plays of each, but the slow ones are ~24 days older (three 7-day half-lives).
    assert tempo > np.sqrt(70.0 * 170.0) * 1.1


def test_a_listener_whose_last_week_moved_gets_a_profile_of_that_week_and_a_steady_one_does_not(ctx):
    """Three weeks of mid-tempo music, then a week of fast music: the profile is the last week's (the whole
    window's mean would still sit between the two). A listener who played slow and fast all along keeps the
    whole window's profile: their last week is no different from the rest."""
    # Several tracks of each kind: the evidence is in how many different tracks say the same.
    mids = [{**SLOW, "track_id": f"mid{i}", "tempo_bpm": 105.0 + 2 * i} for i in range(6)]
    fasts = [{**FAST, "track_id": f"fast{i}", "tempo_bpm": 165.0 + 2 * i} for i in range(6)]
    slows = [{**SLOW, "track_id": f"slow{i}", "tempo_bpm": 68.0 + 2 * i} for i in range(6)]
    rows = [("mover", f"mid{d % 6}", 8.0 + d, 200_000, "complete") for d in range(20)]
    rows += [("mover", f"fast{d % 6}", 0.2 + d / 3, 200_000, "complete") for d in range(21)]
    rows += [
        ("steady", f"{'slow' if d % 2 else 'fast'}{d % 6}", 0.3 + d / 2, 200_000, "complete")
        for d in range(54)
    ]
    write_world(ctx, _catalog(*mids, *fasts, *slows), _events(rows), ["mover", "steady"])
    ctx.settings.profile_half_life_days = 14.0  # a long memory, where the rule is what moves the profile
    ctx.settings.profile_drift_z_start = 1000.0  # the rule off: the whole window, recency-weighted
    profile.run(ctx, RUN_DATE)
    whole = _profiles(ctx)
    ctx.settings.profile_drift_z_start = 2.0
    profile.run(ctx, RUN_DATE)
    adaptive = _profiles(ctx)
    assert whole["mover"].tempo_bpm < 150.0
    assert adaptive["mover"].tempo_bpm == pytest.approx(170.0, rel=0.02)  # the fast tracks' mean
    assert adaptive["mover"].weight_total == pytest.approx(whole["mover"].weight_total)
    assert adaptive["steady"].tempo_bpm == pytest.approx(whole["steady"].tempo_bpm, rel=1e-6)


def test_plays_of_served_tracks_count_less_than_music_the_listener_chose(ctx):
    """Equal full plays of a slow track the service wrote and served and of a fast catalog track the
    listener chose: with served plays weighted down, the profile leans to what was chosen; a like of the
    served track still counts in full."""
    served = {**SLOW, "track_id": "served-slow"}
    catalog = _catalog(served, FAST)
    catalog.loc[catalog["track_id"] == "served-slow", "source"] = "generated"
    rows = [("l1", "served-slow", 1.0 + d * 0.1, 200_000, "complete") for d in range(6)]
    rows += [("l1", "fast", 1.05 + d * 0.1, 200_000, "complete") for d in range(6)]
    rows += [("l2", "served-slow", 1.0 + d * 0.1, 200_000, "like") for d in range(6)]
    rows += [("l2", "fast", 1.05 + d * 0.1, 200_000, "complete") for d in range(6)]
    write_world(ctx, catalog, _events(rows), ["l1", "l2"])
    middle = np.sqrt(70.0 * 170.0)
    ctx.settings.profile_served_play_weight = 1.0
    profile.run(ctx, RUN_DATE)
    assert _profiles(ctx)["l1"].tempo_bpm == pytest.approx(middle, rel=0.02)
    ctx.settings.profile_served_play_weight = 0.25
    profile.run(ctx, RUN_DATE)
    prof = _profiles(ctx)
    assert prof["l1"].tempo_bpm > middle * 1.25
    assert prof["l2"].tempo_bpm < middle  # two likes outweigh one chosen play, served or not


def test_music_chosen_where_the_catalog_is_sparse_counts_for_what_the_catalog_could_not_offer(ctx):
    """Twelve catalog tracks crowd around 100 BPM and two sit at 150. A listener who played four crowded
    tracks and one sparse one as fully gets a profile pulled towards 150 by the availability weight (any
    recommender offers the crowded tempi more often); a listener of crowded tracks alone stays where they
    are. A track the service wrote and served weighs the same wherever it sits."""
    crowded = [{**SLOW, "track_id": f"c{i}", "tempo_bpm": 100.0 + i} for i in range(12)]
    sparse = [{**FAST, "track_id": f"s{i}", "tempo_bpm": 150.0 + 2 * i} for i in range(2)]
    rows = [("explorer", f"c{i}", 1.0 + i * 0.1, 200_000, "complete") for i in range(4)]
    rows += [("explorer", "s0", 1.5, 200_000, "complete")]
    rows += [("homebody", f"c{i}", 1.0 + i * 0.1, 200_000, "complete") for i in range(4)]
    write_world(ctx, _catalog(*crowded, *sparse), _events(rows), ["explorer", "homebody"])
    ctx.settings.profile_availability_power = 0.0
    profile.run(ctx, RUN_DATE)
    plain = _profiles(ctx)
    ctx.settings.profile_availability_power = 1.0
    profile.run(ctx, RUN_DATE)
    weighted = _profiles(ctx)
    assert weighted["explorer"].tempo_bpm > plain["explorer"].tempo_bpm * 1.08
    assert weighted["homebody"].tempo_bpm == pytest.approx(plain["homebody"].tempo_bpm, rel=0.01)

    tracks, _ = profile.load_tracks(ctx)
    w = profile.availability_weights(tracks, 1.0, 0.06)
    at = {t: w[i] for i, t in enumerate(tracks.index)}
    assert at["s0"] > 1.5 > 1.0 > at["c5"]
    tracks.served[:] = True
    assert (profile.availability_weights(tracks, 1.0, 0.06) == 1.0).all()
    assert (profile.availability_weights(tracks, 0.0, 0.06) == 1.0).all()


def test_a_listener_who_plays_one_track_sits_on_that_tracks_vector(ctx):
    rows = [("fan", "fast", d + 0.5, 200_000, "complete") for d in range(6)]
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), ["fan"])
    profile.run(ctx, RUN_DATE)
    vec = np.asarray(_profiles(ctx)["fan"].vector)
    expected = track_vector(
        FAST["tempo_bpm"], FAST["key_pc"], FAST["mode"], FAST["programs"], FAST["density"]
    )
    assert len(vec) == len(FEATURE_NAMES)
    np.testing.assert_allclose(vec, expected, atol=1e-5)


def test_cold_start_rule_thin_and_cold_listeners_are_counted_and_assigned(ctx):
    rows = []
    for n in range(6):  # two clear tastes so clusters exist
        for d in range(8):
            rows.append((f"slow{n}", "slow", d + 0.3, 200_000, "complete"))
            rows.append((f"fast{n}", "fast", d + 0.3, 200_000, "complete"))
    rows += [("newbie", "fast", 0.5, 200_000, "complete"), ("newbie", "fast", 0.7, 150_000, "play")]  # 2 < 5
    rows += [("skipper", "slow", d + 0.5, 2_000, "skip") for d in range(8)]  # only early skips
    rows += [("gone", "slow", 40.0, 200_000, "complete")]  # outside the 28-day window
    ids = [f"slow{n}" for n in range(6)] + [f"fast{n}" for n in range(6)] + ["newbie", "skipper", "gone"]
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), ids)
    summary = profile.run(ctx, RUN_DATE)
    assert (summary["n_profiled"], summary["n_thin"], summary["n_cold"]) == (12, 1, 2)
    prof = _profiles(ctx)
    assert prof["newbie"].status == "thin" and prof["newbie"].tempo_bpm == pytest.approx(170.0, rel=0.01)
    assert (
        prof["skipper"].status == "cold" and prof["skipper"].vector is None and prof["skipper"].n_events == 8
    )
    assert prof["gone"].status == "cold" and prof["gone"].n_events == 0

    csum = cluster.run(ctx, RUN_DATE)
    assert csum["k"] == 2 and (csum["n_thin"], csum["n_cold"]) == (1, 2)
    prof = _profiles(ctx)
    assert prof["newbie"].cluster_id == prof["fast0"].cluster_id  # thin: nearest cluster
    default = csum["n_cold_default_cluster"]
    assert prof["skipper"].cluster_id == default and prof["gone"].cluster_id == default
    vectors = listener_vectors(ctx, RUN_DATE).set_index("listener_id")
    assert vectors.loc["gone", "vector"].shape == (len(FEATURE_NAMES),)  # the default profile


def test_rerun_of_a_date_replaces_its_profiles(ctx):
    rows = [
        (f"l{n}", "fast" if n % 2 else "slow", d + 0.5, 200_000, "complete")
        for n in range(8)
        for d in range(6)
    ]
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), [f"l{n}" for n in range(8)])
    first = profile.run(ctx, RUN_DATE)
    cluster.run(ctx, RUN_DATE)
    before = {k: (p.vector, p.cluster_id) for k, p in _profiles(ctx).items()}
    second = profile.run(ctx, RUN_DATE)
    cluster.run(ctx, RUN_DATE)
    after = {k: (p.vector, p.cluster_id) for k, p in _profiles(ctx).items()}
    assert before == after and first["n_listeners"] == second["n_listeners"] == 8
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TasteProfile)) == 8


def test_a_track_with_unreadable_programs_is_quarantined_and_the_run_goes_on(ctx):
    bad = {
        "track_id": "bad",
        "tempo_bpm": 100.0,
        "key_pc": 0,
        "mode": "major",
        "programs": "banjo?",
        "density": 4.0,
    }
    rows = [("l1", t, d + 0.5, 200_000, "complete") for d in range(6) for t in ("fast", "bad")]
    write_world(ctx, _catalog(SLOW, FAST, bad), _events(rows), ["l1"])
    summary = profile.run(ctx, RUN_DATE)
    assert summary["n_tracks_quarantined"] == 1 and summary["n_events_unusable_track"] == 6
    assert _profiles(ctx)["l1"].tempo_bpm == pytest.approx(170.0, rel=0.01)
    with ctx.sessions() as s:
        q = s.scalars(select(QuarantinedRow)).all()
    assert len(q) == 1 and q[0].reason == "bad_track_features" and "bad" in q[0].detail
    profile.run(ctx, RUN_DATE)  # a rerun keeps one quarantine row, not two
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(QuarantinedRow)) == 1


def test_a_young_service_with_only_thin_or_cold_listeners_does_not_crash(ctx):
    rows = [("a", "fast", 0.5, 200_000, "complete"), ("b", "slow", 0.5, 200_000, "complete")]
    rows += [("c", "slow", 0.5, 1_000, "skip"), ("d", "slow", 40.0, 200_000, "complete")]  # d: out of window
    write_world(ctx, _catalog(SLOW, FAST), _events(rows), ["a", "b", "c", "d"])
    summary = profile.run(ctx, RUN_DATE)
    assert (summary["n_profiled"], summary["n_thin"], summary["n_cold"]) == (0, 2, 2)
    csum = cluster.run(ctx, RUN_DATE)
    assert csum["fitted_on"] == "thin" and csum["k"] >= 1
    prof = _profiles(ctx)
    assert prof["a"].cluster_id != prof["b"].cluster_id or csum["k"] == 1
    assert all(p.cluster_id is not None for p in prof.values())


def test_no_engagement_at_all_gives_no_clusters_and_a_reason(ctx):
    write_world(ctx, _catalog(SLOW, FAST), _events([("c", "slow", 0.5, 1_000, "skip")]), ["c"])
    profile.run(ctx, RUN_DATE)
    csum = cluster.run(ctx, RUN_DATE)
    assert csum["k"] == 0 and "no clusters tonight" in csum["detail"]
