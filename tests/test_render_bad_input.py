"""Bad MIDI either renders within bounds or is rejected with a reason that says what to do; batches go on."""

from __future__ import annotations

import io

import mido
import numpy as np
import pretty_midi
import pytest

from personalize.config import get_settings
from personalize.render import RenderJob, RenderRejected, decode, render_batch, render_midi
from personalize.render.pieces import demo_piece, midi_bytes


@pytest.fixture(scope="module")
def settings():
    return get_settings(render_max_duration_s=30.0)


def _smf(tempo_us_per_beat: int, n_notes: int = 8, ticks_per_beat: int = 480) -> bytes:
    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo_us_per_beat))
    track.append(mido.Message("program_change", program=0))
    for i in range(n_notes):
        track.append(mido.Message("note_on", note=60 + i % 12, velocity=90, time=0))
        track.append(mido.Message("note_off", note=60 + i % 12, velocity=0, time=ticks_per_beat))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _rejected(midi, settings, **kwargs) -> RenderRejected:
    with pytest.raises(RenderRejected) as info:
        render_midi(midi, settings, **kwargs)
    return info.value


def test_empty_midi_is_rejected(settings):
    error = _rejected(pretty_midi.PrettyMIDI(), settings)
    assert error.reason == "no_notes" and "no notes" in error.detail
    assert _rejected(midi_bytes(pretty_midi.PrettyMIDI()), settings).reason == "no_notes"


@pytest.mark.parametrize(
    "data",
    [b"", b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01\x00"],
    ids=["empty", "text", "cut"],
)
def test_corrupt_bytes_are_rejected(settings, data):
    error = _rejected(data, settings)
    assert error.reason == "corrupt_midi"
    assert "regenerate" in error.detail or "not written" in error.detail


def test_truncated_file_is_rejected_or_renders_its_intact_part(settings):
    data = midi_bytes(demo_piece(10, seed=1))
    try:
        audio = render_midi(data[: len(data) // 2], settings)
    except RenderRejected as error:
        assert error.reason == "corrupt_midi"
    else:
        assert abs(audio.loudness_lufs - settings.target_lufs) <= 0.5


def test_drums_only_renders(settings):
    audio = render_midi(demo_piece(8, programs=(), drums=True), settings)
    assert audio.n_parts == 1
    assert abs(audio.loudness_lufs - settings.target_lufs) <= 0.5


def test_two_hour_midi_is_capped(settings):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(80, 60 + i % 7, float(i), i + 0.9) for i in range(7200)]
    pm.instruments.append(inst)
    audio = render_midi(pm, settings)
    assert audio.duration_s <= settings.render_max_duration_s + 5
    assert any("capped the track at 30 s" in fix for fix in audio.fixes)


def test_absurdly_fast_tempo_is_rejected_with_a_tempo_hint(settings):
    error = _rejected(_smf(tempo_us_per_beat=1), settings)  # 60 million BPM: notes a microsecond long
    assert error.reason == "no_notes"
    assert "tempo" in error.detail


def test_absurdly_slow_tempo_renders_capped(settings):
    audio = render_midi(_smf(tempo_us_per_beat=16_777_215, n_notes=3), settings)  # 3.6 BPM
    assert audio.duration_s <= settings.render_max_duration_s + 5
    assert any("capped" in fix for fix in audio.fixes)


def test_out_of_range_values_are_clamped(settings):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=300)
    inst.notes = [
        pretty_midi.Note(300, 140, 0.0, 1.0),  # pitch and velocity out of range
        pretty_midi.Note(80, -5, 1.0, 2.0),
        pretty_midi.Note(0, 60, 2.0, 3.0),  # velocity 0 would be a note-off
        pretty_midi.Note(80, 62, 3.0, 3.0),  # zero length
        pretty_midi.Note(80, 64, float("nan"), 4.0),
    ]
    pm.instruments.append(inst)
    audio = render_midi(pm, settings)
    joined = "; ".join(audio.fixes)
    for expected in ("program number", "into MIDI pitch", "velocity", "shorter than 1 ms", "infinite time"):
        assert expected in joined
    assert audio.n_notes == 3
    assert abs(audio.loudness_lufs - settings.target_lufs) <= 0.5


def test_overlapping_identical_notes_are_merged(settings):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(90, 60, 0.0, 2.0), pretty_midi.Note(90, 60, 0.5, 3.0)]
    inst.notes += [pretty_midi.Note(90, 64, 0.0, 1.0), pretty_midi.Note(90, 64, 1.0, 2.0)]  # touching: kept
    pm.instruments.append(inst)
    audio = render_midi(pm, settings)
    assert "merged 1 overlapping identical note(s)" in audio.fixes
    assert audio.n_notes == 3


def test_silent_render_is_rejected(settings):
    pm = demo_piece(6, programs=(0,), drums=False)
    pm.instruments[0].control_changes.append(pretty_midi.ControlChange(7, 0, 0.0))  # channel volume 0
    error = _rejected(pm, settings)
    assert error.reason == "silent_render" and "LUFS" in error.detail


def test_timeout_rejects_with_the_setting_to_change(settings):
    error = _rejected(demo_piece(20, seed=1), settings, timeout_s=0.01)
    assert error.reason == "render_timeout"
    assert "PERSONALIZE_RENDER_TIMEOUT_S" in error.detail


def test_batch_goes_on_past_bad_tracks(settings):
    jobs = [
        RenderJob("good-1", midi_bytes(demo_piece(6, seed=1)), title="Good one"),
        RenderJob("corrupt", b"\x00\x01garbage"),
        RenderJob("empty", pretty_midi.PrettyMIDI()),
        RenderJob("good-2", demo_piece(6, seed=2), codec="opus"),
    ]
    outcomes = render_batch(jobs, settings, workers=2, progress=False)
    assert [o.job_id for o in outcomes] == ["good-1", "corrupt", "empty", "good-2"]
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert outcomes[1].reason == "corrupt_midi" and outcomes[2].reason == "no_notes"
    samples, rate, tags = decode(outcomes[3].data)
    assert rate == 48_000 and outcomes[3].codec == "opus" and samples.shape[1] == 2
    assert tags["title"] == "good-2"
    for ok in (outcomes[0], outcomes[3]):
        assert abs(ok.loudness_lufs - settings.target_lufs) <= 0.5
        assert ok.true_peak_dbtp <= settings.true_peak_max_dbtp
        assert 4 < ok.duration_s < 10
        assert np.isfinite(ok.wall_s)
