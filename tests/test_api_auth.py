"""Every refusal: API keys (missing, wrong, revoked), signed audio and player URLs (expired, tampered,
another listener's), and path-like ids. Nothing from a request ever names a file."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sample_world import seed

from personalize.api.app import create_app
from personalize.api.keys import create_key, list_keys, revoke_key
from personalize.api.signing import Signer, load_signing_secret


@pytest.fixture
def api(ctx):
    world = seed(ctx, n_listeners=2, n_dates=1, playlist_size=3)
    created = create_key(ctx, "test-backend")
    with TestClient(create_app(ctx)) as client:
        yield client, world, created, ctx


def _audio_path(client, key, listener_id, index=0):
    body = client.get(f"/v1/listeners/{listener_id}/playlist", headers={"X-API-Key": key}).json()
    url = urlsplit(body["items"][index]["audio_url"])
    return url.path, {k: v[0] for k, v in parse_qs(url.query).items()}


def _code(resp):
    return resp.json()["error"]["code"]


def test_key_is_stored_only_as_a_hash(api):
    _, _, created, ctx = api
    from sqlalchemy import select

    from personalize.db.models import ApiKey

    with ctx.sessions() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == created.prefix))
    assert created.key not in (row.key_hash, row.prefix, row.name)
    assert len(row.key_hash) == 64 and created.key.startswith(f"pz_{created.prefix}_")


def test_missing_wrong_and_revoked_keys_are_refused(api):
    client, _, created, ctx = api
    path = "/v1/listeners/L0000/playlist"
    assert client.get(path, headers={"X-API-Key": created.key}).status_code == 200
    resp = client.get(path)
    assert resp.status_code == 401 and _code(resp) == "missing_api_key"
    # right prefix, wrong secret; and a string that is not a key at all
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    for bad in (forged, "pz_00000000_" + "x" * 43, "letmein"):
        resp = client.get(path, headers={"X-API-Key": bad})
        assert resp.status_code == 401 and _code(resp) == "invalid_api_key", bad
    revoke_key(ctx, created.prefix)
    assert [k.revoked_at is not None for k in list_keys(ctx)] == [True]
    resp = client.get(path, headers={"X-API-Key": created.key})
    assert resp.status_code == 401 and _code(resp) == "invalid_api_key"
    for endpoint in ("/v1/tracks/x1", "/v1/listeners/L0000/playlists"):
        assert client.get(endpoint, headers={"X-API-Key": created.key}).status_code == 401
    assert (
        client.post("/v1/events", json={"events": []}, headers={"X-API-Key": created.key}).status_code == 401
    )


def test_signed_audio_url_plays_and_every_tampering_is_refused(api):
    client, _, created, ctx = api
    path, query = _audio_path(client, created.key, "L0000")
    assert client.get(path, params=query).status_code == 200
    other_path, other_query = _audio_path(client, created.key, "L0001")

    def refused(p, q, status=403, code="bad_signature"):
        resp = client.get(p, params=q)
        assert resp.status_code == status, (p, q, resp.text)
        assert _code(resp) == code
        assert not resp.headers["content-type"].startswith("audio/")

    flipped = query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")
    refused(path, {**query, "sig": flipped})
    refused(path, {**query, "expires": str(int(query["expires"]) + 3600)})  # stretching the expiry
    refused(path, {**query, "listener": "L0001"})  # L0000's URL claimed by L0001
    refused(other_path, query)  # L0000's signature on L0001's track
    refused(path, {**other_query})  # L0001's signature on L0000's track
    refused(path, {k: v for k, v in query.items() if k != "sig"}, 401, "signature_required")
    refused(path, {}, 401, "signature_required")
    # a correctly signed URL whose time is up
    signer = Signer(load_signing_secret(ctx.settings))
    track_id = path.split("/")[3]
    past = int(time.time()) - 5
    expired = {
        "listener": "L0000",
        "expires": str(past),
        "sig": signer.signature("audio", "L0000", track_id, past),
    }
    refused(path, expired, 403, "url_expired")
    # a URL signed with some other secret
    forged = Signer(b"not-the-server-secret-at-all").signature("audio", "L0000", track_id, past + 3600)
    refused(path, {"listener": "L0000", "expires": str(past + 3600), "sig": forged})


def test_signing_secret_from_settings_or_persisted_once(tmp_path):
    from personalize.config import get_settings

    settings = get_settings(data_dir=tmp_path / "d")
    first = load_signing_secret(settings)
    assert load_signing_secret(settings) == first and len(first) == 64
    assert (tmp_path / "d" / "signing_secret").stat().st_mode & 0o077 == 0  # owner-only
    assert load_signing_secret(get_settings(data_dir=tmp_path / "d", signing_secret="s" * 32)) == b"s" * 32
    with pytest.raises(ValueError, match="too short"):
        load_signing_secret(get_settings(data_dir=tmp_path / "d", signing_secret="short"))


PATH_LIKE = [
    "/v1/tracks/..%2F..%2Fetc%2Fpasswd/audio",
    "/v1/tracks/..%2Fpersonalize.db",
    "/v1/tracks/%2Fetc%2Fpasswd",
    "/v1/tracks/a.ogg",
    "/v1/tracks/..",
    "/v1/tracks/~root",
    "/v1/listeners/..%2F..%2Fsigning_secret/playlist",
    "/v1/listeners/L0000%00/playlist",
    "/player/..%2Fsigning_secret",
]


def test_path_like_ids_are_refused(api):
    client, _, created, _ = api
    for path in PATH_LIKE:
        resp = client.get(path, headers={"X-API-Key": created.key})
        assert resp.status_code in (404, 422), (path, resp.text)
        assert set(resp.json()) == {"error"}
        assert resp.headers["content-type"] == "application/json"


def test_path_like_listener_in_signed_audio_query_is_refused(api):
    client, _, created, _ = api
    path, query = _audio_path(client, created.key, "L0000")
    resp = client.get(path, params={**query, "listener": "../../etc/passwd"})
    assert resp.status_code == 422 and _code(resp) == "invalid_request"


def test_player_link_is_bound_to_its_listener_and_expires(api):
    client, _, created, ctx = api
    resp = client.post("/v1/listeners/L0000/player-link", headers={"X-API-Key": created.key})
    assert resp.status_code == 200
    link = urlsplit(resp.json()["url"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    page = client.get(link.path, params=query)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert client.post("/v1/listeners/L0000/player-link").status_code == 401
    assert client.get("/player/L0001", params=query).status_code == 403  # L0000's link for L0001
    assert client.get(link.path, params={**query, "sig": "0" * 64}).status_code == 403
    assert client.get(link.path).status_code == 401
    signer = Signer(load_signing_secret(ctx.settings))
    past = int(time.time()) - 1
    resp = client.get(
        link.path, params={"expires": past, "sig": signer.signature("player", "L0000", "", past)}
    )
    assert resp.status_code == 403 and _code(resp) == "url_expired"


def test_every_id_ingest_keeps_is_routed_and_no_other(api):
    """The API takes exactly the ids ingest stores (colons, @, dots, '+', spaces and non-ASCII letters
    included, percent-encoded): such an unknown listener is a 404 of its own, not a refused request; an id
    ingest would refuse is refused here too."""
    client, _, created, _ = api
    headers = {"X-API-Key": created.key}
    for listener in (
        "user:42",
        "ana@example.com",
        "isrc.USRC17607839",
        "ana%20smith",
        "50%25off",
        "m%C3%BCller",
        ".hidden",
    ):
        resp = client.get(f"/v1/listeners/{listener}/playlist", headers=headers)
        assert resp.status_code == 404 and _code(resp) == "unknown_listener", (listener, resp.text)
    for listener in ("..", "a%5Cb", "nul%00", "%20lead", "nbsp%C2%A0x"):
        resp = client.get(f"/v1/listeners/{listener}/playlist", headers=headers)
        assert resp.status_code in (404, 422), (listener, resp.text)
        assert _code(resp) in ("not_found", "invalid_request"), (listener, resp.text)
