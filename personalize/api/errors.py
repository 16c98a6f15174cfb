"""Refusals: the domain errors services and dependencies raise, and the one place that turns each into an
HTTP status and the body every refusal has, ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from personalize.api.schemas import ErrorOut


class ApiError(Exception):
    """A refusal: a stable machine-readable ``code`` and a ``message`` that says what was wrong and what to
    do. ``headers`` are sent with it (e.g. the credential scheme a 401 asks for)."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


class NotAuthenticated(ApiError):
    """The request carries no valid credential: no API key, an unknown or revoked one, or no signed URL."""


class Forbidden(ApiError):
    """The credential is well formed but not good for this: expired, or signed for another listener or track."""


class NotFound(ApiError):
    """The listener, track, playlist or audio file asked for does not exist."""


class TooLarge(ApiError):
    """The request carries more than one request may (events per batch, body bytes)."""


class RangeNotSatisfiable(ApiError):
    """The byte range asked for lies outside the file."""


class Unavailable(ApiError):
    """Something the API needs (the database) does not answer."""


STATUS_OF: dict[type[ApiError], int] = {
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TooLarge: 413,
    RangeNotSatisfiable: 416,
    Unavailable: 503,
}

# Codes for the refusals FastAPI and Starlette raise themselves (unknown path, wrong method, ...).
_FRAMEWORK_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


def _body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(error: ApiError) -> JSONResponse:
    """The response for a domain error: its class decides the status."""
    status = next(STATUS_OF[cls] for cls in type(error).__mro__ if cls in STATUS_OF)
    return JSONResponse(_body(error.code, error.message), status_code=status, headers=error.headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the refusals a route can answer with."""
    return {status: {"model": ErrorOut} for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    async def _domain_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    # One handler per mapped class: a bare ApiError has no status and stays a server error.
    for error_type in STATUS_OF:
        app.add_exception_handler(error_type, _domain_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _FRAMEWORK_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint: see /docs for the API."
        return JSONResponse(_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        message = "Invalid request: " + "; ".join(problems) if problems else "Invalid request."
        return JSONResponse(_body("invalid_request", message), status_code=422)
