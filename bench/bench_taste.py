"""Speed of the taste stages (profile + cluster) for 10k, 30k and 100k listeners x 100 events on SQLite
and PostgreSQL. The anchor is the 10k run of the same engine in the same run: the table prints each run's
seconds and its cost per event as a ratio to the anchor's (1.0 = cost grows linearly with events).

Each engine gets a fresh database filled in bulk with a synthetic world (6 taste segments, 600 tracks,
events over 28 days) and grown from one size to the next; filling is timed apart and not counted. Each size is measured ``--repeats`` times
(median quoted).

    .venv/bin/python bench/bench_taste.py            # 10k, 30k, 100k listeners on both engines
    .venv/bin/python bench/bench_taste.py --quick    # 10k and 30k only
    .venv/bin/python bench/bench_taste.py --engines postgresql --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # shared fixtures

from synthetic_taste import make_world, write_world

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
from personalize.context import Context, make_context
from personalize.db.session import upgrade

PG_ADMIN_URL = os.environ.get("PERSONALIZE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RUN_DATE = dt.date(2026, 3, 1)
CHUNK_LISTENERS = 10_000
console = Console(width=170)  # the table stays readable when the output goes to a file


def fill(ctx: Context, first_listener: int, n_listeners: int, events_per_listener: int) -> float:
    """Add listeners ``first_listener .. n_listeners - 1`` and their events in chunks (bounded memory);
    returns the seconds it took."""
    t0 = time.perf_counter()
    for start in range(first_listener, n_listeners, CHUNK_LISTENERS):
        chunk = start // CHUNK_LISTENERS
        n = min(CHUNK_LISTENERS, n_listeners - start)
        world, tracks, events = make_world(
            n,
            events_per_listener,
            RUN_DATE,
            n_segments=6,
            tracks_per_segment=100,
            seed=0,
            event_seed=chunk,
            prefix=f"B{chunk:03d}_",
        )
        write_world(ctx, tracks if start == 0 else tracks.iloc[:0], events, world.listener_ids)
        console.log(f"  filled {start + n:,}/{n_listeners:,} listeners")
    return time.perf_counter() - t0


def _fresh_database(engine_name: str, folder: Path) -> tuple[str, callable]:
    if engine_name == "sqlite":
        path = folder / f"taste_{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    name = f"bench_taste_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", drop


def measure_engine(
    engine_name: str, sizes: list[int], events_per_listener: int, repeats: int, folder: Path
) -> list[dict]:
    """One database per engine, grown to each size in turn (10k, then 20k more, ...), measured at each."""
    url, drop = _fresh_database(engine_name, folder)
    results = []
    try:
        upgrade(url)
        ctx = make_context(data_dir=folder / "data", database_url=url)
        filled = 0
        for n_listeners in sizes:
            fill_s = fill(ctx, filled, n_listeners, events_per_listener)
            filled = n_listeners
            if engine_name == "postgresql":
                with ctx.engine.begin() as conn:
                    conn.execute(text("ANALYZE"))
            profile_s, cluster_s = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                p = profile.run(ctx, RUN_DATE, progress=lambda _msg: None)
                t1 = time.perf_counter()
                c = cluster.run(ctx, RUN_DATE, progress=lambda _msg: None)
                t2 = time.perf_counter()
                profile_s.append(t1 - t0)
                cluster_s.append(t2 - t1)
            r = {
                "engine": engine_name,
                "listeners": n_listeners,
                "events": p["n_events"],
                "fill_s": fill_s,
                "profile_s": statistics.median(profile_s),
                "cluster_s": statistics.median(cluster_s),
                "k": c["k"],
                "events_sql_s": p["timings"]["events_sql_s"],
            }
            r["total_s"] = r["profile_s"] + r["cluster_s"]
            console.log(
                f"{engine_name} {n_listeners:,}: profile {r['profile_s']:.1f} s "
                f"(SQL {r['events_sql_s']:.1f} s), cluster {r['cluster_s']:.1f} s"
            )
            results.append(r)
        ctx.engine.dispose()
        return results
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 30k listeners only")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--events-per-listener", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1, help="runs per size (median quoted)")
    parser.add_argument("--sizes", help="listener counts, comma-separated; the first is the anchor")
    args = parser.parse_args()
    sizes = [10_000, 30_000] if args.quick else [10_000, 30_000, 100_000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_taste_") as tmp:
        for engine_name in args.engines.split(","):
            results += measure_engine(engine_name, sizes, args.events_per_listener, args.repeats, Path(tmp))

    table = Table(
        title=f"Taste stages (profile + cluster), {args.events_per_listener} events per listener, "
        f"{os.cpu_count()} CPUs; anchor = 10k listeners of the same engine"
    )
    for col in (
        "engine",
        "listeners",
        "events",
        "profile s",
        "  of which SQL s",
        "cluster s",
        "k",
        "total s",
        "µs/event",
        "per-event cost vs anchor",
        "fill s (not counted)",
    ):
        table.add_column(col, justify="right")
    for r in results:
        anchor = next(a for a in results if a["engine"] == r["engine"] and a["listeners"] == sizes[0])
        per_event = r["total_s"] / r["events"]
        ratio = per_event / (anchor["total_s"] / anchor["events"])
        table.add_row(
            r["engine"],
            f"{r['listeners']:,}",
            f"{r['events']:,}",
            f"{r['profile_s']:.1f}",
            f"{r['events_sql_s']:.1f}",
            f"{r['cluster_s']:.1f}",
            str(r["k"]),
            f"{r['total_s']:.1f}",
            f"{per_event * 1e6:.2f}",
            f"{ratio:.2f}",
            f"{r['fill_s']:.0f}",
        )
    console.print(table)
    worst = max((r["total_s"] for r in results if r["listeners"] == 100_000), default=None)
    if worst is not None:
        console.print(f"goal: <= 60 s at 100k listeners; slowest engine took {worst:.1f} s")


if __name__ == "__main__":
    main()
