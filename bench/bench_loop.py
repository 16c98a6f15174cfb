"""The closed loop's own cost per night beside the night it serves: how long the simulated world takes to
answer a day (play what was published, post the events through ingest) and to measure the night against
its truth, next to the night itself (every stage, generation and rendering included), in the same run on
the same world. Prints medians over the nights after night 0 and the ratio (world + measures) / night.

    .venv/bin/python bench/bench_loop.py            # the demo world: 2,000 listeners, 36 tracks of 30-40 s, 4 nights
    .venv/bin/python bench/bench_loop.py --quick    # 300 listeners, 6 tracks of 10-15 s, 10 s for outliers, 3 nights
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.context import make_context
from personalize.db.session import upgrade
from personalize.simulate.loop import run_loop
from personalize.simulate.world import WorldConfig, build_world, load_world

console = Console(width=130)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small world and short songs")
    parser.add_argument("--nights", type=int, default=None, help="nights in all, night 0 included")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and print where it is")
    args = parser.parse_args()
    nights = args.nights or (3 if args.quick else 4)
    listeners, tracks, seconds = (300, 6, (10.0, 15.0)) if args.quick else (2000, 36, (30.0, 40.0))
    # Tracks for outlier listeners: the product's 60 s a night, scaled down with a quick run's world.
    personal_s = 10.0 if args.quick else 60.0
    folder = Path(tempfile.mkdtemp(prefix="bench_loop_"))
    try:
        end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=nights + 1)
        url = f"sqlite:///{folder / 'personalize.db'}"
        upgrade(url)
        ctx = make_context(
            data_dir=folder, database_url=url, tracks_total=tracks, tracks_per_cluster_min=1,
            track_seconds_min=seconds[0], track_seconds_max=seconds[1], personal_tracks_cpu_s=personal_s,
        )  # fmt: skip
        build_world(folder / "sim", WorldConfig(listeners=listeners, seed=7, catalog_size=600, end_date=end))
        load_world(ctx, folder / "sim")
        done = run_loop(ctx, nights, say=console.print)
        ctx.engine.dispose()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            console.print(f"data folder kept: {folder}")
    answered = [m for n, m in done.items() if n > 0]
    world_s = statistics.median(m["world_s"] for m in answered)
    measure_s = statistics.median(m["measure_s"] for m in answered)
    night_s = statistics.median(m["night_s"] for m in answered)
    table = Table(title=f"Closed loop, {listeners} listeners, {tracks} tracks of {seconds[0]:.0f}-{seconds[1]:.0f} s "
                  f"(medians of nights 1..{nights - 1})")  # fmt: skip
    for col in ("what", "seconds per night"):
        table.add_column(col, justify="right" if col != "what" else "left")
    table.add_row("world answers a day (play, post through ingest)", f"{world_s:.2f}")
    table.add_row("measures against the truth", f"{measure_s:.2f}")
    table.add_row("anchor: the night itself (every stage)", f"{night_s:.1f}")
    table.add_row("ratio (world + measures) / night", f"{(world_s + measure_s) / night_s:.3f}")
    table.add_row("events posted per night", f"{statistics.median(m['events'] for m in answered):,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
