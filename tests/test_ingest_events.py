"""Listening events in: every bad row is quarantined with its reason, row number and raw content; good rows
land once (re-ingesting adds nothing); CSV, Parquet and DataFrames are validated alike."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from personalize.db.models import Listener, ListeningEvent, QuarantinedRow
from personalize.ingest import IngestFileError, ingest_catalog_frame, ingest_events, ingest_events_frame

HEADER = "event_id,listener_id,track_id,ts,ms_played,kind"

# One row per outcome; the comment-free layout keeps row numbers obvious (row N = line N + 1).
ROWS: list[tuple[bytes, str | None]] = [
    (b"e1,l1,t1,2026-01-01T10:00:00Z,1000,play", None),
    (b"e2,l1,t2,2026-01-01 10:00:00+02:00,1000,skip", None),
    (b"e3,l2,t9,2026-01-01T10:00:00,1000,play", "unknown_track"),
    (b"e4,l2,t1,2026-01-01T10:00:00,-5,play", "negative_ms_played"),
    (b"e5,l2,t1,2026-01-01T10:00:00,999999999,play", "absurd_ms_played"),
    (b"e6,l2,t1,2099-01-01T10:00:00,1,play", "ts_future"),
    (b"e7,l2,t1,1999-12-31T23:59:59Z,1,play", "ts_before_2000"),
    (b"e1,l2,t1,2026-01-01T10:00:00,1,play", "duplicate_event_id"),
    (b"e8,l2,t1,2026-01-01T10:00:00,1,dance", "unknown_kind"),
    (b"e9,l2,t1,yesterday,1,play", "unparseable_field"),
    (b"e10,l2,t1,2026-01-01T10:00:00,1.5,play", "unparseable_field"),
    (b"e11,,t1,2026-01-01T10:00:00,1,play", "missing_field"),
    (b"e12,l\xe9,t1,2026-01-01T10:00:00,1,play", "bad_encoding"),
    (b"e13,l2,t1,2026-01-01T10:00:00,1,play,extra", "malformed_row"),
    (b"e14,l2,t1,2026-01-01T10:00:00,1,LIKE", None),
    (b"e15,l2,t1,2026-01-01T10:00:00,NaN,play", "missing_field"),
    (b"e16,l3,t1,2026-01-01T10:0", "truncated_row"),
]


def _catalog(ctx) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "track_id": ["t1", "t2"],
            "title": ["One", "Two"],
            "duration_s": [180.0, 200.0],
            "tempo_bpm": [120.0, 90.0],
            "key": ["D minor", "F# major"],
            "meter": ["3/4", "4/4"],
            "programs": ["0;33;drums", "0"],
        }
    )
    report = ingest_catalog_frame(ctx, frame, source="test-catalog")
    assert report.ingested == 2


def _write_events(path: Path, rows: list[bytes]) -> Path:
    # No newline after the last row: the file looks cut off, which the truncated_row row relies on.
    path.write_bytes(HEADER.encode() + b"\n" + b"\n".join(rows))
    return path


def _expected_counts(rows: list[tuple[bytes, str | None]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in rows:
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def _count(ctx, model) -> int:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_every_bad_row_is_quarantined_with_reason_row_and_raw(ctx, tmp_path):
    _catalog(ctx)
    path = _write_events(tmp_path / "events.csv", [r for r, _ in ROWS])
    report = ingest_events(ctx, path, encoding="utf-8")  # so the Latin-1 byte of row 13 is bad

    assert report.rows_read == len(ROWS)
    assert report.ingested == 3
    assert report.already_present == 0
    assert report.quarantined == _expected_counts(ROWS)
    assert report.rows_read == report.ingested + report.already_present + report.quarantined_total

    with ctx.sessions() as session:
        stored = {q.row_number: q for q in session.scalars(select(QuarantinedRow))}
        events = {e.event_id: e for e in session.scalars(select(ListeningEvent))}
        listeners = set(session.scalars(select(Listener.listener_id)))
    expected = {i + 1: reason for i, (_, reason) in enumerate(ROWS) if reason}
    assert {n: q.reason for n, q in stored.items()} == expected
    for n, q in stored.items():
        assert q.source == str(path.resolve())
        assert f"row {n}" in q.detail
        raw = json.loads(q.raw)
        assert ROWS[n - 1][0].split(b",")[0].decode() in json.dumps(raw)
    assert "\\xe9" in json.loads(stored[13].raw)["listener_id"]  # the undecodable byte is kept, escaped
    assert "t9" in stored[3].detail and "ingest catalog" in stored[3].detail
    assert "row 1" in stored[8].detail  # the duplicate names its first occurrence

    assert set(events) == {"e1", "e2", "e14"}
    assert events["e14"].kind == "like"
    # Stored in UTC: an offset is converted, no offset means UTC already.
    assert events["e2"].ts.replace(tzinfo=None) == dt.datetime(2026, 1, 1, 8, 0, 0)
    assert events["e1"].ts.replace(tzinfo=None) == dt.datetime(2026, 1, 1, 10, 0, 0)
    assert events["e1"].ms_played == 1000 and events["e1"].source == str(path.resolve())
    assert listeners == {"l1", "l2"}  # created on first sight, only for accepted events


def test_reingesting_the_same_file_adds_nothing(ctx, tmp_path):
    _catalog(ctx)
    path = _write_events(tmp_path / "events.csv", [r for r, _ in ROWS])
    first = ingest_events(ctx, path, encoding="utf-8")
    counts = (_count(ctx, ListeningEvent), _count(ctx, QuarantinedRow), _count(ctx, Listener))
    second = ingest_events(ctx, path, encoding="utf-8")

    assert second.ingested == 0
    assert second.already_present == first.ingested
    assert second.quarantined == first.quarantined
    assert (_count(ctx, ListeningEvent), _count(ctx, QuarantinedRow), _count(ctx, Listener)) == counts


def test_parquet_with_typed_columns(ctx, tmp_path):
    _catalog(ctx)
    frame = pd.DataFrame(
        {
            "event_id": ["p1", "p2", "p3", "p4", "p5"],
            "listener_id": [7, 7, 8, 8, 9],  # numeric ids are accepted as text
            "track_id": ["t1", "t2", "t1", "t1", "t2"],
            "ts": pd.to_datetime(
                [
                    "2026-03-01T12:00:00+01:00",
                    "2026-03-01T12:00:00Z",
                    None,
                    "2026-03-02T00:00:00Z",
                    "2026-03-03",
                ],
                utc=True,
                format="ISO8601",
            ),
            "ms_played": [1000.0, np.nan, 5.0, -1.0, 230_000.0],
            "kind": ["play", "complete", "play", "skip", "save"],
        }
    )
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    report = ingest_events(ctx, path)

    assert report.ingested == 2
    assert report.quarantined == {"missing_field": 2, "negative_ms_played": 1}
    with ctx.sessions() as session:
        p1 = session.get(ListeningEvent, "p1")
        assert p1 is not None and p1.listener_id == "7"
        assert p1.ts.replace(tzinfo=None) == dt.datetime(2026, 3, 1, 11, 0, 0)
        assert session.get(ListeningEvent, "p5").ms_played == 230_000  # within 200 s + 30 s slack


def test_ms_played_slack_boundary(ctx):
    _catalog(ctx)
    slack_ms = int(ctx.settings.ms_played_slack_s * 1000)
    frame = pd.DataFrame(
        {
            "event_id": ["ok", "over"],
            "listener_id": ["l1", "l1"],
            "track_id": ["t1", "t1"],
            "ts": ["2026-01-01T00:00:00Z"] * 2,
            "ms_played": [180_000 + slack_ms, 180_000 + slack_ms + 1],
            "kind": ["complete", "complete"],
        }
    )
    report = ingest_events_frame(ctx, frame, source="api:slack")
    assert report.ingested == 1
    assert report.quarantined == {"absurd_ms_played": 1}


def test_duplicates_and_truncation_are_found_across_chunks(ctx, tmp_path):
    _catalog(ctx)
    ctx.settings.ingest_chunk_rows = 2
    rows = [
        b"c1,l1,t1,2026-01-01T10:00:00Z,1,play",
        b"c2,l1,t1,2026-01-01T10:00:00Z,1,play",
        b"c3,l1,t1,2026-01-01T10:00:00Z,1,play",
        b"c4,l1,t1,2026-01-01T10:00:00Z,1,play",
        b"c1,l1,t1,2026-01-01T10:00:00Z,1,play",
        b"c5,l1,t1,2026-01-01T10:00:00Z,1,pl",
    ]
    report = ingest_events(ctx, _write_events(tmp_path / "chunked.csv", rows))
    assert report.ingested == 4
    assert report.quarantined == {"duplicate_event_id": 1, "truncated_row": 1}


def test_frame_row_numbers_start_where_told(ctx):
    _catalog(ctx)
    frame = pd.DataFrame(
        {
            "event_id": ["a1", "a2"],
            "listener_id": ["l1", "l1"],
            "track_id": ["t1", "nope"],
            "ts": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"],
            "ms_played": [10, 10],
            "kind": ["play", "play"],
        }
    )
    report = ingest_events_frame(ctx, frame, source="api:batch-1", first_row_number=41)
    assert report.quarantined == {"unknown_track": 1}
    with ctx.sessions() as session:
        row = session.scalars(select(QuarantinedRow)).one()
    assert (row.source, row.row_number) == ("api:batch-1", 42)
    # An event already stored counts as already present, not as new and not as quarantined.
    again = ingest_events_frame(ctx, frame.iloc[:1], source="api:batch-2")
    assert (again.ingested, again.already_present, again.quarantined) == (0, 1, {})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", b"", "empty"),
        ("columns.csv", b"event_id,listener_id\n1,2\n", r"missing column\(s\) track_id"),
        ("broken.parquet", b"PAR1" + bytes(range(256)) * 4, "not a readable Parquet file"),
        ("binary.csv", bytes(range(256)) * 8, "not UTF-8"),
    ],
)
def test_unreadable_file_raises_a_clear_error(ctx, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(IngestFileError, match=message) as err:
        ingest_events(ctx, path)
    assert name in str(err.value)
    assert _count(ctx, ListeningEvent) == 0


def test_last_row_without_newline_is_fine_when_complete(ctx, tmp_path):
    _catalog(ctx)
    rows = [b"n1,l1,t1,2026-01-01T10:00:00Z,1,play", b"n2,l1,t1,2026-01-01T10:00:00Z,1,play"]
    report = ingest_events(ctx, _write_events(tmp_path / "no_newline.csv", rows))
    assert (report.ingested, report.quarantined) == (2, {})


def test_duplicate_finder_across_many_chunks():
    from personalize.ingest.events import _DuplicateFinder

    finder = _DuplicateFinder()
    ids = [f"id{i}" for i in range(1000)]
    first = finder.check(pd.Series(ids, dtype=object), np.ones(1000, bool), np.arange(1, 1001))
    assert not first.any()
    again = finder.check(
        pd.Series([*ids[::-1], "new"], dtype=object), np.ones(1001, bool), np.arange(1001, 2002)
    )
    assert list(again[:1000]) == list(range(1000, 0, -1))  # each points at its first row
    assert again[1000] == 0
    # A chunk whose ids are longer, or not ASCII, still finds the earlier chunks' ids (and repeats inside it).
    mixed = pd.Series(["id7", "événement-" + "x" * 40, "id999", "événement-" + "x" * 40], dtype=object)
    third = finder.check(mixed, np.ones(4, bool), np.arange(2002, 2006))
    assert list(third) == [8, 0, 1000, 2003]
    fourth = finder.check(
        pd.Series(["événement-" + "x" * 40, "id1"], dtype=object), np.ones(2, bool), np.arange(2006, 2008)
    )
    assert list(fourth) == [2003, 2]


def test_semicolon_separated_csv_is_read(ctx, tmp_path):
    _catalog(ctx)
    path = tmp_path / "excel.csv"
    path.write_text("event_id;listener_id;track_id;ts;ms_played;kind\nx1;l1;t1;2026-01-01T00:00:00Z;5;play\n")
    assert ingest_events(ctx, path).ingested == 1


ODD_BUT_SERVABLE = ["user:42", "ana@example.com", "isrc.USRC17607839", "a-b_c", "anna+music@example.com",
                    "jürgen.müller", "O'Brien", "user 42", ".hidden", "50%off", "~root"]  # fmt: skip
NOT_SERVABLE = ["a/b", "..", "back\\slash", "tab\there", "nbsp\u00a0inside"]


def test_ids_keep_the_alphabet_the_api_can_serve(ctx, tmp_path):
    """Listener and track ids the API could not take back in a URL are quarantined at ingest with a detail
    naming the field and the rule; ids as people have them (e-mail addresses with '+', spaces, apostrophes,
    non-ASCII letters) go in."""
    _catalog(ctx)
    catalog = pd.DataFrame(
        {
            "track_id": ["isrc.USRC17607839", "track 2", "a/b"],
            "title": ["Ok", "Space", "Slash"],
            "duration_s": [180.0] * 3,
            "tempo_bpm": [100.0] * 3,
            "key": ["C major"] * 3,
            "meter": ["4/4"] * 3,
            "programs": ["0"] * 3,
        }
    )
    report = ingest_catalog_frame(ctx, catalog, source="odd-catalog")
    assert report.ingested == 2 and report.quarantined == {"unparseable_field": 1}

    listeners = ODD_BUT_SERVABLE + NOT_SERVABLE
    rows = [
        f"o{i},{listener},{'isrc.USRC17607839' if i % 2 else 't1'},2026-01-01T10:00:00Z,1000,play".encode()
        for i, listener in enumerate(listeners)
    ]
    path = _write_events(tmp_path / "odd.csv", rows)
    path.write_bytes(path.read_bytes() + b"\n")
    report = ingest_events(ctx, path)
    assert report.ingested == len(ODD_BUT_SERVABLE)
    assert report.quarantined == {"unparseable_field": len(NOT_SERVABLE)}
    with ctx.sessions() as session:
        stored = set(session.scalars(select(Listener.listener_id)))
        details = {
            q.row_number: q.detail
            for q in session.scalars(select(QuarantinedRow))
            if q.source == str(path.resolve())
        }
    assert stored >= set(ODD_BUT_SERVABLE) and not stored & set(NOT_SERVABLE)
    for offset, listener in enumerate(NOT_SERVABLE):
        detail = details[len(ODD_BUT_SERVABLE) + offset + 1]
        assert f"listener_id {listener!r}" in detail and "without '/', '\\'" in detail, detail


def test_nul_and_other_control_characters_in_a_file_are_quarantined_and_the_rest_stored(ctx, tmp_path):
    """A NUL byte (which PostgreSQL cannot store in text) or another control character in any field of an
    events file: that row is quarantined with the field and the character named, the good rows go in."""
    _catalog(ctx)
    rows = [
        b"c1,l1,t1,2026-01-01T10:00:00Z,1000,play",
        b"c\x002,l1,t1,2026-01-01T10:00:00Z,1000,play",
        b"c3,l1,t2,2026-01-01T10:00:00Z,1000,pl\x00ay",
        b"c4,l1,t2,2026-01-01T10:00:00Z,10\x0700,play",
        b"c5,l\x001,t1,2026-01-01T10:00:00Z,1000,play",
        b"c6,l2,t2,2026-01-01T10:00:00Z,1000,skip",
    ]
    path = _write_events(tmp_path / "nul.csv", rows)
    path.write_bytes(path.read_bytes() + b"\n")
    report = ingest_events(ctx, path)
    assert report.rows_read == 6 and report.ingested == 2
    assert report.quarantined == {"control_character": 3, "unparseable_field": 1}
    with ctx.sessions() as session:
        stored = set(session.scalars(select(ListeningEvent.event_id)))
        details = {q.row_number: (q.reason, q.detail) for q in session.scalars(select(QuarantinedRow))}
    assert stored == {"c1", "c6"}
    assert details[2][0] == "control_character" and "event_id holds U+0000" in details[2][1]
    assert "kind holds U+0000" in details[3][1] and "ms_played holds U+0007" in details[4][1]
    assert details[5][0] == "unparseable_field" and "listener_id" in details[5][1]
