"""Rendering speed: this renderer against the fluidsynth command line and pretty_midi's fluidsynth(), same run.

All three render the same multi-part MIDI files (chords, bass, melody, drums) with the same soundfont at
44.1 kHz. Speed is the realtime factor: seconds of music per second spent, measured both on the wall clock
and on CPU time (what one core delivers; steadier when the machine is shared). Medians over pieces and
repeats. Then the batch API on 1 and 2 worker processes, wall clock, encoding included.

    .venv/bin/python bench/bench_render.py            # 6 pieces of 45 s, 3 repeats
    .venv/bin/python bench/bench_render.py --quick    # 2 pieces of 30 s, 2 repeats
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from personalize.config import get_settings
from personalize.render import RenderJob, encode, render_batch, render_midi
from personalize.render.engine import engine_for, prepare_worker
from personalize.render.pieces import demo_piece, midi_bytes

PROGRAM_SETS = ((0, 33, 73), (4, 32, 65, 26), (48, 35, 56), (24, 33, 81), (0, 38, 71, 11), (19, 34, 68))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(fn) -> tuple[float, float]:
    wall0, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu_s()
    fn()
    return time.perf_counter() - wall0, (time.process_time() - cpu0) + (_children_cpu_s() - child0)


def _pretty_midi_alone(paths: list[str], soundfont: str, sample_rate_hz: int) -> list[tuple[float, float]]:
    """In a fresh process: pretty_midi's fluidsynth() on each file, (wall, CPU) seconds each, parse excluded."""
    import pretty_midi

    timings = []
    for path in paths:
        pm = pretty_midi.PrettyMIDI(path)
        timings.append(_timed(lambda pm=pm: pm.fluidsynth(fs=sample_rate_hz, synthesizer=soundfont)))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter pieces and repeats")
    args = parser.parse_args()
    n_pieces, duration_s, repeats = (2, 30.0, 2) if args.quick else (6, 45.0, 3)
    n_batch = 4 if args.quick else 8

    settings = get_settings()
    soundfont = settings.resolved_soundfont
    cli = shutil.which("fluidsynth")
    sr = settings.sample_rate_hz
    print(f"soundfont {soundfont.name}, {sr} Hz, {n_pieces} pieces of ~{duration_s:g} s, {repeats} repeats")
    # a shared machine: the load says how far wall-clock figures can be trusted (CPU-time ones hold better)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    pieces = [
        demo_piece(duration_s, tempo_bpm=96 + 8 * i, programs=PROGRAM_SETS[i % len(PROGRAM_SETS)], seed=i)
        for i in range(n_pieces)
    ]
    music_s = [pm.get_end_time() for pm in pieces]
    rows: dict[str, list[tuple[float, float]]] = {"this renderer": [], "this renderer + Ogg encode": []}
    rows["fluidsynth CLI (-F wav)"] = []
    rows["pretty_midi fluidsynth()"] = []
    rows["  same, soundfont kept loaded"] = []
    breakdown: dict[str, list[float]] = {"parse_cpu_s": [], "synth_cpu_s": [], "loudness_cpu_s": []}

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, pm in enumerate(pieces):
            path = Path(tmp) / f"piece{i}.mid"
            path.write_bytes(midi_bytes(pm))
            paths.append(path)
        # Set up like one of the batch's workers: soundfont loaded once per process, numerics on one thread.
        engine_for(soundfont, sr)
        prepare_worker()
        # Renderer by renderer within each repeat (every piece with one renderer, then the next): each one
        # runs with its own data warm in the caches, as it would rendering a night's tracks back to back,
        # instead of after another renderer's soundfont loads and buffers.
        for _ in range(repeats):
            for path, seconds in zip(paths, music_s, strict=True):
                audio_box = {}

                def ours(path=path, box=audio_box) -> None:
                    box["audio"] = render_midi(path, settings)

                wall, cpu = _timed(ours)
                rows["this renderer"].append((seconds / wall, seconds / cpu))
                for key in breakdown:
                    breakdown[key].append(audio_box["audio"].timings_s[key] / seconds)
                enc_wall, enc_cpu = _timed(
                    lambda box=audio_box: encode(box["audio"], "ogg", {"title": "bench"})
                )
                rows["this renderer + Ogg encode"].append(
                    (seconds / (wall + enc_wall), seconds / (cpu + enc_cpu))
                )
            if cli:
                for path, seconds in zip(paths, music_s, strict=True):
                    out = Path(tmp) / "cli.wav"
                    command = [cli, "-ni", "-F", str(out), "-r", str(sr), str(soundfont), str(path)]
                    wall, cpu = _timed(lambda c=command: subprocess.run(c, check=True, capture_output=True))
                    rows["fluidsynth CLI (-F wav)"].append((seconds / wall, seconds / cpu))
            # a fresh process per repeat ('spawn': nothing inherited from this one, no soundfont loaded)
            with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as alone:
                timings = alone.submit(
                    _pretty_midi_alone, [str(p) for p in paths], str(soundfont), sr
                ).result()
            for (wall, cpu), seconds in zip(timings, music_s, strict=True):
                rows["pretty_midi fluidsynth()"].append((seconds / wall, seconds / cpu))
            for pm, seconds in zip(pieces, music_s, strict=True):
                wall, cpu = _timed(lambda pm=pm: pm.fluidsynth(fs=sr, synthesizer=str(soundfont)))
                rows["  same, soundfont kept loaded"].append((seconds / wall, seconds / cpu))

        ours_wall = statistics.median(w for w, _ in rows["this renderer"])
        ours_cpu = statistics.median(c for _, c in rows["this renderer"])
        print()
        print(f"{'renderer':<30} {'x realtime (wall)':>18} {'x realtime (CPU)':>17} {'ours / it (CPU)':>16}")
        for name, values in rows.items():
            if not values:
                print(f"{name:<30} {'not installed':>18}")
                continue
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            print(f"{name:<30} {wall:>17.1f}x {cpu:>16.1f}x {ours_cpu / cpu:>15.2f}x")
        parts = ", ".join(
            f"{k[: -len('_cpu_s')]} {1 / statistics.median(v):.0f}x" for k, v in breakdown.items()
        )
        print(f"\nthis renderer, each step alone (x realtime, CPU): {parts}")

        jobs = [
            RenderJob(f"b{i}", midi_bytes(pieces[i % len(pieces)]), title=f"bench {i}")
            for i in range(n_batch)
        ]
        batch_music_s = sum(music_s[i % len(pieces)] for i in range(n_batch))
        batch: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers in (1, 2):
                t0 = time.perf_counter()
                outcomes = render_batch(jobs, settings, workers=workers, progress=False)
                batch[workers].append(time.perf_counter() - t0)
                assert all(o.ok for o in outcomes), [o.detail for o in outcomes if not o.ok]
        one, two = statistics.median(batch[1]), statistics.median(batch[2])
        print(
            f"\nbatch of {n_batch} tracks ({batch_music_s:.0f} s of music), render + Ogg encode, wall clock:"
        )
        print(f"  1 worker : {one:6.2f} s  ({batch_music_s / one:.1f}x realtime)")
        print(f"  2 workers: {two:6.2f} s  ({batch_music_s / two:.1f}x realtime)  speed-up {one / two:.2f}x")

        print("\ngoals:")
        cli_cpu = statistics.median(c for _, c in rows["fluidsynth CLI (-F wav)"]) if cli else float("nan")
        pm_cpu = statistics.median(c for _, c in rows["pretty_midi fluidsynth()"])
        print(f"  >= 80x realtime per core      : {ours_cpu:.1f}x CPU, {ours_wall:.1f}x wall")
        print(f"  >= the command line's speed   : {ours_cpu / cli_cpu:.2f}x the CLI (CPU)")
        held_cpu = statistics.median(c for _, c in rows["  same, soundfont kept loaded"])
        print(
            f"  >= 2x pretty_midi             : {ours_cpu / pm_cpu:.2f}x pretty_midi (CPU; "
            f"{ours_cpu / held_cpu:.2f}x when another synthesizer keeps its soundfont loaded)"
        )
        print(f"  2 workers >= 1.8x one worker  : {one / two:.2f}x")
        print(f"\nload average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
