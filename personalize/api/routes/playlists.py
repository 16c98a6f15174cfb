"""A listener's playlists: the newest published one (or one date's), page by page, and their history."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from personalize.api import services
from personalize.api.deps import KeyedDb, ListenerId
from personalize.api.errors import error_responses
from personalize.api.routes import SIGNED_URL_HEADERS, json_response
from personalize.api.schemas import PAGE_MAX, PlaylistHistoryOut, PlaylistOut, PlaylistQuery
from personalize.api.state import ApiState

router = APIRouter(prefix="/v1/listeners/{listener_id}", tags=["playlists"])


@router.get("/playlist", response_model=PlaylistOut, responses=error_responses(401, 404, 422, 429, 503))
async def get_playlist(
    request: Request,
    db: KeyedDb,
    listener_id: ListenerId,
    page: Annotated[PlaylistQuery, Query()],
) -> Response:
    """The listener's newest published playlist (or the one of `date`), each track with a signed audio URL."""
    urls = ApiState.of(request).urls()
    out = await db.read_with(
        services.playlist_read(page.date, listener_id, page.limit, page.cursor),
        lambda conn, rows: services.playlist(
            conn, rows, urls, listener_id, page.date, page.limit, page.cursor
        ),
    )
    return json_response(out, SIGNED_URL_HEADERS)


@router.get(
    "/playlists", response_model=PlaylistHistoryOut, responses=error_responses(401, 404, 422, 429, 503)
)
async def get_playlist_history(
    db: KeyedDb,
    listener_id: ListenerId,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 30,
    cursor: Annotated[dt.date | None, Query(description="next_cursor of the page before")] = None,
) -> Response:
    """The listener's published playlists, newest first (dates and sizes)."""
    out = await db.read(lambda conn: services.playlist_history(conn, listener_id, limit, cursor))
    return json_response(out)
