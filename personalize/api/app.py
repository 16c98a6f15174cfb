"""Build the FastAPI application on a Context (tests, ``personalize serve``) or from the environment (workers)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from personalize.api.errors import TooLarge, error_response, install_error_handlers
from personalize.api.routes import audio, events, health, player, playlists, tracks
from personalize.api.state import ApiState
from personalize.context import Context, make_context


def create_app(ctx: Context) -> FastAPI:
    app = FastAPI(
        title="personalize app backend API",
        version="1",
        summary="Per-listener playlists of new music, signed audio streaming, and listening events back in.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.api = ApiState(ctx)
    install_error_handlers(app)
    for resource in (health, playlists, tracks, audio, events, player):
        app.include_router(resource.router)
    app.add_middleware(BodySizeLimit, max_bytes=ctx.settings.request_body_max_bytes)
    return app


class BodySizeLimit:
    """Refuses a request whose declared body is larger than ``max_bytes`` before anything reads it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                    # Middleware runs outside the app's exception handlers, so it sends the refusal itself.
                    refusal = TooLarge(
                        "payload_too_large",
                        f"The request body is {int(value):,} bytes; send at most {self.max_bytes:,} "
                        "(split the events into several batches).",
                    )
                    await error_response(refusal)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app_from_env() -> FastAPI:
    """Uvicorn's factory for each worker process: settings come from PERSONALIZE_* variables."""
    return create_app(make_context())
