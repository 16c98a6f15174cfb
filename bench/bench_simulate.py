"""Demo-world build and load speed: a big world (100k listeners x ~100 events) beside the 2,000 x 30-day demo
world (the anchor), both measured in the same run, each written to its own folder and loaded into its own
fresh SQLite database. Prints seconds, events, per-event cost and the ratio of per-event costs.

    .venv/bin/python bench/bench_simulate.py            # 100k listeners x ~100 events (about 10M events)
    .venv/bin/python bench/bench_simulate.py --quick    # 10k listeners x ~100 events
    .venv/bin/python bench/bench_simulate.py --no-load  # files only

The corpus cache is warmed before timing (its cold build is reported separately).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.context import make_context
from personalize.db.session import upgrade
from personalize.simulate.corpus import default_cache_dir, load_pieces
from personalize.simulate.world import WorldConfig, build_world, load_world

console = Console(width=130)
END = dt.date(2026, 11, 1)
DEMO = WorldConfig(listeners=2000, days=30, seed=7, end_date=END)


def run_world(config: WorldConfig, load: bool, workdir: Path) -> dict[str, float]:
    """Build (and load) one world in a fresh folder and SQLite file; seconds per phase and the event count."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    try:
        started = time.perf_counter()
        summary = build_world(folder / "sim", config)
        build_s = time.perf_counter() - started
        load_s = 0.0
        if load:
            url = f"sqlite:///{folder / 'personalize.db'}"
            upgrade(url)
            ctx = make_context(data_dir=folder, database_url=url)
            started = time.perf_counter()
            reports = load_world(ctx, folder / "sim")
            load_s = time.perf_counter() - started
            ctx.engine.dispose()
            assert reports["events"].quarantined_total == 0, reports["events"].quarantined
        return {"events": summary.events, "build_s": build_s, "load_s": load_s}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def median_run(config: WorldConfig, load: bool, repeats: int, workdir: Path) -> dict[str, float]:
    runs = [run_world(config, load, workdir) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k listeners instead of 100k")
    parser.add_argument("--listeners", type=int, default=None, help="listeners of the big world")
    parser.add_argument("--no-load", action="store_true", help="write files only")
    parser.add_argument("--repeats", type=int, default=1, help="runs per world; medians are printed")
    args = parser.parse_args()
    n_big = args.listeners or (10_000 if args.quick else 100_000)
    # 25 days at the demo's activity gives about 100 events per listener.
    big = WorldConfig(listeners=n_big, days=25, seed=7, end_date=END)

    started = time.perf_counter()
    load_pieces(default_cache_dir())
    corpus_s = time.perf_counter() - started

    modes = [False] if args.no_load else [False, True]
    table = Table(
        title=f"Demo world build{'' if args.no_load else ' and load (SQLite)'}, medians of {args.repeats}"
    )
    for col in ("world", "load", "events", "build s", "load s", "total s", "µs/event", "x demo per event"):
        table.add_column(col, justify="right" if col != "world" else "left")
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        workdir = Path(tmp)
        for load in modes:
            demo = median_run(DEMO, load, args.repeats, workdir)
            other = median_run(big, load, args.repeats, workdir)
            demo_us = (demo["build_s"] + demo["load_s"]) / demo["events"] * 1e6
            for name, res in (("demo 2,000 x 30 d (anchor)", demo), (f"{n_big:,} x 25 d", other)):
                total = res["build_s"] + res["load_s"]
                per_event = total / res["events"] * 1e6
                table.add_row(
                    name, "yes" if load else "no", f"{int(res['events']):,}", f"{res['build_s']:.1f}",
                    f"{res['load_s']:.1f}", f"{total:.1f}", f"{per_event:.1f}", f"{per_event / demo_us:.2f}",
                )  # fmt: skip
    console.print(table)
    console.print(
        f"corpus cache check: {corpus_s:.2f} s (parses only pieces missing from {default_cache_dir()})"
    )


if __name__ == "__main__":
    main()
