"""Refusals: the domain errors services and dependencies raise, and the one place that turns each into an
HTTP status and the body every refusal has, ``{"error": {"code": ..., "message": ...}}``. Nothing answers
in plain text: a database that does not answer is a 503 with Retry-After, anything unforeseen a JSON 500."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from personalize.api.schemas import ErrorOut
from personalize.db.session import database_problem

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER_S = 5  # what a client should wait before trying again while the database is away


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


class TooManyRequests(ApiError):
    """The API key made more requests than its rate allows (``PERSONALIZE_API_KEY_RATE_PER_S``)."""


class Unavailable(ApiError):
    """Something the API needs (the database) does not answer."""


def database_unavailable(problem: str | None = "unreachable") -> Unavailable:
    """The refusal while the database does not answer (or has no schema yet): try again shortly."""
    message = (
        "The database has no schema yet (the operator runs `personalize db upgrade`); try again later."
        if problem == "no_schema"
        else "The database does not answer; try again shortly."
    )
    return Unavailable("database_unavailable", message, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


STATUS_OF: dict[type[ApiError], int] = {
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TooLarge: 413,
    RangeNotSatisfiable: 416,
    TooManyRequests: 429,
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
    429: "rate_limited",
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

    async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
        problem = database_problem(exc)
        if problem is None:
            raise exc  # a fault of the code, not of the database: the 500 below, logged
        log.warning("database unavailable (%s): %s", problem, str(exc).splitlines()[0])
        return error_response(database_unavailable(problem))

    # SQLAlchemy's errors, and the drivers' own from the queries that run on the raw cursor.
    for error_type in (SQLAlchemyError, sqlite3.Error, *_psycopg_errors()):
        app.add_exception_handler(error_type, _database_error)

    @app.exception_handler(Exception)
    async def _unforeseen(_request: Request, _exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answers; the client sees JSON either way.
        return JSONResponse(
            _body(
                "internal_error", "The server failed on this request; it has been logged. Try again later."
            ),
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(part) for part in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        message = "Invalid request: " + "; ".join(problems) if problems else "Invalid request."
        return JSONResponse(_body("invalid_request", message), status_code=422)


def _psycopg_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:  # an installation on SQLite only
        return ()
    return (psycopg.Error,)
