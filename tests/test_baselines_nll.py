"""Baselines: note events from corpus parts, the Markov chain and the LSTM, scored in nats per note."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from personalize.corpus import build_corpus, load_pieces
from personalize.generate.baselines.lstm_markov import (
    MAX_TICKS,
    N_PITCH,
    LSTMConfig,
    MarkovChain,
    count_notes,
    lstm_val_nll_per_note,
    markov_val_nll_per_note,
    part_events,
    piece_sequences,
    train_lstm,
)

UNIFORM_NATS_PER_NOTE = math.log((MAX_TICKS + 1) * MAX_TICKS * N_PITCH)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus")
    build_corpus(path, ["bach_chorales", "oneills1850"], workers=1, limit_per_collection=2, progress=False)
    return path


def test_part_events_keep_rests_durations_and_pitches():
    part = [(0, 4, 60), (4, 2, 62), (8, 4, 64)]  # a rest of 2 sixteenths before the last note
    assert part_events(part) == [(0, 4, 60), (0, 2, 62), (2, 4, 64)]


def test_markov_chain_learns_a_repeated_scale():
    scale = [(0, 4, p) for p in (60, 62, 64, 65, 67, 69, 71, 72)]
    chain = MarkovChain(alpha=0.1, beta=1.0).fit_counts([scale] * 20)
    # After E comes F nearly always; a pitch never seen after E is far less likely.
    assert math.exp(chain.log_prob((0, 4, 65), (0, 4, 64))) > 0.9
    assert chain.log_prob((0, 4, 61), (0, 4, 64)) < math.log(1e-4)
    rng = np.random.default_rng(0)
    assert chain.sample(8, rng) == scale


def test_markov_and_lstm_report_nll_per_corpus_note_far_below_chance(corpus_dir: Path, tmp_path: Path):
    val = load_pieces(corpus_dir, split="val")
    assert val, "the tiny corpus should hold validation pieces"
    markov = markov_val_nll_per_note(corpus_dir)
    assert markov["notes"] == count_notes(val) == sum(len(s) for s in piece_sequences(val))
    assert 0 < markov["nll_per_note_nats"] < UNIFORM_NATS_PER_NOTE / 2

    summary = train_lstm(tmp_path / "lstm.pt", corpus_dir, config=LSTMConfig.tiny(), progress=False)
    measured = lstm_val_nll_per_note(tmp_path / "lstm.pt", corpus_dir)
    assert measured["nll_per_note_nats"] == pytest.approx(summary["val_nll_per_note_nats"], rel=1e-5)
    assert measured["nll_per_note_nats"] < UNIFORM_NATS_PER_NOTE
    # Twenty tiny steps already beat an untrained network.
    untrained = train_lstm(
        tmp_path / "untrained.pt", corpus_dir, config=LSTMConfig.tiny(), steps=1, progress=False
    )
    assert summary["val_nll_per_note_nats"] < untrained["val_nll_per_note_nats"]
