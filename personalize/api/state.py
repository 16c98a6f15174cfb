"""What one API process holds: the run context, the URL signer and the player template."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from fastapi import Request
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from starlette.concurrency import run_in_threadpool

from personalize.api.limits import KeyRateLimit
from personalize.api.services import Urls, now_s
from personalize.api.signing import Signer, load_signing_secret
from personalize.context import Context
from personalize.db.session import make_engine

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# Connections per worker process for reads (and as many again at a peak): enough for the threads that wait
# on the network at 50 concurrent requests over two workers, within PostgreSQL's default 100 connections.
READ_POOL_SIZE = 16
T = TypeVar("T")


@dataclass
class ApiState:
    ctx: Context
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        settings = self.ctx.settings
        self.signer = Signer(load_signing_secret(settings))
        self.inline_db = self.ctx.dialect == "sqlite" or not settings.api_db_threads
        # A networked database's reads get an engine of their own: autocommit (no BEGIN and ROLLBACK round
        # trips around each read), no ping on each checkout (a connection the server dropped is retried
        # once on a fresh one, below), a statement timeout, and as many connections as reads can be in
        # flight: one or two when reads run on the event loop, more in worker threads.
        # See bench/bench_api.py --engines sqlite,postgres.
        if self.ctx.dialect == "sqlite":
            self.read_engine = self.ctx.engine
        else:
            size = READ_POOL_SIZE if settings.api_db_threads else 2
            timeout_ms = int(settings.api_db_statement_timeout_s * 1000)
            self.read_engine = make_engine(
                settings.resolved_database_url,
                pool_pre_ping=False,
                pool_size=size,
                max_overflow=size // 2,
                isolation_level="AUTOCOMMIT",
                connect_args={"options": f"-c statement_timeout={timeout_ms}"},
            )
        self.key_rate = KeyRateLimit(
            settings.api_key_rate_per_s, settings.api_key_burst, Path(settings.data_dir) / "api_rate_buckets"
        )

    @staticmethod
    def of(request: Request) -> ApiState:
        """The state of the app serving ``request`` (``create_app`` puts it on ``app.state.api``)."""
        return request.app.state.api

    async def db(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` on a pooled connection: on the event loop (a local read, or a read from a nearby
        PostgreSQL, costs less than the hop to a thread, and dozens of threads contending for the
        interpreter lock stretched the tail latency to hundreds of milliseconds), or in a worker thread
        where ``api_db_threads`` asks for it (a database across a slow network, whose round trips would
        stall the loop)."""
        if self.inline_db:
            return self._on_connection(work)
        return await run_in_threadpool(self._on_connection, work)

    def _on_connection(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.read_engine.connect() as conn:
                return work(conn)
        except (DBAPIError, DisconnectionError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
                raise
            # The server dropped a pooled connection (a restart, an idle timeout): the pool has let go of
            # every connection as old as that one, so one more try gets a fresh one. A database that is
            # really away fails again, and the client gets its 503.
        with self.read_engine.connect() as conn:
            return work(conn)

    def urls(self) -> Urls:
        """Signed audio URLs on the configured ``public_base_url`` (never the request's Host header, which
        the client chooses), expiring ``audio_url_ttl_s`` from now."""
        return Urls(
            base_url=self.ctx.settings.public_base_url,
            signer=self.signer,
            audio_ttl_s=self.ctx.settings.audio_url_ttl_s,
            now=now_s(),
        )

    @cached_property
    def _templates(self) -> jinja2.Environment:
        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined
        )

    def render_player(self, **values: Any) -> str:
        return self._templates.get_template("player.html").render(**values)
