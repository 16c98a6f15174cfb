"""Outcome of the published playlists on the demo world: its simulated listeners "listen" to them with the
simulator's own engagement model (``personalize.simulate.engagement.listen``) and their taste of the next
day, against two baselines heard by the same listeners the same way:

- random cluster: as many fresh tracks of the night, drawn from a random taste cluster;
- popular catalog: the catalog tracks played most in the profile window, the same for everyone.

Reported per arm: like rate (likes per listen), completion (share of each track heard), complete rate,
early-skip rate and mean fit. Target: like rate at least twice the random-cluster baseline.

Several nights (``evaluate_nights``): each night runs the pipeline (if it has not run), evaluates, and feeds
the playlist plays back as listening events through the ingest path, so the next night's profiles see
them; the drift record compares drifting listeners' true preferred tempo with their profile's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from personalize.context import Context
from personalize.db.models import ListeningEvent, Playlist, PlaylistItem, TasteProfile, Track

log = logging.getLogger(__name__)

TRACK_COLUMNS = ["track_id", "tempo_bpm", "key_pc", "mode", "programs", "density", "duration_s"]
TARGET_LIKE_RATIO = 2.0


def _published(ctx: Context, run_date: dt.date) -> pd.DataFrame:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(Playlist.listener_id, PlaylistItem.position, PlaylistItem.track_id)
            .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
            .where(Playlist.run_date == run_date, Playlist.status == "published")
            .order_by(Playlist.listener_id, PlaylistItem.position)
        ).all()
    return pd.DataFrame(rows, columns=["listener_id", "position", "track_id"])


def _tracks(ctx: Context, where: Any) -> pd.DataFrame:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(*(getattr(Track, c) for c in TRACK_COLUMNS), Track.cluster_id).where(where)
        ).all()
    df = pd.DataFrame(rows, columns=[*TRACK_COLUMNS, "cluster_id"])
    df["density"] = pd.to_numeric(df["density"], errors="coerce").fillna(1.0).clip(lower=0.05)
    return df


def _popular(ctx: Context, run_date: dt.date, n: int) -> list[str]:
    """The ``n`` catalog tracks with the most plays in the profile window ending with the run date."""
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    start = end - dt.timedelta(days=ctx.settings.profile_window_days)
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(ListeningEvent.track_id, func.count().label("n"))
            .join(Track, Track.track_id == ListeningEvent.track_id)
            .where(
                Track.source == "catalog",
                ListeningEvent.kind.in_(("play", "complete")),
                ListeningEvent.ts >= start,
                ListeningEvent.ts < end,
            )
            .group_by(ListeningEvent.track_id)
            .order_by(func.count().desc(), ListeningEvent.track_id)
            .limit(n)
        ).all()
    return [r[0] for r in rows]


def _listen(
    arm: pd.DataFrame, truth: pd.DataFrame, tracks: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """One simulated listen per (listener, track) row of ``arm``."""
    from personalize.simulate.engagement import listen

    who = truth.set_index("listener_id").loc[arm["listener_id"]].reset_index()
    what = tracks.set_index("track_id").loc[arm["track_id"]].reset_index()
    plays = listen(who, what, rng)
    plays.index = arm.index
    completion = plays["ms_played"].to_numpy(float) / np.maximum(
        what["duration_s"].to_numpy(float) * 1000.0, 1.0
    )
    return arm.assign(
        fit=plays["fit"].to_numpy(),
        ms_played=plays["ms_played"].to_numpy(),
        kind=plays["kind"].to_numpy(),
        liked=plays["liked"].to_numpy(),
        disliked=plays["disliked"].to_numpy(),
        saved=plays["saved"].to_numpy(),
        completion=np.clip(completion, 0.0, 1.0),
    )


def _rates(plays: pd.DataFrame) -> dict[str, float]:
    if plays.empty:
        return {"listens": 0}
    return {
        "listens": len(plays),
        "like_rate": round(float(plays["liked"].mean()), 5),
        "completion": round(float(plays["completion"].mean()), 5),
        "complete_rate": round(float((plays["kind"] == "complete").mean()), 5),
        "early_skip_rate": round(float((plays["kind"] == "skip").mean()), 5),
        "mean_fit": round(float(plays["fit"].mean()), 5),
    }


def evaluate(ctx: Context, run_date: dt.date, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """Like rate and completion of the date's playlists vs the two baselines; also returns the plays of the
    published playlists (to feed back as events)."""
    from personalize.simulate.truth import load_truth

    truth_all = load_truth(Path(ctx.settings.data_dir))
    listen_day = run_date + dt.timedelta(days=1)
    truth = truth_all.at(listen_day)
    published = _published(ctx, run_date)
    if published.empty:
        raise LookupError(
            f"no published playlists for {run_date}: run `personalize run --date {run_date}` first"
        )
    published = published[published["listener_id"].isin(set(truth["listener_id"]))].reset_index(drop=True)
    n_items = int(published.groupby("listener_id").size().median())
    listeners = published["listener_id"].drop_duplicates().to_numpy()

    fresh = _tracks(
        ctx, (Track.source == "generated") & (Track.run_date == run_date) & Track.audio_uri.is_not(None)
    )
    served = _tracks(ctx, Track.track_id.in_(published["track_id"].unique().tolist()))
    rng = np.random.default_rng([seed, run_date.toordinal()])

    # Random-cluster baseline: each listener hears n fresh tracks of a uniformly drawn cluster.
    by_cluster = {c: g["track_id"].to_numpy() for c, g in fresh.groupby("cluster_id")}
    cluster_ids = sorted(by_cluster)
    rows = []
    for lid in listeners:
        pool = by_cluster[cluster_ids[int(rng.integers(len(cluster_ids)))]]
        picks = rng.choice(pool, size=min(n_items, len(pool)), replace=False)
        rows += [(lid, i + 1, t) for i, t in enumerate(picks)]
    random_arm = pd.DataFrame(rows, columns=["listener_id", "position", "track_id"])

    popular_ids = _popular(ctx, run_date, n_items)
    popular = _tracks(ctx, Track.track_id.in_(popular_ids))
    popular_arm = pd.DataFrame(
        [(lid, i + 1, t) for lid in listeners for i, t in enumerate(popular_ids)],
        columns=["listener_id", "position", "track_id"],
    )

    all_tracks = pd.concat([served, fresh, popular]).drop_duplicates("track_id")
    system_plays = _listen(published, truth, all_tracks, rng)
    arms = {
        "playlists": _rates(system_plays),
        "random_cluster": _rates(_listen(random_arm, truth, all_tracks, rng)),
        "popular_catalog": _rates(_listen(popular_arm, truth, all_tracks, rng))
        if popular_ids
        else {"listens": 0},
    }
    base = arms["random_cluster"].get("like_rate") or 0.0
    ratio = (arms["playlists"]["like_rate"] / base) if base > 0 else None
    result = {
        "run_date": run_date.isoformat(),
        "listen_day": listen_day.isoformat(),
        "listeners": len(listeners),
        "items_per_playlist": n_items,
        "fresh_tracks": len(fresh),
        "arms": arms,
        "like_rate_vs_random_cluster": round(ratio, 3) if ratio is not None else None,
        "like_rate_vs_popular_catalog": (
            round(arms["playlists"]["like_rate"] / arms["popular_catalog"]["like_rate"], 3)
            if arms["popular_catalog"].get("like_rate")
            else None
        ),
        "completion_vs_random_cluster": (
            round(arms["playlists"]["completion"] / arms["random_cluster"]["completion"], 3)
            if arms["random_cluster"].get("completion")
            else None
        ),
        "target_like_ratio": TARGET_LIKE_RATIO,
        "meets_target": bool(ratio is not None and ratio >= TARGET_LIKE_RATIO),
    }
    return result, system_plays


def feed_back(ctx: Context, run_date: dt.date, plays: pd.DataFrame, seed: int = 0) -> int:
    """Turn the playlist plays into listening events on the day after the run and ingest them (the same
    validation and idempotency as any event file: event ids are derived, so feeding twice adds nothing)."""
    from personalize.ingest import ingest_events_frame
    from personalize.simulate.engagement import plays_to_events

    day = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(18, 0), tzinfo=dt.UTC)
    rng = np.random.default_rng([seed, run_date.toordinal(), 1])
    # Evening listening: each listener starts somewhere between 18:00 and 22:00 and plays in order.
    start_s = pd.Series(
        rng.uniform(0, 4 * 3600, plays["listener_id"].nunique()), index=plays["listener_id"].unique()
    )
    offset_s = start_s.loc[plays["listener_id"]].to_numpy() + (plays["position"].to_numpy() - 1) * 400.0
    frame = plays.assign(ts=pd.to_datetime(day) + pd.to_timedelta(offset_s, unit="s"))
    events = plays_to_events(frame)
    events.insert(
        0,
        "event_id",
        [
            f"pl-{run_date:%Y%m%d}-{lid}-{tid}-{kind}"
            for lid, tid, kind in zip(events["listener_id"], events["track_id"], events["kind"], strict=True)
        ],
    )
    report = ingest_events_frame(ctx, events, source=f"playlist plays {run_date.isoformat()}")
    if report.quarantined_total:
        log.warning("%d fed-back events quarantined: %s", report.quarantined_total, report.examples)
    return int(report.ingested)


def _drift_stats(
    truth: pd.DataFrame, prof: pd.DataFrame, date: dt.date, source: str
) -> dict[str, Any] | None:
    """How far drifting listeners have moved from their first-day tempo, in the direction of their drift:
    truly (the simulator) and according to their taste profile of ``date``."""
    drifting = truth[truth["drift_bpm_per_week"].abs() > 0]
    both = drifting.merge(prof, on="listener_id", suffixes=("_true", "_profile"))
    if both.empty:
        return None
    sign = np.sign(both["drift_bpm_per_week"].to_numpy(float))
    start = both["tempo_bpm_start"].to_numpy(float)
    true = both["tempo_bpm_true"].to_numpy(float)
    profile = both["tempo_bpm_profile"].to_numpy(float)
    return {
        "date": date.isoformat(),
        "source": source,
        "listeners": len(both),
        "true_drift_bpm": round(float(np.mean(sign * (true - start))), 2),
        "profile_drift_bpm": round(float(np.mean(sign * (profile - start))), 2),
        "profile_error_bpm": round(float(np.mean(np.abs(profile - true))), 2),
        "start_error_bpm": round(float(np.mean(np.abs(start - true))), 2),
    }


def _drift_point(ctx: Context, truth_all: Any, date: dt.date) -> dict[str, Any] | None:
    with ctx.engine.connect() as conn:
        prof = pd.DataFrame(
            conn.execute(
                select(TasteProfile.listener_id, TasteProfile.tempo_bpm).where(
                    TasteProfile.run_date == date, TasteProfile.tempo_bpm.is_not(None)
                )
            ).all(),
            columns=["listener_id", "tempo_bpm"],
        )
    return _drift_stats(truth_all.at(date), prof, date, "night")


def history_drift(ctx: Context, truth_all: Any, dates: list[dt.date]) -> list[dict[str, Any]]:
    """Drift points for dates of the world's own history, from profiles computed in memory (nothing written),
    so the figure shows how profiles followed drifting listeners before the evaluated nights too."""
    from personalize.profile.stage import (
        DriftRule,
        availability_weights,
        compute_profiles,
        load_pair_weights,
        load_tracks,
        window,
    )

    tracks, _ = load_tracks(ctx)
    s = ctx.settings
    availability = availability_weights(
        tracks, s.profile_availability_power, s.profile_availability_bandwidth_log2
    )
    points = []
    for date in dates:
        truth = truth_all.at(date)
        ids = truth.loc[truth["drift_bpm_per_week"].abs() > 0, "listener_id"].tolist()
        if not ids:
            continue
        rows, _ = compute_profiles(
            load_pair_weights(ctx, *window(ctx, date)),
            tracks,
            ids,
            s.profile_min_events,
            DriftRule.from_settings(s),
            availability,
        )
        point = _drift_stats(
            truth, pd.DataFrame(rows)[["listener_id", "tempo_bpm"]].dropna(), date, "history"
        )
        if point:
            points.append(point)
    return points


def evaluate_nights(
    ctx: Context, first_date: dt.date, nights: int = 1, seed: int = 0, on_night: Any = None
) -> dict[str, Any]:
    """Run, evaluate and feed back ``nights`` consecutive nights from ``first_date``; the last night's
    figures plus every night's, and the drift record. Written to the report folder as JSON."""
    from personalize import pipeline, runs
    from personalize.simulate.truth import load_truth

    truth_all = load_truth(Path(ctx.settings.data_dir))
    per_night: list[dict[str, Any]] = []
    # Weekly points of the world's own history first, then one per evaluated night.
    history_dates = []
    day = truth_all.start_date + dt.timedelta(days=7)
    while day < first_date:
        history_dates.append(day)
        day += dt.timedelta(days=7)
    drift: list[dict[str, Any]] = history_drift(ctx, truth_all, history_dates)
    result: dict[str, Any] = {}
    for i in range(max(1, nights)):
        date = first_date + dt.timedelta(days=i)
        if not runs.stage_ok(ctx, date, "publish"):
            pipeline.run(ctx, date)
        result, plays = evaluate(ctx, date, seed)
        fed = feed_back(ctx, date, plays, seed) if nights > 1 else 0
        point = _drift_point(ctx, truth_all, date)
        if point:
            drift.append(point)
        per_night.append(
            {
                "run_date": date.isoformat(),
                "like_rate": result["arms"]["playlists"].get("like_rate"),
                "random_cluster_like_rate": result["arms"]["random_cluster"].get("like_rate"),
                "popular_like_rate": result["arms"]["popular_catalog"].get("like_rate"),
                "completion": result["arms"]["playlists"].get("completion"),
                "events_fed_back": fed,
            }
        )
        if on_night is not None:
            on_night(date, result)
        # Each night's outcome is a page of its own beside that night's report.
        write_outcome(ctx, date, result | {"nights": per_night, "drift": {"nights": drift}})
    out = result | {"nights": per_night, "drift": {"nights": drift}}
    return out


def write_outcome(ctx: Context, run_date: dt.date, result: dict[str, Any]) -> Path:
    """The evaluated outcome of a night as ``reports/<date>/outcome.json`` and ``outcome.html`` (the
    figures and the drift curve), next to that night's report page."""
    import base64
    import html

    from personalize.report import figures
    from personalize.report.stage import report_dir

    folder = report_dir(ctx, run_date)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outcome.json").write_text(json.dumps(result, indent=2))
    headline = {k: v for k, v in result.items() if k not in ("nights", "drift")}
    parts = [f"<h1>Outcome of {run_date} (simulated listeners)</h1>"]
    parts.append(f"<pre>{html.escape(json.dumps(headline, indent=2))}</pre>")
    nights = result.get("drift", {}).get("nights") or []
    if len(nights) >= 2:
        png = base64.b64encode(figures.drift(nights)).decode()
        parts.append(f'<img alt="profiles following drift" src="data:image/png;base64,{png}">')
    page = folder / "outcome.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>Outcome {run_date}</title></head>"
        f"<body style='font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto'>{''.join(parts)}"
        "</body></html>",
        encoding="utf-8",
    )
    return page
