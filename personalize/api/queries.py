"""Database reads the API needs, as SQLAlchemy Core statements on one connection (lean on the hot path)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Row, and_, func, select

from personalize.db.models import Listener, Playlist, PlaylistItem, QuarantinedRow, Track

PUBLISHED = "published"

_ITEM_COLUMNS = (
    PlaylistItem.position,
    PlaylistItem.track_id,
    PlaylistItem.score,
    PlaylistItem.reason,
    Track.title,
    Track.duration_s,
    Track.tempo_bpm,
    Track.key_pc,
    Track.mode,
    Track.meter,
    Track.programs,
    Track.audio_uri,
)


def listener_exists(conn: Connection, listener_id: str) -> bool:
    return conn.scalar(select(Listener.listener_id).where(Listener.listener_id == listener_id)) is not None


def published_playlist(conn: Connection, listener_id: str, run_date: dt.date | None) -> Row[Any] | None:
    """The listener's playlist for ``run_date`` (or the newest) among published ones: id, run_date, published_at."""
    stmt = select(Playlist.id, Playlist.run_date, Playlist.published_at).where(
        Playlist.listener_id == listener_id, Playlist.status == PUBLISHED
    )
    if run_date is not None:
        stmt = stmt.where(Playlist.run_date == run_date)
    return conn.execute(stmt.order_by(Playlist.run_date.desc()).limit(1)).one_or_none()


def playlist_items(conn: Connection, playlist_id: int, after_position: int, limit: int) -> list[Row[Any]]:
    stmt = (
        select(*_ITEM_COLUMNS)
        .join(Track, Track.track_id == PlaylistItem.track_id)
        .where(PlaylistItem.playlist_id == playlist_id, PlaylistItem.position > after_position)
        .order_by(PlaylistItem.position)
        .limit(limit)
    )
    return list(conn.execute(stmt))


def playlist_size(conn: Connection, playlist_id: int) -> int:
    return int(conn.scalar(select(func.count()).where(PlaylistItem.playlist_id == playlist_id)) or 0)


def published_history(
    conn: Connection, listener_id: str, before: dt.date | None, limit: int
) -> list[Row[Any]]:
    """Published playlists of a listener, newest first, with their sizes."""
    n_items = (
        select(func.count())
        .where(PlaylistItem.playlist_id == Playlist.id)
        .correlate(Playlist)
        .scalar_subquery()
        .label("n_items")
    )
    stmt = select(Playlist.run_date, Playlist.published_at, n_items).where(
        Playlist.listener_id == listener_id, Playlist.status == PUBLISHED
    )
    if before is not None:
        stmt = stmt.where(Playlist.run_date < before)
    return list(conn.execute(stmt.order_by(Playlist.run_date.desc()).limit(limit)))


def track(conn: Connection, track_id: str) -> Row[Any] | None:
    return conn.execute(select(Track.__table__).where(Track.track_id == track_id)).one_or_none()


def track_audio(conn: Connection, track_id: str) -> Row[Any] | None:
    stmt = select(Track.audio_uri, Track.audio_sha256, Track.audio_bytes, Track.audio_codec).where(
        Track.track_id == track_id
    )
    return conn.execute(stmt).one_or_none()


def latest_item_for(conn: Connection, listener_id: str, track_id: str) -> Row[Any] | None:
    """The newest published playlist entry of ``listener_id`` that holds ``track_id``."""
    stmt = (
        select(Playlist.run_date, PlaylistItem.position, PlaylistItem.score, PlaylistItem.reason)
        .join(Playlist, and_(Playlist.id == PlaylistItem.playlist_id, Playlist.status == PUBLISHED))
        .where(Playlist.listener_id == listener_id, PlaylistItem.track_id == track_id)
        .order_by(Playlist.run_date.desc())
        .limit(1)
    )
    return conn.execute(stmt).one_or_none()


def quarantined_for_source(conn: Connection, source: str) -> list[Row[Any]]:
    stmt = (
        select(QuarantinedRow.row_number, QuarantinedRow.raw, QuarantinedRow.reason, QuarantinedRow.detail)
        .where(QuarantinedRow.source == source)
        .order_by(QuarantinedRow.row_number)
    )
    return list(conn.execute(stmt))
