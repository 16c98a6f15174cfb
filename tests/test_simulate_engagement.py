"""The engagement model: fit rewards the listener's own tempo, key, instruments and density, and better
fit means fewer skips, more completions and more likes; plays expand into ingestible events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from personalize.music.gm import FAMILIES
from personalize.simulate.engagement import FAMILY_COLUMNS, fit, fit_matrix, listen, plays_to_events


def _listener(**overrides: object) -> pd.Series:
    weights = dict.fromkeys(FAMILY_COLUMNS, 0.0)
    weights.update({"family_strings": 0.6, "family_piano": 0.3, "family_pipe": 0.1})
    base = {
        "tempo_bpm": 70.0,
        "tempo_tolerance": 0.08,
        "key_pc": 2,
        "mode": "minor",
        "density": 4.0,
        **weights,
    }
    return pd.Series({**base, **overrides})


def _tracks(n: int, **columns: object) -> pd.DataFrame:
    base = {
        "tempo_bpm": 70.0,
        "key_pc": 2,
        "mode": "minor",
        "programs": "40;42",
        "density": 4.0,
        "duration_s": 120.0,
    }
    return pd.DataFrame([{**base, **columns}] * n)


def test_fit_is_highest_for_the_listeners_own_taste():
    listener = _listener()
    perfect = fit(listener, _tracks(1))[0]
    assert perfect == pytest.approx(1.0, abs=1e-6)
    assert fit(listener, _tracks(1, tempo_bpm=140.0))[0] < perfect - 0.3
    assert fit(listener, _tracks(1, key_pc=8, mode="major"))[0] < perfect - 0.2
    assert fit(listener, _tracks(1, programs="80;81;drums"))[0] < perfect - 0.2
    assert fit(listener, _tracks(1, density=16.0))[0] < perfect - 0.1
    # A neighbouring key is closer than a distant one.
    near = fit(listener, _tracks(1, key_pc=9))[0]  # A minor, one fifth away
    far = fit(listener, _tracks(1, key_pc=8))[0]  # Ab minor, a tritone away
    assert near > far


def test_fit_matrix_agrees_with_row_by_row_fit():
    rng = np.random.default_rng(0)
    listeners = pd.DataFrame([_listener(tempo_bpm=float(t)) for t in rng.uniform(60, 160, 5)])
    tracks = pd.DataFrame(
        {
            "tempo_bpm": rng.uniform(60, 160, 7),
            "key_pc": rng.integers(12, size=7),
            "mode": rng.choice(["major", "minor"], 7),
            "programs": rng.choice(["40;42", "0;33;drums", "73"], 7),
            "density": rng.uniform(1, 20, 7),
            "duration_s": 100.0,
        }
    )
    matrix = fit_matrix(listeners, tracks)
    for i in range(len(listeners)):
        assert np.allclose(matrix[i], fit(listeners.iloc[i], tracks), atol=1e-5)


def test_better_fit_means_fewer_skips_more_completions_and_likes():
    rng = np.random.default_rng(1)
    listener = _listener()
    good = listen(listener, _tracks(20_000), rng)
    bad = listen(listener, _tracks(20_000, tempo_bpm=150.0, key_pc=8, mode="major", programs="80"), rng)
    assert (good["kind"] == "skip").mean() < 0.1 < 0.6 < (bad["kind"] == "skip").mean()
    assert (good["kind"] == "complete").mean() > 3 * (bad["kind"] == "complete").mean()
    assert good["liked"].mean() > 10 * max(bad["liked"].mean(), 1e-4)
    assert bad["disliked"].mean() > good["disliked"].mean()
    # Skips stop in the first seconds; completions play the whole track.
    assert (bad.loc[bad["kind"] == "skip", "ms_played"] <= 9000).all()
    assert (good.loc[good["kind"] == "complete", "ms_played"] == 120_000).all()
    assert not (good["liked"] & (good["kind"] == "skip")).any()


def test_listen_is_deterministic_for_a_seed():
    tracks = _tracks(500, tempo_bpm=80.0)
    a = listen(_listener(), tracks, np.random.default_rng(5))
    b = listen(_listener(), tracks, np.random.default_rng(5))
    pd.testing.assert_frame_equal(a, b)


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="density"):
        fit(_listener(), _tracks(1).drop(columns=["density"]))
    with pytest.raises(ValueError, match="tempo_tolerance"):
        fit(_listener().drop("tempo_tolerance"), _tracks(1))


def test_plays_become_events_with_reactions_after_the_play():
    plays = listen(_listener(), _tracks(3000), np.random.default_rng(2))
    plays["listener_id"] = "L1"
    plays["track_id"] = "T1"
    plays["ts"] = pd.date_range("2026-11-01", periods=len(plays), freq="5min", tz="UTC")
    events = plays_to_events(plays)
    assert list(events.columns) == ["listener_id", "track_id", "ts", "ms_played", "kind"]
    n_reactions = int(plays["liked"].sum() + plays["disliked"].sum() + plays["saved"].sum())
    assert n_reactions > 0 and len(events) == len(plays) + n_reactions
    assert events["ts"].is_monotonic_increasing
    assert set(events["kind"]) <= {"skip", "play", "complete", "like", "dislike", "save"}
    assert len(FAMILY_COLUMNS) == len(FAMILIES)
