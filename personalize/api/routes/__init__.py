"""HTTP handlers, one router per resource: each declares its checks as types (``deps.py``), calls a service
and returns its result. Refusals are domain errors that ``errors.py`` turns into responses.

The read handlers are ``async`` and reach the database through ``ApiState.db`` (``KeyedDb.read`` when
they serve API key holders): on SQLite the short, indexed queries run inline on the event loop, because
handing each request to a worker thread (FastAPI's way for plain ``def``) costs more than the query and,
under load, GIL hand-offs between threads dominated the tail latency; on a networked database they run in
a worker thread so round trips never stall the loop. Work that can take long (event ingest, large or
remote audio reads) always runs in worker threads.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response
from pydantic import BaseModel

# A response carrying signed URLs is a credential: no cache may keep it, no browser may sniff it as another type.
SIGNED_URL_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(body: BaseModel | dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON, serialized once: returned as a model, FastAPI would validate it all over again."""
    if isinstance(body, BaseModel):
        return Response(body.model_dump_json(), media_type="application/json", headers=headers)
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json", headers=headers)
