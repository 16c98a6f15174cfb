"""The nightly ingest stage: files dropped into the inbox go in before profiles, bad rows are quarantined,
an unreadable file is kept aside with its reason, and a rerun adds nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from personalize import pipeline
from personalize.db.models import ListeningEvent, QuarantinedRow, Track

NIGHT = dt.date(2026, 1, 2)
CATALOG = (
    "track_id,title,duration_s,tempo_bpm,key,meter,programs\n"
    "t1,One,180,120,D minor,3/4,0;33;drums\n"
    "t2,Two,200,90,F# major,4/4,0\n"
)
EVENTS = (
    "event_id,listener_id,track_id,ts,ms_played,kind\n"
    "e1,l1,t1,2026-01-01T10:00:00Z,1000,play\n"
    "e2,l1,t2,2026-01-01T11:00:00Z,90000,like\n"
    "e3,l2,t9,2026-01-01T10:00:00Z,1000,play\n"  # names a track nobody has: quarantined
)


def _count(ctx, model) -> int:  # type: ignore[no-untyped-def]
    with ctx.sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_inbox_files_go_in_and_move_to_done(ctx):
    inbox = ctx.settings.data_dir / "inbox"
    (inbox / "catalog").mkdir(parents=True)
    (inbox / "events").mkdir(parents=True)
    (inbox / "catalog" / "tracks.csv").write_text(CATALOG)
    (inbox / "events" / "monday.csv").write_text(EVENTS)
    (inbox / "events" / "broken.csv").write_text("listener,song\nl1,t1\n")  # not the events format

    summary = pipeline.run_stage(ctx, "ingest", NIGHT)

    assert summary["files"] == 2 and summary["files_failed"] == 1
    assert summary["catalog_ingested"] == 2
    assert summary["events_ingested"] == 2 and summary["events_quarantined"] == 1
    assert _count(ctx, Track) == 2 and _count(ctx, ListeningEvent) == 2 and _count(ctx, QuarantinedRow) == 1
    done = inbox / "done" / NIGHT.isoformat()
    assert (done / "events" / "monday.csv").read_text() == EVENTS  # kept, byte for byte
    failed = inbox / "failed" / NIGHT.isoformat() / "events"
    assert (failed / "broken.csv").exists()
    assert "column" in (failed / "broken.csv.reason.txt").read_text().lower()
    assert not list((inbox / "events").iterdir())

    # The same file dropped again (a resend) adds nothing and is kept beside the first copy.
    (inbox / "events" / "monday.csv").write_text(EVENTS)
    again = pipeline.run_stage(ctx, "ingest", NIGHT)
    assert again["events_ingested"] == 0 and _count(ctx, ListeningEvent) == 2
    assert (done / "events" / "monday.1.csv").exists()


def test_an_empty_inbox_is_a_quiet_night(ctx):
    summary = pipeline.run_stage(ctx, "ingest", NIGHT)
    assert summary["files"] == 0 and summary["events_ingested"] == 0
