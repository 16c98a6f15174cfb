"""Database reads the API needs, as SQLAlchemy Core statements on one connection. The two reads on
every request's path (key lookup, playlist page) are compiled once per dialect, run as driver SQL and, on
PostgreSQL, sent as one statement (:func:`keyed_read`)."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, Date, Integer, Row, and_, bindparam, func, select, true
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.sql import Select

from personalize.db.models import ApiKey, Listener, Playlist, PlaylistItem, QuarantinedRow, Track

PUBLISHED = "published"


class Disconnected(DisconnectionError):
    """A statement run on the raw cursor found its connection gone. The connection has been invalidated
    and the pool renewed (every connection it held is as old as the lost one), as SQLAlchemy does for the
    statements it runs itself."""


class Prepared:
    """A statement compiled once per dialect and run on the connection's DBAPI cursor.

    SQLAlchemy's per-execution work (cache key, compiled-cache lookup, result metadata) costs more than
    the indexed lookups themselves; for the few statements on every request's path it is skipped. Rows
    come back as named tuples of what the driver gives (SQLite: dates and datetimes as ISO text).
    """

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self.row_type = namedtuple("PreparedRow", [c.key for c in stmt.selected_columns])  # type: ignore[misc]
        self._by_dialect: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def execute(self, conn: Connection, **params: Any) -> list[Any]:
        return execute_together(conn, (self, params))[0]

    def driver_sql(self, conn: Connection, params: dict[str, Any]) -> tuple[str, Any]:
        """The statement's SQL for ``conn``'s dialect and its arguments in the driver's form."""
        dialect = conn.dialect
        entry = self._by_dialect.get(dialect.name)
        if entry is None:
            compiled = self.stmt.compile(dialect=dialect)
            order = tuple(compiled.positiontup) if compiled.positiontup else None
            entry = (str(compiled), order, dict(compiled.params))
            self._by_dialect[dialect.name] = entry
        sql, order, defaults = entry
        values = {**defaults, **params}
        if dialect.name == "sqlite":  # SQLite keeps dates as ISO text (SQLAlchemy's own format)
            values = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
        return sql, tuple(values[name] for name in order) if order is not None else values


Call = tuple[Prepared, dict[str, Any]]


def execute_together(conn: Connection, *calls: Call) -> list[list[Any]]:
    """The rows of each prepared statement, in order. On PostgreSQL (psycopg) the statements go to the
    server in one pipeline: one network round trip for all of them rather than one each, which on the
    API's hottest path (key lookup, then the playlist page) is most of what a request waits for. Elsewhere
    they run one after another."""
    dialect = conn.dialect
    dbapi_connection: Any = conn.connection.dbapi_connection
    statements = [prepared.driver_sql(conn, params) for prepared, params in calls]
    cursors = [dbapi_connection.cursor() for _ in calls]
    try:
        if len(calls) > 1 and hasattr(dbapi_connection, "pipeline"):
            with dbapi_connection.pipeline():
                for cursor, (sql, args) in zip(cursors, statements, strict=True):
                    cursor.execute(sql, args)
            results = [cursor.fetchall() for cursor in cursors]
        else:
            results = []
            for cursor, (sql, args) in zip(cursors, statements, strict=True):
                cursor.execute(sql, args)
                results.append(cursor.fetchall())
    except dialect.loaded_dbapi.Error as exc:
        # The raw cursor bypasses SQLAlchemy's error handling: tell the pool about a lost connection
        # ourselves, so that it is not handed out again.
        if dialect.is_disconnect(exc, dbapi_connection, cursors[0]):
            conn.invalidate(exc)
            conn.engine.dispose(close=False)
            raise Disconnected(str(exc)) from exc
        raise
    finally:
        for cursor in cursors:
            cursor.close()
    return [
        [prepared.row_type._make(row) for row in rows]
        for (prepared, _), rows in zip(calls, results, strict=True)
    ]


KEY_BY_PREFIX = Prepared(
    select(ApiKey.name, ApiKey.prefix, ApiKey.key_hash, ApiKey.revoked_at).where(
        ApiKey.prefix == bindparam("prefix")
    )
)

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


def _playlist_page(on_date: bool) -> Prepared:
    head = select(Playlist.id).where(
        Playlist.listener_id == bindparam("listener_id"), Playlist.status == PUBLISHED
    )
    if on_date:
        head = head.where(Playlist.run_date == bindparam("run_date", type_=Date))
    newest = head.order_by(Playlist.run_date.desc()).limit(1).scalar_subquery()
    return Prepared(
        select(Playlist.run_date, Playlist.published_at, *_ITEM_COLUMNS)
        .select_from(Playlist)
        .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
        .join(Track, Track.track_id == PlaylistItem.track_id)
        .where(Playlist.id == newest, PlaylistItem.position > bindparam("after", type_=Integer))
        .order_by(PlaylistItem.position)
        .limit(bindparam("limit", type_=Integer))
    )


_PAGE_LATEST = _playlist_page(on_date=False)
_PAGE_ON_DATE = _playlist_page(on_date=True)


def _keyed(page: Prepared) -> Prepared:
    """The key lookup with ``page`` joined to it (LATERAL, PostgreSQL): the key's columns, then the page's,
    one row per page row; the key's columns alone (the page's null) when the page is empty; no row for an
    unknown key."""
    key = KEY_BY_PREFIX.stmt.subquery("k")
    rows = page.stmt.lateral("p")
    return Prepared(
        select(*(c.label(f"key_{c.key}") for c in key.c), *rows.c)
        .select_from(key)
        .outerjoin(rows, true())
        .order_by(rows.c.position)
    )


# A page read after a key lookup, as one statement where the dialect can (see keyed_read).
_KEYED = {_PAGE_LATEST: _keyed(_PAGE_LATEST), _PAGE_ON_DATE: _keyed(_PAGE_ON_DATE)}


def keyed_read(conn: Connection, lookup: Call, read: Call) -> tuple[list[Any], list[Any]]:
    """The rows of a key ``lookup`` and of the ``read`` it guards. On PostgreSQL a playlist page and its key
    lookup are one statement: one parse, plan and execution on the server and one result for the driver.
    Measured one read at a time on a seeded database (2,000 listeners), that took the client's CPU from
    0.148 to 0.085 ms a read and the server's from 0.10 to 0.09, against the two statements in one pipeline
    (see bench/bench_api.py). Elsewhere (SQLite has no LATERAL), :func:`execute_together`."""
    page, params = read
    joined = _KEYED.get(page)
    if joined is None or conn.dialect.name != "postgresql":
        key_rows, rows = execute_together(conn, lookup, read)
        return key_rows, rows
    both = joined.execute(conn, **lookup[1], **params)
    if not both:
        return [], []
    n = len(KEY_BY_PREFIX.stmt.selected_columns)
    key_rows = [KEY_BY_PREFIX.row_type._make(both[0][:n])]
    # The page's first column (its run date) is never null in a real row: null is the empty page.
    rows = [page.row_type._make(row[n:]) for row in both if row[n] is not None]
    return key_rows, rows


def playlist_page(listener_id: str, run_date: dt.date | None, after_position: int, limit: int) -> Call:
    """The read of the items after ``after_position`` of the listener's newest published playlist (or the
    one of ``run_date``), each row: run_date, published_at, then the item columns; one statement, to run
    with :func:`execute_together` (with the key lookup, in the same round trip)."""
    if run_date is None:
        return _PAGE_LATEST, {"listener_id": listener_id, "after": after_position, "limit": limit}
    return _PAGE_ON_DATE, {
        "listener_id": listener_id,
        "run_date": run_date,
        "after": after_position,
        "limit": limit,
    }


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


def playlist_size_on(conn: Connection, listener_id: str, run_date: dt.date) -> int:
    stmt = (
        select(func.count())
        .select_from(PlaylistItem)
        .join(Playlist, Playlist.id == PlaylistItem.playlist_id)
        .where(Playlist.listener_id == listener_id, Playlist.run_date == run_date)
    )
    return int(conn.scalar(stmt) or 0)


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


_TRACK_AUDIO = Prepared(
    select(Track.audio_uri, Track.audio_sha256, Track.audio_bytes, Track.audio_codec).where(
        Track.track_id == bindparam("track_id")
    )
)


def track_audio(conn: Connection, track_id: str) -> Any:
    rows = _TRACK_AUDIO.execute(conn, track_id=track_id)
    return rows[0] if rows else None


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
