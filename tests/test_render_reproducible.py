"""Re-rendering the same MIDI gives the same bytes: the same file, the same content address, the same ETag."""

from __future__ import annotations

import datetime as dt
import io
import struct
import time

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from fresh_tracks import fresh_track
from sqlalchemy import select, update

from personalize.api.app import create_app
from personalize.api.signing import Signer, load_signing_secret
from personalize.config import get_settings
from personalize.db.models import Track
from personalize.render import decode
from personalize.render.batch import RenderJob, render_batch
from personalize.render.encode import ogg_crc, ogg_pages
from personalize.render.pieces import demo_piece, midi_bytes
from personalize.render.stage import run

RUN_DATE = dt.date(2026, 11, 20)


def _serials(data: bytes) -> set[bytes]:
    return {data[start + 14 : start + 18] for start, _ in ogg_pages(data)}


@pytest.mark.parametrize("codec,rate", [("ogg", 44_100), ("opus", 48_000)])
def test_same_midi_gives_the_same_bytes_whatever_the_worker_rendered_before(codec, rate):
    """The same MIDI three times in one batch on two workers: first on a fresh worker, then after other tracks."""
    settings = get_settings()
    song, other = midi_bytes(demo_piece(4, seed=3)), midi_bytes(demo_piece(3, seed=5, programs=(19, 33)))
    jobs = [
        RenderJob(job_id=f"{name}-{i}", midi=midi, title="Same", comment={"seed": 3}, codec=codec)
        for i, (name, midi) in enumerate([("a", song), ("b", other), ("a", song), ("b", other), ("a", song)])
    ]
    outcomes = render_batch(jobs, settings, workers=2, progress=False)
    assert all(o.ok for o in outcomes), [o.detail for o in outcomes if not o.ok]
    same = [o.data for o in outcomes if o.job_id.startswith("a-")]
    assert same[0] == same[1] == same[2], "the same MIDI gave different bytes"
    assert outcomes[1].data == outcomes[3].data
    assert outcomes[0].data != outcomes[1].data
    for outcome in outcomes:
        data = outcome.data or b""
        assert len(_serials(data)) == 1  # one logical stream, one serial on every page
        info = soundfile.info(io.BytesIO(data))
        assert info.format == "OGG" and info.subtype == ("OPUS" if codec == "opus" else "VORBIS")
        samples, decoded_rate, tags = decode(data)
        assert decoded_rate == rate == outcome.sample_rate_hz and samples.shape[1] == 2
        assert abs(len(samples) / rate - (outcome.duration_s or 0)) < 0.01
        assert tags["title"] == "Same" and '"seed": 3' in tags["comment"]


def test_page_checksums_are_the_ones_libsndfile_writes():
    """Rewriting the serial recomputes each page's CRC: the checksum matches libsndfile's on its own pages."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).standard_normal((44_100, 2)).astype(np.float32) * 0.1
    with soundfile.SoundFile(buf, "w", samplerate=44_100, channels=2, format="OGG", subtype="VORBIS") as fh:
        fh.write(noise)
    data = buf.getvalue()
    pages = ogg_pages(data)
    assert len(pages) >= 3
    for start, end in pages:
        page = bytearray(data[start:end])
        written = struct.unpack("<I", page[22:26])[0]
        page[22:26] = bytes(4)
        assert ogg_crc(page) == written


def _etag(client: TestClient, ctx, track_id: str, cached: str | None = None) -> tuple[str, bytes]:
    """The ETag and body of GET on the track's signed audio URL; a cached ETag must answer 304 Not Modified."""
    query = Signer(load_signing_secret(ctx.settings)).audio_query("L0001", track_id, 600, now=time.time())
    url = f"/v1/tracks/{track_id}/audio?{query}"
    resp = client.get(url)
    assert resp.status_code == 200
    revalidated = client.get(url, headers={"If-None-Match": cached or resp.headers["etag"]})
    assert revalidated.status_code == 304
    return resp.headers["etag"], resp.content


def test_rerender_through_the_stage_gives_the_same_file_and_etag(ctx):
    """Render a track, drop its audio (row and file), render it again through the render stage: after another
    track on the same worker the first time, first on a fresh worker the second time. Same bytes, same ETag."""
    with ctx.sessions.begin() as session:
        for track_id, midi in [
            ("r-0", midi_bytes(demo_piece(5, seed=11, programs=(19, 48)))),
            ("r-1", midi_bytes(demo_piece(6, seed=12))),
        ]:
            session.add(fresh_track(ctx, track_id, midi, RUN_DATE, duration_s=6.0))
    assert run(ctx, RUN_DATE, workers=1)["rendered"] == 2  # one worker: r-0, then r-1
    with ctx.sessions() as session:
        first = session.scalars(select(Track).where(Track.track_id == "r-1")).one()
    first_bytes = ctx.storage.get_bytes(first.audio_uri)
    with TestClient(create_app(ctx)) as client:
        first_etag, served = _etag(client, ctx, "r-1")
    assert served == first_bytes and first_etag == f'"{first.audio_sha256}"'

    ctx.storage.fs.rm(first.audio_uri)
    with ctx.sessions.begin() as session:
        session.execute(
            update(Track).where(Track.track_id == "r-1").values(audio_uri=None, audio_sha256=None)
        )
    assert run(ctx, RUN_DATE, workers=1)["rendered"] == 1  # r-1 alone, on a fresh worker
    with ctx.sessions() as session:
        second = session.scalars(select(Track).where(Track.track_id == "r-1")).one()
    second_bytes = ctx.storage.get_bytes(second.audio_uri)
    assert second_bytes == first_bytes
    assert (second.audio_uri, second.audio_sha256, second.audio_bytes) == (
        first.audio_uri,
        first.audio_sha256,
        first.audio_bytes,
    )
    with TestClient(create_app(ctx)) as client:
        second_etag, served = _etag(client, ctx, "r-1", cached=first_etag)
    assert second_etag == first_etag and served == first_bytes

    samples, rate, _ = decode(second_bytes)
    assert rate == ctx.settings.sample_rate_hz == 44_100
    assert abs(len(samples) / rate - second.duration_s) < 0.01 and second.duration_s > 5
