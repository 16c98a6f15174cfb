"""Stage claims and records: who runs which stage for which date, and how it went (``pipeline_runs``).

Every stage first claims its ``pipeline_runs`` row for the date: the unique ``(run_date, stage)``
constraint plus a conditional update decide, inside the database, which of two concurrent runs of the
same stage and date goes ahead; the other gets :class:`StageBusy`. A claim left ``running`` by a killed
process is taken over after ``stage_lock_timeout_s``, or at once after :func:`release_claims`
(``personalize run-release``). :func:`recorded` wraps one stage's work in a claim and records ok/failed,
counts and timing; :mod:`personalize.pipeline` is its only caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from personalize.context import Context
from personalize.db.models import PipelineRun

log = logging.getLogger(__name__)


class StageBusy(RuntimeError):
    """Another run holds this stage for this date (it is running now, or was killed less than
    ``stage_lock_timeout_s`` ago)."""


def parse_run_date(value: str | dt.date | dt.datetime) -> dt.date:
    """A run date from ``YYYY-MM-DD``, a date or a datetime (Airflow's logical date)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    try:  # a full timestamp, as Airflow passes a logical date
        return dt.datetime.fromisoformat(text).date()
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
    # Stages of a date run in pipeline order, so their first start orders them.
    return sorted(folded.values(), key=lambda e: (e["started_at"], e["stage"]))


def stage_ok(ctx: Context, run_date: dt.date, stage: str) -> bool:
    """True when ``stage`` finished ok for the date."""
    with ctx.sessions() as session:
        status = session.execute(
            select(PipelineRun.status).where(PipelineRun.run_date == run_date, PipelineRun.stage == stage)
        ).scalar_one_or_none()
    return status == "ok"
