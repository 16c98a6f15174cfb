"""Song generation speed on one CPU core: decoding tokens/s of the song model at batch 64 next to the same
core's own matrix-multiply rate measured in this run (the anchor: model FLOPs utilisation of decoding),
and CPU seconds of generate + verify per minute of music.

One torch thread; time is this process's CPU time (other work on a shared machine does not count against
it). A decoded token is one position of one row (forced structure tokens included); its FLOPs are
2 x the non-embedding parameters plus attention over the positions before it (2 x 2 x n_layer x n_embd
per cached position). Medians over the repeats.

    .venv/bin/python bench/bench_song.py             # 3 repeats
    .venv/bin/python bench/bench_song.py --quick     # 1 repeat, fewer songs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalize.generate import Controls, generate_verified, load_generator
from personalize.music.gm import DRUMS

console = Console()
GOAL_MFU = 0.25
GOAL_CPU_S_PER_MINUTE = 1.0
PROGRAMS = ([73, 0, 33, DRUMS], [40, 41, 42, 43], [71, 24], [0], [56, 60, 58], [24, 32, DRUMS])


def requests(n: int, seconds: float = 150.0) -> list[Controls]:
    out = []
    for i in range(n):
        tempo, meter = 80.0 + 10 * (i % 7), ("4/4", "3/4", "6/8", "2/4")[i % 4]
        bars = round(seconds * tempo / 60 / {"4/4": 4, "3/4": 3, "6/8": 3, "2/4": 2}[meter])
        out.append(
            Controls(i % 12, ("major", "minor")[i % 2], tempo, meter, i % 4, list(PROGRAMS[i % 6]), bars)
        )
    return out


def matmul_flops_per_s(size: int = 1024, repeats: int = 5) -> float:
    """The core's float32 matrix-multiply rate: the best of several (size x size) @ (size x size)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / max(time.process_time() - t0, 1e-9))
    return best


def decode_rate(gen: object, batch: int, seed: int) -> tuple[float, float]:
    """(tokens per CPU-s, FLOPs per CPU-s) of the melody writer alone at ``batch``."""
    plans = [gen.plan(c, np.random.default_rng([seed, i])) for i, c in enumerate(requests(batch))]
    t0 = time.process_time()
    streams = gen.melody.write([p.request for p in plans], seed=seed)
    cpu_s = time.process_time() - t0
    model = gen.melody.model
    cfg = model.config
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("wte", "wpe")))
    steps = max(len(s) for s in streams)
    # Every row is decoded at every step until the longest finishes; attention reads the cached positions.
    flops = batch * sum(
        2 * dense + 4 * cfg.n_layer * cfg.n_embd * min(t, cfg.block_size) for t in range(steps)
    )
    return batch * steps / cpu_s, flops / cpu_s


def cpu_s_per_minute(gen: object, n: int, seed: int) -> tuple[float, float, float]:
    """CPU-s of generate + verify per minute of music; share verified; mean tries."""
    controls = requests(n)
    t0 = time.process_time()
    pieces = generate_verified(gen, controls, seed=seed, max_attempts=4)
    cpu_s = time.process_time() - t0
    minutes = sum(p.midi.get_end_time() for p in pieces) / 60
    return cpu_s / minutes, sum(p.ok for p in pieces) / n, statistics.mean(p.attempts for p in pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=None, help="default models/transformer")
    parser.add_argument("--out", type=Path, default=Path("var/bench/song.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = load_generator(args.model_dir)
    repeats = 1 if args.quick else 3
    peak = statistics.median(matmul_flops_per_s() for _ in range(repeats))
    rates = [decode_rate(gen, 64, r) for r in range(repeats)]
    tokens = statistics.median(r[0] for r in rates)
    flops = statistics.median(r[1] for r in rates)
    n_songs = 16 if args.quick else 32
    runs = [cpu_s_per_minute(gen, n_songs, 100 + r) for r in range(repeats)]
    per_minute = statistics.median(r[0] for r in runs)

    table = Table(title="Song generation, one CPU core")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("anchor / goal", justify="right")
    table.add_row("matrix multiply (1024^3, float32)", f"{peak / 1e9:.1f} GFLOP/s", "the anchor")
    table.add_row("decoding at batch 64", f"{tokens:,.0f} tokens/s", "")
    table.add_row(
        "decoding FLOP rate", f"{flops / 1e9:.2f} GFLOP/s", f"MFU {flops / peak:.1%} (goal >= {GOAL_MFU:.0%})"
    )
    table.add_row(
        "generate + verify",
        f"{per_minute:.2f} CPU-s per minute of music",
        f"goal <= {GOAL_CPU_S_PER_MINUTE} (batch {n_songs}; verified {runs[0][1]:.0%}, mean tries {runs[0][2]:.2f})",
    )
    console.print(table)
    result = {
        "matmul_flops_per_s": peak,
        "decode_tokens_per_s_batch64": tokens,
        "decode_flops_per_s": flops,
        "mfu": flops / peak,
        "cpu_s_per_minute_of_music": per_minute,
        "verified_share": runs[0][1],
        "mean_tries": runs[0][2],
        "repeats": repeats,
        "songs": n_songs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
