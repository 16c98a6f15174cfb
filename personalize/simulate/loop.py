"""The closed loop over weeks: night after night the product runs the same stages the DAG runs, the
simulated world hears what was published and answers through the app's ingest path, and each night's
measurements are kept in ``loop_nights``, so a stopped loop continues with the next night.

Night 0 is the world's last day of history; night n >= 1 is the day after night n-1: the world answers
that day (:mod:`personalize.simulate.answer`), then the night runs for that date. What a night measures:

- ``like_rate``: likes per play of the tracks published the night before, beside ``baseline_like_rate``,
  the same listeners hearing as many tracks of a randomly chosen cluster of that night;
- ``follow_share``: how much of drifting listeners' true tempo change since night 0 their profiles show
  (and ``follow_share_lag7``: against the change up to seven nights earlier);
- ``steady_tempo_error``: median relative error of steady listeners' profile tempo against their truth;
- ``cluster_kept``: share of steady listeners profiled on both nights whose cluster id stayed;
- the outliers' like-rate on tracks written for them and on their cluster tracks;
- ``new_share`` of playlist items, stored bytes (MIDI and audio) and the database's size.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select, text

from personalize import pipeline
from personalize.db.models import LoopNight, PipelineRun, TasteProfile
from personalize.simulate.answer import AnsweringWorld, answer_day, post_day
from personalize.simulate.truth import load_truth

DRIFT_LAG_NIGHTS = 7
REPORT_FOLDER = "loop"

NightRunner = Callable[[Any, dt.date], None]


def world_for(ctx) -> AnsweringWorld:  # type: ignore[no-untyped-def]
    """The answering world of the demo world under ``<data dir>/sim``."""
    truth = load_truth(Path(ctx.settings.data_dir) / "sim")
    return AnsweringWorld(truth=truth, seed=int(truth.world["seed"]), tag=str(truth.world["tag"]))


def run_in_process(ctx, run_date: dt.date) -> None:  # type: ignore[no-untyped-def]
    """One night through ``pipeline.run``: every stage of the table, in order, for ``run_date``."""
    pipeline.run(ctx, run_date)


def done_nights(ctx, tag: str) -> dict[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    with ctx.sessions() as session:
        rows = session.execute(
            select(LoopNight).where(LoopNight.world_tag == tag, LoopNight.status == "done")
        ).scalars()
        return {int(r.night): dict(r.metrics or {}) for r in rows}


def _mark(ctx, world: AnsweringWorld, night: int, status: str, metrics: dict[str, Any] | None) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    with ctx.sessions.begin() as session:
        row = session.get(LoopNight, world.date_of(night))
        if row is None:
            row = LoopNight(run_date=world.date_of(night), world_tag=world.tag, night=night, started_at=now)
            session.add(row)
        row.status = status
        row.metrics = metrics
        row.finished_at = now if status == "done" else None


def _profiles(ctx, run_date: dt.date) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(TasteProfile.listener_id, TasteProfile.status, TasteProfile.tempo_bpm, TasteProfile.cluster_id)
            .where(TasteProfile.run_date == run_date)
        ).all()  # fmt: skip
    return pd.DataFrame(rows, columns=["listener_id", "status", "tempo_bpm", "cluster_id"]).set_index(
        "listener_id"
    )


def database_bytes(ctx) -> int:  # type: ignore[no-untyped-def]
    """Size of the database: the SQLite file (with its WAL), or PostgreSQL's ``pg_database_size``."""
    if ctx.dialect == "sqlite":
        path = Path(ctx.engine.url.database or "")
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    with ctx.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def _stage_counts(ctx, run_date: dt.date, stage: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(PipelineRun.counts)
            .where(PipelineRun.run_date == run_date, PipelineRun.stage == stage, PipelineRun.status == "ok")
            .order_by(PipelineRun.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    return dict(row or {})


def _night_seconds(ctx, run_date: dt.date) -> float:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(PipelineRun.stage, PipelineRun.duration_s).where(
                PipelineRun.run_date == run_date, PipelineRun.status == "ok"
            )
        ).all()
    latest: dict[str, float] = {}
    for stage, seconds in rows:
        latest[stage] = float(seconds or 0.0)
    return round(sum(latest.values()), 1)


def taste_measures(ctx, world: AnsweringWorld, night: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """How the night's profiles and clusters stand against the world's truth (see the module docstring)."""
    pop = world.population(night).listeners.set_index("listener_id")
    today = _profiles(ctx, world.date_of(night))
    start = _profiles(ctx, world.date_of(0))
    out: dict[str, Any] = {}
    own = today[today["status"] != "cold"].dropna(subset=["tempo_bpm"])
    own = own[own.index.isin(pop.index)]
    truth_now = world.taste_on(night, pop.loc[own.index])["tempo_bpm"]
    steady = pop.loc[own.index, "drift_bpm_per_week"].to_numpy() == 0
    err = np.abs(own["tempo_bpm"].to_numpy() / truth_now.to_numpy() - 1.0)
    out["steady_tempo_error"] = round(float(np.median(err[steady])), 5) if steady.any() else None
    out["drifting_tempo_error"] = round(float(np.median(err[~steady])), 5) if (~steady).any() else None

    both = own.index.intersection(start[start["status"] != "cold"].dropna(subset=["tempo_bpm"]).index)
    drifting = both[pop.loc[both, "drift_bpm_per_week"].to_numpy() != 0]
    if night > 0 and len(drifting):
        sign = np.sign(pop.loc[drifting, "drift_bpm_per_week"].to_numpy())
        moved = sign * (
            today.loc[drifting, "tempo_bpm"].to_numpy() - start.loc[drifting, "tempo_bpm"].to_numpy()
        )
        t0 = world.taste_on(0, pop.loc[drifting])["tempo_bpm"].to_numpy()
        t_now = world.taste_on(night, pop.loc[drifting])["tempo_bpm"].to_numpy()
        out["drift_true_bpm"] = round(float(np.mean(np.abs(t_now - t0))), 3)
        out["drift_profile_bpm"] = round(float(np.mean(moved)), 3)
        out["follow_share"] = round(float(moved.sum() / np.abs(t_now - t0).sum()), 4)
        if night >= DRIFT_LAG_NIGHTS:
            t_lag = world.taste_on(night - DRIFT_LAG_NIGHTS, pop.loc[drifting])["tempo_bpm"].to_numpy()
            lag = np.abs(t_lag - t0).sum()
            out["follow_share_lag7"] = round(float(moved.sum() / lag), 4) if lag > 0 else None

    if night > 0:
        before = _profiles(ctx, world.date_of(night - 1))
        ids = today.index.intersection(before.index)
        ids = ids[ids.isin(pop.index)]
        ids = ids[(pop.loc[ids, "drift_bpm_per_week"].to_numpy() == 0)]
        ids = ids[
            (today.loc[ids, "status"] != "cold").to_numpy() & (before.loc[ids, "status"] != "cold").to_numpy()
        ]
        if len(ids):
            kept = today.loc[ids, "cluster_id"].to_numpy() == before.loc[ids, "cluster_id"].to_numpy()
            out["cluster_kept"] = round(float(kept.mean()), 4)
    out["clusters"] = int(today["cluster_id"].nunique())
    out["profiles"] = len(today)
    return out


def run_loop(
    ctx,  # type: ignore[no-untyped-def]
    nights: int,
    run_night: NightRunner = run_in_process,
    say: Callable[[str], None] = print,
    world: AnsweringWorld | None = None,
) -> dict[int, dict[str, Any]]:
    """Run the loop until it has ``nights`` nights (night 0 included); nights already done are kept.

    ``run_night(ctx, date)`` runs the product for one date (in-process by default; the CLI passes the
    Airflow runner for ``--airflow``). Returns every done night's measurements by night number.
    """
    world = world or world_for(ctx)
    last = world.date_of(nights - 1)
    today = dt.datetime.now(dt.UTC).date()
    if last >= today:
        raise ValueError(
            f"{nights} nights after the world's history ({world.end_date}) reach {last}, and ingest takes no "
            f"events from today or later: build the world with `personalize simulate --end-date "
            f"{today - dt.timedelta(days=nights + 1)}` (or earlier) for a loop this long"
        )
    done = done_nights(ctx, world.tag)
    for night in range(nights):
        if night in done:
            continue
        date = world.date_of(night)
        t0 = time.perf_counter()
        _mark(ctx, world, night, "running", None)
        measures: dict[str, Any] = {"night": night, "date": date.isoformat()}
        if night > 0:
            answer = answer_day(ctx, world, night)
            measures |= answer.measures
            measures["events_posted"] = post_day(ctx, world, night, answer)
            measures["events"] = len(answer.events)
        measures["world_s"] = round(time.perf_counter() - t0, 2)
        t_night = time.perf_counter()
        run_night(ctx, date)
        measures["night_s"] = round(time.perf_counter() - t_night, 1)
        measures["stage_s"] = _night_seconds(ctx, date)
        t_measure = time.perf_counter()
        measures |= taste_measures(ctx, world, night)
        measures["measure_s"] = round(time.perf_counter() - t_measure, 2)
        publish = _stage_counts(ctx, date, "publish")
        plan = _stage_counts(ctx, date, "plan")
        gc = _stage_counts(ctx, date, "gc")
        measures |= {
            "new_share": publish.get("new_share"),
            "published": publish.get("published"),
            "personal_tracks": plan.get("personal_tracks"),
            "tracks_planned": plan.get("tracks_planned"),
            "stored_mb": round(ctx.storage.total_bytes() / 1e6, 3),
            "freed_mb": round(float(gc.get("freed_bytes") or 0) / 1e6, 3),
            "database_mb": round(database_bytes(ctx) / 1e6, 3),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        _mark(ctx, world, night, "done", measures)
        done[night] = measures
        say(_line(measures))
    return dict(sorted(done.items()))


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _line(m: dict[str, Any]) -> str:
    return (
        f"night {m['night']:>2} {m['date']}: like {_fmt(m.get('like_rate'), '.3f')} "
        f"(random cluster {_fmt(m.get('baseline_like_rate'), '.3f')}), follow {_fmt(m.get('follow_share'), '.2f')}, "
        f"clusters kept {_fmt(m.get('cluster_kept'), '.3f')}, new {_fmt(m.get('new_share'), '.2f')}, "
        f"personal {m.get('personal_tracks') or 0}, stored {m['stored_mb']:.1f} MB, db {m['database_mb']:.1f} MB, "
        f"{m['wall_s']:.0f} s"
    )
