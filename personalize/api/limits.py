"""What one client may send: request bodies up to a size (declared or streamed), and requests per API key
at a rate (a token bucket per key, kept by each worker process)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from fastapi import Request

from personalize.api.errors import TooLarge, TooManyRequests, error_response

BODY_METHODS = ("POST", "PUT", "PATCH")


def _too_large(max_bytes: int, declared: int | None = None) -> TooLarge:
    size = f"{declared:,} bytes" if declared is not None else f"more than {max_bytes:,} bytes"
    return TooLarge(
        "payload_too_large",
        f"The request body is {size}; send at most {max_bytes:,} (split the events into several batches).",
    )


class BodySizeLimit:
    """ASGI middleware: a body larger than ``max_bytes`` is refused (413) whether its size is declared
    (Content-Length, refused before anything is read) or not (chunked: refused as soon as the bytes received
    pass the limit, so no more than ``max_bytes`` is ever held)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                # Middleware runs outside the app's exception handlers, so it sends the refusal itself.
                await error_response(_too_large(self.max_bytes, int(value)))(scope, receive, send)
                return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the handler that reads the body: the app's handlers answer 413.
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


async def read_body(request: Request) -> bytes:
    """The whole request body, read chunk by chunk (``BodySizeLimit`` stops it at the limit)."""
    parts = [chunk async for chunk in request.stream()]
    return b"".join(parts)


class KeyRateLimit:
    """A token bucket per API key: ``burst`` requests at once, then ``rate_per_s`` a second. Each worker
    process keeps its own buckets (no shared store on the request path), so with N workers a key may make
    up to N times the rate."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key prefix -> (tokens, monotonic time)
        self._lock = threading.Lock()  # networked databases check keys in worker threads

    def admit(self, key_prefix: str) -> None:
        """Take one request from the key's bucket; raises TooManyRequests (with Retry-After) when empty."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_prefix, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key_prefix] = (tokens - 1.0, now)
                return
            self._buckets[key_prefix] = (tokens, now)
        wait_s = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
        raise TooManyRequests(
            "rate_limited",
            f"This API key made more than {self.rate_per_s:g} requests a second; retry after {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )
