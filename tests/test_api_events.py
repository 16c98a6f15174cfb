"""POST /v1/events: checked exactly like file ingestion, bad events quarantined with reasons, idempotent."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sample_world import seed
from sqlalchemy import func, select

from personalize.api.app import create_app
from personalize.api.keys import create_key
from personalize.db.models import ListeningEvent, QuarantinedRow


@pytest.fixture
def api(ctx):
    world = seed(ctx, n_listeners=2, n_dates=1, playlist_size=3, building_date=False)
    key = create_key(ctx, "test-backend").key
    with TestClient(create_app(ctx), headers={"X-API-Key": key}) as client:
        yield client, world, ctx


def _event(event_id, track_id, kind="play", ms_played=3000, listener_id="L0000", ts=None):
    ts = ts or (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    return {"event_id": event_id, "listener_id": listener_id, "track_id": track_id, "ts": ts,
            "ms_played": ms_played, "kind": kind}  # fmt: skip


def _count(ctx, model):
    with ctx.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))


def test_good_and_bad_events_in_one_batch(api):
    client, world, ctx = api
    t0, t1 = world.latest("L0000")[:2]
    batch = [
        _event("e1", t0, "play", 3500),
        _event("e2", t1, "like", 0),
        _event("e3", t0, "skip", 900),
        _event("e4", "no-such-track"),
        _event("e5", t0, "shout"),
        _event("e6", t0, "play", -5),
        _event("e7", t0, "play", 3000, ts="yesterday-ish"),
        _event("e8", t0, "play", 10_000_000),  # far longer than the 4 s track
        {"event_id": "e9", "listener_id": "L0000", "track_id": t0},  # fields missing
        _event("e1", t1),  # the same id twice in one batch
    ]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["received"], body["accepted"], body["duplicates"], body["quarantined"]) == (10, 3, 0, 7)
    reasons = {q["index"]: q["reason"] for q in body["quarantined_events"]}
    assert reasons == {
        3: "unknown_track",
        4: "unknown_kind",
        5: "negative_ms_played",
        6: "unparseable_field",
        7: "absurd_ms_played",
        8: "missing_field",
        9: "duplicate_event_id",
    }
    by_index = {q["index"]: q for q in body["quarantined_events"]}
    assert by_index[3]["event_id"] == "e4" and "no-such-track" in by_index[3]["detail"]
    assert _count(ctx, ListeningEvent) == 3
    assert _count(ctx, QuarantinedRow) == 7
    with ctx.engine.connect() as conn:
        sources = set(conn.scalars(select(ListeningEvent.source)))
    assert len(sources) == 1 and next(iter(sources)).startswith("api:")


def test_posting_again_is_idempotent(api):
    client, world, ctx = api
    t0 = world.latest("L0001")[0]
    batch = [_event(f"x{i}", t0, "play", 1000 + i, listener_id="L0001") for i in range(5)]
    batch.append(_event("x-bad", t0, "nope", listener_id="L0001"))
    first = client.post("/v1/events", json={"events": batch}).json()
    assert (first["accepted"], first["duplicates"], first["quarantined"]) == (5, 0, 1)
    again = client.post("/v1/events", json={"events": batch}).json()
    assert (again["accepted"], again["duplicates"], again["quarantined"]) == (0, 5, 1)
    # an overlapping batch stores only the new event
    overlap = client.post(
        "/v1/events", json={"events": [*batch[:2], _event("x-new", t0, listener_id="L0001")]}
    ).json()
    assert (overlap["accepted"], overlap["duplicates"]) == (1, 2)
    assert _count(ctx, ListeningEvent) == 6
    assert _count(ctx, QuarantinedRow) == 1


def test_batch_shape_errors(api):
    client, _, ctx = api
    resp = client.post("/v1/events", json={"not_events": []})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"
    resp = client.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    too_many = [{"event_id": str(i)} for i in range(ctx.settings.events_batch_max + 1)]
    resp = client.post("/v1/events", json={"events": too_many})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "batch_too_large"
    assert client.post("/v1/events", json={"events": []}).json()["received"] == 0


def test_oversized_body_is_refused_before_it_is_read(ctx):
    ctx.settings.request_body_max_bytes = 2_000
    key = create_key(ctx, "test-backend").key
    client = TestClient(create_app(ctx), headers={"X-API-Key": key})
    events = [{"event_id": f"e{i}", "listener_id": "L0000", "track_id": "t", "ts": "2026-01-01T00:00:00Z",
               "ms_played": 1, "kind": "play"} for i in range(40)]  # fmt: skip
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large" and "2,000" in resp.json()["error"]["message"]
    assert _count(ctx, QuarantinedRow) == 0 and _count(ctx, ListeningEvent) == 0
