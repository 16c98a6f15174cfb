"""Freshness night after night: a playlist changes gradually (a share of it new each night, reported), a
track that left a listener's playlist never comes back within the window, what a listener skipped does not
carry over, and a track written for one listener goes to that listener only (small demo world, real
profile, cluster, plan and publish stages; the nights' tracks are rows with real catalog features, so no
generator runs here)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from personalize.db.models import TasteProfile, Track, TrackPlan
from personalize.ingest import ingest_events_frame
from personalize.pipeline import run_stage
from tests.fresh_tracks import fresh_track
from tests.loop_tracks import hand_tracks
from tests.nightly_world import WORLD_END, build_world_files, playlists_of, with_settings, world_context

NIGHTS = [WORLD_END + dt.timedelta(days=i) for i in range(4)]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("world"))


@pytest.fixture
def world(db_url: str, tmp_path: Path, world_files: Path):  # type: ignore[no-untyped-def]
    ctx = world_context(db_url, tmp_path / "data", world_files, playlist_size=4, playlist_new_share=0.5)
    yield ctx
    ctx.engine.dispose()


def taste(ctx, day: dt.date) -> None:  # type: ignore[no-untyped-def]
    run_stage(ctx, "profile", day)
    run_stage(ctx, "cluster", day)


def test_playlists_change_gradually_and_a_track_that_left_never_returns(world) -> None:  # type: ignore[no-untyped-def]
    ctx = world
    shares, history = [], []
    skipped: tuple[str, str] | None = None
    for n, day in enumerate(NIGHTS):
        taste(ctx, day)
        hand_tracks(ctx, day)
        if skipped is None and n == 1:
            # A listener skips one of yesterday's items early: it must not carry over tonight.
            lid, items = next(iter(history[0].items()))
            skipped = (lid, items[0][0])
            ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=9)
            frame = pd.DataFrame(
                [{"event_id": "fresh-skip-1", "listener_id": lid, "track_id": skipped[1], "ts": ts,
                  "ms_played": 3000, "kind": "skip"}]
            )  # fmt: skip
            assert ingest_events_frame(ctx, frame, source="test:skip").ingested == 1
        summary = run_stage(ctx, "publish", day)
        shares.append(summary["new_share"])
        history.append(playlists_of(ctx, day))

    assert shares[0] == 1.0  # the first night: nothing to carry
    for n in range(1, len(NIGHTS)):
        assert shares[n] == pytest.approx(0.5, abs=0.1), shares
        full = [
            lid for lid in history[n] if len(history[n][lid]) == 4 and len(history[n - 1].get(lid, [])) == 4
        ]
        assert len(full) > 0.8 * len(history[n])
        for lid in full:
            today = [t for t, _, _ in history[n][lid]]
            yesterday = {t for t, _, _ in history[n - 1][lid]}
            assert len(set(today) & yesterday) == 2, (lid, today, yesterday)  # half carried, half new
    lid, track = skipped
    assert track not in {t for t, _, _ in history[1][lid]}

    # Once a track has left a listener's playlist it never comes back (the window is 30 days).
    for lid in history[-1]:
        seen_left: set[str] = set()
        previous: set[str] = set()
        for night in history:
            now = {t for t, _, _ in night.get(lid, [])}
            assert not (now & seen_left), (lid, now & seen_left)
            seen_left |= previous - now
            previous = now


def test_a_track_written_for_one_listener_goes_to_them_only_at_the_top(world) -> None:  # type: ignore[no-untyped-def]
    ctx = world
    day = NIGHTS[0]
    taste(ctx, day)
    hand_tracks(ctx, day)
    with ctx.sessions() as session:
        some = (
            session.execute(select(Track).where(Track.run_date == day).order_by(Track.track_id))
            .scalars()
            .first()
        )
        owner = (
            session.execute(
                select(TasteProfile.listener_id)
                .where(TasteProfile.run_date == day, TasteProfile.cluster_id == some.cluster_id)
                .order_by(TasteProfile.listener_id)
            )
            .scalars()
            .first()
        )
    with ctx.sessions.begin() as session:
        audio = ctx.storage.put_bytes("audio", b"personal", ".ogg")
        session.add(
            fresh_track(
                ctx, "gen-personal", b"personal", day, cluster_id=some.cluster_id, tempo_bpm=some.tempo_bpm,
                key_pc=some.key_pc, mode=some.mode, programs=some.programs, density=some.density,
                audio_uri=audio.uri,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            TrackPlan(
                run_date=day, cluster_id=some.cluster_id, slot=500, seed=1, controls={}, tempo_bpm=some.tempo_bpm,
                key_pc=some.key_pc, mode=some.mode, meter="4/4", programs=some.programs, status="generated",
                track_id="gen-personal", listener_id=owner,
            )
        )  # fmt: skip
    summary = run_stage(ctx, "publish", day)
    lists = playlists_of(ctx, day)
    assert lists[owner][0][0] == "gen-personal"
    assert lists[owner][0][2].startswith("written for your own taste")
    assert all("gen-personal" not in {t for t, _, _ in items} for lid, items in lists.items() if lid != owner)
    assert summary["personal_items"] == 1
    # The answering world measures the owner on it against a track of that cluster instead (not posted).
    from personalize.simulate.answer import AnsweringWorld, answer_day
    from personalize.simulate.truth import load_truth

    truth = load_truth(Path(ctx.settings.data_dir) / "sim")
    measures = answer_day(ctx, AnsweringWorld(truth=truth, seed=11, tag=str(truth.world["tag"])), 1).measures
    assert measures["outlier_personal_plays"] == 1
    assert 0.0 < measures["outlier_cluster_alone_like_prob"] < 1.0


def test_plan_gives_outliers_their_own_tracks_within_the_budget(world) -> None:  # type: ignore[no-untyped-def]
    from personalize.plan.personal import budget_tracks, outliers

    day = NIGHTS[0]
    taste(world, day)
    ctx = with_settings(world, personal_tracks_cpu_s=30.0)
    n_budget, cost_s, source = budget_tracks(ctx, day)
    assert source.startswith("estimate") and n_budget == int(30.0 // cost_s) > 0
    far = outliers(ctx, day)
    summary = run_stage(ctx, "plan", day)
    with ctx.sessions() as session:
        rows = (
            session.execute(
                select(TrackPlan).where(TrackPlan.run_date == day, TrackPlan.listener_id.is_not(None))
            )
            .scalars()
            .all()
        )
    assert summary["personal_tracks"] == len(rows) == min(n_budget, len(far))
    # The farthest listeners first, each planned in their own cluster, near their own tempo.
    assert [r.listener_id for r in sorted(rows, key=lambda r: r.slot)] == [
        o["listener_id"] for o in far[: len(rows)]
    ]
    assert all(
        r.cluster_id == o["cluster_id"] for r, o in zip(sorted(rows, key=lambda r: r.slot), far, strict=False)
    )
    assert all(d["distance"] > far[-1]["distance"] - 1e-9 for d in far)

    none = with_settings(world, personal_tracks_cpu_s=0.0)
    assert run_stage(none, "plan", day)["personal_tracks"] == 0
