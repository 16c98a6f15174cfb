"""A track's audio through the signed URL a playlist gave: whole file, byte ranges, ETag revalidation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from personalize.api import audio, services
from personalize.api.deps import SignedAudio
from personalize.api.errors import error_responses
from personalize.api.state import ApiState

router = APIRouter(tags=["tracks"])


@router.get(
    "/v1/tracks/{track_id}/audio",
    responses={
        200: {"content": {"audio/ogg": {}}, "description": "The whole file"},
        206: {"content": {"audio/ogg": {}}, "description": "The requested byte range"},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **error_responses(401, 403, 404, 416, 422),
    },
)
async def get_audio(
    request: Request,
    grant: SignedAudio,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """Stream a track's audio through a signed URL from the playlist (supports Range, ETag)."""
    stored = await ApiState.of(request).db(lambda conn: services.audio_location(conn, grant.track_id))
    asked = audio.AudioRequest(range=range_header, if_none_match=if_none_match, if_range=if_range)
    return audio.respond(stored, asked)
