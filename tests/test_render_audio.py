"""What a listener hears from the renderer: stereo, audible drums, the loudness norm, files that decode."""

from __future__ import annotations

import io
import time

import mido
import numpy as np
import pretty_midi
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from personalize.config import get_settings
from personalize.render import decode, encode, render_midi
from personalize.render.pieces import demo_piece, midi_bytes


@pytest.fixture(scope="module")
def settings():
    return get_settings()


def _independent_true_peak_dbtp(samples: np.ndarray) -> float:
    """4x oversampled peak with scipy's own polyphase resampler, independent of the renderer's code."""
    return float(20 * np.log10(np.abs(resample_poly(samples.astype(np.float64), 4, 1, axis=0)).max()))


def _lufs(samples: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)))


def test_output_is_stereo_with_parts_spread_across_it(settings):
    audio = render_midi(demo_piece(12, programs=(0, 33, 73, 56), seed=3), settings)
    assert audio.samples.ndim == 2 and audio.samples.shape[1] == 2
    assert audio.sample_rate_hz == 44_100
    left, right = audio.samples[:, 0], audio.samples[:, 1]
    side = np.sqrt(np.mean((left - right) ** 2))
    mid = np.sqrt(np.mean((left + right) ** 2))
    assert side > 0.1 * mid, "left and right are (nearly) the same signal: no stereo image"
    assert abs(audio.duration_s - 12) < 4


def test_drums_are_audible_when_only_drums_play(settings):
    pm = demo_piece(10, programs=(0, 33), seed=1)
    # drums alone for the first 4 s: the melodic parts start later
    for inst in pm.instruments:
        if not inst.is_drum:
            inst.notes = [n for n in inst.notes if n.start >= 4.0]
    audio = render_midi(pm, settings)
    sr = audio.sample_rate_hz
    drums_alone = audio.samples[: 4 * sr]
    rms_db = 20 * np.log10(np.sqrt(np.mean(drums_alone**2)) + 1e-12)
    assert rms_db > -30, f"the drum-only opening is {rms_db:.1f} dBFS: drums are not sounding"
    # kick and snare hits: the 50 ms energy envelope has clear beats, not a flat hiss
    frames = drums_alone[: len(drums_alone) // 2205 * 2205].reshape(-1, 2205, 2)
    energy = (frames**2).mean(axis=(1, 2))
    assert energy.max() > 10 * np.median(energy)


@pytest.mark.parametrize(
    "case",
    [
        dict(velocity=15, programs=(0, 33), drums=False),  # quiet
        dict(velocity=127, programs=(0, 33, 73, 56, 48)),  # loud, many parts
        dict(velocity=100, programs=(0,), drums=False, notes_per_beat=1, sparse=True),  # sparse piano
        dict(velocity=110, programs=(0, 33, 81, 30), notes_per_beat=4),  # dense
        dict(velocity=127, programs=(), drums=True),  # drums only: sharp transients
    ],
    ids=["quiet", "loud", "sparse", "dense", "drums-only"],
)
def test_loudness_on_target_and_true_peak_under_ceiling(settings, case):
    case = dict(case)
    sparse = case.pop("sparse", False)
    pm = demo_piece(15, seed=7, **case)
    if sparse:
        pm.instruments[0].notes = pm.instruments[0].notes[::6]
    audio = render_midi(pm, settings)
    measured = _lufs(audio.samples, audio.sample_rate_hz)
    assert abs(measured - settings.target_lufs) <= 0.5, f"{measured:.2f} LUFS, target {settings.target_lufs}"
    assert abs(audio.loudness_lufs - measured) < 0.05
    true_peak = _independent_true_peak_dbtp(audio.samples)
    assert true_peak <= settings.true_peak_max_dbtp + 0.1, f"true peak {true_peak:.2f} dBTP"
    assert audio.true_peak_dbtp <= settings.true_peak_max_dbtp


def test_other_loudness_target(settings):
    audio = render_midi(demo_piece(10, seed=2), settings, target_lufs=-18.0)
    assert abs(_lufs(audio.samples, audio.sample_rate_hz) + 18.0) <= 0.5


def test_notes_without_note_off_finish(settings):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.Message("program_change", program=19, channel=0))  # church organ: sustains forever
    for i, note in enumerate((60, 64, 67)):
        track.append(mido.Message("note_on", note=note, velocity=100, channel=0, time=240 * (i > 0)))
    track.append(mido.Message("control_change", control=64, value=127, channel=0, time=0))  # pedal down
    track.append(mido.MetaMessage("end_of_track", time=960))
    buf = io.BytesIO()
    mid.save(file=buf)
    t0 = time.monotonic()
    audio = render_midi(buf.getvalue(), settings)
    assert time.monotonic() - t0 < 30
    assert any("no note-off" in fix for fix in audio.fixes)
    assert 1.0 < audio.duration_s < 10.0
    assert abs(audio.loudness_lufs - settings.target_lufs) <= 0.5


def test_tail_is_trimmed_and_faded(settings):
    audio = render_midi(demo_piece(8, seed=4), settings)
    last_50ms = audio.samples[-int(0.05 * audio.sample_rate_hz) :]
    assert np.abs(last_50ms).max() < 0.01, "the file ends on a click instead of a fade"
    # no long silent tail: the last second still carries sound
    last_s = audio.samples[-audio.sample_rate_hz :]
    assert np.abs(last_s).max() > 1e-3


@pytest.mark.parametrize("codec,rate", [("ogg", 44_100), ("opus", 48_000)])
def test_encoded_file_decodes_with_tags_and_loudness(settings, codec, rate):
    audio = render_midi(midi_bytes(demo_piece(10, seed=5)), settings, sample_rate_hz=rate)
    controls = {"key": "D minor", "tempo_bpm": 110}
    data = encode(audio, codec, {"title": "Night 1", "artist": "personalize", "comment": controls})
    assert data[:4] == b"OggS"
    samples, decoded_rate, tags = decode(data)
    assert decoded_rate == rate and samples.shape[1] == 2
    assert abs(len(samples) / rate - audio.duration_s) < 0.1
    assert tags["title"] == "Night 1" and tags["artist"] == "personalize"
    assert '"key": "D minor"' in tags["comment"]
    assert abs(_lufs(samples, rate) - settings.target_lufs) <= 0.5


def test_synth_is_reset_between_tracks(settings):
    """A sustained organ on one track must not bleed into the next one rendered by the same synthesizer."""
    organ = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=19)
    inst.notes.append(pretty_midi.Note(100, 48, 0.0, 6.0))
    inst.control_changes.append(pretty_midi.ControlChange(64, 127, 0.0))  # sustain pedal never released
    organ.instruments.append(inst)
    first = render_midi(organ, settings)
    late_start = demo_piece(6, programs=(0,), drums=False, seed=1)
    for note in late_start.instruments[0].notes:
        note.start += 1.0
        note.end += 1.0
    second = render_midi(late_start, settings)
    assert first.duration_s > 5
    opening = second.samples[: int(0.9 * second.sample_rate_hz)]
    assert np.abs(opening).max() < 1e-4, "sound from the previous track leaked into the next one"
    assert abs(second.loudness_lufs - settings.target_lufs) <= 0.5


def test_loudness_meter_matches_pyloudnorm():
    """The fast BS.1770 meter used for normalizing gives pyloudnorm's number on music, silence and bursts
    (to 0.001 LU: it filters in single precision, pyloudnorm in double)."""
    from personalize.render.loudness import measure_loudness

    rng = np.random.default_rng(0)
    burst = np.zeros((44_100 * 6, 2), dtype=np.float32)
    burst[44_100 : 44_100 * 2] = rng.standard_normal((44_100, 2)) * 0.3
    music = render_midi(demo_piece(8, seed=6), get_settings()).samples
    for signal, rate in ((music, 44_100), (burst, 44_100), (burst[:48_000] * 1e-3, 48_000)):
        expected = pyloudnorm.Meter(rate).integrated_loudness(signal.astype(np.float64))
        assert measure_loudness(signal, rate)[0] == pytest.approx(expected, abs=1e-3)


def test_loudness_after_a_gain_comes_from_the_blocks_alone():
    """Re-drawing the gates on shifted block loudness gives what measuring the scaled signal gives, also when
    the gain lifts quiet blocks over the absolute gate or drops loud ones under it."""
    from personalize.render.loudness import gated_loudness, measure_loudness

    rng = np.random.default_rng(3)
    signal = np.zeros((44_100 * 8, 2), dtype=np.float32)
    signal[: 44_100 * 3] = rng.standard_normal((44_100 * 3, 2)) * 3e-4  # near the -70 LUFS gate
    signal[44_100 * 4 : 44_100 * 6] = rng.standard_normal((44_100 * 2, 2)) * 0.2
    lufs, blocks = measure_loudness(signal, 44_100)
    assert gated_loudness(blocks) == pytest.approx(lufs, abs=1e-6)
    for gain_db in (-20.0, 6.0, 25.0):
        scaled = signal * np.float32(10 ** (gain_db / 20))
        assert gated_loudness(blocks + gain_db) == pytest.approx(
            measure_loudness(scaled, 44_100)[0], abs=1e-3
        )


def _brute_force_envelope(samples: np.ndarray) -> np.ndarray:
    """Per frame, the largest |value| over channels of the sample and its 3 in-between points, one frame at a
    time in double precision: slow, obviously right, and written apart from the renderer's block code."""
    from personalize.render.loudness import _PHASES, HALF_WIDTH

    data = samples if samples.ndim == 2 else samples[:, None]
    envelope = np.abs(data).max(axis=1).astype(np.float64)
    for channel in data.T.astype(np.float64):
        padded = np.pad(channel, (HALF_WIDTH, HALF_WIDTH))
        for phase in _PHASES[1:]:
            # frame f reads samples f-7 .. f+8, which sit at padded[f+1 .. f+16]
            points = np.correlate(padded, phase, mode="valid")[1 : len(channel) + 1]
            envelope = np.maximum(envelope, np.abs(points))
    return envelope


@pytest.mark.parametrize("frames", [5, 17, 33, 48_003])
@pytest.mark.parametrize("channels", [1, 2])
def test_true_peak_envelope_is_exact_wherever_it_can_reach_the_floor(frames, channels):
    """The block-gathered oversampling gives the brute-force true peak at every frame that matters, for
    short tracks and for blocks at both ends; it never under-reads a frame anywhere."""
    from personalize.render.loudness import TruePeak, true_peak_dbtp

    rng = np.random.default_rng(frames + channels)
    shape = (frames, channels) if channels == 2 else (frames,)
    samples = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    samples[: min(frames, 40)] *= 3  # a hot start: the first blocks need their zero padding
    samples[-min(frames, 40) :] *= 3  # and a hot end
    expected = _brute_force_envelope(samples)
    meter = TruePeak(samples)
    for floor in (0.9, 0.5, 0.0):  # widening, as normalizing does: only new blocks are oversampled
        envelope = meter.exact_above(floor)
        reaching = expected >= floor
        assert np.allclose(envelope[reaching], expected[reaching], atol=2e-6)
        assert (envelope >= np.abs(samples).reshape(frames, -1).max(axis=1)).all()
    assert true_peak_dbtp(samples) == pytest.approx(20 * np.log10(expected.max()), abs=1e-4)


def test_limited_loudness_from_the_energy_matches_measuring_again(settings):
    """The limiter's rounds take loudness from the K-weighted energy times the squared gain curve instead of
    filtering the limited track again: within 0.02 LU of a fresh measurement, even at 12 dB of limiting."""
    from personalize.render import loudness

    song = render_midi(demo_piece(12, programs=(0,), drums=True, seed=4), settings).samples
    rate = 44_100
    energy = loudness._weighted_energy(song, rate)
    envelope = loudness.TruePeak(song).exact_above(0.0)
    for depth_db in (3.0, 12.0):
        curve = loudness.limiter_gain(envelope, envelope.max() * 10 ** (-depth_db / 20), rate)
        gain = curve.astype(np.float32)
        from_energy = loudness.loudness_from_energy(energy * gain**2, rate)[0]
        measured = loudness.measure_loudness(song * gain[:, None], rate)[0]
        assert measured < settings.target_lufs - 0.5  # the limiter really took level off
        assert from_energy == pytest.approx(measured, abs=0.02)


def test_normalizing_a_copy_leaves_the_input_alone(settings):
    from personalize.render import loudness

    quiet = render_midi(demo_piece(6, seed=2), settings).samples * np.float32(0.1)
    before = quiet.copy()
    result = loudness.normalize(quiet, 44_100, -14.0, -1.0, -70.0)
    assert np.array_equal(quiet, before)
    assert _lufs(result.samples, 44_100) == pytest.approx(-14.0, abs=0.1)
    in_place = loudness.normalize(quiet, 44_100, -14.0, -1.0, -70.0, in_place=True)
    assert np.shares_memory(in_place.samples, quiet) or in_place.limited_db > 0
