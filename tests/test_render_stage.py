"""The nightly render stage on a real database (SQLite and PostgreSQL): rows updated, files stored, reruns idempotent."""

from __future__ import annotations

import datetime as dt
import hashlib

import pretty_midi
from fresh_tracks import fresh_track
from sqlalchemy import func, select

from personalize.db.models import QuarantinedRow, Track
from personalize.render import decode
from personalize.render.pieces import demo_piece, midi_bytes
from personalize.render.stage import quarantine_row_number, run

RUN_DATE = dt.date(2026, 11, 20)


def _track(ctx, track_id: str, midi: bytes | None, **overrides) -> Track:
    return fresh_track(ctx, track_id, midi, overrides.pop("run_date", RUN_DATE), **overrides)


def _audio_files(ctx) -> list[str]:
    root = f"{ctx.storage.root_path}/audio"
    return sorted(ctx.storage.fs.find(root)) if ctx.storage.fs.exists(root) else []


def test_stage_renders_tracks_of_the_date_and_is_idempotent(ctx):
    with ctx.sessions.begin() as session:
        session.add_all(
            [
                _track(ctx, "g-1", midi_bytes(demo_piece(8, seed=1))),
                _track(ctx, "g-2", midi_bytes(demo_piece(8, seed=2, programs=(24, 32)))),
                _track(ctx, "g-bad", b"this is not MIDI"),
                _track(ctx, "g-empty", midi_bytes(pretty_midi.PrettyMIDI())),
                _track(
                    ctx, "g-other-day", midi_bytes(demo_piece(6, seed=3)), run_date=RUN_DATE - dt.timedelta(1)
                ),
                _track(ctx, "g-other-cluster", midi_bytes(demo_piece(6, seed=4)), cluster_id=2),
                _track(ctx, "g-no-midi", None),
                _track(ctx, "catalog-1", midi_bytes(demo_piece(6, seed=5)), source="catalog", run_date=None),
            ]
        )

    summary = run(ctx, RUN_DATE, cluster_id=1, workers=2)
    assert summary["candidates"] == 4
    assert summary["rendered"] == 2 and summary["rejected"] == 2
    assert summary["reasons"] == {"corrupt_midi": 1, "no_notes": 1}
    assert 14 < summary["audio_seconds"] < 22

    with ctx.sessions() as session:
        rows = {t.track_id: t for t in session.scalars(select(Track)).all()}
        quarantined = session.scalars(select(QuarantinedRow).where(QuarantinedRow.source == "render")).all()
    for track_id in ("g-1", "g-2"):
        row = rows[track_id]
        data = ctx.storage.get_bytes(row.audio_uri)
        assert hashlib.sha256(data).hexdigest() == row.audio_sha256
        assert row.audio_sha256 in row.audio_uri and row.audio_uri.endswith(".ogg")
        assert row.audio_bytes == len(data) and row.audio_codec == "ogg"
        assert abs(row.loudness_lufs - ctx.settings.target_lufs) <= 0.5
        assert row.true_peak_dbtp <= ctx.settings.true_peak_max_dbtp
        samples, rate, tags = decode(data)
        assert abs(len(samples) / rate - row.duration_s) < 0.1
        assert tags["title"] == f"Fresh {track_id}" and '"key": "C major"' in tags["comment"]
    for untouched in ("g-bad", "g-empty", "g-other-day", "g-other-cluster", "g-no-midi", "catalog-1"):
        assert rows[untouched].audio_uri is None
    by_row = {q.row_number: q for q in quarantined}
    bad = by_row[quarantine_row_number("g-bad")]
    assert bad.reason == "corrupt_midi" and "g-bad" in bad.detail and bad.run_date == RUN_DATE
    assert '"track_id": "g-bad"' in bad.raw
    assert by_row[quarantine_row_number("g-empty")].reason == "no_notes"
    files = _audio_files(ctx)
    assert len(files) == 2

    again = run(ctx, RUN_DATE, cluster_id=1, workers=2)
    assert again["candidates"] == 2 and again["rendered"] == 0 and again["rejected"] == 0
    assert again["skipped_rejected_before"] == 2
    assert _audio_files(ctx) == files
    with ctx.sessions() as session:
        n_quarantined = session.scalar(select(func.count()).select_from(QuarantinedRow))
        assert n_quarantined == 2
        assert session.get(Track, "g-1").audio_sha256 == rows["g-1"].audio_sha256

    retried = run(ctx, RUN_DATE, cluster_id=1, workers=1, retry_rejected=True)
    assert retried["rejected"] == 2 and retried["rendered"] == 0
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 2


def test_stage_with_nothing_to_do(ctx):
    summary = run(ctx, RUN_DATE)
    assert summary["candidates"] == 0 and summary["rendered"] == 0
