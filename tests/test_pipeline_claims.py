"""Stage claims in pipeline_runs, on both engines: one run of a stage and date at a time, decided by the
database; a failed run can be retried; a claim from another host is a lease taken over after missed
heartbeats, one on this host as soon as its process is gone; every run leaves its status, timing and
counts. Killed processes and real heartbeats: ``test_recovery.py``."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, update

from personalize import pipeline, runs
from personalize.context import Context
from personalize.db.models import PipelineRun

DAY = dt.date(2026, 3, 1)


def _set_holder(ctx, stage: str, holder: str) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(
            update(PipelineRun)
            .where(PipelineRun.stage == stage)
            .values(holder=holder, detail=f"running on {holder}")
        )


def _row(ctx, stage: str) -> PipelineRun:
    with ctx.sessions() as s:
        return s.execute(
            select(PipelineRun).where(PipelineRun.run_date == DAY, PipelineRun.stage == stage)
        ).scalar_one()


def test_a_stage_runs_once_at_a_time_and_records_its_outcome(ctx):
    with runs.recorded(ctx, DAY, "publish") as counts:
        with pytest.raises(runs.StageBusy, match="already running"):
            runs.claim_stage(ctx, DAY, "publish")
        counts["published"] = 3
    row = _row(ctx, "publish")
    assert row.status == "ok" and row.counts["published"] == 3 and row.duration_s >= 0
    with pytest.raises(RuntimeError, match="boom"), runs.recorded(ctx, DAY, "publish"):
        raise RuntimeError("boom")
    row = _row(ctx, "publish")
    assert row.status == "failed" and "boom" in row.detail
    with runs.recorded(ctx, DAY, "publish"):  # a failed run is retried, same row
        pass
    assert _row(ctx, "publish").status == "ok"
    with ctx.sessions() as s:
        assert len(s.execute(select(PipelineRun).where(PipelineRun.run_date == DAY)).scalars().all()) == 1


def test_a_claim_from_another_host_is_a_lease_taken_over_after_missed_beats(ctx):
    runs.claim_stage(ctx, DAY, "render:c2")
    _set_holder(ctx, "render:c2", "other-machine:4242:777")  # a run on another host, beating just now
    with pytest.raises(runs.StageBusy, match="another host") as busy:
        runs.claim_stage(ctx, DAY, "render:c2")
    assert "other-machine:4242" in str(busy.value) and "PERSONALIZE_STAGE_LEASE_S" in str(busy.value)
    missed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ctx.settings.stage_lease_s + 5)
    with ctx.engine.begin() as conn:
        conn.execute(update(PipelineRun).where(PipelineRun.stage == "render:c2").values(heartbeat_at=missed))
    claim = runs.claim_stage(ctx, DAY, "render:c2")
    row = _row(ctx, "render:c2")
    assert row.status == "running" and row.holder == claim.holder != "other-machine:4242:777"
    assert "taken over from other-machine:4242" in row.detail and "no heartbeat" in claim.took_over


def test_a_claim_whose_pid_now_belongs_to_another_process_is_taken_over(ctx):
    import socket

    from personalize.workers import this_process

    me = this_process()
    runs.claim_stage(ctx, DAY, "publish")
    if me.start_ticks is None:
        pytest.skip("no /proc: process start times are not known here")
    # The PID runs (this very process) but started at another time: the kernel reused the PID.
    _set_holder(ctx, "publish", f"{socket.gethostname()}:{me.pid}:{me.start_ticks - 1}")
    claim = runs.claim_stage(ctx, DAY, "publish")
    assert "gone from this host" in claim.took_over
    with pytest.raises(runs.StageBusy, match="still runs on this host"):
        runs.claim_stage(ctx, DAY, "publish")


def test_of_many_simultaneous_claims_exactly_one_wins(ctx):
    other = Context(settings=ctx.settings, engine=ctx.engine)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            runs.claim_stage(other, DAY, "publish")
            outcomes.append("claimed")
        except runs.StageBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["busy", "busy", "busy", "claimed"]


def test_run_stage_checks_its_arguments(ctx):
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline.run_stage(ctx, "dance", DAY)
    with pytest.raises(ValueError, match="only generate/render"):
        pipeline.run_stage(ctx, "publish", DAY, cluster_id=3)
    with pytest.raises(ValueError, match="not a date"):
        runs.parse_run_date("yesterday")
    assert runs.parse_run_date(dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC)) == DAY


def test_release_frees_a_killed_runs_claims_at_once_and_keeps_live_ones(ctx):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)  # a process that has exited
    for stage in ("generate:c0", "generate:c1", "render:c0", "publish"):
        runs.claim_stage(ctx, DAY, stage)
    _set_holder(ctx, "generate:c0", f"{socket.gethostname()}:{dead_pid}:")
    _set_holder(ctx, "generate:c1", f"{socket.gethostname()}:{dead_pid}:")
    _set_holder(ctx, "render:c0", f"other-machine:{os.getpid()}:1")
    # "publish" is held by this very process: still running

    result = {r["stage"]: r for r in runs.release_claims(ctx, DAY, ["generate", "render", "publish"])}
    assert {s for s, r in result.items() if r["released"]} == {"generate:c0", "generate:c1"}
    assert "still runs" in result["publish"]["why"] and "another machine" in result["render:c0"]["why"]
    assert _row(ctx, "generate:c0").status == "failed" and "released" in _row(ctx, "generate:c0").detail
    runs.claim_stage(ctx, DAY, "generate:c0")
    with pytest.raises(runs.StageBusy):
        runs.claim_stage(ctx, DAY, "render:c0")

    forced = runs.release_claims(ctx, DAY, ["render"], force=True)
    assert [r["stage"] for r in forced if r["released"]] == ["render:c0"]
    assert _row(ctx, "publish").status == "running"  # outside the chosen stages, untouched


def test_release_command_says_what_it_freed(ctx, monkeypatch):
    from typer.testing import CliRunner

    from personalize.cli import app

    runs.claim_stage(ctx, DAY, "report")
    _set_holder(ctx, "report", "elsewhere:1:")
    monkeypatch.setenv("PERSONALIZE_DATABASE_URL", ctx.settings.resolved_database_url)
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(ctx.settings.data_dir))
    runner = CliRunner()
    kept = runner.invoke(app, ["run-release", "--date", DAY.isoformat()])
    assert kept.exit_code == 1 and "kept report" in kept.output and "--force" not in kept.output
    freed = runner.invoke(app, ["run-release", "--date", DAY.isoformat(), "--force"])
    assert freed.exit_code == 0 and "released report" in freed.output
    assert _row(ctx, "report").status == "failed"
