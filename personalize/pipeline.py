"""The nightly run as plain library calls: one function per stage taking the run date, each recorded in
``pipeline_runs`` (status, counts, timing). The CLI (``personalize run --date``) and the Airflow DAG
(``dags/nightly.py``) both call these functions and hold no logic of their own.

Stage order: profile -> cluster -> plan -> generate -> render -> publish -> report. Generate and render
work per taste cluster (the DAG maps them over clusters); their rows are named ``generate:c<id>`` and
``render:c<id>``.

Every stage first claims its ``pipeline_runs`` row for the date: the unique ``(run_date, stage)``
constraint plus a conditional update decide, inside the database, which of two concurrent runs of the
same stage and date goes ahead; the other gets :class:`StageBusy`. A claim left ``running`` by a killed
process is taken over after ``stage_lock_timeout_s``, or at once after :func:`release_claims`
(``personalize run-release``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from personalize.context import Context
from personalize.db.models import Cluster, PipelineRun, TrackPlan

log = logging.getLogger(__name__)

STAGES = ("profile", "cluster", "plan", "generate", "render", "publish", "report")
PER_CLUSTER_STAGES = ("generate", "render")


class StageBusy(RuntimeError):
    """Another run holds this stage for this date (it is running now, or was killed less than
    ``stage_lock_timeout_s`` ago)."""


def parse_run_date(value: str | dt.date | dt.datetime) -> dt.date:
    """A run date from ``YYYY-MM-DD``, a date or a datetime (Airflow's logical date)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValueError(f"run date {value!r} is not a date: use YYYY-MM-DD, e.g. 2026-03-01") from None


def stage_label(stage: str, cluster_id: int | None = None) -> str:
    return stage if cluster_id is None else f"{stage}:c{int(cluster_id)}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_stage(ctx: Context, run_date: dt.date, label: str) -> dt.datetime:
    """Mark ``label`` running for ``run_date``, or raise :class:`StageBusy` when another run holds it."""
    now = _now()
    stale_before = now - dt.timedelta(seconds=ctx.settings.stage_lock_timeout_s)
    claim = {
        "status": "running",
        "started_at": now,
        "finished_at": None,
        "duration_s": None,
        "counts": None,
        "detail": f"running on {_holder()}",
    }
    where = (PipelineRun.run_date == run_date, PipelineRun.stage == label)
    with ctx.engine.begin() as conn:
        taken = conn.execute(
            update(PipelineRun)
            .where(*where, or_(PipelineRun.status != "running", PipelineRun.started_at < stale_before))
            .values(**claim)
        ).rowcount
    if taken == 1:
        return now
    try:
        with ctx.engine.begin() as conn:
            conn.execute(insert(PipelineRun).values(run_date=run_date, stage=label, **claim))
        return now
    except IntegrityError:
        pass
    with ctx.sessions() as session:
        row = session.execute(select(PipelineRun).where(*where)).scalar_one_or_none()
    since = row.started_at if row is not None else "just now"
    holder = row.detail if row is not None else "another run"
    raise StageBusy(
        f"stage {label} for {run_date} is already {holder} (since {since}); wait for it to finish, "
        f"or after {ctx.settings.stage_lock_timeout_s:.0f} s a killed run's claim is taken over"
    )


def _holder_alive(detail: str | None) -> bool | None:
    """Whether the process named in a claim's ``running on host:pid`` still runs: True or False when it ran
    on this machine, None when it ran elsewhere (its processes cannot be seen from here)."""
    holder = (detail or "").removeprefix("running on ").strip()
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def release_claims(
    ctx: Context, run_date: dt.date, stages: Sequence[str] | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Free the ``running`` claims of ``run_date`` left by runs that are gone (killed, machine lost), so the
    next run takes the stages at once instead of after ``stage_lock_timeout_s``.

    A claim whose process still runs on this machine is kept; one held on another machine is kept unless
    ``force`` (check that run is gone first). ``stages`` limits it to those stages (``generate`` covers
    every ``generate:c<id>``). Released claims become ``failed`` with who released them; returns one
    ``{stage, holder, started_at, released, why}`` per running claim.
    """
    with ctx.sessions() as session:
        rows = session.execute(
            select(PipelineRun.stage, PipelineRun.detail, PipelineRun.started_at).where(
                PipelineRun.run_date == run_date, PipelineRun.status == "running"
            )
        ).all()
    out: list[dict[str, Any]] = []
    for label, detail, started_at in rows:
        if stages and label.split(":", 1)[0] not in stages and label not in stages:
            continue
        alive = _holder_alive(detail)
        if alive and not force:
            why = "its process still runs on this machine"
        elif alive is None and not force:
            why = "held on another machine: check that run is gone, then release with force"
        else:
            why = "process gone" if alive is False else "forced"
            with ctx.engine.begin() as conn:
                freed = conn.execute(
                    update(PipelineRun)
                    .where(
                        PipelineRun.run_date == run_date,
                        PipelineRun.stage == label,
                        PipelineRun.status == "running",
                        PipelineRun.started_at == started_at,  # not a claim taken since we looked
                    )
                    .values(
                        status="failed",
                        finished_at=_now(),
                        detail=f"claim released by {_holder()} ({why}); it was {detail}",
                    )
                ).rowcount
            if freed != 1:
                why = "taken over by another run meanwhile"
            out.append(
                {
                    "stage": label,
                    "holder": detail,
                    "started_at": started_at,
                    "released": freed == 1,
                    "why": why,
                }
            )
            continue
        out.append(
            {"stage": label, "holder": detail, "started_at": started_at, "released": False, "why": why}
        )
    return out


def _finish(
    ctx: Context,
    run_date: dt.date,
    label: str,
    started_at: dt.datetime,
    status: str,
    counts: dict,
    detail: str,
) -> None:
    finished = _now()
    with ctx.engine.begin() as conn:
        conn.execute(
            update(PipelineRun)
            .where(PipelineRun.run_date == run_date, PipelineRun.stage == label)
            .values(
                status=status,
                finished_at=finished,
                duration_s=(finished - started_at).total_seconds(),
                counts=_json_safe(counts),
                detail=detail[:4000] if detail else None,
            )
        )


def _json_safe(value: Any) -> Any:
    """Counts as plain JSON: numpy scalars to Python numbers, dates to ISO strings, big lists cut short."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value[:200]]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@contextmanager
def recorded(ctx: Context, run_date: dt.date, label: str) -> Iterator[dict[str, Any]]:
    """Claim ``label`` for the date, yield a dict to fill with counts, record ok/failed and the timing."""
    started_at = claim_stage(ctx, run_date, label)
    counts: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        yield counts
    except BaseException as exc:
        detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        try:
            _finish(ctx, run_date, label, started_at, "failed", counts, detail)
        except Exception:  # the original error matters more than the bookkeeping one
            log.exception("could not record the failure of %s for %s", label, run_date)
        raise
    counts.setdefault("wall_s", round(time.perf_counter() - t0, 3))
    _finish(ctx, run_date, label, started_at, "ok", counts, "")


# --- Stage functions ------------------------------------------------------------------------------------


def _profile(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    from personalize import features

    return features.run(ctx, run_date)


def _cluster(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    from personalize import cluster

    return cluster.run(ctx, run_date)


def _plan(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    from personalize import plan

    return plan.run(ctx, run_date)


def _generate(ctx: Context, run_date: dt.date, cluster_id: int | None = None) -> dict[str, Any]:
    from personalize.plan import generate_stage

    return generate_stage.run(ctx, run_date, cluster_id=cluster_id)


def _render(ctx: Context, run_date: dt.date, cluster_id: int | None = None) -> dict[str, Any]:
    from personalize import render

    if cluster_id is None:
        return render.run(ctx, run_date)
    return render.run(ctx, run_date, cluster_id=cluster_id)


def _publish(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    from personalize import publish

    return publish.run(ctx, run_date)


def _report(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    from personalize import report

    return report.run(ctx, run_date)


STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "profile": _profile,
    "cluster": _cluster,
    "plan": _plan,
    "generate": _generate,
    "render": _render,
    "publish": _publish,
    "report": _report,
}


def run_stage(
    ctx: Context, stage: str, run_date: str | dt.date | dt.datetime, cluster_id: int | None = None
) -> dict[str, Any]:
    """Run one stage for one date (and one cluster for generate/render), recorded in ``pipeline_runs``."""
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    if cluster_id is not None and stage not in PER_CLUSTER_STAGES:
        raise ValueError(f"stage {stage} runs for all clusters at once; only generate/render take a cluster")
    date = parse_run_date(run_date)
    kwargs = {"cluster_id": int(cluster_id)} if cluster_id is not None else {}
    with recorded(ctx, date, stage_label(stage, cluster_id)) as counts:
        summary = STAGE_FUNCTIONS[stage](ctx, date, **kwargs) or {}
        counts.update(summary)
    return summary


def planned_clusters(ctx: Context, run_date: dt.date) -> list[int]:
    """Cluster ids that have planned tracks for the date (what generate and render map over)."""
    with ctx.sessions() as session:
        ids = session.execute(
            select(TrackPlan.cluster_id).where(TrackPlan.run_date == run_date).distinct()
        ).scalars()
        return sorted(int(i) for i in ids)


def clusters_of(ctx: Context, run_date: dt.date) -> list[int]:
    with ctx.sessions() as session:
        ids = session.execute(select(Cluster.cluster_id).where(Cluster.run_date == run_date)).scalars()
        return sorted(int(i) for i in ids)


def run(
    ctx: Context,
    run_date: str | dt.date | dt.datetime,
    stages: Sequence[str] = STAGES,
    on_stage: Callable[[str, dict[str, Any], float], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the given stages in order for one date, generate and render cluster by cluster.

    ``on_stage(label, summary, seconds)`` is called after each stage (the CLI prints a line). Returns the
    summaries by stage label.
    """
    date = parse_run_date(run_date)
    unknown = [s for s in stages if s not in STAGE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        targets: list[int | None] = [None]
        if stage in PER_CLUSTER_STAGES:
            targets = list(planned_clusters(ctx, date))
        for cluster_id in targets:
            t0 = time.perf_counter()
            summary = run_stage(ctx, stage, date, cluster_id=cluster_id)
            label = stage_label(stage, cluster_id)
            results[label] = summary
            if on_stage is not None:
                on_stage(label, summary, time.perf_counter() - t0)
    return results


def stage_timings(ctx: Context, run_date: dt.date) -> list[dict[str, Any]]:
    """``pipeline_runs`` rows of the date in stage order, per-cluster rows folded into their stage."""
    with ctx.sessions() as session:
        rows = session.execute(select(PipelineRun).where(PipelineRun.run_date == run_date)).scalars().all()
    folded: dict[str, dict[str, Any]] = {}
    for row in rows:
        stage = row.stage.split(":", 1)[0]
        entry = folded.setdefault(
            stage,
            {"stage": stage, "status": "ok", "duration_s": 0.0, "parts": 0, "started_at": row.started_at},
        )
        entry["duration_s"] += row.duration_s or 0.0
        entry["parts"] += 1
        if row.status != "ok":
            entry["status"] = row.status
        entry["started_at"] = min(entry["started_at"], row.started_at)
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(folded.values(), key=lambda e: (order.get(e["stage"], 99), e["stage"]))


def stage_ok(ctx: Context, run_date: dt.date, stage: str) -> bool:
    """True when ``stage`` finished ok for the date."""
    with ctx.sessions() as session:
        status = session.execute(
            select(PipelineRun.status).where(PipelineRun.run_date == run_date, PipelineRun.stage == stage)
        ).scalar_one_or_none()
    return status == "ok"


def default_run_date(ctx: Context) -> dt.date:
    """The last day with listening events (a simulated world's end date), else today (UTC)."""
    from sqlalchemy import func

    from personalize.db.models import ListeningEvent

    with ctx.sessions() as session:
        last = session.execute(select(func.max(ListeningEvent.ts))).scalar_one_or_none()
    if last is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(last, str):  # SQLite hands back text for aggregates
        return dt.date.fromisoformat(last[:10])
    return last.date()


def night_summary(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """What a person wants to know after a night: clusters, tracks made, playlists, where audio and report are."""
    from sqlalchemy import text

    from personalize.report.nightly import report_dir

    with ctx.engine.connect() as conn:
        gen = (
            conn.execute(text("SELECT * FROM v_generation_daily WHERE run_date = :d"), {"d": run_date})
            .mappings()
            .first()
        )
        cov = (
            conn.execute(text("SELECT * FROM v_playlist_coverage WHERE run_date = :d"), {"d": run_date})
            .mappings()
            .first()
        )
    gen = dict(gen or {})
    cov = dict(cov or {})
    report = report_dir(ctx, run_date) / "index.html"
    return {
        "run_date": run_date.isoformat(),
        "clusters": len(clusters_of(ctx, run_date)),
        "tracks_planned": int(gen.get("tracks_planned") or 0),
        "tracks_made": int(gen.get("tracks_generated") or 0),
        "tracks_failed_verification": int(gen.get("tracks_failed") or 0),
        "tracks_rendered": int(gen.get("tracks_rendered") or 0),
        "audio_minutes": round(float(gen.get("audio_minutes") or 0.0), 1),
        "listeners": int(cov.get("listeners") or 0),
        "playlists_published": int(cov.get("listeners_with_playlist") or 0),
        "coverage": round(float(cov.get("coverage") or 0.0), 4),
        "audio_folder": f"{ctx.settings.resolved_storage_url}/audio",
        "report": str(report.resolve()) if report.exists() else None,
        "stages": {
            t["stage"]: {"status": t["status"], "seconds": round(t["duration_s"], 2)}
            for t in stage_timings(ctx, run_date)
        },
    }
