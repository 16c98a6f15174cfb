"""The nightly run as a table of stages and the one function that runs a stage for a date.

Every front door (``personalize run``, the single-stage commands, the Airflow DAG in ``dags/nightly.py``)
calls :func:`run_stage`, which claims the stage for the date (:mod:`personalize.runs`), calls the stage's
``run(ctx, run_date)`` and records the outcome in ``pipeline_runs``. Nothing else calls a stage.

Stage order: ingest -> profile -> cluster -> plan -> generate -> render -> publish -> report -> gc (retention).
Generate and render work per taste cluster (the DAG maps them over clusters); their records are named
``generate:c<id>`` and ``render:c<id>``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from personalize.context import Context
from personalize.db.models import ListeningEvent, TrackPlan
from personalize.runs import parse_run_date, recorded, stage_label


@dataclass(frozen=True)
class Stage:
    """One stage of the night: its name, the module whose ``run(ctx, run_date, ...)`` does the work, and
    whether it runs once per taste cluster."""

    name: str
    module: str
    per_cluster: bool = False

    def function(self) -> Callable[..., dict[str, Any]]:
        # Imported when run, so that `personalize --help` and the DAG file stay light.
        return importlib.import_module(self.module).run


STAGE_TABLE: tuple[Stage, ...] = (
    Stage("ingest", "personalize.ingest.stage"),
    Stage("profile", "personalize.profile.stage"),
    Stage("cluster", "personalize.cluster.stage"),
    Stage("plan", "personalize.plan.stage"),
    Stage("generate", "personalize.generate.stage", per_cluster=True),
    Stage("render", "personalize.render.stage", per_cluster=True),
    Stage("publish", "personalize.publish.stage"),
    Stage("report", "personalize.report.stage"),
    Stage("gc", "personalize.gc.stage"),
)
STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_TABLE)
PER_CLUSTER_STAGES: tuple[str, ...] = tuple(s.name for s in STAGE_TABLE if s.per_cluster)
_BY_NAME = {s.name: s for s in STAGE_TABLE}


def run_stage(
    ctx: Context,
    stage: str,
    run_date: str | dt.date | dt.datetime,
    cluster_id: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run one stage for one date (and one cluster for generate/render), claimed and recorded in
    ``pipeline_runs``; returns the stage's summary. ``options`` go to the stage (e.g. ``progress``)."""
    if stage not in _BY_NAME:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    spec = _BY_NAME[stage]
    if cluster_id is not None and not spec.per_cluster:
        raise ValueError(
            f"stage {stage} runs for all clusters at once; only {'/'.join(PER_CLUSTER_STAGES)} take a cluster"
        )
    date = parse_run_date(run_date)
    if cluster_id is not None:
        options["cluster_id"] = int(cluster_id)
    with recorded(ctx, date, stage_label(stage, cluster_id)) as counts:
        summary = spec.function()(ctx, date, **options) or {}
        counts.update(summary)
    return summary


def planned_clusters(ctx: Context, run_date: dt.date) -> list[int]:
    """Cluster ids that have planned tracks for the date (what generate and render map over)."""
    with ctx.sessions() as session:
        ids = session.execute(
            select(TrackPlan.cluster_id).where(TrackPlan.run_date == run_date).distinct()
        ).scalars()
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
    unknown = [s for s in stages if s not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    results: dict[str, dict[str, Any]] = {}
    for spec in STAGE_TABLE:
        if spec.name not in stages:
            continue
        targets: list[int | None] = list(planned_clusters(ctx, date)) if spec.per_cluster else [None]
        for cluster_id in targets:
            t0 = time.perf_counter()
            summary = run_stage(ctx, spec.name, date, cluster_id=cluster_id)
            label = stage_label(spec.name, cluster_id)
            results[label] = summary
            if on_stage is not None:
                on_stage(label, summary, time.perf_counter() - t0)
    return results


def has_listening_events(ctx: Context) -> bool:
    """Whether any listening event is stored (an empty database has no taste to work from)."""
    with ctx.sessions() as session:
        return session.execute(select(ListeningEvent.event_id).limit(1)).first() is not None


def default_run_date(ctx: Context) -> dt.date:
    """The last day with listening events (a simulated world's end date), else today (UTC)."""
    with ctx.sessions() as session:
        last = session.execute(select(func.max(ListeningEvent.ts))).scalar_one_or_none()
    if last is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(last, str):  # SQLite hands back text for aggregates
        return dt.date.fromisoformat(last[:10])
    return last.date()
