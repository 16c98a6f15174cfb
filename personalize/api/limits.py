"""What one client may send: request bodies up to a size (declared or streamed), and requests per API key
at a rate (a token bucket per key, shared by the host's worker processes)."""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import threading
import time
import zlib
from pathlib import Path
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
    """A token bucket per API key: ``burst`` requests at once, then ``rate_per_s`` a second, shared by every
    worker process on the host.

    The buckets live in a small memory-mapped file (``path``, 32 bytes a slot: key prefix, tokens, last
    refill as Unix time), found by the prefix's hash with linear probing. A take is a read-modify-write under
    an exclusive ``flock`` (plus a thread lock: with ``api_db_threads`` keys are checked in worker threads), a few
    microseconds, so N workers hold a key to the rate, not to N times it. A slot whose bucket has been idle
    long enough to be full again is free for another key, so the file never grows. Workers on other hosts
    keep their own file: across hosts the limit is per host.
    """

    SLOT = struct.Struct("<16sdd")  # key prefix (NUL-padded), tokens, last refill (Unix time)
    PROBES = 64

    def __init__(self, rate_per_s: float, burst: int, path: Path, slots: int = 4096) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.slots = slots
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = slots * self.SLOT.size
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # every worker asks for the same size: the first one makes it
        self._map = mmap.mmap(self._fd, size)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _slot(self, key: bytes, now: float) -> tuple[int, float, float]:
        """The slot of ``key`` with its tokens and last refill; a fresh (full) bucket in a free slot when
        the key has none."""
        start = zlib.crc32(key) % self.slots
        full_after_s = self.burst / self.rate_per_s
        free, oldest = None, None
        for i in range(self.PROBES):
            j = (start + i) % self.slots
            held, tokens, last = self.SLOT.unpack_from(self._map, j * self.SLOT.size)
            if held == key:
                return j, tokens, last
            if free is None and (held == bytes(16) or now - last >= full_after_s):
                free = j
            if oldest is None or last < oldest[1]:
                oldest = (j, last)
        j = free if free is not None else oldest[0]  # type: ignore[index]
        return j, self.burst, now

    def admit(self, key_prefix: str) -> None:
        """Take one request from the key's bucket; raises TooManyRequests (with Retry-After) when empty."""
        key = key_prefix.encode()[:16].ljust(16, b"\0")
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = time.time()
                j, tokens, last = self._slot(key, now)
                tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
                admitted = tokens >= 1.0
                if admitted:
                    tokens -= 1.0
                self.SLOT.pack_into(self._map, j * self.SLOT.size, key, tokens, now)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        if admitted:
            return
        wait_s = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
        raise TooManyRequests(
            "rate_limited",
            f"This API key made more than {self.rate_per_s:g} requests a second; retry after {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )
