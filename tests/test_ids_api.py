"""Ids as people have them (``anna+music@example.com``, ``jürgen.müller``, ``O'Brien``, ``user 42``): taken in
by ingest and the API alike, percent-encoded in every URL the API hands out, decoded back by the API."""

from __future__ import annotations

import datetime as dt
import unicodedata
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sample_world import seed
from sqlalchemy import text

from personalize.api.app import create_app
from personalize.api.keys import create_key
from personalize.ids import id_problem, url_id

PEOPLE = ["anna+music@example.com", "jürgen.müller", "O'Brien", "user 42", "50%off", "名前?#&="]


@pytest.fixture
def api(ctx):
    world = seed(ctx, n_listeners=2, n_dates=1, playlist_size=3, building_date=False)
    key = create_key(ctx, "test-backend").key
    with TestClient(create_app(ctx), headers={"X-API-Key": key}) as client:
        yield client, world, ctx


def test_ids_people_use_go_in_and_come_back_through_urls(api):
    client, world, ctx = api
    track = world.latest("L0000")[0]
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    batch = [
        {
            "event_id": f"e{i}",
            "listener_id": who,
            "track_id": track,
            "ts": ts,
            "ms_played": 1000,
            "kind": "play",
        }
        for i, who in enumerate(PEOPLE)
    ]
    body = client.post("/v1/events", json={"events": batch}).json()
    assert (body["accepted"], body["quarantined"]) == (len(PEOPLE), 0), body
    for who in PEOPLE:
        # known, but no playlist yet: the id was decoded from the URL and found
        resp = client.get(f"/v1/listeners/{url_id(who)}/playlist")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "no_playlist", (who, resp.text)
    # The same listener typed with a combining umlaut (NFD) is the stored one.
    nfd = unicodedata.normalize("NFD", "jürgen.müller")
    resp = client.get(f"/v1/listeners/{url_id(nfd)}/playlist")
    assert resp.json()["error"]["code"] == "no_playlist"

    # Give "anna+music@example.com" L0001's playlist: its signed audio URL carries the '+' encoded.
    with ctx.engine.begin() as conn:
        conn.execute(
            text("UPDATE playlists SET listener_id = :who WHERE listener_id = 'L0001'"), {"who": PEOPLE[0]}
        )
    resp = client.get(f"/v1/listeners/{url_id(PEOPLE[0])}/playlist")
    assert resp.status_code == 200, resp.text
    audio = urlsplit(resp.json()["items"][0]["audio_url"])
    assert "listener=anna%2Bmusic%40example.com" in audio.query
    query = {k: v[0] for k, v in parse_qs(audio.query).items()}
    assert query["listener"] == PEOPLE[0]
    assert client.get(audio.path, params=query).status_code == 200

    # The player link of "user 42" is a path with the space encoded; following it opens the page.
    resp = client.post(f"/v1/listeners/{url_id('user 42')}/player-link")
    assert resp.status_code == 200, resp.text
    link = urlsplit(resp.json()["url"])
    assert link.path == "/player/user%2042"
    page = client.get(link.path, params={k: v[0] for k, v in parse_qs(link.query).items()})
    assert page.status_code in (200, 404), page.text  # 404: the page says there is no playlist yet


@pytest.mark.parametrize(
    ("encoded", "problem"),
    [
        ("a%5Cb", "'\\\\'"),
        ("x%00y", "U+0000"),
        ("tab%09in", "U+0009"),
        ("%20padded", "space"),
        ("x" * 65, "longer than 64"),
    ],
)
def test_ids_that_could_be_paths_or_are_unprintable_are_refused(api, encoded, problem):
    client, _, _ = api
    resp = client.get(f"/v1/listeners/{encoded}/playlist")
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request", resp.text
    assert problem in resp.text


def test_an_encoded_slash_never_reaches_a_listener(api):
    client, _, _ = api
    resp = client.get("/v1/listeners/L0000%2F..%2FL0001/playlist")  # decoded, it is another path
    assert resp.status_code in (404, 422) and resp.json()["error"]["code"] in ("not_found", "invalid_request")


def test_the_rule_in_words():
    for good in PEOPLE:
        assert id_problem(good) is None, good
    assert id_problem("..") and id_problem("a/b") and id_problem("nbsp\u00a0inside") and id_problem("")
