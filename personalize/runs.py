"""Stage claims and records: who runs which stage for which date, and how it went (``pipeline_runs``).

Every stage first claims its ``pipeline_runs`` row for the date: the unique ``(run_date, stage)``
constraint plus a conditional update decide, inside the database, which of two concurrent runs of the
same stage and date goes ahead; the other gets :class:`StageBusy`. A claim names its holder (host, PID and
the process's start time) and is a lease the holder keeps alive with a heartbeat while the stage runs.
The next run takes a ``running`` claim over

- at once when its holder ran on this host and that process is gone (killed, crashed; a PID the kernel
  has given to another process since does not count as the holder);
- after ``stage_lease_s`` without a heartbeat when the holder ran on another host (its processes cannot be
  seen from here).

:func:`release_claims` (``personalize run-release``) frees claims by hand. :func:`recorded` wraps one
stage's work in a claim and its heartbeat and records ok/failed, counts and timing;
:mod:`personalize.pipeline` is its only caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from personalize.context import Context
from personalize.db.models import PipelineRun
from personalize.workers import ProcessId, this_process

log = logging.getLogger(__name__)


class StageBusy(RuntimeError):
    """Another run holds this stage for this date: its process still runs on this host, or it runs on
    another host and its lease has not expired."""


class ClaimLost(StageBusy):
    """This run's claim was taken over while it ran (it missed its heartbeats for ``stage_lease_s``): the
    other run's record stands and this one's result is not recorded."""


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


def holder_name(host: str | None = None, process: ProcessId | None = None) -> str:
    """A claim's holder as ``host:pid:start-ticks`` (the start time empty where ``/proc`` is missing)."""
    process = process or this_process()
    ticks = "" if process.start_ticks is None else str(process.start_ticks)
    return f"{host or socket.gethostname()}:{process.pid}:{ticks}"


def _parse_holder(holder: str | None) -> tuple[str, ProcessId] | None:
    """``(host, process)`` from a holder name, or from an older claim's ``running on host:pid``."""
    text = (holder or "").removeprefix("running on ").split(" ", 1)[0].strip()
    parts = text.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and (parts[2] == "" or parts[2].isdigit()):
        return parts[0], ProcessId(int(parts[1]), int(parts[2]) if parts[2] else None)
    host, _, pid = text.rpartition(":")
    if host and pid.isdigit():
        return host, ProcessId(int(pid), None)
    return None


def _holder_alive(holder: str | None) -> bool | None:
    """Whether the process holding a claim still runs: True or False when it ran on this host, None when
    it ran elsewhere (its processes cannot be seen from here)."""
    parsed = _parse_holder(holder)
    if parsed is None or parsed[0] != socket.gethostname():
        return None
    return parsed[1].alive()


def _shown(holder: str | None) -> str:
    """``host:pid`` of a holder, as people read it."""
    parsed = _parse_holder(holder)
    return f"{parsed[0]}:{parsed[1].pid}" if parsed else (holder or "an unknown run")


@dataclass(frozen=True)
class Claim:
    """A stage claimed for a date by this process: ``holder`` names it in ``pipeline_runs``."""

    run_date: dt.date
    label: str
    holder: str
    started_at: dt.datetime
    took_over: str | None = None  # whom the claim was taken from, and why


def claim_stage(ctx: Context, run_date: dt.date, label: str) -> Claim:
    """Mark ``label`` running for ``run_date`` under this process, or raise :class:`StageBusy` when another
    run holds it (a claim whose holder is gone is taken over; see the module's docstring)."""
    now = _now()
    holder = holder_name()
    values = {
        "status": "running",
        "started_at": now,
        "heartbeat_at": now,
        "holder": holder,
        "finished_at": None,
        "duration_s": None,
        "counts": None,
        "detail": f"running on {_shown(holder)}",
    }
    where = (PipelineRun.run_date == run_date, PipelineRun.stage == label)
    with ctx.engine.begin() as conn:
        taken = conn.execute(
            update(PipelineRun).where(*where, PipelineRun.status != "running").values(**values)
        ).rowcount
    if taken == 1:
        return Claim(run_date, label, holder, now)
    try:
        with ctx.engine.begin() as conn:
            conn.execute(insert(PipelineRun).values(run_date=run_date, stage=label, **values))
        return Claim(run_date, label, holder, now)
    except IntegrityError:
        pass
    with ctx.sessions() as session:
        row = session.execute(
            select(PipelineRun.status, PipelineRun.holder, PipelineRun.detail, PipelineRun.started_at,
                   PipelineRun.heartbeat_at).where(*where)
        ).one_or_none()  # fmt: skip
    if row is None or row.status != "running":  # finished between our two looks: try again
        return claim_stage(ctx, run_date, label)
    seen = row.holder or row.detail
    last_beat = row.heartbeat_at or row.started_at
    stale_before = now - dt.timedelta(seconds=ctx.settings.stage_lease_s)
    alive = _holder_alive(seen)
    if alive is False:
        why = "its process is gone from this host"
        still_theirs = (
            (PipelineRun.holder == row.holder) if row.holder else (PipelineRun.detail == row.detail)
        )
    elif alive is None and _aware(last_beat) < stale_before:
        why = f"no heartbeat since {last_beat} (lease {ctx.settings.stage_lease_s:g} s)"
        last = func.coalesce(PipelineRun.heartbeat_at, PipelineRun.started_at)
        still_theirs = (last < stale_before) & (
            (PipelineRun.holder == row.holder) if row.holder else PipelineRun.holder.is_(None)
        )
    else:
        raise StageBusy(_busy_message(ctx, run_date, label, row, alive))
    values["detail"] = f"running on {_shown(holder)}, taken over from {_shown(seen)}: {why}"
    with ctx.engine.begin() as conn:
        taken = conn.execute(
            update(PipelineRun).where(*where, PipelineRun.status == "running", still_theirs).values(**values)
        ).rowcount
    if taken != 1:  # another run took it first, or the holder beat just now
        return claim_stage(ctx, run_date, label)
    log.warning("stage %s for %s: claim taken over from %s (%s)", label, run_date, _shown(seen), why)
    return Claim(run_date, label, holder, now, took_over=f"{_shown(seen)}: {why}")


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every time the product writes is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _busy_message(ctx: Context, run_date: dt.date, label: str, row: Any, alive: bool | None) -> str:
    since = f"since {row.started_at}, last heartbeat {row.heartbeat_at or row.started_at}"
    if alive:
        what = "that process still runs on this host: wait for it to finish"
    else:
        lease = ctx.settings.stage_lease_s
        what = (
            f"it runs on another host and keeps its claim while it beats; if that run is dead, its claim "
            f"is taken over {lease:g} s after its last heartbeat (PERSONALIZE_STAGE_LEASE_S), or at once "
            f"with `personalize run-release --date {run_date} --force`"
        )
    return f"stage {label} for {run_date} is already running on {_shown(row.holder or row.detail)} ({since}); {what}"


class _Heartbeat:
    """A daemon thread that renews a claim's lease every ``stage_heartbeat_s`` until stopped; ``lost`` says
    who took the claim over when a beat found it gone."""

    def __init__(self, ctx: Context, claim: Claim) -> None:
        self.ctx, self.claim = ctx, claim
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {claim.label}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        c = self.claim
        while not self._stop.wait(self.ctx.settings.stage_heartbeat_s):
            try:
                with self.ctx.engine.begin() as conn:
                    kept = conn.execute(
                        update(PipelineRun)
                        .where(
                            PipelineRun.run_date == c.run_date,
                            PipelineRun.stage == c.label,
                            PipelineRun.status == "running",
                            PipelineRun.holder == c.holder,
                        )
                        .values(heartbeat_at=_now())
                    ).rowcount
            except Exception as exc:  # the database away for a moment: the next beat tries again
                log.warning("heartbeat of %s for %s failed: %s", c.label, c.run_date, exc)
                continue
            if kept != 1:
                with self.ctx.sessions() as session:
                    self.lost = session.execute(
                        select(PipelineRun.detail).where(
                            PipelineRun.run_date == c.run_date, PipelineRun.stage == c.label
                        )
                    ).scalar_one_or_none()
                log.error(
                    "stage %s for %s: this run's claim was taken over (%s)", c.label, c.run_date, self.lost
                )
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def release_claims(
    ctx: Context, run_date: dt.date, stages: Sequence[str] | None = None, force: bool = False
) -> list[dict[str, Any]]:
    """Free the ``running`` claims of ``run_date`` left by runs that are gone (killed, machine lost).

    The next run takes such claims over by itself (at once on the holder's host, after ``stage_lease_s``
    from another host); this frees them now, from any host. A claim whose process still runs on this
    machine is kept; one held on another machine is kept unless ``force`` (check that run is gone first).
    ``stages`` limits it to those stages (``generate`` covers every ``generate:c<id>``). Released claims
    become ``failed`` with who released them; returns one ``{stage, holder, started_at, released, why}``
    per running claim.
    """
    with ctx.sessions() as session:
        rows = session.execute(
            select(PipelineRun.stage, PipelineRun.holder, PipelineRun.detail, PipelineRun.started_at).where(
                PipelineRun.run_date == run_date, PipelineRun.status == "running"
            )
        ).all()
    out: list[dict[str, Any]] = []
    for label, holder, detail, started_at in rows:
        if stages and label.split(":", 1)[0] not in stages and label not in stages:
            continue
        shown = _shown(holder or detail)
        alive = _holder_alive(holder or detail)
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
                        holder=None,
                        detail=f"claim released by {_shown(holder_name())} ({why}); it was running on {shown}",
                    )
                ).rowcount
            if freed != 1:
                why = "taken over by another run meanwhile"
            out.append(
                {
                    "stage": label,
                    "holder": shown,
                    "started_at": started_at,
                    "released": freed == 1,
                    "why": why,
                }
            )
            continue
        out.append({"stage": label, "holder": shown, "started_at": started_at, "released": False, "why": why})
    return out


def _finish(ctx: Context, claim: Claim, status: str, counts: dict, detail: str) -> bool:
    """Record the outcome of a claimed stage; False when the claim is no longer this run's."""
    finished = _now()
    with ctx.engine.begin() as conn:
        kept = conn.execute(
            update(PipelineRun)
            .where(
                PipelineRun.run_date == claim.run_date,
                PipelineRun.stage == claim.label,
                PipelineRun.status == "running",
                PipelineRun.holder == claim.holder,
            )
            .values(
                status=status,
                finished_at=finished,
                heartbeat_at=None,
                holder=None,
                duration_s=(finished - claim.started_at).total_seconds(),
                counts=_json_safe(counts),
                detail=detail[:4000] if detail else None,
            )
        ).rowcount
    return kept == 1


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
    """Claim ``label`` for the date and keep the claim alive while the body runs; yield a dict to fill
    with counts; record ok/failed and the timing. Raises :class:`ClaimLost` when the claim was taken over
    meanwhile (the stage then stalled past its lease), leaving the other run's record as it is."""
    claim = claim_stage(ctx, run_date, label)
    heartbeat = _Heartbeat(ctx, claim)
    counts: dict[str, Any] = {}
    if claim.took_over:
        counts["took_over_from"] = claim.took_over
    t0 = time.perf_counter()
    try:
        yield counts
    except BaseException as exc:
        heartbeat.stop()
        detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        try:
            if not _finish(ctx, claim, "failed", counts, detail):
                log.error("stage %s for %s failed after its claim was taken over", label, run_date)
        except Exception:  # the original error matters more than the bookkeeping one
            log.exception("could not record the failure of %s for %s", label, run_date)
        raise
    heartbeat.stop()
    counts.setdefault("wall_s", round(time.perf_counter() - t0, 3))
    if not _finish(ctx, claim, "ok", counts, ""):
        raise ClaimLost(
            f"stage {label} for {run_date} finished, but its claim was taken over while it ran "
            f"({heartbeat.lost or 'by another run'}): it missed its heartbeats for PERSONALIZE_STAGE_LEASE_S="
            f"{ctx.settings.stage_lease_s:g} s; the other run's record stands, this result is not recorded"
        )


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
