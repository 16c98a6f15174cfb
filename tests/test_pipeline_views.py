"""The nightly-run views on both engines, on a hand-made night whose answers are known: generation per
date, control fidelity per cluster, playlist coverage, engagement with generated vs catalog tracks."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, text

from personalize.db.models import (
    Listener,
    ListeningEvent,
    Playlist,
    PlaylistItem,
    TasteProfile,
    Track,
    TrackPlan,
)

DAY = dt.date(2026, 3, 1)
NEXT = DAY + dt.timedelta(days=1)


def _track(track_id: str, source: str, cluster_id: int | None = None, audio: bool = True) -> dict:
    row = {"track_id": track_id, "title": track_id, "source": source, "duration_s": 60.0, "tempo_bpm": 100.0,
           "key_pc": 2, "mode": "minor", "meter": "4/4", "programs": "0;42", "density": 5.0}  # fmt: skip
    generated = source == "generated"
    row |= {"run_date": DAY if generated else None, "cluster_id": cluster_id,
            "midi_uri": f"/m/{track_id}.mid" if generated else None,
            "audio_uri": f"/a/{track_id}.ogg" if generated and audio else None,
            "loudness_lufs": -14.0 if generated and audio else None,
            "true_peak_dbtp": -1.5 if generated and audio else None}  # fmt: skip
    return row


def _plan(cluster_id: int, slot: int, status: str, key_ok: bool = True, tempo_error: float = 0.0) -> dict:
    track_id = f"g{cluster_id}{slot}" if status == "generated" else None
    row = {"run_date": DAY, "cluster_id": cluster_id, "slot": slot, "seed": slot, "controls": {}, "tempo_bpm": 100.0,
           "key_pc": 2, "mode": "minor", "meter": "4/4", "programs": "0;42", "density": 5.0, "status": status,
           "track_id": track_id, "attempts": 2 if status == "generated" else 4}  # fmt: skip
    done = status == "generated"
    row |= {"measured_tempo_bpm": 100.0 + tempo_error if done else None, "key_ok": key_ok if done else None,
            "programs_ok": True if done else None, "density_ok": True if done else None,
            "in_range_share": 1.0 if done else None, "tempo_ok": True if done else None}  # fmt: skip
    return row


@pytest.fixture
def night(ctx):
    with ctx.engine.begin() as conn:
        conn.execute(insert(Listener), [{"listener_id": x} for x in ("a", "b", "c", "d")])
        conn.execute(
            insert(Track),
            [_track("cat1", "catalog"), _track("g10", "generated", 1), _track("g11", "generated", 1),
             _track("g20", "generated", 2, audio=False)],
        )  # fmt: skip
        conn.execute(
            insert(TrackPlan),
            [_plan(1, 0, "generated"), _plan(1, 1, "generated", key_ok=False, tempo_error=2.0),
             _plan(2, 0, "generated"), _plan(2, 1, "failed")],
        )  # fmt: skip
        conn.execute(
            insert(TasteProfile),
            [{"listener_id": x, "run_date": DAY, "status": "profiled", "n_events": 10, "weight_total": 1.0}
             for x in ("a", "b", "c", "d")],
        )  # fmt: skip
        ids = conn.execute(
            insert(Playlist).returning(Playlist.id, Playlist.listener_id, sort_by_parameter_order=True),
            [{"listener_id": "a", "run_date": DAY, "status": "published"},
             {"listener_id": "b", "run_date": DAY, "status": "published"},
             {"listener_id": "c", "run_date": DAY, "status": "building"}],
        ).all()  # fmt: skip
        conn.execute(
            insert(PlaylistItem),
            [{"playlist_id": pid, "position": pos, "track_id": tid, "score": 0.5, "reason": "r"}
             for pid, _ in ids for pos, tid in ((1, "g10"), (2, "g11"))],
        )  # fmt: skip
        t = dt.datetime(2026, 3, 2, 19, 0, tzinfo=dt.UTC)
        conn.execute(
            insert(ListeningEvent),
            [
                {"event_id": "e1", "listener_id": "a", "track_id": "g10", "ts": t, "ms_played": 60_000, "kind": "complete"},
                {"event_id": "e2", "listener_id": "a", "track_id": "g10", "ts": t, "ms_played": 60_000, "kind": "like"},
                {"event_id": "e3", "listener_id": "b", "track_id": "g11", "ts": t, "ms_played": 3_000, "kind": "skip"},
                {"event_id": "e4", "listener_id": "b", "track_id": "cat1", "ts": t, "ms_played": 30_000, "kind": "play"},
                {"event_id": "e5", "listener_id": "b", "track_id": "cat1", "ts": t, "ms_played": 120_000, "kind": "complete"},
            ],
        )  # fmt: skip
    return ctx


def _rows(ctx, sql: str, **params) -> list[dict]:
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def test_generation_per_night(night):
    (row,) = _rows(night, "SELECT * FROM v_generation_daily")
    assert str(row["run_date"]) == DAY.isoformat()
    assert (row["clusters"], row["tracks_planned"], row["tracks_generated"], row["tracks_failed"]) == (
        2,
        4,
        3,
        1,
    )
    assert row["tracks_rendered"] == 2 and row["audio_minutes"] == pytest.approx(2.0)
    assert row["mean_attempts"] == pytest.approx(2.0) and row["mean_loudness_lufs"] == pytest.approx(-14.0)


def test_fidelity_per_cluster(night):
    rows = {
        r["cluster_id"]: r for r in _rows(night, "SELECT * FROM v_fidelity_by_cluster ORDER BY cluster_id")
    }
    assert rows[1]["tracks"] == 2 and rows[1]["key_accuracy"] == pytest.approx(0.5)
    assert rows[1]["tempo_mae_bpm"] == pytest.approx(1.0) and rows[1][
        "instruments_accuracy"
    ] == pytest.approx(1.0)
    assert rows[2]["tracks"] == 1 and rows[2]["key_accuracy"] == pytest.approx(
        1.0
    )  # the failed one not counted


def test_playlist_coverage_counts_only_published_playlists(night):
    (row,) = _rows(night, "SELECT * FROM v_playlist_coverage")
    assert (row["listeners"], row["listeners_with_playlist"]) == (4, 2)
    assert row["coverage"] == pytest.approx(0.5) and row["mean_items"] == pytest.approx(2.0)


def test_engagement_with_generated_vs_catalog_tracks(night):
    rows = {
        r["source"]: r for r in _rows(night, "SELECT * FROM v_engagement_by_source WHERE day = :d", d=NEXT)
    }
    gen, cat = rows["generated"], rows["catalog"]
    assert (gen["listeners"], gen["events"], gen["plays"], gen["likes"], gen["skips"]) == (2, 3, 1, 1, 1)
    assert gen["like_rate"] == pytest.approx(0.5) and gen["skip_rate"] == pytest.approx(0.5)
    assert gen["mean_completion"] == pytest.approx((1.0 + 0.05) / 2)
    assert (cat["plays"], cat["likes"]) == (2, 0) and cat["mean_completion"] == pytest.approx((0.5 + 1.0) / 2)
