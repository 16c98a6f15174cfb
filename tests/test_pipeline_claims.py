"""Stage claims in pipeline_runs, on both engines: one run of a stage and date at a time, decided by the
database; a failed run can be retried; a claim left by a killed run is taken over after the timeout; every
run leaves its status, timing and counts."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, update

from personalize import pipeline
from personalize.context import Context
from personalize.db.models import PipelineRun

DAY = dt.date(2026, 3, 1)


def _row(ctx, stage: str) -> PipelineRun:
    with ctx.sessions() as s:
        return s.execute(
            select(PipelineRun).where(PipelineRun.run_date == DAY, PipelineRun.stage == stage)
        ).scalar_one()


def test_a_stage_runs_once_at_a_time_and_records_its_outcome(ctx):
    with pipeline.recorded(ctx, DAY, "publish") as counts:
        with pytest.raises(pipeline.StageBusy, match="already running"):
            pipeline.claim_stage(ctx, DAY, "publish")
        counts["published"] = 3
    row = _row(ctx, "publish")
    assert row.status == "ok" and row.counts["published"] == 3 and row.duration_s >= 0
    with pytest.raises(RuntimeError, match="boom"), pipeline.recorded(ctx, DAY, "publish"):
        raise RuntimeError("boom")
    row = _row(ctx, "publish")
    assert row.status == "failed" and "boom" in row.detail
    with pipeline.recorded(ctx, DAY, "publish"):  # a failed run is retried, same row
        pass
    assert _row(ctx, "publish").status == "ok"
    with ctx.sessions() as s:
        assert len(s.execute(select(PipelineRun).where(PipelineRun.run_date == DAY)).scalars().all()) == 1


def test_a_killed_runs_claim_is_taken_over_after_the_timeout(ctx):
    pipeline.claim_stage(ctx, DAY, "render:c2")  # never finished: the process died
    with pytest.raises(pipeline.StageBusy):
        pipeline.claim_stage(ctx, DAY, "render:c2")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ctx.settings.stage_lock_timeout_s + 60)
    with ctx.engine.begin() as conn:
        conn.execute(update(PipelineRun).where(PipelineRun.stage == "render:c2").values(started_at=long_ago))
    pipeline.claim_stage(ctx, DAY, "render:c2")
    assert _row(ctx, "render:c2").status == "running"


def test_of_many_simultaneous_claims_exactly_one_wins(ctx):
    other = Context(settings=ctx.settings, engine=ctx.engine)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            pipeline.claim_stage(other, DAY, "publish")
            outcomes.append("claimed")
        except pipeline.StageBusy:
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
        pipeline.parse_run_date("yesterday")
    assert pipeline.parse_run_date(dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC)) == DAY
