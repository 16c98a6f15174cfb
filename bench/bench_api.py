"""HTTP throughput and tail latency of the app backend API under a real load generator (wrk) on loopback.

Seeds a SQLite world (listeners, rendered tracks, published playlists), starts `personalize serve` with two
workers, then drives it in interleaved rounds:

* anchor   GET /healthz (no key, one trivial query): the ceiling of this stack on this machine (wrk)
* playlist GET /v1/listeners/{id}/playlist with an API key, listener chosen at random per request (wrk:
           every connection kept busy, so requests/s is the most the API serves, and latency is queueing)
* at rate  the same playlist fetches sent at 2,000 req/s on a fixed schedule (wrk with a pacing script,
           open loop): the latency an app sees when it sends that many, which is what the goal's p99 is about
* audio    GET /v1/tracks/{id}/audio?<signed> with Range: bytes=0-65535 (a player's first chunk)

and prints median requests/s, p50/p99 latency and each figure's ratio to the anchor's, with the goal
(playlist >= 2,000 req/s and p99 <= 25 ms at 50 connections, 2 workers, on 2 cores), for each engine asked
for, and PostgreSQL's playlist figure against SQLite's from the same run. Server CPU per request counts the
API's processes and, on PostgreSQL, the database server's too. Bounded: fixed duration per run, loopback.

    .venv/bin/python bench/bench_api.py                            # SQLite: 3 rounds x 8 s, 2,000 listeners
    .venv/bin/python bench/bench_api.py --engines sqlite,postgres  # both, same run (PERSONALIZE_PG_URL)
    .venv/bin/python bench/bench_api.py --quick                    # 1 round x 3 s, 300 listeners
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # shared fixtures

from local_server import local_server
from sample_world import seed

from personalize.api.keys import create_key
from personalize.context import make_context
from personalize.db.session import upgrade

console = Console(width=150)
PG_ADMIN_URL = os.environ.get("PERSONALIZE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GOAL_RPS = 2000.0
GOAL_P99_MS = 25.0
AT_RATE = f"GET playlist at {GOAL_RPS:,.0f} req/s (open loop)"

PLAYLIST_LUA = """
local n_listeners = {n}
local key = "{key}"
local counter = 0
setup = function(thread) thread:set("seed", math.random(1, 1000000)) end
init = function(args) math.randomseed(seed) end
request = function()
  local path = string.format("/v1/listeners/L%04d/playlist", math.random(0, n_listeners - 1))
  return wrk.format("GET", path, {{["X-API-Key"] = key}})
end
"""

# Open loop: requests sent on a fixed schedule (``rate`` a second in all, one wrk thread), whatever the
# answers' pace; a connection whose slot has come sends at once. wrk's Lua state is per thread, so the
# schedule is the thread's, shared by its connections. The clock comes from clock_gettime through LuaJIT.
PACED_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local now = ffi.new("bench_timespec")
local interval_ms = 1000 / {rate}
local next_at = nil
delay = function()
  ffi.C.clock_gettime(1, now)  -- CLOCK_MONOTONIC
  local t = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  if next_at == nil then next_at = t end
  local wait = next_at - t
  next_at = next_at + interval_ms
  if wait < 0 then return 0 end
  return wait
end
"""


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, latency percentiles (ms) and error counts from `wrk --latency` output."""

    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    out: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        out[f"p{pct}_ms"] = ms(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = float(sum(int(g) for g in m.groups())) if m else 0.0
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = float(m.group(1)) if m else 0.0
    return out


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def postgres_cpu_s() -> float:
    """User + system CPU seconds of every PostgreSQL server process on this machine (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if head.split("(", 1)[-1] == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_wrk(
    url: str, duration_s: int, connections: int, extra: list[str], server_pid: int, database_cpu: bool
) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "5s", *extra, url]

    def server_cpu() -> float:
        return process_tree_cpu_s(server_pid) + (postgres_cpu_s() if database_cpu else 0.0)

    cpu_before = server_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    out = parse_wrk(done.stdout)
    # Server CPU per request does not depend on what else the machine runs: it gives the capacity of
    # two dedicated cores even when the measuring machine is shared.
    out["server_cpu_ms_per_req"] = 1000 * (server_cpu() - cpu_before) / max(out["requests"], 1)
    return out


@contextmanager
def database(postgres: bool, tmp: Path) -> Iterator[str]:
    """A fresh SQLite file, or a throwaway PostgreSQL database dropped afterwards."""
    if not postgres:
        yield f"sqlite:///{tmp / 'personalize.db'}"
        return
    name = f"bench_api_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(postgres: bool, args: argparse.Namespace, n_listeners: int, duration_s: int, rounds: int) -> dict:
    """Seed a world on one engine, serve it, and return the median figures per scenario."""
    engine = "PostgreSQL" if postgres else "SQLite"
    with (
        tempfile.TemporaryDirectory(prefix="bench_api_") as tmp,
        database(postgres, Path(tmp)) as db_url,
    ):
        data_dir = Path(tmp) / "data"
        upgrade(db_url)
        ctx = make_context(data_dir=data_dir, database_url=db_url)
        t0 = time.perf_counter()
        seed(ctx, n_listeners=n_listeners, n_dates=3, playlist_size=5, audio_duration_s=30.0)
        key = create_key(ctx, "bench").key
        ctx.engine.dispose()
        console.print(
            f"{engine}: seeded {n_listeners:,} listeners x 3 nights x 5 tracks in {time.perf_counter() - t0:.1f} s"
        )

        with local_server(data_dir, db_url, workers=args.workers) as server:
            base = server.base_url
            item = httpx.get(f"{base}/v1/listeners/L0000/playlist", headers={"X-API-Key": key}).json()[
                "items"
            ][0]
            audio_url = item["audio_url"]
            split = urlsplit(audio_url)
            assert httpx.get(audio_url, headers={"Range": "bytes=0-65535"}).status_code == 206

            lua = Path(tmp) / "playlist.lua"
            lua.write_text(PLAYLIST_LUA.format(n=n_listeners, key=key))
            scenarios = {
                "anchor: GET /healthz": (f"{base}/healthz", []),
                "GET playlist (API key)": (f"{base}/", ["-s", str(lua)]),
                "GET audio, Range 64 KiB (signed)": (
                    f"{base}{split.path}?{split.query}",
                    ["-H", "Range: bytes=0-65535"],
                ),
            }
            paced = Path(tmp) / "playlist_paced.lua"
            paced.write_text(PLAYLIST_LUA.format(n=n_listeners, key=key) + PACED_LUA.format(rate=GOAL_RPS))
            # Warm both workers (imports, connection pools, page cache) before measuring.
            for url, extra in scenarios.values():
                run_wrk(url, 1, args.connections, extra, server.pid, postgres)
            scenarios[AT_RATE] = (f"{base}/", ["-s", str(paced)])
            results: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
            for r in range(rounds):
                for name, (url, extra) in scenarios.items():
                    results[name].append(
                        run_wrk(url, duration_s, args.connections, extra, server.pid, postgres)
                    )
                console.print(f"{engine}: round {r + 1}/{rounds} done")

    def median(name: str, field: str) -> float:
        return statistics.median(run[field] for run in results[name])

    anchor = "anchor: GET /healthz"
    table = Table(
        title=f"API on loopback ({engine}): {args.workers} workers, "
        f"wrk 1 thread x {args.connections} connections, "
        f"median of {rounds} x {duration_s} s (cores: {os.cpu_count()})"
    )
    columns = (
        "endpoint",
        "req/s",
        "x anchor",
        "p50 ms",
        "p99 ms",
        "server CPU ms/req",
        "2-core capacity req/s",
        "non-2xx",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    figures = {}
    for name in scenarios:
        fig = {f: median(name, f) for f in ("rps", "p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_per_req")}
        fig["capacity_2_cores_rps"] = 2000.0 / fig["server_cpu_ms_per_req"]
        fig["non_2xx"] = sum(run["non_2xx"] for run in results[name])
        fig["socket_errors"] = sum(run["socket_errors"] for run in results[name])
        fig["ratio_to_anchor"] = fig["rps"] / median(anchor, "rps")
        figures[name] = fig
        table.add_row(
            name,
            f"{fig['rps']:,.0f}",
            f"{fig['ratio_to_anchor']:.2f}",
            f"{fig['p50_ms']:.2f}",
            f"{fig['p99_ms']:.2f}",
            f"{fig['server_cpu_ms_per_req']:.3f}",
            f"{fig['capacity_2_cores_rps']:,.0f}",
            f"{fig['non_2xx'] + fig['socket_errors']:.0f}",
        )
    console.print(table)
    playlist, at_rate = figures["GET playlist (API key)"], figures[AT_RATE]
    ok = (
        playlist["rps"] >= GOAL_RPS
        and at_rate["rps"] >= 0.98 * GOAL_RPS
        and at_rate["p99_ms"] <= GOAL_P99_MS
        and playlist["non_2xx"] + at_rate["non_2xx"] == 0
    )
    verdict = "[green]meets[/]" if ok else "[red]misses[/]"
    console.print(
        f"{engine}: playlist fetch at most {playlist['rps']:,.0f} req/s (p99 {playlist['p99_ms']:.1f} ms with "
        f"every connection kept busy); asked for {GOAL_RPS:,.0f} req/s it served {at_rate['rps']:,.0f} with "
        f"p99 {at_rate['p99_ms']:.1f} ms: {verdict} the goal (>= {GOAL_RPS:,.0f} req/s with p99 <= "
        f"{GOAL_P99_MS:.0f} ms); server CPU per request {playlist['server_cpu_ms_per_req']:.3f} ms = "
        f"{playlist['capacity_2_cores_rps']:,.0f} req/s on 2 dedicated cores"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 3 s per endpoint, 300 listeners")
    parser.add_argument("--listeners", type=int, default=None)
    parser.add_argument("--duration-s", type=int, default=None, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--engines",
        default="sqlite",
        help="comma-separated: sqlite, postgres (a fresh database on PERSONALIZE_PG_URL)",
    )
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - {"sqlite", "postgres"}:
        sys.exit(f"--engines takes sqlite and/or postgres, not {args.engines!r}")
    n_listeners = args.listeners or (300 if args.quick else 2000)
    duration_s = args.duration_s or (3 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 3)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install -y wrk` (it is in the Makefile's SYSTEM_PACKAGES).")
    figures = {e: measure(e == "postgres", args, n_listeners, duration_s, rounds) for e in engines}
    load_1m = os.getloadavg()[0]
    console.print(f"load average while measuring (1 min): {load_1m:.1f} on {os.cpu_count()} cores")
    if len(figures) == 2:
        pg, lite = (figures[e]["GET playlist (API key)"] for e in ("postgres", "sqlite"))
        console.print(
            f"playlist on PostgreSQL against SQLite, same run: {pg['rps'] / lite['rps']:.2f}x the requests/s, "
            f"p99 {pg['p99_ms']:.1f} against {lite['p99_ms']:.1f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps({"load_average_1m": load_1m, **figures}, indent=2))


if __name__ == "__main__":
    main()
