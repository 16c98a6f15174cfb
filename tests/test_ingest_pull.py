"""Pulling listening events from the app's database: a real PostgreSQL database (a schema made here) stands
in for the app's own. Rows arrive between two nights, some of them late (played days before they reach the
app); each night reads only what is new, a night with nothing new reads nothing in under a second, and
pulling rows twice stores them once."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pandas as pd
import pytest
from conftest import PG_ADMIN_URL
from sqlalchemy import create_engine, delete, func, select, text
from typer.testing import CliRunner

from personalize.cli import app
from personalize.db.models import IngestWatermark, ListeningEvent, QuarantinedRow
from personalize.ingest import IngestFileError, ingest_catalog_frame
from personalize.ingest import stage as ingest_stage
from personalize.ingest.pull import load_sources, pull, pull_all

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_db(pg_available):
    """The app's database: a fresh schema with a plays table as an app might keep it."""
    if not pg_available:
        pytest.skip("PostgreSQL is not reachable")
    schema = f"app_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG_ADMIN_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".plays (id bigserial PRIMARY KEY, user_id text NOT NULL, '
                "song_id text NOT NULL, played_at timestamptz NOT NULL, duration_ms integer, action text, "
                "received_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
    yield engine, schema
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _add(engine, schema, rows):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(
            text(
                f'INSERT INTO "{schema}".plays (user_id, song_id, played_at, duration_ms, action) '
                "VALUES (:user_id, :song_id, :played_at, :duration_ms, :action)"
            ),
            rows,
        )


def _sources(tmp_path, schema, extra=""):  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.toml"
    path.write_text(
        f"""
[sources.app]
url_env = "APP_DB_URL"
table = "{schema}.plays"
watermark = "id"

[sources.app.columns]
event_id = "id"
listener_id = "user_id"
track_id = "song_id"
ts = "played_at"
ms_played = "duration_ms"

[sources.app.kind]
column = "action"
map = {{ finished = "complete", skipped = "skip", started = "play", liked = "like" }}
{extra}
"""
    )
    return path


def _catalog(ctx):  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "track_id": ["s1", "s2"],
            "title": ["One", "Two"],
            "duration_s": [200.0, 180.0],
            "tempo_bpm": [100.0, 90.0],
            "key": ["C major"] * 2,
            "meter": ["4/4"] * 2,
            "programs": ["0"] * 2,
        }
    )
    ingest_catalog_frame(ctx, frame, source="catalog")


def _count(ctx, model):  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_two_nights_with_late_rows_then_nothing_new(ctx, tmp_path, app_db, monkeypatch):
    engine, schema = app_db
    monkeypatch.setenv("APP_DB_URL", PG_ADMIN_URL)
    _catalog(ctx)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    hour = dt.timedelta(hours=1)
    _add(
        engine,
        schema,
        [
            {
                "user_id": "anna+music@example.com",
                "song_id": "s1",
                "played_at": now - 5 * hour,
                "duration_ms": 200_000,
                "action": "finished",
            },
            {
                "user_id": "anna+music@example.com",
                "song_id": "s2",
                "played_at": now - 4 * hour,
                "duration_ms": 9_000,
                "action": "skipped",
            },
            {
                "user_id": "user 42",
                "song_id": "s1",
                "played_at": now - 3 * hour,
                "duration_ms": 1_000,
                "action": "paused",
            },
            {
                "user_id": "user 42",
                "song_id": "s404",
                "played_at": now - 3 * hour,
                "duration_ms": 1_000,
                "action": "started",
            },
        ],
    )
    (source,) = load_sources(_sources(tmp_path, schema))

    night1 = pull(ctx, source)
    assert (night1.rows_read, night1.ingested) == (4, 2)
    assert night1.quarantined == {"unknown_kind": 1, "unknown_track": 1}
    with ctx.sessions() as session:
        kinds = {e.event_id: (e.kind, e.listener_id) for e in session.scalars(select(ListeningEvent))}
    assert kinds == {"1": ("complete", "anna+music@example.com"), "2": ("skip", "anna+music@example.com")}

    # Between the nights: new plays, and two late ones played three days ago (a phone that was offline).
    _add(
        engine,
        schema,
        [
            {
                "user_id": "user 42",
                "song_id": "s2",
                "played_at": now - hour,
                "duration_ms": 180_000,
                "action": "finished",
            },
            {
                "user_id": "jürgen.müller",
                "song_id": "s1",
                "played_at": now - 72 * hour,
                "duration_ms": 5_000,
                "action": "liked",
            },
            {
                "user_id": "jürgen.müller",
                "song_id": "s2",
                "played_at": now - 71 * hour,
                "duration_ms": 90_000,
                "action": "started",
            },
        ],
    )
    night2 = pull(ctx, source)
    assert (night2.rows_read, night2.ingested, night2.quarantined) == (3, 3, {})
    with ctx.sessions() as session:
        late = session.get(ListeningEvent, "6")
        mark = session.get(IngestWatermark, "db:app")
    assert late.listener_id == "jürgen.müller" and late.kind == "like"
    assert late.ts.replace(tzinfo=dt.UTC if late.ts.tzinfo is None else late.ts.tzinfo) < now - 70 * hour
    assert (mark.watermark, mark.rows_read) == ("int:7", 7)

    started = time.perf_counter()
    night3 = pull(ctx, source)
    elapsed = time.perf_counter() - started
    assert (night3.rows_read, night3.ingested) == (0, 0) and elapsed < 1.0, elapsed

    # Pulled again from the start (watermark lost): nothing is stored twice, quarantined rows included.
    before = (_count(ctx, ListeningEvent), _count(ctx, QuarantinedRow))
    with ctx.engine.begin() as conn:
        conn.execute(delete(IngestWatermark))
    again = pull(ctx, source)
    assert (again.rows_read, again.ingested, again.already_present) == (7, 0, 5)
    assert (_count(ctx, ListeningEvent), _count(ctx, QuarantinedRow)) == before == (5, 2)


def test_the_nightly_stage_pulls_before_inbox_events_and_does_nothing_without_sources(
    ctx, tmp_path, app_db, monkeypatch
):
    engine, schema = app_db
    monkeypatch.setenv("APP_DB_URL", PG_ADMIN_URL)
    _catalog(ctx)
    today = dt.date.today()
    assert ingest_stage.run(ctx, today)["sources"] == 0  # no sources file: nothing pulled, nothing fails
    path = _sources(tmp_path, schema, extra='default = "play"')
    monkeypatch.setenv("PERSONALIZE_SOURCES_FILE", str(path))
    _add(
        engine,
        schema,
        [
            {
                "user_id": "O'Brien",
                "song_id": "s1",
                "played_at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
                "duration_ms": 3_000,
                "action": "something new",
            },
        ],
    )
    summary = ingest_stage.run(ctx, today)
    assert (summary["sources"], summary["pulled_rows"], summary["pulled_ingested"]) == (1, 1, 1)
    assert pull_all(ctx)["pulled_rows"] == 0


def test_bad_sources_files_say_what_to_fix(tmp_path):
    path = tmp_path / "sources.toml"
    path.write_text(
        '[sources.app]\nurl = "sqlite://"\ntable = "plays"\nwatermark = "id"\n[sources.app.columns]\nevent_id = "id"\n[sources.app.kind]\nvalue = "play"\n'
    )
    with pytest.raises(IngestFileError, match="columns lacks listener_id, track_id, ts, ms_played"):
        load_sources(path)
    path.write_text(
        '[sources.app]\nurl = "sqlite://"\nquery = "SELECT 1"\nwatermark = "id"\n[sources.app.columns]\nevent_id = "a"\nlistener_id = "b"\ntrack_id = "c"\nts = "d"\nms_played = "e"\n[sources.app.kind]\nvalue = "listen"\n'
    )
    with pytest.raises(IngestFileError, match="'listen' is not one of play"):
        load_sources(path)


def test_cli_pull(ctx, tmp_path, app_db, monkeypatch):
    engine, schema = app_db
    _catalog(ctx)
    _add(
        engine,
        schema,
        [
            {
                "user_id": "l1",
                "song_id": "s2",
                "played_at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
                "duration_ms": 3_000,
                "action": "started",
            },
        ],
    )
    env = {
        "PERSONALIZE_DATABASE_URL": ctx.settings.resolved_database_url,
        "PERSONALIZE_DATA_DIR": str(ctx.settings.data_dir),
        "APP_DB_URL": PG_ADMIN_URL,
        "COLUMNS": "200",
    }
    path = _sources(tmp_path, schema)
    result = CliRunner().invoke(app, ["ingest", "pull", "--sources", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "ingested" in result.output and "watermark id now 1" in result.output
    result = CliRunner().invoke(app, ["ingest", "pull", "--sources", str(tmp_path / "none.toml")], env=env)
    assert result.exit_code == 2 and "no such sources file" in result.output
