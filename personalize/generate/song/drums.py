"""A drum part that follows the form: a groove per section, fills into a new section, an ending hit.

Why patterns rather than a learned drummer: the licensed corpus (chorales and fiddle tunes) has no drum
parts. The patterns follow the meter (backbeat in simple meters, a pulse per dotted quarter in compound
ones, where the snare lands on the second pulse), the density (the cymbal's subdivision) and the section:
an intro keeps time on the cymbal with a light kick, verses and strains play the basic groove, a chorus
opens the hi-hat and adds kicks, a bridge moves to the ride, the last bar before a new section is a fill,
a new section starts with a crash, and the song ends on one kick-and-crash hit. The seed varies ghost notes
and fills. Notes use the General MIDI percussion map (channel 10); times are in ticks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from personalize.generate.song.arrange import Note
from personalize.generate.song.form import FormSection

KICK, SNARE, SIDE_STICK, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 37, 42, 44, 46, 49, 51
LOW_TOM, MID_TOM, HIGH_TOM = 45, 47, 50
HIT = 2  # ticks a drum note lasts (the sound decays by itself)


def meter_grid(meter: str, ticks_per_quarter: int) -> tuple[int, int, bool]:
    """(bar ticks, beat ticks, compound?) for a meter: compound meters beat in dotted quarters."""
    num, den = (int(x) for x in meter.split("/"))
    bar_ticks = num * 4 * ticks_per_quarter // den
    compound = den == 8 and num % 3 == 0 and num > 3
    beat_ticks = 3 * ticks_per_quarter // 2 if compound else 4 * ticks_per_quarter // den
    return bar_ticks, beat_ticks, compound


def drum_part(
    sections: Sequence[FormSection],
    meter: str,
    density_bin: int,
    tempo_bpm: float,
    ticks_per_quarter: int,
    seed: int,
) -> list[tuple[Note, int]]:
    """``(note, velocity)`` pairs of a drum part for the form ``sections`` in playing order."""
    rng = np.random.default_rng(seed)
    bar_ticks, beat_ticks, compound = meter_grid(meter, ticks_per_quarter)
    beats = max(1, bar_ticks // beat_ticks)
    # Cymbal subdivision in ticks: busier with density, one level sparser at fast tempi.
    if compound:
        step = {0: beat_ticks, 1: beat_ticks // 3, 2: beat_ticks // 3, 3: max(1, beat_ticks // 6)}[
            density_bin
        ]
    else:
        step = {0: beat_ticks, 1: beat_ticks // 2, 2: beat_ticks // 2, 3: max(1, beat_ticks // 4)}[
            density_bin
        ]
    if tempo_bpm > 140 and step < beat_ticks:
        step *= 2
    step = max(1, step)
    out: list[tuple[Note, int]] = []

    def hit(pitch: int, tick: int, velocity: float) -> None:
        out.append((Note(tick, HIT, pitch), int(np.clip(velocity + rng.integers(-5, 6), 1, 127))))

    tick0 = 0
    melodic = [s for s in sections if s.role != "outro"]
    for idx, section in enumerate(sections):
        nxt = sections[idx + 1] if idx + 1 < len(sections) else None
        if section.role == "outro" and (section.bars == 1 or not melodic):
            hit(KICK, tick0, 112)
            hit(CRASH, tick0, 112)
            tick0 += section.bars * bar_ticks
            continue
        role = section.role
        # A tag plays the closing section's groove, then one last hit on its final bar; a song without a
        # tag (a short one) ends its last section the same way.
        tag = section.role == "outro" or nxt is None
        if section.role == "outro":
            role = melodic[-1].role
        if tag:
            ending = tick0 + (section.bars - 1) * bar_ticks
            hit(KICK, ending, 112)
            hit(CRASH, ending, 112)
        cymbal = {"intro": PEDAL_HAT if density_bin >= 2 else SIDE_STICK, "bridge": RIDE}.get(
            role, CLOSED_HAT
        )
        if role == "chorus" and density_bin >= 1:
            cymbal = OPEN_HAT if rng.random() < 0.3 else RIDE
        groove_bars = section.bars - 1 if tag else section.bars  # a tag's last bar is the final hit alone
        for bar in range(groove_bars):
            t = tick0 + bar * bar_ticks
            last_bar = bar == groove_bars - 1
            fill = last_bar and (
                tag or (nxt is not None and (nxt.material != section.material or nxt.role != role))
            )
            if bar == 0 and idx > 0 and role != "intro" and section is not melodic[0]:
                hit(CRASH, t, 104)
            elif bar == 0 and section is melodic[0]:
                hit(CRASH, t, 98)
            fill_from = (beats - 1) * beat_ticks if fill else bar_ticks
            # Cymbal.
            for k in range(0, fill_from, step):
                on_beat = k % beat_ticks == 0
                hit(cymbal, t + k, (80 if on_beat else 60) - (12 if role == "intro" else 0))
            # Kick and snare.
            for b in range(beats):
                bt = t + b * beat_ticks
                if bt - t >= fill_from:
                    break
                if role == "intro":
                    if b == 0:
                        hit(KICK, bt, 82)
                    continue
                if b == 0 or (beats == 4 and b == 2):
                    hit(KICK, bt, 104)
                elif beats >= 2 and b % 2 == 1:
                    hit(SNARE if density_bin > 0 else SIDE_STICK, bt, 96)
                if beats == 3 and b in (1, 2):
                    hit(SNARE if density_bin >= 2 else SIDE_STICK, bt, 70)
                if beats == 1:
                    hit(SNARE, bt + beat_ticks // 2, 88)
                if role == "chorus" and density_bin >= 2 and rng.random() < 0.35:
                    hit(KICK, bt + beat_ticks // 2, 84)
                if density_bin >= 2 and rng.random() < 0.15:
                    hit(SNARE, bt + beat_ticks // 2 + (beat_ticks // 4 if not compound else 0), 42)  # ghost
            if fill:
                toms = (
                    [SNARE, HIGH_TOM, MID_TOM, LOW_TOM]
                    if rng.random() < 0.6
                    else [SNARE, SNARE, HIGH_TOM, LOW_TOM]
                )
                fill_step = max(1, beat_ticks // 4 if not compound else beat_ticks // 3)
                for k, tt in enumerate(range(fill_from, bar_ticks, fill_step)):
                    hit(toms[min(k, len(toms) - 1)], t + tt, 78 + 6 * k)
        tick0 += section.bars * bar_ticks
    out.sort(key=lambda x: (x[0].start, x[0].pitch))
    return out
