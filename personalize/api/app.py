"""Build the FastAPI application on a Context (tests, ``personalize serve``) or from the environment (workers)."""

from __future__ import annotations

from fastapi import FastAPI

from personalize.api.errors import install_error_handlers
from personalize.api.limits import BodySizeLimit
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


def create_app_from_env() -> FastAPI:
    """Uvicorn's factory for each worker process: settings come from PERSONALIZE_* variables."""
    return create_app(make_context())
