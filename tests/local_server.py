"""Run `personalize serve` as a child process on a free loopback port and wait until it answers
(the web-player test and the HTTP benchmark drive a real server this way)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class LocalServer:
    base_url: str
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(
    data_dir: Path,
    database_url: str,
    workers: int = 1,
    startup_timeout_s: float = 90.0,
    settings: dict[str, str] | None = None,
) -> Iterator[LocalServer]:
    """`personalize serve` on ``database_url`` and ``data_dir`` (and any other ``PERSONALIZE_*``
    ``settings``); stopped (SIGTERM) on exit. Raises RuntimeError with the server's own output when it does
    not answer /healthz in time."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PERSONALIZE_DATA_DIR": str(data_dir),
        "PERSONALIZE_DATABASE_URL": database_url,
        **(settings or {}),
    }
    cli = Path(sys.executable).with_name("personalize")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [str(cli), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-4000:]
                    raise RuntimeError(f"personalize serve did not answer on {base_url}:\n{output}")
                time.sleep(0.2)
            yield LocalServer(base_url=base_url, pid=proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
