"""The nights' "generated" tracks for the loop tests, made by hand: rows with real catalog features and
stored bytes, so freshness, the answering world and the loop's bookkeeping are tested without the generator."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from personalize.db.models import Cluster, Track
from tests.fresh_tracks import fresh_track


def hand_tracks(ctx, day: dt.date, per_cluster: int = 4) -> list[str]:  # type: ignore[no-untyped-def]
    """The night's "generated" tracks: per cluster, copies of the catalog tracks nearest its tempo in its
    mode (real measured features), each with stored MIDI and audio bytes."""
    with ctx.sessions() as session:
        clusters = session.execute(select(Cluster).where(Cluster.run_date == day)).scalars().all()
        catalog = session.execute(select(Track).where(Track.source == "catalog")).scalars().all()
    made = []
    with ctx.sessions.begin() as session:
        for c in clusters:
            same_mode = [t for t in catalog if t.mode == c.mode] or catalog
            nearest = sorted(same_mode, key=lambda t: (abs(t.tempo_bpm - c.tempo_bpm), t.track_id))[
                :per_cluster
            ]
            for slot, t in enumerate(nearest):
                tid = f"gen-{day:%Y%m%d}-c{c.cluster_id}-{slot:03d}"
                audio = ctx.storage.put_bytes("audio", tid.encode(), ".ogg")
                session.add(
                    fresh_track(
                        ctx, tid, tid.encode(), day, cluster_id=c.cluster_id, tempo_bpm=t.tempo_bpm,
                        key_pc=t.key_pc, mode=t.mode, programs=t.programs, density=t.density,
                        audio_uri=audio.uri,
                    )
                )  # fmt: skip
                made.append(tid)
    return made
