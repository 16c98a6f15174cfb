"""The demo world: same seed, same files; believable engagement; recoverable segments; a catalog whose
measured features match what was assigned; and a clean load into the database on both engines."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from personalize.db.models import Listener, ListeningEvent, QuarantinedRow, Track
from personalize.simulate.truth import load_catalog_truth, load_truth
from personalize.simulate.world import WorldConfig, build_world, load_world

END = dt.date(2026, 11, 1)
SMALL = WorldConfig(listeners=240, days=14, seed=11, end_date=END, catalog_size=90, corpus_limit=4)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("world") / "sim"
    return out, build_world(out, SMALL)


def test_same_seed_writes_identical_files_and_another_seed_does_not(world, tmp_path):
    out, _ = world
    again = tmp_path / "again"
    build_world(again, SMALL)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    build_world(other, WorldConfig(**{**SMALL.__dict__, "seed": 12}))
    assert _digest(other)["events.parquet"] != _digest(out)["events.parquet"]


def test_files_have_the_ingest_schemas(world):
    out, summary = world
    catalog = pd.read_csv(out / "catalog.csv")
    assert list(catalog.columns) == [
        "track_id", "title", "duration_s", "tempo_bpm", "key", "meter", "programs", "density",
    ]  # fmt: skip
    assert len(catalog) == SMALL.catalog_size
    assert all((out / "midi" / f"{t}.mid").is_file() for t in catalog["track_id"])
    events = pd.read_parquet(out / "events.parquet")
    assert list(events.columns) == ["event_id", "listener_id", "track_id", "ts", "ms_played", "kind"]
    assert events["event_id"].is_unique
    assert set(events["track_id"]) <= set(catalog["track_id"])
    assert events["ts"].min() >= pd.Timestamp(END - dt.timedelta(days=SMALL.days - 1), tz="UTC")
    assert events["ts"].max() < pd.Timestamp(END + dt.timedelta(days=1), tz="UTC")
    durations_ms = events["track_id"].map(catalog.set_index("track_id")["duration_s"]) * 1000
    assert (events["ms_played"] >= 0).all() and (events["ms_played"] <= durations_ms + 1).all()
    assert len(events) == summary.events


def test_engagement_rates_are_in_the_stated_bands(world):
    _, summary = world
    rates = summary.rates
    assert summary.plays > 5000
    assert 0.18 <= rates["skip_early"] <= 0.32
    assert 0.40 <= rates["ended_early"] <= 0.60
    assert 0.005 <= rates["like"] <= 0.06
    assert rates["dislike"] < rates["like"] and rates["save"] < rates["like"]


def test_activity_is_heavy_tailed(world):
    out, _ = world
    per_listener = pd.read_parquet(out / "events.parquet").groupby("listener_id").size()
    # The busiest tenth of listeners plays several times more than the median listener.
    assert per_listener.quantile(0.9) > 3 * per_listener.median()


def test_liked_tracks_reveal_each_segments_tempo(world):
    out, _ = world
    truth = load_truth(out)
    catalog = load_catalog_truth(out).set_index("track_id")
    events = pd.read_parquet(out / "events.parquet")
    likes = events[events["kind"].isin(["like", "complete"])].copy()
    likes["segment_id"] = likes["listener_id"].map(truth.listeners.set_index("listener_id")["segment_id"])
    likes["tempo_bpm"] = likes["track_id"].map(catalog["tempo_bpm"])
    median_tempo = likes.groupby("segment_id")["tempo_bpm"].median()
    centres = pd.Series({s["segment_id"]: s["tempo_bpm"] for s in truth.segments})
    assert len(median_tempo) == len(centres)
    # Liked tempo follows the hidden segment: within 10 % of its centre and in the same order.
    assert (np.abs(median_tempo / centres[median_tempo.index] - 1) < 0.10).all()
    assert list(median_tempo.sort_values().index) == list(centres.sort_values().index)


def test_catalog_features_are_measured_from_the_midi_and_match_the_assignment(world):
    out, summary = world
    catalog = load_catalog_truth(out)
    key_ok = (catalog["key_pc"] == catalog["assigned_key_pc"]) & (catalog["mode"] == catalog["assigned_mode"])
    assert key_ok.mean() >= 0.9
    assert summary.catalog_key_agreement == pytest.approx(key_ok.mean(), abs=1e-4)
    assert np.allclose(catalog["tempo_bpm"], catalog["assigned_tempo_bpm"], atol=0.5)
    assert (catalog["density"] > 0).all() and (catalog["duration_s"] > 20).all()
    # Segment styles carry their instruments: every drum-loving segment has drum tracks.
    for seg in load_truth(out).segments:
        mine = catalog[catalog["style_segment"] == seg["segment_id"]]
        if "drums" in seg["family_weights"] and len(mine) >= 5:
            assert mine["programs"].str.contains("drums").any()


def test_truth_holds_every_listener_with_true_preferences(world):
    out, _ = world
    truth = load_truth(out)
    listeners = truth.listeners
    assert len(listeners) == SMALL.listeners and listeners["listener_id"].is_unique
    assert listeners["top_families"].str.count(";").eq(2).all()
    assert set(listeners["mode"]) <= {"major", "minor"}
    # Drift: the end-date tempo is the start tempo moved by the weekly drift.
    expected = listeners["tempo_bpm_start"] + listeners["drift_bpm_per_week"] * (SMALL.days - 1) / 7
    assert np.allclose(listeners["tempo_bpm"], expected, atol=0.01)
    assert (listeners["drift_bpm_per_week"] != 0).mean() > 0.2
    later = truth.at(END + dt.timedelta(days=14))
    drifting = listeners["drift_bpm_per_week"] != 0
    assert (later.loc[drifting, "tempo_bpm"] != listeners.loc[drifting, "tempo_bpm"]).all()
    assert truth.world["seed"] == SMALL.seed and truth.end_date == END


def test_world_loads_into_the_database_with_nothing_quarantined(world, ctx):
    out, summary = world
    reports = load_world(ctx, out)
    assert reports["catalog"].quarantined_total == 0 and reports["catalog"].ingested == SMALL.catalog_size
    assert reports["events"].quarantined_total == 0 and reports["events"].ingested == summary.events
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ListeningEvent)) == summary.events
        assert session.scalar(select(func.count()).select_from(Track)) == SMALL.catalog_size
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 0
        n_active = pd.read_parquet(out / "events.parquet")["listener_id"].nunique()
        assert session.scalar(select(func.count()).select_from(Listener)) == n_active
    # Loading again adds nothing.
    again = load_world(ctx, out)
    assert again["events"].ingested == 0 and again["events"].already_present == summary.events


def test_a_newer_world_in_the_same_folder_replaces_the_older_history(ctx, tmp_path):
    out = tmp_path / "sim"
    first = build_world(out, WorldConfig(**{**SMALL.__dict__, "listeners": 40}))
    load_world(ctx, out)
    # The next day's demo: same listeners and catalog, history one day later.
    later = WorldConfig(**{**SMALL.__dict__, "listeners": 40, "end_date": END + dt.timedelta(days=1)})
    second = build_world(out, later)
    reports = load_world(ctx, out)
    assert reports["replaced_events"] == first.events
    assert reports["events"].ingested == second.events and reports["catalog"].ingested == 0
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ListeningEvent)) == second.events
    # A different catalog under the same track ids is refused with what to do.
    build_world(out, WorldConfig(**{**SMALL.__dict__, "listeners": 40, "seed": 99}))
    with pytest.raises(ValueError, match="fresh database"):
        load_world(ctx, out)
