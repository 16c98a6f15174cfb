"""Bulk loads (one transaction; SQLite builds the secondary indexes again at the end, PostgreSQL COPYs into
the bare table and builds its keys, indexes and foreign keys again) give the same rows, quarantine and
counts as chunk-by-chunk ingest, leave the table's indexes and foreign-key checks in place, and roll back
whole when a load fails part-way."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from personalize.db.models import ListeningEvent, QuarantinedRow
from personalize.ingest import ingest_catalog_frame, ingest_events, ingest_events_frame
from personalize.ingest.events import ingest_chunks
from personalize.ingest.read import frame_chunks
from personalize.ingest.store import bulk_load_wanted


def _catalog(ctx) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "track_id": ["t1", "t2"],
            "title": ["One", "Two"],
            "duration_s": [200.0, 100.0],
            "tempo_bpm": [120.0, 90.0],
            "key": ["C major", "A minor"],
            "meter": ["4/4", "3/4"],
            "programs": ["0", "0;33"],
        }
    )
    ingest_catalog_frame(ctx, frame, source="test-catalog")


def _events(n: int, prefix: str = "e") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}{i:05d}" for i in range(n)],
            "listener_id": [f"l{i % 7}" for i in range(n)],
            "track_id": ["t1" if i % 3 else "t2" for i in range(n)],
            "ts": [f"2026-01-0{1 + i % 9}T10:00:{i % 60:02d}Z" for i in range(n)],
            "ms_played": [1000 + i for i in range(n)],
            "kind": ["play", "skip", "like"] * (n // 3) + ["play"] * (n % 3),
        }
    )


def _index_names(ctx) -> set[str]:  # type: ignore[no-untyped-def]
    return {ix["name"] for ix in inspect(ctx.engine).get_indexes("listening_events")}


def _assert_keys_in_place(ctx) -> None:  # type: ignore[no-untyped-def]
    """Primary key and both foreign keys are there and enforced after a load."""
    inspector = inspect(ctx.engine)
    assert inspector.get_pk_constraint("listening_events")["constrained_columns"] == ["event_id"]
    referred = {fk["referred_table"] for fk in inspector.get_foreign_keys("listening_events")}
    assert referred == {"listeners", "tracks"}
    with ctx.engine.connect() as conn:
        if ctx.dialect == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    with pytest.raises(IntegrityError), ctx.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO listening_events (event_id, listener_id, track_id, ts, ms_played, kind) "
                "VALUES ('orphan', 'nobody', 't1', '2026-01-01 00:00:00', 1, 'play')"
            )
        )


def test_bulk_load_matches_chunked_ingest(ctx, tmp_path):
    _catalog(ctx)
    ctx.settings.ingest_bulk_min_rows = 10
    ctx.settings.ingest_chunk_rows = 40
    frame = _events(150)
    frame.loc[5, "track_id"] = "t9"  # unknown track
    frame.loc[9, "ms_played"] = -1
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    indexes = _index_names(ctx)
    assert {"ix_listening_events_ts", "ix_listening_events_listener_ts"} <= indexes

    assert bulk_load_wanted(ctx, 150)
    report = ingest_events(ctx, path)
    assert (report.rows_read, report.ingested, report.quarantined) == (
        150,
        148,
        {"unknown_track": 1, "negative_ms_played": 1},
    )
    assert _index_names(ctx) == indexes
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ListeningEvent)) == 148
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 2
        # The ts index serves range queries again after the load.
        assert session.scalar(
            select(func.count())
            .select_from(ListeningEvent)
            .where(ListeningEvent.ts >= pd.Timestamp("2026-01-09"))
        ) == sum(1 for i in range(150) if i % 9 == 8 and i not in (5, 9))
    _assert_keys_in_place(ctx)

    again = ingest_events(ctx, path)
    assert (again.ingested, again.already_present, again.quarantined_total) == (0, 148, 2)
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 2


def test_failed_bulk_load_leaves_table_as_it_was(ctx):
    _catalog(ctx)
    ingest_events_frame(ctx, _events(5, prefix="old"), source="before")
    ctx.settings.ingest_bulk_min_rows = 10
    indexes = _index_names(ctx)

    def chunks_then_failure():  # type: ignore[no-untyped-def]
        yield from frame_chunks(_events(30), 1, 10)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        ingest_chunks(ctx, "broken", chunks_then_failure(), None, False, expected_rows=40)
    assert _index_names(ctx) == indexes
    with ctx.engine.connect() as conn:
        count = conn.execute(text("SELECT COUNT(*) FROM listening_events")).scalar_one()
        assert count == 5  # the load rolled back whole
    _assert_keys_in_place(ctx)


def test_bulk_load_into_a_table_with_rows_counts_those_already_there(ctx, tmp_path):
    _catalog(ctx)
    ingest_events_frame(ctx, _events(60), source="earlier")  # under the bulk threshold: chunk by chunk
    ctx.settings.ingest_bulk_min_rows = 100
    frame = _events(150)
    frame.loc[5, "track_id"] = "t9"  # these two were stored by the earlier batch; here they are bad rows
    frame.loc[9, "ms_played"] = -1
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    assert bulk_load_wanted(ctx, 150)

    report = ingest_events(ctx, path)
    assert (report.ingested, report.already_present, report.quarantined_total) == (90, 58, 2)
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM listening_events")).scalar_one() == 150
        assert (
            conn.execute(text("SELECT source FROM listening_events WHERE event_id = 'e00010'")).scalar_one()
            == "earlier"
        )  # a row already there is left as it was
    _assert_keys_in_place(ctx)


def test_postgres_bulk_load_goes_chunk_by_chunk_when_the_table_is_busy(ctx, tmp_path, monkeypatch):
    if ctx.dialect != "postgresql":
        pytest.skip("PostgreSQL's table lock; SQLite waits on its busy timeout instead")
    from personalize.ingest import pg_bulk

    monkeypatch.setattr(pg_bulk, "LOCK_TIMEOUT", "200ms")
    _catalog(ctx)
    ctx.settings.ingest_bulk_min_rows = 10
    path = tmp_path / "events.csv"
    _events(30).to_csv(path, index=False)
    with ctx.engine.connect() as reader:
        reader.execute(text("SELECT COUNT(*) FROM listening_events"))  # holds a share lock until rollback
        report = ingest_events(ctx, path)
        reader.rollback()
    assert (report.ingested, report.quarantined_total) == (30, 0)


def test_a_write_failure_stops_the_validating_thread_and_is_raised(ctx, monkeypatch):
    """Validation runs ahead on a helper thread; when writing fails, the error reaches the caller and the
    helper stops, even with validated chunks still waiting to be written."""
    import threading
    import time

    from personalize.ingest.store import EventWriter

    _catalog(ctx)
    ctx.settings.ingest_bulk_min_rows = 10**9  # chunk by chunk: each chunk its own transaction
    ctx.settings.ingest_chunk_rows = 10  # several chunks: validation runs ahead on its thread
    calls = {"n": 0}
    real_insert = EventWriter.insert

    def failing_insert(self, events):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            time.sleep(0.5)  # meanwhile the last chunks are validated and wait, and the end is signalled
            raise RuntimeError("database went away")
        return real_insert(self, events)

    monkeypatch.setattr(EventWriter, "insert", failing_insert)
    outcome: dict[str, BaseException | None] = {"error": None}

    def ingest() -> None:
        try:
            ingest_chunks(ctx, "chunks", frame_chunks(_events(40), 1, 10), None, False, expected_rows=40)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=ingest)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the ingest hung after a write failure"
    assert isinstance(outcome["error"], RuntimeError) and "went away" in str(outcome["error"])
    assert not any(t.name == "ingest-validate" and t.is_alive() for t in threading.enumerate())
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM listening_events")).scalar_one() == 10  # chunk 1 only


def test_copy_timestamps_are_written_exactly():
    """The PostgreSQL bulk load formats timestamps itself: the same text numpy gives, over the whole range,
    leap days and the ends of years included."""
    import numpy as np

    from personalize.ingest.pg_bulk import utc_text

    rng = np.random.default_rng(0)
    special = [0, 946_684_800_000_000, 951_782_400_000_000, 1_709_164_800_000_000, 4_102_444_799_999_999]
    ts = np.r_[rng.integers(0, 253_402_300_799_999_999, 20_000), special].astype(np.int64)
    expected = np.char.add(np.datetime_as_string(ts.astype("datetime64[us]"), unit="us"), "Z")
    assert utc_text(ts).to_pylist() == expected.tolist()
    assert utc_text(np.array([], dtype=np.int64)).to_pylist() == []
