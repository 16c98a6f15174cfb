"""Render many tracks at once: a pool of worker processes, each with its own synthesizer and soundfont.

Each worker loads the soundfont once and renders track after track. The parent hands out one job at a
time per worker, so it always knows which track a worker is on: a worker past the hard time limit is
killed and replaced, a crashed one too, and that track alone is reported as rejected while the batch goes on.
Workers end with the process that started them, even when it is killed with SIGKILL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pretty_midi
from tqdm import tqdm

from personalize.config import Settings
from personalize.render.encode import codec_rate_hz, encode
from personalize.render.engine import prepare_worker, render_midi
from personalize.render.errors import ENCODE_FAILED, TIMEOUT, WORKER_CRASHED, RenderRejected
from personalize.workers import ProcessId, die_with_parent, this_process

HARD_LIMIT_GRACE_S = 30.0  # on top of render_timeout_s, for parsing and encoding, before a worker is killed
ARTIST = "personalize"


@dataclass
class RenderJob:
    """One track to render. ``comment`` (usually the generation controls) is stored in the file's tags."""

    job_id: str
    midi: pretty_midi.PrettyMIDI | bytes | Path
    title: str | None = None
    artist: str = ARTIST
    comment: dict[str, Any] | str | None = None
    codec: str | None = None  # default: settings.render_codec


@dataclass
class RenderOutcome:
    """Either ok (encoded bytes and measurements) or rejected (reason code and what to do)."""

    job_id: str
    ok: bool
    codec: str
    data: bytes | None = None
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    duration_s: float | None = None
    sample_rate_hz: int | None = None
    reason: str | None = None
    detail: str | None = None
    fixes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def render_job(job: RenderJob, settings: Settings) -> RenderOutcome:
    """Render and encode one job in this process; every failure becomes a rejected outcome."""
    t0 = time.monotonic()
    codec = job.codec or settings.render_codec
    try:
        audio = render_midi(job.midi, settings, sample_rate_hz=codec_rate_hz(codec, settings.sample_rate_hz))
        try:
            data = encode(
                audio, codec, {"title": job.title or job.job_id, "artist": job.artist, "comment": job.comment}
            )
        except Exception as exc:
            raise RenderRejected(
                ENCODE_FAILED, f"{codec} encoding failed ({type(exc).__name__}: {exc}); check libsndfile."
            ) from None
    except RenderRejected as exc:
        return RenderOutcome(
            job.job_id, False, codec, reason=exc.reason, detail=exc.detail, wall_s=time.monotonic() - t0
        )
    return RenderOutcome(
        job_id=job.job_id,
        ok=True,
        codec=codec,
        data=data,
        loudness_lufs=audio.loudness_lufs,
        true_peak_dbtp=audio.true_peak_dbtp,
        duration_s=audio.duration_s,
        sample_rate_hz=audio.sample_rate_hz,
        fixes=audio.fixes,
        wall_s=time.monotonic() - t0,
    )


def _worker(settings: Settings, tasks: mp.Queue, results: mp.Queue, parent: ProcessId) -> None:
    die_with_parent(parent)
    prepare_worker()
    while True:
        item = tasks.get()
        if item is None:
            return
        index, job = item
        try:
            outcome = render_job(job, settings)
        except Exception as exc:  # a bug, not bad input: report it against this track and keep serving
            outcome = RenderOutcome(
                job.job_id,
                False,
                job.codec or settings.render_codec,
                reason=WORKER_CRASHED,
                detail=f"unexpected {type(exc).__name__}: {exc}",
            )
        results.put((index, outcome))


@dataclass
class _Slot:
    process: mp.process.BaseProcess
    tasks: mp.Queue
    index: int | None = None  # job being rendered
    started: float = 0.0


def default_workers(settings: Settings) -> int:
    return max(1, settings.render_workers or len(os.sched_getaffinity(0)))


def render_batch(
    items: list[RenderJob],
    settings: Settings,
    workers: int | None = None,
    progress: bool = True,
    on_outcome: Callable[[RenderOutcome], None] | None = None,
) -> list[RenderOutcome]:
    """Render ``items`` on ``workers`` processes (default one per core); outcomes in the order of ``items``.

    ``on_outcome`` is called in this process as each track finishes (in finishing order), so a caller can
    store results as they come instead of holding the whole night's audio until the end.
    """
    if not items:
        return []
    n_workers = max(1, min(workers or default_workers(settings), len(items)))
    ctx = mp.get_context(settings.render_start_method)
    if settings.render_start_method == "forkserver":
        ctx.set_forkserver_preload(["personalize.render.batch"])
    results: mp.Queue = ctx.Queue()
    hard_limit_s = settings.render_timeout_s + HARD_LIMIT_GRACE_S
    outcomes: list[RenderOutcome | None] = [None] * len(items)
    pending = list(range(len(items) - 1, -1, -1))  # popped from the end: input order
    parent = this_process()

    def start_slot() -> _Slot:
        tasks: mp.Queue = ctx.Queue()
        process = ctx.Process(target=_worker, args=(settings, tasks, results, parent), daemon=True)
        process.start()
        return _Slot(process, tasks)

    def reject(index: int, reason: str, detail: str) -> None:
        job = items[index]
        outcomes[index] = RenderOutcome(
            job.job_id, False, job.codec or settings.render_codec, reason=reason, detail=detail
        )
        if on_outcome is not None:
            on_outcome(outcomes[index])

    slots = [start_slot() for _ in range(n_workers)]
    bar = tqdm(total=len(items), desc="render", unit="track", disable=not progress, mininterval=1.0)
    done = 0
    try:
        while done < len(items):
            for slot in slots:
                if slot.index is None and pending:
                    slot.index = pending.pop()
                    slot.started = time.monotonic()
                    slot.tasks.put((slot.index, items[slot.index]))
            try:
                index, outcome = results.get(timeout=0.5)
                if outcomes[index] is not None:  # already given up on (killed just after finishing)
                    continue
                outcomes[index] = outcome
                if on_outcome is not None:
                    on_outcome(outcome)
                for slot in slots:
                    if slot.index == index:
                        slot.index = None
                done += 1
                bar.update(1)
                continue
            except queue.Empty:
                pass
            for i, slot in enumerate(slots):
                if slot.index is None:
                    continue
                elapsed = time.monotonic() - slot.started
                if slot.process.is_alive() and elapsed <= hard_limit_s:
                    continue
                if slot.process.is_alive():
                    reject(slot.index, TIMEOUT, f"no result after {elapsed:.0f} s: the worker was stopped.")
                else:
                    reject(
                        slot.index,
                        WORKER_CRASHED,
                        f"the render process died (exit code {slot.process.exitcode}) on this track.",
                    )
                slot.process.kill()
                slot.process.join(5)
                done += 1
                bar.update(1)
                slots[i] = start_slot()
    finally:
        bar.close()
        for slot in slots:
            if slot.process.is_alive():
                slot.tasks.put(None)
        for slot in slots:
            slot.process.join(10)
            if slot.process.is_alive():
                slot.process.kill()
    return [o for o in outcomes if o is not None]
