"""Nightly render stage: every generated track of a run date that has MIDI but no audio yet becomes audio.

Idempotent: only tracks without ``audio_uri`` are rendered, audio lands in content-addressed storage (the
same bytes are stored once) and each track row is updated in its own small transaction, so a rerun after
a crash carries on where the last run stopped. Tracks that cannot be rendered are kept in
``quarantined_rows`` (source ``render``, one stable row number per track) and are not retried on a rerun
unless ``retry_rejected`` is set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any

from sqlalchemy import delete, select

from personalize.context import Context
from personalize.db.models import QuarantinedRow, Track
from personalize.render.batch import RenderJob, RenderOutcome, render_batch
from personalize.render.encode import suffix_for
from personalize.render.errors import MIDI_MISSING

log = logging.getLogger(__name__)

QUARANTINE_SOURCE = "render"
STORAGE_KIND = "audio"


def quarantine_row_number(track_id: str) -> int:
    """A stable row number for a track in ``quarantined_rows`` (63-bit, from its id)."""
    return int(hashlib.sha256(track_id.encode()).hexdigest()[:15], 16)


def run(
    ctx: Context,
    run_date: dt.date,
    *,
    workers: int | None = None,
    retry_rejected: bool = False,
    cluster_id: int | None = None,
) -> dict[str, Any]:
    """Render the generated tracks of ``run_date`` (of one taste cluster when ``cluster_id`` is given, as
    the nightly DAG maps render over clusters); returns counts, seconds of audio and reasons."""
    t0 = time.monotonic()
    settings = ctx.settings
    with ctx.sessions() as session:
        tracks = session.scalars(
            select(Track)
            .where(
                Track.source == "generated",
                Track.run_date == run_date,
                Track.midi_uri.is_not(None),
                Track.audio_uri.is_(None),
                *([Track.cluster_id == int(cluster_id)] if cluster_id is not None else []),
            )
            .order_by(Track.track_id)
        ).all()
        quarantined = set(
            session.scalars(
                select(QuarantinedRow.row_number).where(QuarantinedRow.source == QUARANTINE_SOURCE)
            ).all()
        )
    skipped = [t for t in tracks if not retry_rejected and quarantine_row_number(t.track_id) in quarantined]
    todo = [t for t in tracks if t not in skipped]

    jobs: list[RenderJob] = []
    rejected: list[tuple[Track, str, str]] = []
    for track in todo:
        try:
            midi = ctx.storage.get_bytes(track.midi_uri or "")
        except Exception as exc:
            rejected.append(
                (
                    track,
                    MIDI_MISSING,
                    f"MIDI {track.midi_uri} could not be read ({type(exc).__name__}: {exc}); "
                    "rerun the generate stage for this date.",
                )
            )
            continue
        jobs.append(
            RenderJob(
                job_id=track.track_id,
                midi=midi,
                title=track.title,
                comment={
                    "track_id": track.track_id,
                    "model_version": track.model_version,
                    "cluster_id": track.cluster_id,
                    "controls": track.conditioning,
                },
                codec=settings.render_codec,
            )
        )
    by_id = {t.track_id: t for t in todo}
    counts = {"rendered": 0, "audio_s": 0.0, "audio_bytes": 0}

    def keep(outcome: RenderOutcome) -> None:
        """Store each track as soon as it is done: a crash later in the night loses nothing finished."""
        track = by_id[outcome.job_id]
        if not outcome.ok:
            reason, detail = outcome.reason or "render_failed", outcome.detail or ""
            rejected.append((track, reason, detail))
            _quarantine(ctx, run_date, track, reason, detail)
            return
        _store(ctx, track, outcome)
        counts["rendered"] += 1
        counts["audio_s"] += outcome.duration_s or 0.0
        counts["audio_bytes"] += len(outcome.data or b"")
        outcome.data = None  # stored: no need to hold the bytes until the batch ends

    for track, reason, detail in rejected:  # MIDI that could not even be read
        _quarantine(ctx, run_date, track, reason, detail)
    if jobs:
        render_batch(jobs, settings, workers=workers, on_outcome=keep)
    rendered, audio_s, audio_bytes = counts["rendered"], counts["audio_s"], counts["audio_bytes"]
    reasons = Counter(reason for _, reason, _ in rejected)
    summary = {
        "run_date": run_date.isoformat(),
        "candidates": len(tracks),
        "rendered": rendered,
        "rejected": len(rejected),
        "skipped_rejected_before": len(skipped),
        "reasons": dict(reasons),
        "audio_seconds": round(audio_s, 1),
        "audio_bytes": audio_bytes,
        "codec": settings.render_codec,
        "wall_s": round(time.monotonic() - t0, 2),
    }
    log.info("render %s: %s", run_date, summary)
    return summary


def _store(ctx: Context, track: Track, outcome: RenderOutcome) -> None:
    stored = ctx.storage.put_bytes(STORAGE_KIND, outcome.data or b"", suffix_for(outcome.codec))
    with ctx.sessions.begin() as session:
        row = session.get(Track, track.track_id)
        if row is None:  # deleted meanwhile (a regenerate of the date): the file stays, content-addressed
            return
        row.audio_uri = stored.uri
        row.audio_sha256 = stored.sha256
        row.audio_bytes = stored.n_bytes
        row.audio_codec = outcome.codec
        row.duration_s = round(float(outcome.duration_s or 0.0), 3)
        row.loudness_lufs = round(float(outcome.loudness_lufs or 0.0), 2)
        row.true_peak_dbtp = round(float(outcome.true_peak_dbtp or 0.0), 2)
        session.execute(
            delete(QuarantinedRow).where(
                QuarantinedRow.source == QUARANTINE_SOURCE,
                QuarantinedRow.row_number == quarantine_row_number(track.track_id),
            )
        )


def _quarantine(ctx: Context, run_date: dt.date, track: Track, reason: str, detail: str) -> None:
    row_number = quarantine_row_number(track.track_id)
    raw = json.dumps(
        {"track_id": track.track_id, "midi_uri": track.midi_uri, "controls": track.conditioning},
        sort_keys=True,
        default=str,
    )
    with ctx.sessions.begin() as session:
        session.execute(
            delete(QuarantinedRow).where(
                QuarantinedRow.source == QUARANTINE_SOURCE, QuarantinedRow.row_number == row_number
            )
        )
        session.add(
            QuarantinedRow(
                source=QUARANTINE_SOURCE,
                row_number=row_number,
                raw=raw,
                reason=reason[:40],
                detail=f"track {track.track_id} ({track.midi_uri}): {detail}",
                run_date=run_date,
            )
        )
