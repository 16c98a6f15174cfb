"""Drum part for requests that include ``"drums"``: a seeded pattern generator driven by meter, tempo and density.

Why patterns rather than a learned drum model: the licensed corpus (chorales and fiddle tunes) has no drum
parts, so a learned drummer would have nothing allowed to learn from. A pattern follows the controls by
construction: the meter places kick and snare (backbeat in simple meters, a pulse per dotted quarter in
compound ones), the density bin sets the hi-hat subdivision, the tempo thins it when fast, and the seed
varies ghost notes, open hats and the fill closing every fourth bar. Drum notes use the General MIDI
percussion map on channel 10.
"""

from __future__ import annotations

import numpy as np
import pretty_midi

from personalize.corpus.piece import V1_TICKS_PER_QUARTER
from personalize.music.keys import parse_meter

KICK, SNARE, SIDE_STICK, CLOSED_HAT, OPEN_HAT, CRASH, RIDE, LOW_TOM, HIGH_TOM = (
    36,
    38,
    37,
    42,
    46,
    49,
    51,
    45,
    50,
)


def _note(inst: pretty_midi.Instrument, pitch: int, tick: int, s_per_tick: float, velocity: int) -> None:
    start = tick * s_per_tick
    inst.notes.append(
        pretty_midi.Note(velocity=int(np.clip(velocity, 1, 127)), pitch=pitch, start=start, end=start + 0.08)
    )


def drum_part(meter: str, tempo_bpm: float, density_bin: int, bars: int, seed: int) -> pretty_midi.Instrument:
    """A drum track of ``bars`` bars; the same arguments always give the same part."""
    rng = np.random.default_rng(seed)
    num, den = parse_meter(meter)
    bar_ticks = num * 4 * V1_TICKS_PER_QUARTER // den
    compound = den == 8 and num % 3 == 0
    beat_ticks = 6 if compound else 16 // den
    beats = bar_ticks // beat_ticks
    s_per_tick = 60.0 / float(tempo_bpm) / V1_TICKS_PER_QUARTER
    # Hi-hat step in ticks: denser requests subdivide further; very fast tempi step back one level.
    hat_step = {
        0: beat_ticks,
        1: max(1, beat_ticks // 2),
        2: max(1, beat_ticks // 2),
        3: max(1, beat_ticks // 4),
    }
    step = hat_step[int(density_bin)]
    if compound:
        step = {0: 6, 1: 3, 2: 2, 3: 1}[int(density_bin)]
    if tempo_bpm > 140 and step < beat_ticks:
        step *= 2
    cymbal = RIDE if density_bin == 0 else CLOSED_HAT
    inst = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    for bar in range(bars):
        t0 = bar * bar_ticks
        fill = bar % 4 == 3 and bars > 4
        for beat in range(beats):
            bt = t0 + beat * beat_ticks
            if fill and beat == beats - 1:
                for k, tom in enumerate((SNARE, HIGH_TOM, LOW_TOM, SNARE)[: max(1, beat_ticks // 1)]):
                    _note(inst, tom, bt + k * max(1, beat_ticks // 4), s_per_tick, 85 + 8 * k)
                continue
            if beats >= 2 and beat % 2 == 1:
                _note(
                    inst, SNARE if density_bin > 0 else SIDE_STICK, bt, s_per_tick, 96 + rng.integers(-6, 6)
                )
            if beat == 0 or (beats == 4 and beat == 2) or (beats == 3 and beat == 0):
                _note(inst, KICK, bt, s_per_tick, 105 + rng.integers(-5, 5))
            elif density_bin >= 2 and rng.random() < 0.25:
                _note(inst, KICK, bt + beat_ticks // 2, s_per_tick, 80)
            if beats == 1 and beat == 0:
                _note(inst, SNARE, bt + beat_ticks // 2, s_per_tick, 90)
        for tick in range(0, bar_ticks, step):
            if fill and tick >= (beats - 1) * beat_ticks:
                break
            on_beat = tick % beat_ticks == 0
            hat = OPEN_HAT if (not on_beat and rng.random() < 0.06) else cymbal
            _note(inst, hat, t0 + tick, s_per_tick, (84 if on_beat else 62) + rng.integers(-6, 6))
        if bar % 8 == 0:
            _note(inst, CRASH, t0, s_per_tick, 100)
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
    return inst
