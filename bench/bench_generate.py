"""Generation speed of the first Transformer (models/transformer_v1, bars of interleaved parts) on one CPU core: tokens/s with the KV cache at batch 1, 16
and 64 against a naive decoder of the same model that recomputes the whole context at every step (the
anchor, batch 16), and CPU seconds per 60-second three-part track including verification.

Figures are per CPU core: one torch thread, and time measured as this process's CPU time (so other work
on a shared machine does not count against it). Tokens are every position decoded for every row (forced
structure tokens included). Medians over the repeats.

    .venv/bin/python bench/bench_generate.py            # 3 repeats, 8-bar pieces for tokens/s
    .venv/bin/python bench/bench_generate.py --quick    # 1 repeat, 4-bar pieces
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.generate import Controls, generate_verified, load_generator
from personalize.generate import tokens as T
from personalize.generate.sample import sample_tokens

console = Console()
GOAL_TOKENS_PER_S = 5_000
GOAL_TRACK_CPU_S = 1.0


def _controls(n: int, bars: int, tempo_bpm: float = 120.0) -> list[Controls]:
    programs = ([0, 33, 40], [73, 42, 0], [56, 71, 32], [24, 33, 0])
    return [
        Controls(key_pc=i % 12, mode=("major", "minor")[i % 2], tempo_bpm=tempo_bpm, meter="4/4",
                 density_bin=1 + i % 3, programs=list(programs[i % len(programs)]), bars=bars)
        for i in range(n)
    ]  # fmt: skip


def tokens_per_cpu_s(gen: object, batch: int, bars: int, use_cache: bool, seed: int) -> float:
    controls = _controls(batch, bars)
    prefixes, ordered = zip(*(T.controls_prefix(c) for c in controls), strict=True)
    grammar = T.Grammar(
        list(ordered), [T.bar_ticks_of(c.meter) for c in controls], [c.bars for c in controls]
    )
    t0 = time.process_time()
    bodies = sample_tokens(
        gen.model, list(prefixes), grammar, torch.Generator().manual_seed(seed), use_cache=use_cache
    )
    cpu_s = time.process_time() - t0
    steps = max(len(b) for b in bodies)
    return batch * steps / cpu_s


def track_cpu_s(gen: object, n_tracks: int, seed: int) -> tuple[float, float, float]:
    """CPU seconds per 60-second three-part track (30 bars of 4/4 at 120 bpm), verified; share passed; tries."""
    controls = _controls(n_tracks, bars=30)
    t0 = time.process_time()
    pieces = generate_verified(gen, controls, seed=seed, max_attempts=4)
    cpu_s = (time.process_time() - t0) / n_tracks
    assert all(abs(p.measurement["duration_s"] - 60.0) < 1.0 for p in pieces)
    return cpu_s, sum(p.ok for p in pieces) / n_tracks, statistics.mean(p.attempts for p in pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, shorter pieces")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models/transformer_v1"),
        help="the first model (default models/transformer_v1)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/generate.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = load_generator(args.model_dir)
    repeats = 1 if args.quick else 3
    bars = 4 if args.quick else 8
    n_params = sum(p.numel() for p in gen.model.parameters())

    rows = {}
    with console.status("naive decoder (no KV cache), batch 16"):
        rows["anchor: no cache, batch 16"] = statistics.median(
            tokens_per_cpu_s(gen, 16, bars, False, r) for r in range(repeats)
        )
    for batch in (1, 16, 64):
        with console.status(f"KV cache, batch {batch}"):
            rows[f"KV cache, batch {batch}"] = statistics.median(
                tokens_per_cpu_s(gen, batch, bars, True, r) for r in range(repeats)
            )
    n_tracks = 8 if args.quick else 16
    with console.status(f"{n_tracks} verified 60-second three-part tracks"):
        runs = [track_cpu_s(gen, n_tracks, 100 + r) for r in range(repeats)]
    track_s = statistics.median(r[0] for r in runs)

    anchor = rows["anchor: no cache, batch 16"]
    table = Table(title=f"Generation speed, one CPU core ({n_params / 1e6:.2f}M-parameter model)")
    table.add_column("decoder")
    table.add_column("tokens / CPU-s", justify="right")
    table.add_column("vs anchor", justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:,.0f}", f"{value / anchor:.1f}x")
    console.print(table)
    best = max(v for k, v in rows.items() if "KV" in k)
    console.print(f"best KV-cache throughput {best:,.0f} tokens/s per core (goal {GOAL_TOKENS_PER_S:,})")
    console.print(
        f"60-second three-part track incl. verification: {track_s:.3f} CPU-s per track "
        f"(goal <= {GOAL_TRACK_CPU_S} s; batch {n_tracks}; passed {runs[0][1]:.0%}, mean tries {runs[0][2]:.2f})"
    )
    result = {
        "n_params": n_params,
        "tokens_per_cpu_s": rows,
        "ratio_vs_anchor": {k: v / anchor for k, v in rows.items()},
        "track_60s_3part_cpu_s": track_s,
        "track_batch": n_tracks,
        "repeats": repeats,
        "bars_for_tokens": bars,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
