"""How often does the shipped song writer pass the music gate on its first try, over requests as varied as
the nightly plans can make them?

``personalize eval generator`` and ``eval music`` ask for a few instrument sets per texture. A cluster's
plan can ask for any General MIDI program (the planner maps percussive patches to the nearest melodic
one), one to three pitched parts, drums or none, any of five meters, 60-170 BPM, every density bin and a
song's length. This survey draws such requests at random, writes one song for each with the shipped model
(one try, no resampling) and counts the gate's verdicts and the metric each failure names first.

    .venv/bin/python scripts/gate_survey.py --n 60 --seed 0
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np
from rich.progress import track

from personalize.generate.song.arrange import assign_roles
from personalize.generate.song.form import texture_of
from personalize.generate.song.writer import SongGenerator
from personalize.music.controls import Controls
from personalize.music.gate import MusicGate, default_gate_path
from personalize.music.gm import DRUMS, playable_program
from personalize.music.score import score_from_midi

METERS = ("4/4", "3/4", "6/8", "2/4", "2/2")


def draw_request(rng: np.random.Generator) -> Controls:
    """One request like the planner's: 1-3 pitched programs of the whole GM set, drums half the time."""
    n = int(rng.integers(1, 4))
    programs: list[int | str] = list(
        dict.fromkeys(playable_program(int(p)) for p in rng.choice(112, size=n, replace=False))
    )
    if rng.random() < 0.5:
        programs.append(DRUMS)
    return Controls(
        int(rng.integers(12)),
        str(rng.choice(["major", "minor"])),
        round(float(rng.uniform(60, 170)), 1),
        str(rng.choice(METERS)),
        int(rng.integers(4)),
        programs,
        bars=int(rng.integers(40, 90)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="requests (one song each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=Path("models/transformer"))
    args = parser.parse_args()
    writer = SongGenerator.load(args.model_dir)
    gate = MusicGate.load(default_gate_path())
    rng = np.random.default_rng(args.seed)
    first: collections.Counter[str] = collections.Counter()
    failed = []
    for k in track(range(args.n), description="writing and judging songs"):
        controls = draw_request(rng)
        texture = texture_of(controls)
        song = writer.generate([controls], seed=args.seed * 100_003 + k)[0]
        verdict = gate.judge(score_from_midi(song), controls.key_pc, controls.mode, texture)
        if verdict.reasons:
            named = [r.split(" ")[0] for r in verdict.reasons if not r.startswith("atypical")]
            # An "atypical" verdict names the metrics furthest out; the first of them is the reason.
            reason = named[0] if named else verdict.reasons[0].split("furthest out: ")[-1].split(" ")[0]
            first[reason] += 1
            roles = assign_roles([p for p in controls.pitched_programs], texture)
            failed.append(f"{controls.describe()} roles {roles}: {reason}")
    print(f"{args.n - len(failed)} of {args.n} songs passed the music gate on their first try")
    for reason, count in first.most_common():
        print(f"  {count:3d}  {reason}")
    for line in failed:
        print("  -", line)


if __name__ == "__main__":
    main()
