"""Multi-part pieces built with pretty_midi (chords, bass, melody, drums) to exercise and benchmark rendering."""

from __future__ import annotations

import io

import numpy as np
import pretty_midi

# I-vi-IV-V in C major, as chord roots with their triads (semitones above C4)
PROGRESSION = ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14))
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


def demo_piece(
    duration_s: float = 45.0,
    tempo_bpm: float = 110.0,
    programs: tuple[int, ...] = (0, 33, 73),
    drums: bool = True,
    velocity: int = 90,
    notes_per_beat: int = 2,
    seed: int = 0,
) -> pretty_midi.PrettyMIDI:
    """A piece of about ``duration_s``: chords on ``programs[0]``, bass on ``[1]``, melody on the rest, drums.

    ``velocity`` scales every part (quiet vs loud inputs), ``notes_per_beat`` the melody's density.
    """
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    beat_s = 60.0 / tempo_bpm
    bar_s = 4 * beat_s
    n_bars = max(1, round(duration_s / bar_s))

    def vel(base: int) -> int:
        return int(np.clip(base + rng.integers(-8, 9), 1, 127))

    parts = [pretty_midi.Instrument(program=p, name=f"part {i + 1}") for i, p in enumerate(programs)]
    for bar in range(n_bars):
        t_bar = bar * bar_s
        chord = PROGRESSION[bar % len(PROGRESSION)]
        if parts:
            for interval in chord:
                parts[0].notes.append(
                    pretty_midi.Note(vel(velocity - 10), 60 + interval, t_bar, t_bar + bar_s * 0.95)
                )
        if len(parts) > 1:
            for beat in range(4):
                t = t_bar + beat * beat_s
                root = 36 + chord[0] + (12 if beat == 2 else 0)
                parts[1].notes.append(pretty_midi.Note(vel(velocity), root, t, t + beat_s * 0.9))
        for melody in parts[2:]:
            step_s = beat_s / notes_per_beat
            for k in range(4 * notes_per_beat):
                if rng.random() < 0.2:
                    continue
                degree = int(rng.integers(0, len(MAJOR_SCALE)))
                pitch = 72 + MAJOR_SCALE[degree] + 12 * int(rng.integers(-1, 1))
                t = t_bar + k * step_s
                melody.notes.append(pretty_midi.Note(vel(velocity), pitch, t, t + step_s * 0.9))
    pm.instruments.extend(parts)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
        for bar in range(n_bars):
            for eighth in range(8):
                t = bar * bar_s + eighth * beat_s / 2
                kit.notes.append(pretty_midi.Note(vel(velocity - 20), 42, t, t + 0.05))  # closed hi-hat
                if eighth in (0, 4):
                    kit.notes.append(pretty_midi.Note(vel(velocity + 10), 36, t, t + 0.1))  # kick
                if eighth in (2, 6):
                    kit.notes.append(pretty_midi.Note(vel(velocity), 38, t, t + 0.1))  # snare
        pm.instruments.append(kit)
    return pm


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    """The Standard MIDI File bytes of ``pm``."""
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()
