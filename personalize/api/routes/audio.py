"""A track's audio through the signed URL a playlist gave: whole file, byte ranges, ETag revalidation; HEAD too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from personalize.api import audio, services
from personalize.api.deps import AudioGrant, SignedAudio
from personalize.api.errors import error_responses
from personalize.api.state import ApiState

router = APIRouter(tags=["tracks"])


AUDIO_RESPONSES = {
    200: {"content": {"audio/ogg": {}}, "description": "The whole file"},
    206: {"content": {"audio/ogg": {}}, "description": "The requested byte range"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    **error_responses(401, 403, 404, 416, 422, 503),
}
AUDIO_PATH = "/v1/tracks/{track_id}/audio"


@router.get(AUDIO_PATH, responses=AUDIO_RESPONSES)
async def get_audio(
    request: Request,
    grant: SignedAudio,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """Stream a track's audio through a signed URL from the playlist (supports Range, ETag)."""
    asked = audio.AudioRequest(range=range_header, if_none_match=if_none_match, if_range=if_range)
    return await _respond(request, grant, asked)


@router.head(AUDIO_PATH, responses=AUDIO_RESPONSES)
async def head_audio(
    request: Request,
    grant: SignedAudio,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """What GET would answer (status, size, type, ETag), without the audio: players probe with it."""
    asked = audio.AudioRequest(range=range_header, if_none_match=if_none_match, if_range=if_range, head=True)
    return await _respond(request, grant, asked)


async def _respond(request: Request, grant: AudioGrant, asked: audio.AudioRequest) -> Response:
    stored = await ApiState.of(request).db(lambda conn: services.audio_location(conn, grant.track_id))
    return audio.respond(stored, asked)
