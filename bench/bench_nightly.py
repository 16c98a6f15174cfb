"""The nightly run end to end (profile -> cluster -> plan -> generate -> render -> publish -> report) on
this machine, with the stage breakdown: goal <= 10 minutes for 10k listeners and about 200 tracks.

Anchor: the 2k-listener demo world, run in the same process right before with the same number of tracks,
so the per-listener stages (profile, cluster, publish) show as a ratio per listener and the per-track
stages (generate, render) as a ratio per track. Worlds are built by the simulator and loaded through
ingest before the clock starts (not counted). SQLite in a temporary folder, the shipped generator,
FluidSynth. A stage's time is the median over ``--repeats`` runs of the whole night on fresh copies of
the database (default 1: a night takes minutes).

    .venv/bin/python bench/bench_nightly.py            # anchor 2k, then 10k listeners; 200 tracks each
    .venv/bin/python bench/bench_nightly.py --quick    # anchor 500, then 2k listeners; 24 tracks each
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize import pipeline
from personalize.context import make_context
from personalize.db.session import upgrade

console = Console()
END_DATE = dt.date(2026, 11, 1)
GOAL_S = 600.0


def build(root: Path, listeners: int, seed: int) -> Path:
    """Simulator files of a world (30 days, the demo's catalog of 600 tracks)."""
    from personalize.simulate.world import WorldConfig, build_world

    sim = root / f"sim-{listeners}"
    t0 = time.perf_counter()
    build_world(sim, WorldConfig(listeners=listeners, days=30, seed=seed, end_date=END_DATE))
    console.log(f"built a {listeners:,}-listener world in {time.perf_counter() - t0:.0f} s (not counted)")
    return sim


def night(
    root: Path, sim: Path, listeners: int, tracks: int, seconds: float, min_per_cluster: int
) -> dict[str, float]:
    """One full night on a fresh SQLite database holding the world; seconds per stage."""
    from personalize.simulate.world import load_world

    data_dir = root / f"night-{listeners}-{time.time_ns()}"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'personalize.db'}"
    upgrade(url)
    ctx = make_context(
        data_dir=data_dir,
        database_url=url,
        tracks_total=tracks,
        track_seconds_min=seconds,
        track_seconds_max=seconds,
        tracks_per_cluster_min=min_per_cluster,
    )
    t0 = time.perf_counter()
    load_world(ctx, sim)
    console.log(f"loaded {listeners:,} listeners in {time.perf_counter() - t0:.0f} s (not counted)")
    shutil.copytree(sim / "truth", data_dir / "sim" / "truth")
    seconds: dict[str, float] = {}
    counts: dict[str, float] = {}

    def said(label: str, summary: dict, s: float) -> None:
        stage = label.split(":", 1)[0]
        seconds[stage] = seconds.get(stage, 0.0) + s
        for key in ("generated", "failed", "rendered", "published", "tracks_planned"):
            if isinstance(summary.get(key), int):
                counts[key] = counts.get(key, 0) + summary[key]
        console.log(f"  {label}: {s:.1f} s")

    t0 = time.perf_counter()
    pipeline.run(ctx, END_DATE, on_stage=said)
    seconds["total"] = time.perf_counter() - t0
    ctx.engine.dispose()
    return seconds | {f"n_{k}": v for k, v in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 and 2k listeners, 24 tracks")
    parser.add_argument("--listeners", type=int, default=None, help="the measured world (default 10000)")
    parser.add_argument("--anchor", type=int, default=None, help="the anchor world (default 2000)")
    parser.add_argument("--tracks", type=int, default=None, help="tracks per night (default 200)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=150.0,
        help="length asked of each track (default 150 s, the product's middle)",
    )
    parser.add_argument(
        "--min-per-cluster", type=int, default=None, help="tracks_per_cluster_min (default: the product's, 4)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    anchor_n = args.anchor or (500 if args.quick else 2000)
    main_n = args.listeners or (2000 if args.quick else 10_000)
    tracks = args.tracks or (24 if args.quick else 200)

    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        root = Path(tmp)
        results: dict[int, list[dict[str, float]]] = {}
        for n, seed in ((anchor_n, 7), (main_n, 8)):
            sim = build(root, n, seed)
            min_per = (
                args.min_per_cluster
                if args.min_per_cluster is not None
                else make_context().settings.tracks_per_cluster_min
            )
            results[n] = [night(root, sim, n, tracks, args.seconds, min_per) for _ in range(args.repeats)]

    def med(n: int, key: str) -> float:
        values = [r.get(key, 0.0) for r in results[n]]
        return statistics.median(values)

    table = Table(
        title=f"Nightly run, {tracks} tracks of {args.seconds:.0f} s, SQLite, this machine (median of {args.repeats})"
    )
    table.add_column("stage")
    table.add_column(f"anchor {anchor_n:,} listeners (s)", justify="right")
    table.add_column(f"{main_n:,} listeners (s)", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("ratio per listener", justify="right")
    for stage in (*pipeline.STAGES, "total"):
        a, m = med(anchor_n, stage), med(main_n, stage)
        ratio = m / a if a > 0 else float("nan")
        per = ratio / (main_n / anchor_n)
        table.add_row(stage, f"{a:.1f}", f"{m:.1f}", f"{ratio:.2f}", f"{per:.2f}")
    console.print(table)
    total = med(main_n, "total")
    made = {
        k: med(main_n, k)
        for k in ("n_tracks_planned", "n_generated", "n_failed", "n_rendered", "n_published")
    }
    verdict = (
        ("met" if total <= GOAL_S else "NOT met")
        if tracks >= 200
        else f"not judged: {tracks} tracks instead of 200, see the per-track cost below"
    )
    console.print(
        f"{main_n:,} listeners: {total:.0f} s end to end ({total / 60:.1f} min; goal <= {GOAL_S / 60:.0f} min "
        f"for 200 tracks: {verdict}); " + ", ".join(f"{k[2:]} {v:.0f}" for k, v in made.items())
    )
    # Per-track cost of the night's music, to size a full 200-track night from a smaller one.
    for n in (anchor_n, main_n):
        made = med(n, "n_generated") + med(n, "n_failed")
        if made:
            console.print(
                f"{n:,} listeners: generate {med(n, 'generate') / made:.1f} s and render "
                f"{med(n, 'render') / max(med(n, 'n_rendered'), 1):.1f} s per track ({made:.0f} tracks)"
            )
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
