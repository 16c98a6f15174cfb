"""Audio over signed URLs: whole file, byte ranges, ETag revalidation, media type, missing files."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sample_world import seed
from sqlalchemy import update

from personalize.api.app import create_app
from personalize.api.keys import create_key
from personalize.db.models import Track


@pytest.fixture
def audio(ctx):
    world = seed(ctx, n_listeners=1, n_dates=1, playlist_size=2, building_date=False)
    key = create_key(ctx, "test-backend").key
    with TestClient(create_app(ctx)) as client:
        body = client.get("/v1/listeners/L0000/playlist", headers={"X-API-Key": key}).json()
        url = urlsplit(body["items"][0]["audio_url"])
        track_id = body["items"][0]["track_id"]
        with ctx.engine.connect() as conn:
            uri = conn.scalar(
                Track.__table__.select().with_only_columns(Track.audio_uri).where(Track.track_id == track_id)
            )
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        yield client, url.path, query, world.audio[uri], ctx, track_id


def test_whole_file_is_the_stored_ogg_vorbis(audio, tmp_path):
    client, path, query, data, _, _ = audio
    resp = client.get(path, params=query)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "audio/ogg"
    assert resp.headers["accept-ranges"] == "bytes"
    assert int(resp.headers["content-length"]) == len(data)
    assert resp.content == data
    (tmp_path / "got.ogg").write_bytes(resp.content)
    info = sf.info(tmp_path / "got.ogg")
    assert info.format == "OGG" and info.subtype == "VORBIS" and info.duration > 3.5


def test_byte_ranges(audio):
    client, path, query, data, _, _ = audio
    size = len(data)
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-500": (size - 500, size - 1),
        f"bytes=10-{size + 1000}": (10, size - 1),  # an end past the file is clipped
    }
    for header, (first, last) in cases.items():
        resp = client.get(path, params=query, headers={"Range": header})
        assert resp.status_code == 206, header
        assert resp.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert resp.content == data[first : last + 1]
        assert int(resp.headers["content-length"]) == last - first + 1
    resp = client.get(path, params=query, headers={"Range": f"bytes={size}-"})
    assert resp.status_code == 416 and resp.headers["content-range"] == f"bytes */{size}"
    assert resp.json()["error"]["code"] == "range_not_satisfiable"
    # several ranges or another unit: the server may send the whole file, and does
    for header in ("bytes=0-1,5-9", "items=0-3", "bytes=9-2"):
        resp = client.get(path, params=query, headers={"Range": header})
        assert resp.status_code == 200 and resp.content == data, header


def test_etag_revalidation_and_if_range(audio):
    client, path, query, data, _, _ = audio
    etag = client.get(path, params=query).headers["etag"]
    assert etag.startswith('"') and len(etag) == 66
    resp = client.get(path, params=query, headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b"" and resp.headers["etag"] == etag
    assert client.get(path, params=query, headers={"If-None-Match": '"other"'}).status_code == 200
    resp = client.get(path, params=query, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status_code == 206 and resp.content == data[:10]
    resp = client.get(path, params=query, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert resp.status_code == 200 and resp.content == data


def test_opus_media_type_and_missing_audio(audio):
    client, path, query, _, ctx, track_id = audio
    with ctx.engine.begin() as conn:
        conn.execute(update(Track).where(Track.track_id == track_id).values(audio_codec="opus"))
    assert client.get(path, params=query).headers["content-type"] == "audio/ogg; codecs=opus"
    with ctx.engine.begin() as conn:
        conn.execute(
            update(Track)
            .where(Track.track_id == track_id)
            .values(audio_uri=str(ctx.settings.data_dir / "gone.ogg"))
        )
    resp = client.get(path, params=query)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "audio_missing"
    with ctx.engine.begin() as conn:
        conn.execute(update(Track).where(Track.track_id == track_id).values(audio_uri=None))
    resp = client.get(path, params=query)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "no_audio"
