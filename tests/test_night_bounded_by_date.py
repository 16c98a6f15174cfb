"""A night for date D uses only what was known by the end of D, on both engines: a listener whose first
listening event comes later gets no taste profile, no cluster and no playlist on D, later events do not
count in D's profiles, and rerunning D after more history arrives changes nothing for D."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select
from synthetic_taste import make_world, write_world

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
import personalize.publish.stage as publish
from personalize.db.models import Cluster, Listener, Playlist, PlaylistItem, TasteProfile, Track

D = dt.date(2026, 3, 1)
END_OF_D = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
SEED = 7  # one catalog for every batch below (make_world's catalog depends on the seed only)


def _night(ctx) -> dict[str, dict]:
    return {
        "profile": profile.run(ctx, D),
        "cluster": cluster.run(ctx, D),
        "publish": publish.run(ctx, D),
    }


def _generated_tracks_for(ctx, run_date: dt.date) -> None:
    """Three rendered tracks per cluster of the date, shaped like the cluster (the publish stage's input)."""
    with ctx.sessions() as s:
        clusters = s.scalars(select(Cluster).where(Cluster.run_date == run_date)).all()
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(Track),
            [
                {
                    "track_id": f"gen_{run_date:%Y%m%d}_c{c.cluster_id}_{slot}",
                    "title": f"night {run_date} cluster {c.cluster_id} #{slot}",
                    "source": "generated",
                    "duration_s": 30.0,
                    "tempo_bpm": c.tempo_bpm * (1.0 + 0.02 * slot),
                    "key_pc": c.key_pc,
                    "mode": c.mode,
                    "meter": "4/4",
                    "programs": "0;33",
                    "density": c.density,
                    "run_date": run_date,
                    "cluster_id": c.cluster_id,
                    "audio_uri": f"tracks/{run_date}/c{c.cluster_id}_{slot}.ogg",
                }
                for c in clusters
                for slot in range(3)
            ],
        )


def _state_of_d(ctx) -> dict[str, object]:
    """Everything D's night wrote: profiles, clusters and published playlists with their items."""
    with ctx.sessions() as s:
        profiles = {
            p.listener_id: (p.status, p.n_events, p.weight_total, p.vector, p.cluster_id)
            for p in s.scalars(select(TasteProfile).where(TasteProfile.run_date == D))
        }
        clusters = [
            (c.cluster_id, c.size, c.n_profiled, c.centroid)
            for c in s.scalars(select(Cluster).where(Cluster.run_date == D).order_by(Cluster.cluster_id))
        ]
        items = s.execute(
            select(Playlist.listener_id, Playlist.status, PlaylistItem.position, PlaylistItem.track_id)
            .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
            .where(Playlist.run_date == D)
            .order_by(Playlist.listener_id, PlaylistItem.position)
        ).all()
    playlists: dict[str, list[tuple[str, int, str]]] = {}
    for lid, status, pos, tid in items:
        playlists.setdefault(lid, []).append((status, pos, tid))
    return {"profiles": profiles, "clusters": clusters, "playlists": playlists}


def test_listeners_first_heard_after_the_date_are_not_part_of_its_night(ctx):
    # Known by D: 60 listeners with 28 days of history ending with D.
    known, tracks, events = make_world(60, 20, D, n_segments=2, seed=SEED)
    write_world(ctx, tracks, events, known.listener_ids)
    # First heard after D: 15 listeners whose events all fall on D+1..D+3.
    late, _, late_events = make_world(
        15, 20, D + dt.timedelta(days=3), n_segments=2, seed=SEED, prefix="N", event_seed=1, days=3
    )
    assert late_events["ts"].min() >= END_OF_D
    write_world(ctx, tracks.iloc[:0], late_events, late.listener_ids)
    # Listeners without any event: one whose row dates from before D, one created after it.
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(Listener),
            [
                {"listener_id": "quiet_before", "created_at": END_OF_D - dt.timedelta(days=20)},
                {"listener_id": "quiet_after", "created_at": END_OF_D + dt.timedelta(days=2)},
            ],
        )

    profile_summary = profile.run(ctx, D)
    cluster.run(ctx, D)
    _generated_tracks_for(ctx, D)
    publish_summary = publish.run(ctx, D)

    on_d = {*known.listener_ids, "quiet_before"}
    not_on_d = {*late.listener_ids, "quiet_after"}
    first = _state_of_d(ctx)
    assert set(first["profiles"]) == on_d  # type: ignore[arg-type]
    assert profile_summary["n_listeners"] == len(on_d) and profile_summary["n_events"] == len(events)
    assert first["profiles"]["quiet_before"][0] == "cold"  # type: ignore[index]
    assert all(p[4] is not None for p in first["profiles"].values())  # type: ignore[attr-defined]
    assert sum(c[1] for c in first["clusters"]) == len(on_d)  # type: ignore[attr-defined]
    assert set(first["playlists"]) == on_d  # type: ignore[arg-type]
    assert publish_summary["published"] == len(on_d) and publish_summary["listeners"] == len(on_d)

    # More history arrives: the known listeners keep listening, and more newcomers show up.
    _, _, more_events = make_world(
        60, 10, D + dt.timedelta(days=5), n_segments=2, seed=SEED, event_seed=2, days=5
    )
    newcomers, _, newcomer_events = make_world(
        10, 20, D + dt.timedelta(days=5), n_segments=2, seed=SEED, prefix="M", event_seed=3, days=2
    )
    assert min(more_events["ts"].min(), newcomer_events["ts"].min()) >= END_OF_D
    write_world(ctx, tracks.iloc[:0], more_events, [])
    write_world(ctx, tracks.iloc[:0], newcomer_events, newcomers.listener_ids)

    rerun = _night(ctx)
    assert rerun["profile"]["n_events"] == len(events) and rerun["profile"]["n_listeners"] == len(on_d)
    assert rerun["publish"]["published"] == 0 and rerun["publish"]["already_published"] == len(on_d)
    assert _state_of_d(ctx) == first
    with ctx.sessions() as s:
        for table in (TasteProfile, Playlist):
            late_rows = s.scalars(
                select(table.listener_id).where(
                    table.run_date == D,
                    table.listener_id.in_(not_on_d | set(newcomers.listener_ids)),
                )
            ).all()
            assert late_rows == []
