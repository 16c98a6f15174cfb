"""One track's details: metadata, the controls it was generated from, what was measured, why it was picked."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from personalize.api import services
from personalize.api.deps import ID_SCHEMA, KeyedDb, OptionalListenerId, TrackId
from personalize.api.errors import error_responses
from personalize.api.routes import SIGNED_URL_HEADERS, json_response
from personalize.api.schemas import TrackOut
from personalize.api.state import ApiState

router = APIRouter(tags=["tracks"])


@router.get(
    "/v1/tracks/{track_id}", response_model=TrackOut, responses=error_responses(401, 404, 422, 429, 503)
)
async def get_track(
    request: Request,
    db: KeyedDb,
    track_id: TrackId,
    listener_id: Annotated[
        OptionalListenerId,
        Query(description="Add this listener's playlist context (the reason)", json_schema_extra=ID_SCHEMA),
    ] = None,
) -> Response:
    """Metadata, the controls the track was generated from, what was measured, and why it was picked."""
    urls = ApiState.of(request).urls()
    out = await db.read(lambda conn: services.track_detail(conn, urls, track_id, listener_id))
    return json_response(out, SIGNED_URL_HEADERS)
