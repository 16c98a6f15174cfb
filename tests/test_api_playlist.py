"""Playlists and tracks over HTTP: newest published or by date, pagination, reasons, clear errors."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sample_world import seed

from personalize.api.app import create_app
from personalize.api.keys import create_key


@pytest.fixture
def api(ctx):
    world = seed(ctx, n_listeners=3, n_dates=2, playlist_size=5)
    key = create_key(ctx, "test-backend").key
    with TestClient(create_app(ctx), headers={"X-API-Key": key}) as client:
        yield client, world


def test_latest_published_playlist_with_signed_audio_urls(api):
    client, world = api
    resp = client.get("/v1/listeners/L0001/playlist")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # the newest *published* date, not the newer one still building
    assert body["run_date"] == max(world.run_dates).isoformat()
    assert [i["track_id"] for i in body["items"]] == world.latest("L0001")
    first = body["items"][0]
    assert first["reason"].startswith(f"{first['tempo_bpm']:.0f} BPM")
    assert first["key"] in ("D minor", "G major", "A minor", "C major", "F major")
    assert "piano" in first["instruments"]
    assert "/v1/tracks/" in first["audio_url"] and "sig=" in first["audio_url"]
    assert body["next_cursor"] is None and body["total_items"] == 5
    assert body["published_at"] == f"{body['run_date']}T04:00:00+00:00"


def test_playlist_of_a_given_date_and_missing_date(api):
    client, world = api
    day = min(world.run_dates)
    body = client.get("/v1/listeners/L0002/playlist", params={"date": day.isoformat()}).json()
    assert [i["track_id"] for i in body["items"]] == world.playlists[("L0002", day)]
    resp = client.get("/v1/listeners/L0002/playlist", params={"date": "2020-01-01"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "no_playlist"
    assert "L0002" in resp.json()["error"]["message"]
    # a playlist still building is not visible even by date
    building = (max(world.run_dates) + dt.timedelta(days=1)).isoformat()
    assert client.get("/v1/listeners/L0002/playlist", params={"date": building}).status_code == 404


def test_playlist_pagination_walks_every_item_once(api):
    client, world = api
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/listeners/L0000/playlist", params=params).json()
        assert body["total_items"] == 5
        seen += [i["track_id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == world.latest("L0000")


def test_playlist_history_pages_newest_first(api):
    client, world = api
    first = client.get("/v1/listeners/L0000/playlists", params={"limit": 1}).json()
    assert [p["run_date"] for p in first["playlists"]] == [max(world.run_dates).isoformat()]
    assert first["playlists"][0]["n_items"] == 5
    published = dt.datetime.fromisoformat(first["playlists"][0]["published_at"])
    assert published.utcoffset() == dt.timedelta(0)  # RFC 3339: always with an offset
    second = client.get(
        "/v1/listeners/L0000/playlists", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert [p["run_date"] for p in second["playlists"]] == [min(world.run_dates).isoformat()]
    assert second["next_cursor"] is None


def test_unknown_listener_and_track_get_clear_errors(api):
    client, _ = api
    resp = client.get("/v1/listeners/nobody/playlist")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"code": "unknown_listener", "message": "Listener nobody does not exist."}
    }
    resp = client.get("/v1/tracks/no-such-track")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_track"
    resp = client.get("/v1/listeners/L0000/playlist", params={"limit": 0})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"
    assert "limit" in resp.json()["error"]["message"]


def test_track_detail_with_reason_in_listener_context(api):
    client, world = api
    track_id = world.latest("L0001")[2]
    plain = client.get(f"/v1/tracks/{track_id}").json()
    assert plain["playlist_context"] is None
    assert plain["controls"]["tempo_bpm"] == plain["tempo_bpm"]
    assert plain["measured"]["key_pc"] == plain["key_pc"]
    assert plain["audio"]["media_type"] == "audio/ogg"
    body = client.get(f"/v1/tracks/{track_id}", params={"listener_id": "L0001"}).json()
    context = body["playlist_context"]
    assert context["position"] == 3 and context["run_date"] == max(world.run_dates).isoformat()
    assert "BPM" in context["reason"] and "sig=" in context["audio_url"]
    # another listener never received it: no context, no audio URL for them
    other = client.get(f"/v1/tracks/{track_id}", params={"listener_id": "L0002"}).json()
    assert other["playlist_context"] is None


def test_healthz_needs_no_key(ctx):
    with TestClient(create_app(ctx)) as client:
        body = client.get("/healthz").json()
    assert body == {"status": "ok", "database": ctx.dialect}
