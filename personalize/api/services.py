"""What the API does, independent of HTTP: playlists with signed audio URLs, track details, audio lookup,
event intake through the ingest stage, and web-player links. Refusals are domain errors (``errors.py``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, text

from personalize.api import queries
from personalize.api.audio import StoredAudio, media_type
from personalize.api.errors import NotFound, TooLarge
from personalize.api.schemas import (
    AudioInfoOut,
    EventsOut,
    PlayerLinkOut,
    PlaylistContextOut,
    PlaylistHistoryOut,
    PlaylistSummaryOut,
    QuarantinedEventOut,
    TrackOut,
)
from personalize.api.signing import Signer
from personalize.context import Context
from personalize.ids import url_id
from personalize.music.gm import family_of, parse_programs
from personalize.music.keys import key_name

EVENT_COLUMNS = ("event_id", "listener_id", "track_id", "ts", "ms_played", "kind")


@dataclass(frozen=True)
class Urls:
    """Builds absolute signed URLs for one request's base URL."""

    base_url: str
    signer: Signer
    audio_ttl_s: int
    now: float

    def audio(self, listener_id: str, track_id: str) -> str:
        query = self.signer.audio_query(listener_id, track_id, self.audio_ttl_s, now=self.now)
        return f"{self.base_url}/v1/tracks/{url_id(track_id)}/audio?{query}"

    @property
    def audio_expires_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.now) + self.audio_ttl_s, dt.UTC)


def instruments(programs: str) -> list[str]:
    """GM family names of a programs string, in order, without repeats (unparseable: none)."""
    return list(_families(programs))


@lru_cache(maxsize=4096)  # a night's tracks share a few hundred instrument sets
def _families(programs: str) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(family_of(p) for p in parse_programs(programs)))
    except ValueError:
        return ()


def ping(conn: Connection) -> None:
    """One trivial query: the database answers."""
    conn.execute(text("SELECT 1"))


def _unknown_listener(listener_id: str) -> NotFound:
    return NotFound("unknown_listener", f"Listener {listener_id} does not exist.")


def require_listener(conn: Connection, listener_id: str) -> None:
    if not queries.listener_exists(conn, listener_id):
        raise _unknown_listener(listener_id)


def playlist_read(run_date: dt.date | None, listener_id: str, limit: int, cursor: str | None) -> queries.Call:
    """The read :func:`playlist` builds its page from (run it with the key lookup, in one round trip)."""
    return queries.playlist_page(listener_id, run_date, int(cursor) if cursor else 0, limit + 1)


def playlist(
    conn: Connection,
    rows: list[Any],
    urls: Urls,
    listener_id: str,
    run_date: dt.date | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the listener's latest published playlist (or the one of ``run_date``), shaped as
    :class:`PlaylistOut`, from the ``rows`` of its :func:`playlist_read`. Built as plain data: this is the
    endpoint the app calls most."""
    after = int(cursor) if cursor else 0
    if rows:
        day, published_at = _date_text(rows[0].run_date), _datetime_text(rows[0].published_at)
    else:  # no such playlist, or a page past its end: the rare path may take extra queries
        head = queries.published_playlist(conn, listener_id, run_date)
        if head is None:
            require_listener(conn, listener_id)
            when = f"for {run_date.isoformat()}" if run_date else "yet"
            raise NotFound(
                "no_playlist",
                f"Listener {listener_id} has no published playlist {when}; try another date.",
            )
        day, published_at = _date_text(head.run_date), _datetime_text(head.published_at)
    has_more = len(rows) > limit
    rows = rows[:limit]
    total = (
        queries.playlist_size_on(conn, listener_id, dt.date.fromisoformat(day))
        if (has_more or after)
        else len(rows)
    )
    items = [
        {
            "position": r.position,
            "track_id": r.track_id,
            "title": r.title,
            "score": r.score,
            "reason": r.reason,
            "duration_s": r.duration_s,
            "tempo_bpm": r.tempo_bpm,
            "key": key_name(r.key_pc, r.mode),
            "meter": r.meter,
            "instruments": instruments(r.programs),
            "audio_url": urls.audio(listener_id, r.track_id) if r.audio_uri else None,
        }
        for r in rows
    ]
    return {
        "listener_id": listener_id,
        "run_date": day,
        "published_at": published_at,
        "total_items": total,
        "items": items,
        "next_cursor": str(rows[-1].position) if has_more and rows else None,
        "audio_urls_expire_at": urls.audio_expires_at.isoformat(),
    }


def _date_text(value: dt.date | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """An aware datetime, whether the driver gave one or SQLite's offset-less text (the product stores UTC)."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _datetime_text(value: dt.datetime | str | None) -> str | None:
    """ISO 8601 with an offset (RFC 3339 date-time, as the spec promises)."""
    parsed = _utc(value)
    return None if parsed is None else parsed.isoformat()


def playlist_history(
    conn: Connection, listener_id: str, limit: int, before: dt.date | None
) -> PlaylistHistoryOut:
    rows = queries.published_history(conn, listener_id, before, limit + 1)
    if not rows and before is None and not queries.listener_exists(conn, listener_id):
        raise _unknown_listener(listener_id)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return PlaylistHistoryOut(
        listener_id=listener_id,
        playlists=[
            PlaylistSummaryOut(run_date=r.run_date, published_at=_utc(r.published_at), n_items=r.n_items)
            for r in rows
        ],
        next_cursor=rows[-1].run_date.isoformat() if has_more else None,
    )


def track_detail(conn: Connection, urls: Urls, track_id: str, listener_id: str | None) -> TrackOut:
    row = queries.track(conn, track_id)
    if row is None:
        raise _unknown_track(track_id)
    context = None
    if listener_id is not None:
        require_listener(conn, listener_id)
        item = queries.latest_item_for(conn, listener_id, track_id)
        if item is not None:
            context = PlaylistContextOut(
                listener_id=listener_id,
                run_date=item.run_date,
                position=item.position,
                score=item.score,
                reason=item.reason,
                audio_url=urls.audio(listener_id, track_id) if row.audio_uri else None,
            )
    audio = None
    if row.audio_uri:
        audio = AudioInfoOut(
            media_type=media_type(row.audio_codec, row.audio_uri),
            n_bytes=row.audio_bytes,
            sha256=row.audio_sha256,
            loudness_lufs=row.loudness_lufs,
            true_peak_dbtp=row.true_peak_dbtp,
        )
    return TrackOut(
        track_id=row.track_id,
        title=row.title,
        source=row.source,
        duration_s=row.duration_s,
        tempo_bpm=row.tempo_bpm,
        key_pc=row.key_pc,
        mode=row.mode,
        key=key_name(row.key_pc, row.mode),
        meter=row.meter,
        programs=row.programs,
        instruments=instruments(row.programs),
        density=row.density,
        run_date=row.run_date,
        cluster_id=row.cluster_id,
        model_version=row.model_version,
        controls=row.conditioning,
        measured=row.measured,
        audio=audio,
        playlist_context=context,
    )


def _unknown_track(track_id: str) -> NotFound:
    return NotFound("unknown_track", f"Track {track_id} does not exist.")


def audio_location(conn: Connection, track_id: str) -> StoredAudio:
    """Where a track's rendered audio is stored, as its row says (never a path built from the request)."""
    row = queries.track_audio(conn, track_id)
    if row is None:
        raise _unknown_track(track_id)
    if not row.audio_uri:
        raise NotFound("no_audio", f"Track {track_id} has no rendered audio.")
    return StoredAudio(track_id=track_id, uri=row.audio_uri, sha256=row.audio_sha256, codec=row.audio_codec)


def batch_source(key_prefix: str, events: list[dict[str, Any]]) -> str:
    """A source name per distinct batch, so a retried POST maps onto the same quarantine rows."""
    canonical = json.dumps(events, sort_keys=True, default=str, separators=(",", ":"))
    return f"api:{key_prefix}:{hashlib.sha256(canonical.encode()).hexdigest()[:24]}"


def ingest_events(ctx: Context, key_prefix: str, events: list[dict[str, Any]]) -> EventsOut:
    """Store a batch of app events through the ingest stage's own checks; report what was quarantined."""
    limit = ctx.settings.events_batch_max
    if len(events) > limit:
        raise TooLarge("batch_too_large", f"{len(events)} events in one request; send at most {limit}.")
    import pandas as pd

    from personalize.ingest import ingest_events_frame

    source = batch_source(key_prefix, events)
    # Values go in as the client sent them, so ingest judges them exactly as it judges a file's cells.
    frame = pd.DataFrame(
        [{col: _as_cell(ev.get(col)) for col in EVENT_COLUMNS} for ev in events],
        columns=list(EVENT_COLUMNS),
        dtype=object,
    )
    report = ingest_events_frame(ctx, frame, source=source)
    with ctx.engine.connect() as conn:
        quarantined = queries.quarantined_for_source(conn, source)
    return EventsOut(
        received=len(events),
        accepted=report.ingested,
        duplicates=report.already_present,
        quarantined=len(quarantined),
        quarantined_events=[
            QuarantinedEventOut(
                index=int(q.row_number) - 1,
                event_id=_event_id_at(events, int(q.row_number) - 1),
                reason=q.reason,
                detail=q.detail,
            )
            for q in quarantined
        ],
    )


def _as_cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _event_id_at(events: list[dict[str, Any]], index: int) -> str | None:
    if 0 <= index < len(events):
        value = events[index].get("event_id")
        return None if value is None else str(value)
    return None


def player_link(signer: Signer, listener_id: str, ttl_s: int) -> PlayerLinkOut:
    """A path to the web player of ``listener_id``, signed for that listener only, valid ``ttl_s`` seconds."""
    now = now_s()
    return PlayerLinkOut(
        url=f"/player/{url_id(listener_id)}?{signer.player_query(listener_id, ttl_s, now=now)}",
        expires_at=dt.datetime.fromtimestamp(int(now) + ttl_s, dt.UTC),
    )


def now_s() -> float:
    return time.time()
