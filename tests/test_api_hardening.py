"""What the API does with hostile or broken input: bodies too large (declared or streamed), a body sent
without a key, absurd Range values, a forged Host header, a key over its rate, a database that does not
answer, and events carrying NUL or other control characters. Every refusal is a JSON body."""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from local_server import local_server
from sample_world import seed
from sqlalchemy import func, select, text

from personalize.api.app import create_app
from personalize.api.keys import create_key
from personalize.api.signing import Signer, load_signing_secret
from personalize.context import make_context
from personalize.db.models import ListeningEvent, QuarantinedRow
from personalize.db.session import upgrade

SERVED_BODY_MAX_BYTES = 64 * 1024


def _error(resp: httpx.Response) -> dict[str, str]:
    assert resp.headers["content-type"].startswith("application/json"), resp.text[:200]
    return resp.json()["error"]


def _count(ctx, model) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)))


def _event(event_id, track_id, **fields):
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    return {"event_id": event_id, "listener_id": "L0000", "track_id": track_id, "ts": ts, "ms_played": 1500,
            "kind": "play", **fields}  # fmt: skip


@pytest.fixture
def api(ctx):
    world = seed(ctx, n_listeners=2, n_dates=1, playlist_size=3, building_date=False)
    key = create_key(ctx, "test-backend").key
    with TestClient(create_app(ctx), headers={"X-API-Key": key}) as client:
        yield client, world, ctx


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`personalize serve` on a seeded SQLite world, with a 64 KiB body limit."""
    tmp = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{tmp / 'personalize.db'}"
    upgrade(url)
    ctx = make_context(data_dir=tmp / "data", database_url=url)
    world = seed(ctx, n_listeners=1, n_dates=1, playlist_size=2, building_date=False)
    key = create_key(ctx, "hardening").key
    settings = {"PERSONALIZE_REQUEST_BODY_MAX_BYTES": str(SERVED_BODY_MAX_BYTES)}
    with local_server(tmp / "data", url, settings=settings) as server:
        yield server.base_url, key, world, ctx
    ctx.engine.dispose()


def _stream_without_end(base_url: str, headers: dict[str, str], chunks: int, chunk_bytes: int) -> bytes:
    """POST /v1/events with a chunked body that never ends: send ``chunks`` chunks, then read what the
    server answers. A server that waited for the whole body would answer nothing (the read times out)."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    lines = [
        "POST /v1/events HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.sendall(b'%x\r\n{"events": [\r\n' % len(b'{"events": ['))
        payload = b'{"event_id": "x"},' * (chunk_bytes // 18)
        try:
            for _ in range(chunks):
                sock.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what follows reads its answer
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    return answer


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body)


def test_a_streamed_body_without_a_key_is_refused_before_it_is_read(served):
    base, _, _, _ = served
    # 1 MiB sent of a body that never ends: the 401 comes anyway, so the server read no further.
    status, body = _status_and_json(_stream_without_end(base, {}, chunks=64, chunk_bytes=16 * 1024))
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    status, body = _status_and_json(
        _stream_without_end(base, {"X-API-Key": "pz_00000000_" + "x" * 43}, chunks=64, chunk_bytes=16 * 1024)
    )
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_a_streamed_body_over_the_limit_is_refused_with_413(served):
    base, key, _, ctx = served
    # 1 MiB of chunks against a 64 KiB limit, no Content-Length: refused once the limit is passed.
    answer = _stream_without_end(base, {"X-API-Key": key}, chunks=64, chunk_bytes=16 * 1024)
    status, body = _status_and_json(answer)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert f"{SERVED_BODY_MAX_BYTES:,}" in body["error"]["message"]
    assert _count(ctx, ListeningEvent) == _count(ctx, QuarantinedRow) == 0
    # a declared length over the limit is refused before a byte is read, as before
    resp = httpx.post(
        f"{base}/v1/events", content=b" " * (SERVED_BODY_MAX_BYTES + 1), headers={"X-API-Key": key}
    )
    assert resp.status_code == 413 and _error(resp)["code"] == "payload_too_large"


def test_signed_urls_use_the_configured_base_url_not_the_host_header(served):
    base, key, _, _ = served
    resp = httpx.get(
        f"{base}/v1/listeners/L0000/playlist", headers={"X-API-Key": key, "Host": "evil.example"}
    )
    assert resp.status_code == 200
    urls = [item["audio_url"] for item in resp.json()["items"]]
    assert urls and all(u.startswith(f"{base}/v1/tracks/") for u in urls)  # serve's own address
    assert httpx.get(urls[0]).status_code == 200


def test_public_base_url_setting_and_no_store_on_signed_urls(api):
    client, world, ctx = api
    ctx.settings.public_base_url = "https://api.example.com"
    client = TestClient(create_app(ctx), headers=client.headers)
    track_id = world.latest("L0000")[0]
    for path in ("/v1/listeners/L0000/playlist", f"/v1/tracks/{track_id}?listener_id=L0000"):
        resp = client.get(path, headers={"Host": "evil.example"})
        assert resp.status_code == 200
        assert "evil.example" not in resp.text and "https://api.example.com/v1/tracks/" in resp.text
        assert resp.headers["cache-control"] == "no-store"
        assert resp.headers["x-content-type-options"] == "nosniff"
    link = client.post("/v1/listeners/L0000/player-link")
    assert link.status_code == 200 and link.headers["cache-control"] == "no-store"
    assert link.headers["x-content-type-options"] == "nosniff"


def _audio(client) -> tuple[str, dict[str, str], int]:
    item = client.get("/v1/listeners/L0000/playlist").json()["items"][0]
    url = urlsplit(item["audio_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    size = len(client.get(url.path, params=query).content)
    return url.path, query, size


def test_absurd_range_values_answer_416(api):
    client, _, _ = api
    path, query, size = _audio(client)
    huge = "9" * 5000
    for header in (f"bytes={huge}-", f"bytes=0-{huge}", f"bytes=-{huge}", f"bytes={huge}-{huge}"):
        resp = client.get(path, params=query, headers={"Range": header})
        assert resp.status_code == 416, header[:20]
        assert _error(resp)["code"] == "range_not_satisfiable"
        assert resp.headers["content-range"] == f"bytes */{size}"
        assert len(resp.text) < 500  # the header is not echoed back whole
    assert client.get(path, params=query, headers={"Range": "bytes=0-99"}).status_code == 206


def test_head_on_audio_answers_like_get_without_the_body(api):
    client, _, _ = api
    path, query, size = _audio(client)
    resp = client.head(path, params=query)
    assert resp.status_code == 200 and resp.content == b""
    assert int(resp.headers["content-length"]) == size and resp.headers["content-type"] == "audio/ogg"
    etag = resp.headers["etag"]
    assert client.get(path, params=query).headers["etag"] == etag
    part = client.head(path, params=query, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 10-19/{size}"
    assert client.head(path, params=query, headers={"If-None-Match": etag}).status_code == 304
    assert client.head(path, params={**query, "sig": "0" * 64}).status_code == 403
    assert client.head(path).status_code == 401


def test_a_key_over_its_rate_gets_429_with_retry_after(api):
    client, _, ctx = api
    ctx.settings.api_key_rate_per_s = 0.5
    ctx.settings.api_key_burst = 3
    limited = TestClient(create_app(ctx), headers=client.headers)
    other = create_key(ctx, "other-backend").key
    statuses = [limited.get("/v1/listeners/L0000/playlists").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = limited.get("/v1/listeners/L0000/playlist")
    assert resp.status_code == 429 and _error(resp)["code"] == "rate_limited"
    assert 1 <= int(resp.headers["retry-after"]) <= 2
    # the limit is the key's own: another key is served, and so is the first one once it has waited
    assert limited.get("/v1/listeners/L0000/playlist", headers={"X-API-Key": other}).status_code == 200
    time.sleep(int(resp.headers["retry-after"]))
    assert limited.get("/v1/listeners/L0000/playlist").status_code == 200


def test_the_rate_limit_holds_across_worker_processes(tmp_path: Path):
    """Two `personalize serve` workers share each key's bucket: a burst of requests on fresh connections
    (spread over both workers by the kernel) gets no more than the burst plus what the rate refilled."""
    url = f"sqlite:///{tmp_path / 'personalize.db'}"
    upgrade(url)
    ctx = make_context(data_dir=tmp_path / "data", database_url=url)
    seed(ctx, n_listeners=1, n_dates=1, playlist_size=2, building_date=False)
    key = create_key(ctx, "two-workers").key
    rate, burst = 1.0, 4
    settings = {"PERSONALIZE_API_KEY_RATE_PER_S": str(rate), "PERSONALIZE_API_KEY_BURST": str(burst)}
    with local_server(tmp_path / "data", url, workers=2, settings=settings) as server:
        started = time.monotonic()
        statuses = []
        for _ in range(30):
            with httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}) as fresh:
                statuses.append(fresh.get("/v1/listeners/L0000/playlist").status_code)
        elapsed = time.monotonic() - started
    ctx.engine.dispose()
    assert set(statuses) <= {200, 429}
    assert statuses[:burst] == [200] * burst
    # One worker's own bucket alone would let 2 x burst through in the first second.
    assert statuses.count(200) <= burst + math.ceil(elapsed * rate), (statuses, elapsed)


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_connections_the_database_dropped_cost_no_request(api):
    """The API reads without a ping per checkout: when the server drops its pooled connections (a restart,
    an idle timeout), the next requests are still answered, each retried once on a fresh connection."""
    client, _, ctx = api
    for _ in range(3):  # the read pool now holds live connections
        assert client.get("/v1/listeners/L0000/playlist").status_code == 200
    with ctx.engine.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    assert len(dropped) >= 1
    assert [client.get("/v1/listeners/L0000/playlist").status_code for _ in range(5)] == [200] * 5
    assert (
        client.get(
            "/v1/tracks/" + client.get("/v1/listeners/L0000/playlist").json()["items"][0]["track_id"]
        ).status_code
        == 200
    )


def test_the_key_is_checked_before_the_body(api):
    client, _, _ = api
    # Without a key, even a body that is not JSON at all gets 401: it was never parsed.
    resp = client.post("/v1/events", content=b"{not json", headers={"X-API-Key": ""})
    assert resp.status_code == 401 and _error(resp)["code"] == "missing_api_key"
    resp = client.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and _error(resp)["code"] == "invalid_request"


def test_events_with_control_characters_are_quarantined_and_the_rest_stored(api):
    client, world, ctx = api
    t0, t1 = world.latest("L0000")[:2]
    batch = [
        _event("ok-1", t0),
        _event("nul\x00id", t0),
        _event("bell\x07id", t1),
        _event("ok-2", t1, kind="li\x00ke"),
        _event("ok-3", t0, listener_id="L\x000000"),
        _event("ok-4", t1),
    ]
    resp = client.post("/v1/events", json={"events": batch})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["received"], body["accepted"], body["quarantined"]) == (6, 2, 4)
    refused = {q["index"]: q for q in body["quarantined_events"]}
    assert set(refused) == {1, 2, 3, 4}
    assert [refused[i]["reason"] for i in (1, 2, 3)] == ["control_character"] * 3
    assert refused[1]["event_id"] == "nul\x00id" and "event_id holds U+0000" in refused[1]["detail"]
    assert "event_id holds U+0007" in refused[2]["detail"] and "kind holds U+0000" in refused[3]["detail"]
    # ids keep the alphabet the API serves them by, which has no control characters either
    assert refused[4]["reason"] == "unparseable_field" and "listener_id 'L\\x000000'" in refused[4]["detail"]
    with ctx.engine.connect() as conn:
        stored = set(conn.scalars(select(ListeningEvent.event_id)))
        reasons = sorted(conn.scalars(select(QuarantinedRow.reason)))
    assert stored == {"ok-1", "ok-4"} and reasons == ["control_character"] * 3 + ["unparseable_field"]
    # a retry of the same batch stores nothing twice and refuses the same events
    again = client.post("/v1/events", json={"events": batch}).json()
    assert (again["accepted"], again["duplicates"], again["quarantined"]) == (0, 2, 4)


def _every_endpoint(ctx) -> list[tuple[str, str]]:
    signer = Signer(load_signing_secret(ctx.settings))
    expires = int(time.time()) + 600
    audio = f"listener=L0000&expires={expires}&sig={signer.signature('audio', 'L0000', 't1', expires)}"
    player = f"expires={expires}&sig={signer.signature('player', 'L0000', '', expires)}"
    return [
        ("GET", "/healthz"),
        ("GET", "/v1/listeners/L0000/playlist"),
        ("GET", "/v1/listeners/L0000/playlists"),
        ("GET", "/v1/tracks/t1"),
        ("GET", f"/v1/tracks/t1/audio?{audio}"),
        ("HEAD", f"/v1/tracks/t1/audio?{audio}"),
        ("POST", "/v1/listeners/L0000/player-link"),
        ("GET", f"/player/L0000?{player}"),
        ("POST", "/v1/events"),
    ]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_database_that_does_not_answer_gives_503_with_retry_after_everywhere(engine, tmp_path: Path):
    if engine == "sqlite":
        (tmp_path / "gone").mkdir()
        url = f"sqlite:///{tmp_path / 'gone'}"  # a folder where the file should be: it cannot be opened
    else:
        url = "postgresql+psycopg://postgres@127.0.0.1:1/personalize"  # nothing listens on port 1
    ctx = make_context(data_dir=tmp_path / "data", database_url=url)
    client = TestClient(create_app(ctx), headers={"X-API-Key": "pz_00000000_" + "x" * 43})
    for method, path in _every_endpoint(ctx):
        resp = client.request(method, path, json={"events": []} if method == "POST" else None)
        assert resp.status_code == 503, (method, path, resp.status_code, resp.text[:200])
        assert resp.headers["retry-after"] == "5"
        if method != "HEAD":
            assert _error(resp)["code"] == "database_unavailable", path


def test_a_database_without_schema_gives_503_not_a_plain_500(tmp_path: Path):
    ctx = make_context(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    client = TestClient(create_app(ctx), headers={"X-API-Key": "pz_00000000_" + "x" * 43})
    resp = client.get("/v1/listeners/L0000/playlist")
    assert resp.status_code == 503 and "personalize db upgrade" in _error(resp)["message"]
