"""The gc stage keeps storage bounded by the retention window: files no playlist inside the window lists
are removed, everything a listener may still be served stays, and a second run removes nothing."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from sqlalchemy import select

from personalize.db.models import Listener, Playlist, PlaylistItem, Track
from personalize.pipeline import run_stage
from tests.fresh_tracks import fresh_track

NIGHT = dt.date(2026, 10, 31)
OLD = NIGHT - dt.timedelta(days=40)


def _track(ctx, track_id: str, run_date: dt.date, midi: bytes) -> Track:  # type: ignore[no-untyped-def]
    audio = ctx.storage.put_bytes("audio", b"OggS" + midi, ".ogg")
    return fresh_track(ctx, track_id, midi, run_date, audio_uri=audio.uri, audio_bytes=audio.n_bytes)


def _playlist(session, listener_id: str, run_date: dt.date, tracks: list[str], status="published") -> None:  # type: ignore[no-untyped-def]
    p = Playlist(listener_id=listener_id, run_date=run_date, status=status)
    session.add(p)
    session.flush()
    for pos, tid in enumerate(tracks, start=1):
        session.add(PlaylistItem(playlist_id=p.id, position=pos, track_id=tid, score=0.5, reason="r"))


def _uris(ctx, track_id: str) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    with ctx.sessions() as session:
        t = session.get(Track, track_id)
        return t.midi_uri, t.audio_uri


def test_gc_removes_only_what_no_recent_playlist_lists_and_is_idempotent(ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.settings.retention_days = 30
    ctx.settings.gc_orphan_grace_s = 3600.0
    with ctx.sessions.begin() as session:
        session.add_all([Listener(listener_id=x) for x in ("A", "B", "C")])
        session.add_all(
            [
                _track(ctx, "old-gone", OLD, b"gone"),  # only an old playlist of A lists it
                _track(ctx, "old-newest", OLD, b"newest"),  # B's newest published playlist, however old
                _track(ctx, "old-building", OLD, b"building"),  # a night building its playlists lists it
                _track(ctx, "old-shared", OLD, b"shared"),  # same bytes as a recent track
                _track(ctx, "recent", NIGHT - dt.timedelta(days=3), b"shared"),  # no playlist, inside window
                _track(
                    ctx, "tomorrow", NIGHT + dt.timedelta(days=1), b"later night"
                ),  # a later night running
            ]
        )
        session.flush()
        _playlist(session, "A", OLD, ["old-gone", "old-shared"])
        _playlist(session, "A", NIGHT, ["recent"])
        _playlist(session, "B", OLD, ["old-newest"])
        _playlist(session, "C", NIGHT, ["old-building"], status="building")
    gone_midi, gone_audio = _uris(ctx, "old-gone")
    root = Path(ctx.settings.resolved_storage_url)
    stale_orphan = ctx.storage.put_bytes("audio", b"crashed before it was recorded", ".ogg").uri
    fresh_orphan = ctx.storage.put_bytes("audio", b"being rendered right now", ".ogg").uri
    two_hours_ago = time.time() - 7200
    os.utime(stale_orphan, (two_hours_ago, two_hours_ago))
    before = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    summary = run_stage(ctx, "gc", NIGHT)

    assert summary["tracks_cleared"] == 2  # old-gone and old-shared
    assert _uris(ctx, "old-gone") == (None, None)
    assert not Path(gone_midi).exists() and not Path(gone_audio).exists()
    # The shared MIDI file stays: the recent track still names it.
    assert _uris(ctx, "old-shared") == (None, None)
    assert Path(_uris(ctx, "recent")[0]).exists() and Path(_uris(ctx, "recent")[1]).exists()
    for kept in ("old-newest", "old-building", "tomorrow"):
        midi, audio = _uris(ctx, kept)
        assert midi and audio and Path(midi).exists() and Path(audio).exists(), kept
    assert not Path(stale_orphan).exists() and Path(fresh_orphan).exists()
    after = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert summary["freed_bytes"] == before - after > 0
    assert summary["stored_bytes"] == after

    again = run_stage(ctx, "gc", NIGHT)
    assert again["tracks_cleared"] == 0 and again["files_removed"] == 0 and again["orphans_removed"] == 0
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) == after
    with ctx.sessions() as session:
        assert session.scalar(select(Track.track_id).where(Track.track_id == "old-gone")) == "old-gone"
