"""What a person wants to know after a night, read from what the stages recorded: clusters, tracks made,
playlists published, where the audio and the report are, and each stage's status and time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, text

from personalize.context import Context
from personalize.db.models import Cluster
from personalize.report.stage import report_dir
from personalize.runs import stage_timings


def _cluster_count(ctx: Context, run_date: dt.date) -> int:
    with ctx.sessions() as session:
        return int(
            session.execute(select(func.count()).where(Cluster.run_date == run_date)).scalar_one() or 0
        )


def night_summary(ctx: Context, run_date: dt.date) -> dict[str, Any]:
    """What a person wants to know after a night: clusters, tracks made, playlists, where audio and report are."""
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
        "clusters": _cluster_count(ctx, run_date),
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
