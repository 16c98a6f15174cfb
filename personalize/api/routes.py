"""HTTP handlers: parse and check the request, call a service, shape the response. No logic of their own.

The read handlers are ``async`` and reach the database through ``ApiState.db``: on SQLite the short,
indexed queries run inline on the event loop, because handing each request to a worker thread (FastAPI's
way for plain ``def``) costs more than the query and, under load, GIL hand-offs between threads dominated
the tail latency; on a networked database they run in a worker thread so round trips never stall the
loop. Work that can take long (event ingest, large or remote audio reads) always runs in worker threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, Security
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy import Connection, text

from personalize.api import audio, services
from personalize.api.errors import ApiError
from personalize.api.keys import KeyInfo, verify_key
from personalize.api.schemas import (
    PAGE_MAX,
    ErrorOut,
    EventsIn,
    EventsOut,
    HealthOut,
    PlayerLinkOut,
    PlaylistHistoryOut,
    PlaylistOut,
    PlaylistQuery,
    TrackOut,
)
from personalize.api.state import ApiState
from personalize.ids import ID_PATTERN, ID_RULE

router = APIRouter()

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An app-backend key from `personalize apikey create NAME`.",
)
SIG_PATTERN = r"^[0-9a-f]{64}$"
EXPIRES_MAX = 2**40  # far beyond any real expiry; keeps the number a plain 64-bit integer

# The alphabet ingest keeps, so every stored id can be fetched and none can look like a path (no slash,
# backslash, percent sign, tilde or leading dot).
ListenerId = Annotated[str, Path(pattern=ID_PATTERN, description=f"Listener id: {ID_RULE}")]
TrackId = Annotated[str, Path(pattern=ID_PATTERN, description=f"Track id: {ID_RULE}")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut} for status in statuses}


def _state(request: Request) -> ApiState:
    return request.app.state.api


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def _require_key(conn: Connection, presented: str | None) -> KeyInfo:
    if not presented:
        raise ApiError(
            401,
            "missing_api_key",
            "Send your API key in the X-API-Key header (create one with `personalize apikey create NAME`).",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    info = verify_key(conn, presented)
    if info is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "This API key is unknown or revoked: ask for a new one (`personalize apikey create NAME`).",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    return info


@router.get("/healthz", response_model=HealthOut, tags=["ops"], responses=_errors(503))
async def healthz(request: Request) -> Response:
    """Liveness and database reachability; needs no key."""
    try:
        await _state(request).db(lambda conn: conn.execute(text("SELECT 1")))
    except Exception as exc:
        raise ApiError(
            503, "database_unavailable", f"The database does not answer: {type(exc).__name__}"
        ) from exc
    return _json(HealthOut(status="ok", database=_state(request).ctx.dialect))


@router.get(
    "/v1/listeners/{listener_id}/playlist",
    response_model=PlaylistOut,
    tags=["playlists"],
    responses=_errors(401, 404, 422),
)
async def get_playlist(
    request: Request,
    listener_id: ListenerId,
    page: Annotated[PlaylistQuery, Query()],
    api_key: str | None = Security(API_KEY_HEADER),
) -> Response:
    """The listener's newest published playlist (or the one of `date`), each track with a signed audio URL."""
    state = _state(request)
    urls = state.urls(request)

    def read(conn: Connection) -> dict[str, Any]:
        _require_key(conn, api_key)
        return services.playlist(conn, urls, listener_id, page.date, page.limit, page.cursor)

    out = await state.db(read)
    return Response(json.dumps(out, separators=(",", ":")), media_type="application/json")


@router.get(
    "/v1/listeners/{listener_id}/playlists",
    response_model=PlaylistHistoryOut,
    tags=["playlists"],
    responses=_errors(401, 404, 422),
)
async def get_playlist_history(
    request: Request,
    listener_id: ListenerId,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 30,
    cursor: Annotated[dt.date | None, Query(description="next_cursor of the page before")] = None,
    api_key: str | None = Security(API_KEY_HEADER),
) -> Response:
    """The listener's published playlists, newest first (dates and sizes)."""
    state = _state(request)

    def read(conn: Connection) -> PlaylistHistoryOut:
        _require_key(conn, api_key)
        return services.playlist_history(conn, listener_id, limit, cursor)

    return _json(await state.db(read))


@router.get(
    "/v1/tracks/{track_id}", response_model=TrackOut, tags=["tracks"], responses=_errors(401, 404, 422)
)
async def get_track(
    request: Request,
    track_id: TrackId,
    listener_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Add this listener's playlist context (the reason)")
    ] = None,
    api_key: str | None = Security(API_KEY_HEADER),
) -> Response:
    """Metadata, the controls the track was generated from, what was measured, and why it was picked."""
    state = _state(request)
    urls = state.urls(request)

    def read(conn: Connection) -> TrackOut:
        _require_key(conn, api_key)
        return services.track_detail(conn, urls, track_id, listener_id)

    return _json(await state.db(read))


@router.get(
    "/v1/tracks/{track_id}/audio",
    tags=["tracks"],
    responses={
        200: {"content": {"audio/ogg": {}}, "description": "The whole file"},
        206: {"content": {"audio/ogg": {}}, "description": "The requested byte range"},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **_errors(401, 403, 404, 416, 422),
    },
)
async def get_audio(
    request: Request,
    track_id: TrackId,
    listener: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Listener the URL was signed for")
    ] = None,
    expires: Annotated[
        int | None, Query(ge=0, le=EXPIRES_MAX, description="Unix time the URL expires")
    ] = None,
    sig: Annotated[str | None, Query(pattern=SIG_PATTERN, description="HMAC-SHA256, hex")] = None,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """Stream a track's audio through a signed URL from the playlist (supports Range, ETag)."""
    state = _state(request)
    if listener is None or expires is None or sig is None:
        raise ApiError(
            401,
            "signature_required",
            "Audio is served only through the signed URL a playlist response gives.",
        )
    refusal = state.signer.check("audio", listener, track_id, expires, sig)
    if refusal == "expired":
        raise ApiError(
            403, "url_expired", "This audio URL has expired: fetch the playlist again for a fresh one."
        )
    if refusal is not None:
        raise ApiError(403, "bad_signature", "This audio URL is not valid for this listener and track.")
    row = await state.db(lambda conn: services.audio_location(conn, track_id))
    uri = row.audio_uri
    stored = audio.AudioObject(uri)
    try:
        size = stored.size()
    except FileNotFoundError:
        raise ApiError(
            404, "audio_missing", f"The audio file of track {track_id} is missing from storage."
        ) from None
    etag = f'"{row.audio_sha256 or hashlib.sha256(f"{uri}|{size}".encode()).hexdigest()}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
    }
    if if_none_match and (
        if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    wanted = range_header if (if_range is None or if_range.strip() == etag) else None
    try:
        span = audio.parse_range(wanted, size)
    except audio.RangeNotSatisfiable:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"The range {range_header!r} lies outside the file ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}", **headers},
        ) from None
    media_type = audio.media_type(row.audio_codec, uri)
    if span is None:
        first, last, status = 0, size - 1, 200
    else:
        (first, last), status = span, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    if stored.local and last - first < audio.INLINE_MAX_BYTES:
        body = stored.read(first, last)
        return Response(body, status_code=status, headers=headers, media_type=media_type)
    # Large or remote reads stream chunk by chunk from a worker thread, never blocking the event loop.
    return StreamingResponse(
        stored.chunks(first, last), status_code=status, headers=headers, media_type=media_type
    )


@router.post("/v1/events", response_model=EventsOut, tags=["events"], responses=_errors(401, 413, 422))
def post_events(request: Request, body: EventsIn, api_key: str | None = Security(API_KEY_HEADER)) -> Response:
    """Store plays, skips and likes from the app. Bad events are quarantined and listed with their reasons;
    posting the same event_id again stores nothing new."""
    state = _state(request)
    with state.ctx.engine.connect() as conn:
        info = _require_key(conn, api_key)
    limit = state.ctx.settings.events_batch_max
    if len(body.events) > limit:
        raise ApiError(
            413, "batch_too_large", f"{len(body.events)} events in one request; send at most {limit}."
        )
    out = services.ingest_events(state.ctx, info.prefix, body.events)
    return _json(out)


@router.post(
    "/v1/listeners/{listener_id}/player-link",
    response_model=PlayerLinkOut,
    tags=["player"],
    responses=_errors(401, 404, 422),
)
async def create_player_link(
    request: Request, listener_id: ListenerId, api_key: str | None = Security(API_KEY_HEADER)
) -> Response:
    """A short-lived signed link to the web player for one listener (hand it to that listener only)."""
    state = _state(request)

    def check(conn: Connection) -> None:
        _require_key(conn, api_key)
        services.require_listener(conn, listener_id)

    await state.db(check)
    ttl_s = state.ctx.settings.player_url_ttl_s
    now = services.now_s()
    query = state.signer.player_query(listener_id, ttl_s, now=now)
    return _json(
        PlayerLinkOut(
            url=f"/player/{listener_id}?{query}",
            expires_at=dt.datetime.fromtimestamp(int(now) + ttl_s, dt.UTC),
        )
    )


@router.get(
    "/player/{listener_id}",
    tags=["player"],
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The player page"},
        **_errors(401, 403, 404, 422),
    },
)
async def player_page(
    request: Request,
    listener_id: ListenerId,
    expires: Annotated[int | None, Query(ge=0, le=EXPIRES_MAX)] = None,
    sig: Annotated[str | None, Query(pattern=SIG_PATTERN)] = None,
) -> HTMLResponse:
    """The web player: the listener's playlist, why each track was picked, and an audio player."""
    state = _state(request)
    if expires is None or sig is None:
        raise ApiError(401, "signature_required", "Open the player through a link from POST /player-link.")
    refusal = state.signer.check("player", listener_id, "", expires, sig)
    if refusal == "expired":
        raise ApiError(403, "url_expired", "This player link has expired: ask the app for a new one.")
    if refusal is not None:
        raise ApiError(403, "bad_signature", "This player link is not valid for this listener.")
    urls = state.urls(request)
    playlist = await state.db(lambda conn: services.playlist(conn, urls, listener_id, None, PAGE_MAX, None))
    nonce = secrets.token_urlsafe(16)
    html = state.render_player(playlist=playlist, nonce=nonce)
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "media-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
        },
    )
