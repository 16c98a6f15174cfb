"""POST /v1/events: plays, skips and likes from the app, checked exactly like file ingestion.

The API key is checked before a byte of the body is read: a request without a valid key costs the server
one key lookup, however large the body it announces or streams (FastAPI reads a declared body before any
dependency runs, so this handler reads and validates its body itself)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from personalize.api import services
from personalize.api.deps import KeyedDb
from personalize.api.errors import error_responses
from personalize.api.limits import read_body
from personalize.api.routes import json_response
from personalize.api.schemas import EventsIn, EventsOut
from personalize.api.state import ApiState

router = APIRouter(tags=["events"])

EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EventsIn.model_json_schema()}},
    }
}


@router.post(
    "/v1/events",
    response_model=EventsOut,
    responses=error_responses(401, 413, 422, 429, 503),
    openapi_extra=EVENTS_BODY,
)
async def post_events(request: Request, db: KeyedDb) -> Response:
    """Store plays, skips and likes from the app. Bad events (including text with NUL or other control
    characters) are quarantined and listed with their reasons while the good ones of the batch are stored;
    posting the same event_id again stores nothing new."""
    key = await db.key()
    try:
        body = EventsIn.model_validate_json(await read_body(request))
    except ValidationError as exc:
        # Refused in the same words as a body FastAPI validates itself (422, invalid_request).
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    # Ingest takes long enough that it belongs in a worker thread, off the event loop.
    out = await run_in_threadpool(services.ingest_events, ApiState.of(request).ctx, key.prefix, body.events)
    return json_response(out)
