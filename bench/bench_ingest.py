"""Bulk event ingest speed on SQLite and PostgreSQL, beside a naive row-by-row ORM insert measured in the
same run (the anchor). Generates a seeded Parquet file of listening events, ingests it into a fresh database
per engine and prints rows/s and the ratio to the anchor.

    .venv/bin/python bench/bench_ingest.py            # 10M events
    .venv/bin/python bench/bench_ingest.py --quick    # 1M events
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.context import Context, make_context
from personalize.db.models import Listener, ListeningEvent
from personalize.db.session import upgrade
from personalize.ingest import ingest_catalog_frame, ingest_events

PG_ADMIN_URL = os.environ.get("PERSONALIZE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# A wide table also when the output goes to a log file.
console = Console() if sys.stdout.isatty() else Console(width=200)


def make_catalog(n_tracks: int, rng: np.random.Generator) -> pd.DataFrame:
    keys = ["C major", "A minor", "D minor", "F# major", "Bb major", "E minor"]
    return pd.DataFrame(
        {
            "track_id": [f"trk{i:06d}" for i in range(n_tracks)],
            "title": [f"Piece {i}" for i in range(n_tracks)],
            "duration_s": rng.uniform(60, 420, n_tracks).round(2),
            "tempo_bpm": rng.uniform(60, 180, n_tracks).round(1),
            "key": rng.choice(keys, n_tracks),
            "meter": rng.choice(["4/4", "3/4", "6/8"], n_tracks),
            "programs": rng.choice(["0", "0;33;drums", "40;41;42", "24;33"], n_tracks),
            "density": rng.uniform(1, 12, n_tracks).round(2),
        }
    )


def write_events(path: Path, n_events: int, catalog: pd.DataFrame, n_listeners: int, seed: int) -> None:
    """Seeded events in row groups of 1M: random 16-hex-digit event ids (like real ids, no order), listeners
    with heavy-tailed activity, timestamps over the last year, ms_played within each track's length."""
    rng = np.random.default_rng(seed)
    listener_names = pa.array([f"lst{i:07d}" for i in range(n_listeners)])
    track_names = pa.array(catalog["track_id"].tolist())
    durations_ms = (catalog["duration_s"].to_numpy() * 1000).astype(np.int64)
    kinds = np.array(["play", "skip", "like", "dislike", "complete", "save"])
    now_us = int(pd.Timestamp.now(tz="UTC").value // 1000)
    year_us = 365 * 86400 * 1_000_000
    # Multiplying by an odd constant is a bijection mod 2^64: unique ids that look random.
    id_perm = (np.arange(n_events, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    writer = None
    try:
        for start in range(0, n_events, 1_000_000):
            n = min(1_000_000, n_events - start)
            listeners = np.minimum(rng.zipf(1.3, n) - 1, n_listeners - 1).astype(np.int32)
            tracks = rng.integers(0, len(catalog), n).astype(np.int32)
            ms = (rng.uniform(0, 1, n) * durations_ms[tracks]).astype(np.int64)
            ts = pa.array(
                now_us - 3600_000_000 - rng.integers(0, year_us, n), type=pa.timestamp("us", tz="UTC")
            )
            table = pa.table(
                {
                    "event_id": pa.array([f"{v:016x}" for v in id_perm[start : start + n].tolist()]),
                    "listener_id": pa.DictionaryArray.from_arrays(pa.array(listeners), listener_names).cast(
                        pa.string()
                    ),
                    "track_id": pa.DictionaryArray.from_arrays(pa.array(tracks), track_names).cast(
                        pa.string()
                    ),
                    "ts": ts,
                    "ms_played": pa.array(ms),
                    "kind": pa.array(rng.choice(kinds, n, p=[0.5, 0.25, 0.05, 0.02, 0.15, 0.03])),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def naive_orm_insert(ctx: Context, sample: pd.DataFrame) -> float:
    """The anchor: one ORM object and one commit per row (listener created when missing). Rows per second."""
    started = time.perf_counter()
    with ctx.sessions() as session:
        for row in sample.itertuples(index=False):
            if session.get(Listener, row.listener_id) is None:
                session.add(Listener(listener_id=row.listener_id))
            session.add(
                ListeningEvent(
                    event_id=f"naive-{row.event_id}",
                    listener_id=row.listener_id,
                    track_id=row.track_id,
                    ts=row.ts.to_pydatetime(),
                    ms_played=int(row.ms_played),
                    kind=row.kind,
                    source="naive",
                )
            )
            session.commit()
    return len(sample) / (time.perf_counter() - started)


def server_cpu_s(url: str) -> float | None:
    """CPU seconds (user + system) used so far by the PostgreSQL backends serving ``url``'s database, read
    from the processes themselves (a backend names its database in its title); None for SQLite, whose work
    is already in this process's CPU time, or when the server runs elsewhere."""
    if not url.startswith("postgresql"):
        return None
    database = url.rsplit("/", 1)[-1]
    total, seen = 0.0, False
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "postgres" and f" {database} " in f"{title} ":
                times = proc.cpu_times()
                total += times.user + times.system
                seen = True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total if seen else None


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a measurement runs (median and max)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"median": statistics.median(self.samples), "max": max(self.samples)}


def run_engine(
    name: str,
    url: str,
    data_dir: Path,
    events_path: Path,
    catalog: pd.DataFrame,
    sample: pd.DataFrame,
    repeat: int,
) -> dict:
    upgrade(url)
    ctx = make_context(data_dir=data_dir, database_url=url)
    try:
        ingest_catalog_frame(ctx, catalog, source="bench-catalog")
        with ctx.engine.connect() as conn:  # open the pooled connection so its backend is counted
            conn.execute(select(func.count()).select_from(Listener)).scalar_one()
        # Write back what earlier work left dirty (the generated file, the other engine's gigabytes of
        # database and WAL): otherwise the kernel flushes it during this engine's load and bills it the I/O.
        os.sync()
        server_before = server_cpu_s(url)
        cpu_before = time.process_time()
        with LoadSampler() as load:
            report = ingest_events(ctx, events_path, progress=True)
        cpu_s = time.process_time() - cpu_before
        server_after = server_cpu_s(url)
        server_s = None if server_before is None or server_after is None else server_after - server_before
        assert report.ingested == report.rows_read, report.to_dict()
        naive = [
            naive_orm_insert(ctx, sample.assign(event_id=sample["event_id"] + f"-{r}")) for r in range(repeat)
        ]
        with ctx.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(ListeningEvent)).scalar_one()
        return {
            "engine": name,
            "events": report.rows_read,
            "ingest_s": report.elapsed_s,
            "ingest_rows_per_s": report.rows_per_s,
            "naive_rows_per_s": statistics.median(naive),
            "naive_runs": naive,
            # The machine may be shared: CPU seconds of this process (all of SQLite's work, only the client
            # side of PostgreSQL's) and the load average say how much the wall-clock figure was squeezed.
            "client_cpu_s": cpu_s,
            # PostgreSQL's share: CPU of the backends serving the bench database during the bulk ingest.
            "server_cpu_s": server_s,
            "load_avg_1min": load.summary(),
            "stored": stored,
        }
    finally:
        ctx.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M events")
    parser.add_argument("--tracks", type=int, default=5_000)
    parser.add_argument("--listeners", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=5_000, help="rows in the row-by-row ORM anchor")
    parser.add_argument("--repeat", type=int, default=3, help="anchor runs (median quoted)")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("var/bench/ingest.json"))
    args = parser.parse_args()
    n_events = 1_000_000 if args.quick else args.events

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        tmp_path = Path(tmp)
        rng = np.random.default_rng(args.seed)
        catalog = make_catalog(args.tracks, rng)
        events_path = tmp_path / "events.parquet"
        t0 = time.perf_counter()
        write_events(events_path, n_events, catalog, args.listeners, args.seed)
        console.print(
            f"generated {n_events:,} events ({events_path.stat().st_size / 1e6:.0f} MB Parquet) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        sample = pq.ParquetFile(events_path).read_row_group(0).slice(0, args.naive_rows).to_pandas()
        results = []
        for engine in args.engines.split(","):
            if engine == "sqlite":
                url = f"sqlite:///{tmp_path / 'bench.db'}"
                results.append(
                    run_engine("SQLite", url, tmp_path / "data", events_path, catalog, sample, args.repeat)
                )
            elif engine == "postgres":
                name = f"personalize_bench_{uuid.uuid4().hex[:10]}"
                admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'CREATE DATABASE "{name}"'))
                except Exception as exc:
                    console.print(
                        f"[red]PostgreSQL skipped[/]: cannot create a database at {PG_ADMIN_URL} ({exc})"
                    )
                    continue
                url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
                try:
                    results.append(
                        run_engine(
                            "PostgreSQL", url, tmp_path / "data", events_path, catalog, sample, args.repeat
                        )
                    )
                finally:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
            console.print(results[-1] if results else "")

    table = Table(
        title=f"Event ingest, {n_events:,} events (Parquet) vs row-by-row ORM anchor ({args.naive_rows:,} rows)"
    )
    for col in (
        "engine",
        "bulk ingest rows/s",
        "bulk time s",
        "client CPU s",
        "server CPU s",
        "load avg (median/max)",
        "naive ORM rows/s (median)",
        "ratio",
        "goal",
    ):
        table.add_column(col, justify="right")
    for r in results:
        goal = 100_000 if r["engine"] == "SQLite" else 200_000
        ok = "met" if r["ingest_rows_per_s"] >= goal else "missed"
        table.add_row(
            r["engine"],
            f"{r['ingest_rows_per_s']:,.0f}",
            f"{r['ingest_s']:.1f}",
            f"{r['client_cpu_s']:.1f}",
            "-" if r["server_cpu_s"] is None else f"{r['server_cpu_s']:.1f}",
            f"{r['load_avg_1min']['median']:.1f} / {r['load_avg_1min']['max']:.1f}",
            f"{r['naive_rows_per_s']:,.0f}",
            f"{r['ingest_rows_per_s'] / r['naive_rows_per_s']:.0f}x",
            f">= {goal:,} ({ok})",
        )
    console.print(table)
    console.print(f"{os.cpu_count()} CPU cores; 1-minute load average now {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"events": n_events, "results": results}, indent=2))
    console.print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
