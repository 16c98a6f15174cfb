"""Recovery without an operator, with real processes on both engines: a stage killed with SIGKILL is taken
over at once by its retry on the same host, which completes it; a live holder is refused; a claim from
another host holds while it beats and is taken over after missed beats (its own run then learns it lost
the claim); pool workers end with the process that started them and obey SIGTERM."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from personalize import pipeline, runs
from personalize.context import Context
from personalize.db.models import PipelineRun, Track
from personalize.render.pieces import demo_piece, midi_bytes

DAY = dt.date(2026, 11, 20)
DAY_CODE = f"__import__('datetime').date.fromisoformat({DAY.isoformat()!r})"  # DAY in a child's code


def _row(ctx: Context, stage: str) -> PipelineRun:
    with ctx.sessions() as s:
        return s.execute(
            select(PipelineRun).where(PipelineRun.run_date == DAY, PipelineRun.stage == stage)
        ).scalar_one()


def _child(code: str, **env: str) -> subprocess.Popen:
    """A Python child running ``code``; its stdout is read line by line."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _wait_for_line(proc: subprocess.Popen, expected: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if expected in line:
            return line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"child never printed {expected!r}: {proc.stderr.read()[-3000:]}")


def _context_code(ctx: Context, **settings: object) -> str:
    overrides = {
        "data_dir": str(ctx.settings.data_dir),
        "database_url": ctx.settings.resolved_database_url,
        **settings,
    }
    return f"from personalize.context import make_context\nctx = make_context(**{overrides!r})\n"


def _gone(pids: list[int], timeout_s: float) -> list[int]:
    """The processes of ``pids`` still running (zombies count as gone) after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _pool_workers(pid: int, at_least: int, timeout_s: float = 60) -> list[int]:
    """The worker processes of the pools ``pid`` started (not multiprocessing's fork server or resource
    tracker), once there are ``at_least`` of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = []
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                command = " ".join(p.cmdline())
                if "resource_tracker" in command or (p.ppid() == pid and "forkserver" in command):
                    continue
                found.append(p.pid)
        if len(found) >= at_least:
            return found
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not start {at_least} workers in {timeout_s:.0f} s")


def _ignores_sigterm(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` still ignores SIGTERM after up to ``timeout_s`` (a spawned worker inherits an
    ignored signal until it sets itself up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        if not ignored & (1 << (signal.SIGTERM - 1)) or time.monotonic() > deadline:
            return bool(ignored & (1 << (signal.SIGTERM - 1)))
        time.sleep(0.05)


def _family(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_a_stage_killed_mid_run_is_taken_over_at_once_and_its_retry_completes(ctx):
    """The render stage (fork workers, as under a real Airflow executor) is killed with SIGKILL while it
    renders: its workers go with it, and the next attempt on this host takes its claim over without
    waiting and renders every track."""
    with ctx.sessions.begin() as session:
        for i in range(6):
            midi_uri = ctx.storage.put_bytes("midi", midi_bytes(demo_piece(40, seed=i)), ".mid").uri
            session.add(
                Track(track_id=f"g-{i}", title=f"Fresh {i}", source="generated", duration_s=40.0,
                      tempo_bpm=110.0, key_pc=0, mode="major", meter="4/4", programs="0;33;73;drums",
                      run_date=DAY, cluster_id=1, model_version="test", midi_uri=midi_uri)
            )  # fmt: skip
    code = _context_code(ctx, render_start_method="fork", render_workers=2) + textwrap.dedent(f"""
        from personalize import pipeline
        print("starting", flush=True)
        pipeline.run_stage(ctx, "render", {DAY.isoformat()!r}, cluster_id=1)
    """)
    stage = _child(code)
    _wait_for_line(stage, "starting")
    workers = _family(stage.pid) + _pool_workers(stage.pid, at_least=2)
    assert _row(ctx, "render:c1").status == "running"
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait(10)
    assert _gone(workers, timeout_s=5) == [], "render workers outlived their killed parent"
    killed = _row(ctx, "render:c1")
    assert killed.status == "running" and f":{stage.pid}:" in killed.holder  # the claim the kill left

    t0 = time.monotonic()
    summary = pipeline.run_stage(ctx, "render", DAY, cluster_id=1)
    row = _row(ctx, "render:c1")
    assert row.status == "ok" and f"{stage.pid}" in row.counts["took_over_from"]
    assert "gone from this host" in row.counts["took_over_from"]
    assert time.monotonic() - t0 < 120  # no lease to wait out
    with ctx.sessions() as s:
        rendered = s.execute(select(Track.audio_uri).where(Track.run_date == DAY)).scalars().all()
    assert len(rendered) == 6 and all(rendered), summary


def test_a_live_holder_on_this_host_is_refused_even_without_heartbeats_and_taken_once_killed(ctx):
    code = _context_code(ctx) + textwrap.dedent(f"""
        import sys
        from personalize import runs
        with runs.recorded(ctx, {DAY_CODE}, "publish"):
            print("claimed", flush=True)
            sys.stdin.readline()
    """)
    holder = _child(code)
    try:
        _wait_for_line(holder, "claimed")
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        with ctx.engine.begin() as conn:  # a holder stuck in a long transaction beats late: still its claim
            conn.execute(
                PipelineRun.__table__.update()
                .where(PipelineRun.stage == "publish")
                .values(heartbeat_at=long_ago, started_at=long_ago)
            )
        with pytest.raises(runs.StageBusy, match=f"running on .*:{holder.pid} .*still runs on this host"):
            runs.claim_stage(ctx, DAY, "publish")
        os.kill(holder.pid, signal.SIGKILL)
        time.sleep(0.2)  # not reaped yet: a zombie is not a holder
        claim = runs.claim_stage(ctx, DAY, "publish")
        assert f":{holder.pid}: its process is gone" in claim.took_over
    finally:
        holder.kill()
        holder.wait(10)


def test_a_lease_from_another_host_holds_while_it_beats_and_is_taken_after_missed_beats(ctx):
    """A holder named as another host beats every second with a 10-second lease: past 10 s since it
    started it is still refused; frozen (SIGSTOP), it misses its beats and is taken over; woken, it
    finds its claim gone and records nothing."""
    lease = {"stage_heartbeat_s": 1.0, "stage_lease_s": 10.0}
    code = "import socket\nsocket.gethostname = lambda: 'far-host'\n" + _context_code(ctx, **lease)
    code += textwrap.dedent(f"""
        import sys
        from personalize import runs
        try:
            with runs.recorded(ctx, {DAY_CODE}, "report"):
                print("claimed", flush=True)
                sys.stdin.readline()
        except runs.ClaimLost as exc:
            print("lost:", exc, flush=True)
            sys.exit(3)
        print("recorded", flush=True)
    """)
    here = Context(settings=ctx.settings.model_copy(update=lease), engine=ctx.engine)
    holder = _child(code)
    try:
        _wait_for_line(holder, "claimed")
        time.sleep(12)  # longer than the lease since the claim: its beats keep it
        with pytest.raises(runs.StageBusy, match=r"far-host.*another host"):
            runs.claim_stage(here, DAY, "report")
        os.kill(holder.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        while True:
            try:
                claim = runs.claim_stage(here, DAY, "report")
                break
            except runs.StageBusy:
                assert time.monotonic() - t_stop < 30, "a lease that stopped beating was never taken over"
                time.sleep(0.5)
        waited = time.monotonic() - t_stop
        assert 8 <= waited < 15 and "no heartbeat since" in claim.took_over
        os.kill(holder.pid, signal.SIGCONT)
        time.sleep(2)  # its next beat finds the claim gone
        holder.stdin.write("\n")
        holder.stdin.flush()
        line = _wait_for_line(holder, "lost:")
        assert "taken over" in line and holder.wait(10) == 3
        assert _row(here, "report").holder == claim.holder  # the new run's claim stands
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            if holder.poll() is None:
                os.kill(holder.pid, sig)
        holder.wait(10)


@pytest.mark.parametrize("pool", ["render-fork", "render-forkserver", "render-spawn", "midi-measure"])
def test_pool_workers_end_with_their_killed_parent_and_obey_sigterm(pool: str, tmp_path: Path):
    """The parent ignores SIGTERM (as a task process with its own handler might) before starting its
    pool: a worker still stops on SIGTERM, and once the parent is killed with SIGKILL every process it
    started is gone within seconds."""
    if pool.startswith("render"):
        method = pool.split("-", 1)[1]
        body = f"""
            from personalize.config import get_settings
            from personalize.render.batch import RenderJob, render_batch
            from personalize.render.pieces import demo_piece, midi_bytes
            settings = get_settings(data_dir={str(tmp_path)!r}, render_start_method={method!r})
            jobs = [RenderJob(f"t{{i}}", midi_bytes(demo_piece(60, seed=i))) for i in range(200)]
            print("starting", flush=True)
            render_batch(jobs, settings, workers=2, progress=False)
        """
        workers = 2
    else:
        body = f"""
            from pathlib import Path
            from personalize.ingest.midi import MidiMeasurer
            from personalize.render.pieces import demo_piece
            path = Path({str(tmp_path / "piece.mid")!r})
            demo_piece(10).write(str(path))
            measurer = MidiMeasurer(timeout_s=60, max_bytes=10**6)
            assert measurer.measure(path).features
            print("starting", flush=True)
            sys.stdin.readline()
        """
        workers = 1
    code = "import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + textwrap.dedent(body)
    parent = _child(code)
    try:
        _wait_for_line(parent, "starting", timeout_s=120)
        started = _family(parent.pid)
        worker = _pool_workers(parent.pid, at_least=workers)[0]
        assert _ignores_sigterm(worker, timeout_s=60) is False, "a pool worker kept SIGTERM ignored"
        os.kill(worker, signal.SIGTERM)
        assert _gone([worker], timeout_s=5) == [], "a pool worker ignored SIGTERM"
        everyone = sorted(set(started) | set(_family(parent.pid)))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone(everyone, timeout_s=5) == [], f"{pool}: processes outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
