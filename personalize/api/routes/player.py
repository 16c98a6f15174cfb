"""The web player: a signed, short-lived link for one listener, and the page it opens."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from personalize.api import queries, services
from personalize.api.deps import KeyedDb, ListenerId, PlayerListener
from personalize.api.errors import error_responses
from personalize.api.routes import SIGNED_URL_HEADERS, json_response
from personalize.api.schemas import PAGE_MAX, PlayerLinkOut
from personalize.api.state import ApiState

router = APIRouter(tags=["player"])


@router.post(
    "/v1/listeners/{listener_id}/player-link",
    response_model=PlayerLinkOut,
    responses=error_responses(401, 404, 422, 429, 503),
)
async def create_player_link(request: Request, db: KeyedDb, listener_id: ListenerId) -> Response:
    """A short-lived signed link to the web player for one listener (hand it to that listener only)."""
    state = ApiState.of(request)
    await db.read(lambda conn: services.require_listener(conn, listener_id))
    link = services.player_link(state.signer, listener_id, state.ctx.settings.player_url_ttl_s)
    return json_response(link, SIGNED_URL_HEADERS)


@router.get(
    "/player/{listener_id}",
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The player page"},
        **error_responses(401, 403, 404, 422, 503),
    },
)
async def player_page(request: Request, listener_id: PlayerListener) -> HTMLResponse:
    """The web player: the listener's playlist, why each track was picked, and an audio player."""
    state = ApiState.of(request)
    urls = state.urls()
    read = services.playlist_read(None, listener_id, PAGE_MAX, None)

    def page(conn: Connection) -> dict[str, Any]:
        (rows,) = queries.execute_together(conn, read)
        return services.playlist(conn, rows, urls, listener_id, None, PAGE_MAX, None)

    playlist = await state.db(page)
    nonce = secrets.token_urlsafe(16)
    return _private_page(state.render_player(playlist=playlist, nonce=nonce), nonce)


def _private_page(html: str, nonce: str) -> HTMLResponse:
    """The page, kept out of caches and referrers, running only its own script and style (``nonce``)."""
    return HTMLResponse(
        html,
        headers={
            **SIGNED_URL_HEADERS,
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "media-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
        },
    )
