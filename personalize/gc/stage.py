"""The gc stage: after a night is published, remove the MIDI and audio of generated tracks that no
playlist inside the retention window (``retention_days``) references, so storage stays bounded however
many nights run.

A generated track is kept when its run date lies inside the window (``run_date - retention_days`` <
track date; that also covers a later night running at the same time), when a playlist of a date inside the
window lists it (building or published), or when a listener's newest published playlist lists it (the one
the app serves, however old). Every other generated track loses its ``midi_uri`` and ``audio_uri`` in one
transaction first, so no later stage picks it up, and only then are its files removed, each only when no
remaining row names it (storage is content-addressed: two rows may share one file). A file that no row
names at all (a crash between storing it and recording it) is removed once it is older than
``gc_orphan_grace_s``, so a night still writing files keeps them.

Idempotent: a second run for the same date finds nothing to clear and removes nothing. The database rows
stay (playlist history, what each track asked for and measured); only the large files go.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from personalize.context import Context
from personalize.db.models import Playlist, PlaylistItem, Track

log = logging.getLogger(__name__)

KINDS = ("midi", "audio")


def _kept_track_ids(conn, cutoff: dt.date) -> set[str]:  # type: ignore[no-untyped-def]
    """Generated tracks some playlist inside the window lists, or a listener's newest published one."""
    newest = (
        select(Playlist.listener_id, func.max(Playlist.run_date).label("run_date"))
        .where(Playlist.status == "published")
        .group_by(Playlist.listener_id)
        .subquery()
    )
    newest_ids = select(Playlist.id).join(
        newest,
        and_(Playlist.listener_id == newest.c.listener_id, Playlist.run_date == newest.c.run_date),
    )
    rows = conn.execute(
        select(PlaylistItem.track_id)
        .join(Playlist, Playlist.id == PlaylistItem.playlist_id)
        .where(or_(Playlist.run_date > cutoff, Playlist.id.in_(newest_ids)))
        .distinct()
    ).scalars()
    return set(rows)


def run(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """Clear and remove what fell out of the retention window as of ``run_date``; returns what was freed."""
    t0 = time.perf_counter()
    cutoff = run_date - dt.timedelta(days=ctx.settings.retention_days)
    with ctx.engine.begin() as conn:
        kept = _kept_track_ids(conn, cutoff)
        stale = conn.execute(
            select(Track.track_id, Track.midi_uri, Track.audio_uri).where(
                Track.source == "generated",
                Track.run_date <= cutoff,
                or_(Track.midi_uri.is_not(None), Track.audio_uri.is_not(None)),
            )
        ).all()
        cleared = [r for r in stale if r.track_id not in kept]
        ids = [r.track_id for r in cleared]
        for start in range(0, len(ids), 500):
            conn.execute(
                update(Track)
                .where(Track.track_id.in_(ids[start : start + 500]))
                .values(midi_uri=None, audio_uri=None)
            )
    with ctx.engine.connect() as conn:
        named: set[str] = set()
        for midi_uri, audio_uri in conn.execute(select(Track.midi_uri, Track.audio_uri)):
            named.update(u for u in (midi_uri, audio_uri) if u)

    freed_bytes = 0
    removed = 0
    candidates = {u for r in cleared for u in (r.midi_uri, r.audio_uri) if u}
    for uri in sorted(candidates - named):
        n = ctx.storage.delete(uri)
        freed_bytes += n
        removed += 1 if n else 0
    orphans = 0
    oldest_allowed = time.time() - ctx.settings.gc_orphan_grace_s
    for kind in KINDS:
        for uri, _, modified in ctx.storage.listing(kind):
            if uri not in named and uri not in candidates and modified < oldest_allowed:
                freed_bytes += ctx.storage.delete(uri)
                orphans += 1
    summary = {
        "stage": "gc",
        "run_date": run_date.isoformat(),
        "retention_days": ctx.settings.retention_days,
        "kept_until": cutoff.isoformat(),
        "tracks_cleared": len(cleared),
        "tracks_kept_by_playlists": sum(1 for r in stale if r.track_id in kept),
        "files_removed": removed,
        "orphans_removed": orphans,
        "freed_bytes": int(freed_bytes),
        "stored_bytes": int(ctx.storage.total_bytes(KINDS)),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("gc %s: %s", run_date, summary)
    return summary
