"""POST /v1/events: plays, skips and likes from the app, checked exactly like file ingestion."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from personalize.api import services
from personalize.api.deps import KeyedDb
from personalize.api.errors import error_responses
from personalize.api.routes import json_response
from personalize.api.schemas import EventsIn, EventsOut
from personalize.api.state import ApiState

router = APIRouter(tags=["events"])


@router.post("/v1/events", response_model=EventsOut, responses=error_responses(401, 413, 422))
async def post_events(request: Request, db: KeyedDb, body: EventsIn) -> Response:
    """Store plays, skips and likes from the app. Bad events are quarantined and listed with their reasons;
    posting the same event_id again stores nothing new."""
    key = await db.key()
    # Ingest takes long enough that it belongs in a worker thread, off the event loop.
    out = await run_in_threadpool(services.ingest_events, ApiState.of(request).ctx, key.prefix, body.events)
    return json_response(out)
