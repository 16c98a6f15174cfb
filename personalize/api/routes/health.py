"""GET /healthz: liveness and database reachability, for load balancers and probes; needs no key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from personalize.api.errors import database_unavailable, error_responses
from personalize.api.routes import json_response
from personalize.api.schemas import HealthOut
from personalize.api.services import ping
from personalize.api.state import ApiState
from personalize.db.session import database_problem

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=HealthOut, responses=error_responses(503))
async def healthz(request: Request) -> Response:
    """Liveness and database reachability; needs no key."""
    state = ApiState.of(request)
    try:
        await state.db(ping)
    except Exception as exc:
        raise database_unavailable(database_problem(exc) or "unreachable") from exc
    return json_response(HealthOut(status="ok", database=state.ctx.dialect))
