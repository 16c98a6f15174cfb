"""A small world of listeners, rendered tracks and published playlists written straight into the tables,
for the API's tests and its benchmark (the nightly pipeline writes the same rows in production)."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
from sqlalchemy import insert, text

from personalize.context import Context
from personalize.db.models import Listener, Playlist, PlaylistItem, Track

SAMPLE_RATE_HZ = 22_050


def ogg_vorbis_tone(freq_hz: float, duration_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> bytes:
    """A soft two-note chord encoded as Ogg Vorbis (a real file every browser's <audio> can play)."""
    t = np.arange(int(duration_s * sample_rate_hz)) / sample_rate_hz
    envelope = np.minimum(1.0, np.minimum(t, duration_s - t) * 8)  # fade in and out, no clicks
    signal = 0.25 * envelope * (np.sin(2 * np.pi * freq_hz * t) + 0.5 * np.sin(2 * np.pi * 1.5 * freq_hz * t))
    buf = io.BytesIO()
    sf.write(buf, signal.astype(np.float32), sample_rate_hz, format="OGG", subtype="VORBIS")
    return buf.getvalue()


@dataclass
class SampleWorld:
    listeners: list[str]
    run_dates: list[dt.date]
    playlists: dict[tuple[str, dt.date], list[str]] = field(default_factory=dict)  # ordered track ids
    audio: dict[str, bytes] = field(default_factory=dict)  # track id -> file bytes

    def latest(self, listener_id: str) -> list[str]:
        return self.playlists[(listener_id, max(self.run_dates))]


def seed(
    ctx: Context,
    n_listeners: int = 3,
    n_dates: int = 2,
    playlist_size: int = 5,
    audio_duration_s: float = 4.0,
    first_date: dt.date = dt.date(2026, 11, 19),
    building_date: bool = True,
) -> SampleWorld:
    """Listeners ``L0000..``, each with a published playlist per date of its own generated tracks, every
    track rendered to Ogg Vorbis in storage; plus (``building_date``) a newer playlist still ``building``."""
    listeners = [f"L{i:04d}" for i in range(n_listeners)]
    dates = [first_date + dt.timedelta(days=d) for d in range(n_dates)]
    world = SampleWorld(listeners=listeners, run_dates=dates)
    keys = [(2, "minor"), (7, "major"), (9, "minor"), (0, "major"), (5, "major")]
    track_rows: list[dict] = []
    audio_by_freq: dict[int, tuple[str, str, int]] = {}
    playlist_rows: list[dict] = []
    item_rows: list[dict] = []
    all_dates = dates + ([dates[-1] + dt.timedelta(days=1)] if building_date else [])
    playlist_id = 0
    for li, listener in enumerate(listeners):
        for di, run_date in enumerate(all_dates):
            playlist_id += 1
            status = "published" if run_date in dates else "building"
            playlist_rows.append(
                {
                    "id": playlist_id,
                    "listener_id": listener,
                    "run_date": run_date,
                    "status": status,
                    "published_at": dt.datetime.combine(run_date, dt.time(4, 0), dt.UTC)
                    if status == "published"
                    else None,
                }
            )
            ids = []
            for pos in range(1, playlist_size + 1):
                track_id = f"g{run_date:%Y%m%d}-{li:04d}-{pos:02d}"
                key_pc, mode = keys[(li + pos) % len(keys)]
                tempo_bpm = 70.0 + 10 * ((li + pos + di) % 7)
                freq = 220 + 20 * (pos + di)  # a handful of distinct files, shared like real cluster tracks
                if freq not in audio_by_freq:
                    data = ogg_vorbis_tone(freq, audio_duration_s)
                    stored = ctx.storage.put_bytes("audio", data, ".ogg")
                    audio_by_freq[freq] = (stored.uri, stored.sha256, stored.n_bytes)
                    world.audio[stored.uri] = data
                uri, sha, n_bytes = audio_by_freq[freq]
                track_rows.append(
                    {
                        "track_id": track_id,
                        "title": f"Night piece {pos} for {listener}",
                        "source": "generated",
                        "duration_s": audio_duration_s,
                        "tempo_bpm": tempo_bpm,
                        "key_pc": key_pc,
                        "mode": mode,
                        "meter": "3/4" if pos % 2 else "4/4",
                        "programs": "0;42" if pos % 2 else "0;33;drums",
                        "density": 3.5 + pos / 2,
                        "run_date": run_date,
                        "cluster_id": li % 3,
                        "model_version": "sample",
                        "conditioning": {"key_pc": key_pc, "mode": mode, "tempo_bpm": tempo_bpm},
                        "measured": {"key_pc": key_pc, "mode": mode, "tempo_bpm": tempo_bpm + 0.4},
                        "audio_uri": uri,
                        "audio_sha256": sha,
                        "audio_bytes": n_bytes,
                        "audio_codec": "vorbis",
                        "loudness_lufs": -14.0,
                        "true_peak_dbtp": -1.2,
                    }
                )
                item_rows.append(
                    {
                        "playlist_id": playlist_id,
                        "position": pos,
                        "track_id": track_id,
                        "score": round(1.0 - 0.1 * pos, 3),
                        "reason": f"{tempo_bpm:.0f} BPM like your evening plays; key {key_pc} {mode}",
                    }
                )
                ids.append(track_id)
            if status == "published":
                world.playlists[(listener, run_date)] = ids
    with ctx.engine.begin() as conn:
        conn.execute(insert(Listener), [{"listener_id": lid} for lid in listeners])
        for start in range(0, len(track_rows), 2000):
            conn.execute(insert(Track), track_rows[start : start + 2000])
        for start in range(0, len(playlist_rows), 2000):
            conn.execute(insert(Playlist), playlist_rows[start : start + 2000])
        for start in range(0, len(item_rows), 2000):
            conn.execute(insert(PlaylistItem), item_rows[start : start + 2000])
    if ctx.dialect == "postgresql":  # explicit ids were inserted; move the sequence past them
        with ctx.engine.begin() as conn:
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('playlists', 'id'), (SELECT max(id) FROM playlists))"
                )
            )
    return world
