"""Feedback loop: likes and skips posted by the app land in listening_events and move the listener's taste
profile on the next nightly profile run."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sample_world import seed
from sqlalchemy import select

import personalize.profile.stage as profile
from personalize.api.app import create_app
from personalize.api.keys import create_key
from personalize.db.models import ListeningEvent, TasteProfile


def _profile(ctx, listener_id: str, run_date: dt.date) -> TasteProfile:
    with ctx.sessions() as session:
        return session.scalar(
            select(TasteProfile).where(
                TasteProfile.listener_id == listener_id, TasteProfile.run_date == run_date
            )
        )


def test_posted_likes_and_skips_move_the_next_profile(ctx):
    # Tracks long enough that a full play is not an early skip (profile_early_skip_s).
    seed(ctx, n_listeners=1, n_dates=1, playlist_size=5, audio_duration_s=45.0, building_date=False)
    key = create_key(ctx, "app").key
    now = dt.datetime.now(dt.UTC)
    client = TestClient(create_app(ctx), headers={"X-API-Key": key})
    tracks = client.get("/v1/listeners/L0000/playlist").json()["items"]
    slow = min(tracks, key=lambda t: t["tempo_bpm"])
    fast = max(tracks, key=lambda t: t["tempo_bpm"])
    assert fast["tempo_bpm"] - slow["tempo_bpm"] >= 30

    def events(prefix, when, plays):
        return [
            {"event_id": f"{prefix}{i}", "listener_id": "L0000", "track_id": t["track_id"],
             "ts": (when + dt.timedelta(seconds=i)).isoformat(), "ms_played": ms, "kind": kind}
            for i, (t, kind, ms) in enumerate(plays)
        ]  # fmt: skip

    # Before: the listener played the slow track through, many times.
    before = now - dt.timedelta(days=3)
    resp = client.post("/v1/events", json={"events": events("a", before, [(slow, "play", 45_000)] * 8)})
    assert resp.json()["accepted"] == 8
    night_1 = before.date()
    profile.run(ctx, night_1)
    p1 = _profile(ctx, "L0000", night_1)
    assert p1.status == "profiled" and abs(p1.tempo_bpm - slow["tempo_bpm"]) < 1

    # The app then reports skips of the slow track and likes and full plays of the fast one.
    feedback = [(slow, "skip", 800)] * 4 + [(fast, "like", 0)] * 3 + [(fast, "play", 45_000)] * 6
    resp = client.post("/v1/events", json={"events": events("b", now - dt.timedelta(minutes=5), feedback)})
    assert (resp.json()["accepted"], resp.json()["quarantined"]) == (13, 0)
    with ctx.engine.connect() as conn:
        stored = conn.scalar(select(ListeningEvent.source).where(ListeningEvent.event_id == "b0"))
    assert stored.startswith("api:")

    night_2 = now.date()
    profile.run(ctx, night_2)
    p2 = _profile(ctx, "L0000", night_2)
    assert p2.n_events == 8 + 13
    # The profile moves most of the way from the slow track's tempo to the fast one's.
    assert p2.tempo_bpm > p1.tempo_bpm + 0.5 * (fast["tempo_bpm"] - slow["tempo_bpm"])
    assert p2.vector != p1.vector
