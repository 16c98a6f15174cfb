"""Quality metrics on pieces whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pretty_midi
import pytest

from personalize.music import metrics


def _piece(
    notes: list[tuple[int, float, float]], *, program: int = 0, tempo_bpm: float = 120.0, meter=(4, 4)
) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(meter[0], meter[1], 0.0))
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in notes]
    pm.instruments.append(inst)
    return pm


def _c_major_scale() -> pretty_midi.PrettyMIDI:
    return _piece([(p, 0.5 * i, 0.5 * (i + 1)) for i, p in enumerate((60, 62, 64, 65, 67, 69, 71))])


def test_c_major_scale_is_fully_scale_consistent_with_seven_equal_pitch_classes():
    pm = _c_major_scale()
    assert metrics.scale_consistency(pm) == pytest.approx(1.0)
    assert metrics.pitch_class_entropy(pm) == pytest.approx(math.log2(7))
    assert metrics.pitch_range(pm) == 11.0
    assert metrics.polyphony(pm) == pytest.approx(1.0)


def test_chromatic_scale_has_maximal_entropy_and_partial_scale_consistency():
    pm = _piece([(60 + i, 0.25 * i, 0.25 * (i + 1)) for i in range(12)])
    assert metrics.pitch_class_entropy(pm) == pytest.approx(math.log2(12))
    assert metrics.scale_consistency(pm) == pytest.approx(7 / 12)


def test_a_harmonic_minor_line_is_scale_consistent():
    pm = _piece([(p, 0.5 * i, 0.5 * (i + 1)) for i, p in enumerate((57, 59, 60, 62, 64, 65, 68, 69))])
    assert metrics.scale_consistency(pm) == pytest.approx(1.0)


def test_steady_quarter_note_groove_is_perfectly_consistent_and_has_no_empty_beats():
    # 8 bars of quarter notes at 120 BPM: one onset per beat, the same pattern in every bar.
    pm = _piece([(60 + (i % 5), 0.5 * i, 0.5 * i + 0.4) for i in range(32)])
    assert metrics.groove_consistency(pm) == pytest.approx(1.0)
    assert metrics.empty_beat_rate(pm) == 0.0


def test_groove_changing_every_bar_scores_lower_and_rests_count_as_empty_beats():
    notes = []
    for bar in range(8):
        t0 = 2.0 * bar
        if bar % 2 == 0:  # four quarter notes
            notes += [(60, t0 + 0.5 * k, t0 + 0.5 * k + 0.4) for k in range(4)]
        else:  # one note on beat 1, then three silent beats
            notes.append((64, t0, t0 + 0.4))
    pm = _piece(notes)
    # Adjacent bars differ in 3 of 16 sixteenth positions.
    assert metrics.groove_consistency(pm) == pytest.approx(1 - 3 / 16)
    # Silent beats: 3 in each of the odd bars, except the last bar where the piece ends after its first beat.
    assert metrics.empty_beat_rate(pm) == pytest.approx(9 / 29)


def test_groove_grid_follows_the_meter_in_three_four():
    pm = _piece([(60, 0.5 * i, 0.5 * i + 0.3) for i in range(24)], meter=(3, 4))
    assert metrics.groove_consistency(pm) == pytest.approx(1.0)


def test_four_part_chords_have_polyphony_four():
    notes = [(p, 1.0 * c, 1.0 * c + 1.0) for c in range(4) for p in (48, 55, 64, 72)]
    pm = _piece(notes)
    assert metrics.polyphony(pm) == pytest.approx(4.0)
    assert metrics.pitch_range(pm) == 24.0


def test_quality_metrics_names_every_metric_and_rejects_an_empty_piece():
    values = metrics.quality_metrics(_c_major_scale())
    assert set(values) == set(metrics.METRIC_NAMES)
    with pytest.raises(ValueError, match="no pitched notes"):
        metrics.quality_metrics(pretty_midi.PrettyMIDI())


def test_overlap_of_a_distribution_with_itself_is_one_and_with_a_far_one_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 300)
    same = rng.normal(0.0, 1.0, 300)
    far = rng.normal(50.0, 1.0, 300)
    assert metrics.kde_overlap(a, a) == pytest.approx(1.0, abs=1e-3)
    assert metrics.kde_overlap(a, same) > 0.85
    assert metrics.kde_overlap(a, far) < 1e-3
    assert metrics.yang_lerch_overlap(a, a) > 0.95
    assert metrics.yang_lerch_overlap(far, a) < 0.01
    # Constant samples (std 0) still work: identical constants overlap fully.
    assert metrics.kde_overlap([1.0] * 5, [1.0] * 7) == pytest.approx(1.0, abs=1e-3)
