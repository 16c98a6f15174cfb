"""The note-list form every music metric reads: pitched parts as monophonic lines on a sixteenth-note grid.

A :class:`Score` is made from a ``pretty_midi.PrettyMIDI`` (generated tracks, baselines) or from a corpus
piece, so every system is measured through the same door. Only ``numpy``, ``pretty_midi`` and
:mod:`personalize.music` are imported here: the nightly verification may read these modules without pulling
in the corpus, torch or the evaluation harness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from personalize.music.keys import parse_meter

MELODY_SUFFIX = " (melody)"  # how a generated song names its melody's track
# A chordal instrument playing alone keeps its accompaniment on a second track of the same program (a
# piano's left hand): one instrument on two staves, so the melody track holds the tune and nothing else.
ACCOMPANIMENT_SUFFIX = " (accompaniment)"

TICKS_PER_QUARTER = 4  # one tick is a sixteenth note, as in the corpus cache and the token grammar
TEXTURES = ("chorale", "tune", "band")

Note = tuple[int, int, int]  # (onset tick, duration ticks, MIDI pitch)


def meter_ticks(meter: str) -> tuple[int, int, bool]:
    """``(bar_ticks, beat_ticks, compound)`` of a meter in sixteenths.

    Compound meters (3/8, 6/8, 9/8, 12/8) beat in dotted quarters (6 ticks); simple meters beat in their
    denominator's note (a quarter in 4/4 is 4 ticks, a half in 2/2 is 8).

    >>> meter_ticks("6/8")
    (12, 6, True)
    >>> meter_ticks("3/4")
    (12, 4, False)
    """
    num, den = parse_meter(meter)
    bar_ticks = num * 4 * TICKS_PER_QUARTER // den
    compound = den == 8 and num % 3 == 0
    beat_ticks = 6 if compound else max(1, 4 * TICKS_PER_QUARTER // den)
    return max(1, bar_ticks), beat_ticks, compound


@dataclass
class Score:
    """A piece as the metrics read it.

    ``parts`` holds each pitched part as a monophonic line of ``(onset_tick, duration_ticks, pitch)``,
    ordered from the highest part to the lowest by mean pitch: ``parts[0]`` is the melody, ``parts[-1]`` the
    bass (with ``melody_named``, ``parts[0]`` is the part the file names as its melody and stays first). Bar lines fall at multiples of ``bar_ticks``. ``velocities`` are the pitched notes' MIDI
    velocities and ``onset_deviation_ms`` how far each pitched onset sits from the sixteenth grid.
    """

    parts: list[list[Note]]
    meter: str = "4/4"
    has_drums: bool = False
    velocities: list[int] = field(default_factory=list)
    onset_deviation_ms: list[float] = field(default_factory=list)
    melody_named: bool = False
    # Intermediate results several metrics share (bar similarity, voice-leading counts), filled on first use.
    derived: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.bar_ticks, self.beat_ticks, self.compound = meter_ticks(self.meter)
        parts = [sorted(p) for p in self.parts]
        head = [parts.pop(0)] if self.melody_named and parts and parts[0] else []
        parts = [p for p in parts if p]
        parts.sort(key=lambda p: -float(np.mean([n[2] for n in p])))
        self.parts = head + parts

    @property
    def melody(self) -> list[Note]:
        return self.parts[0] if self.parts else []

    @property
    def bass(self) -> list[Note]:
        return self.parts[-1] if self.parts else []

    @property
    def end_tick(self) -> int:
        return max((n[0] + n[1] for p in self.parts for n in p), default=0)

    @property
    def n_bars(self) -> int:
        return max(1, math.ceil(self.end_tick / self.bar_ticks))

    @property
    def texture(self) -> str:
        return texture_of(len(self.parts), self.has_drums)


def texture_of(n_pitched_parts: int, has_drums: bool) -> str:
    """The product's three textures: ``band`` (a drum part with pitched parts), ``chorale`` (three or four
    pitched parts, no drums), ``tune`` (one or two pitched parts, no drums)."""
    if has_drums:
        return "band"
    return "chorale" if n_pitched_parts >= 3 else "tune"


def _monophonic(notes: list[tuple[int, int, int]]) -> list[Note]:
    """One line from possibly overlapping notes, the line heard on top (a skyline): at a shared onset the
    highest note wins; a note that starts under a higher one still sounding (by more than a sixteenth, and
    more than a whole tone below it) is accompaniment and left out (a piano's arpeggio under a held melody
    note); each note is cut where the next one starts (a chord part becomes its top line). A note played a
    little short of the next onset (a gap of up to a quarter of its length) is read at its written value,
    up to that onset: a pianist's detached half note is still a half note in the score."""
    by_onset: dict[int, tuple[int, int, int]] = {}
    for onset, dur, pitch in notes:
        prev = by_onset.get(onset)
        if prev is None or pitch > prev[2]:
            by_onset[onset] = (onset, dur, pitch)
    line = []
    for note in (by_onset[k] for k in sorted(by_onset)):
        if line:
            onset, dur, pitch = line[-1]
            if onset + dur > note[0] + 1 and note[2] < pitch - 2:
                continue
        line.append(note)
    out: list[Note] = []
    for i, (onset, dur, pitch) in enumerate(line):
        if i + 1 < len(line):
            to_next = line[i + 1][0] - onset
            dur = to_next if 0 < to_next - dur <= dur // 4 else min(dur, to_next)
        out.append((onset, max(1, dur), pitch))
    return out


def score_from_midi(pm: pretty_midi.PrettyMIDI) -> Score:
    """Read a MIDI file into a :class:`Score`: times go through the file's tempo map to sixteenths, the
    meter is the first time signature (4/4 when there is none), drum parts only mark the texture."""
    signatures = sorted(pm.time_signature_changes, key=lambda ts: ts.time)
    meter = f"{signatures[0].numerator}/{signatures[0].denominator}" if signatures else "4/4"
    ticks_per_sixteenth = pm.resolution / TICKS_PER_QUARTER
    tempi = pm.get_tempo_changes()[1]
    ms_per_sixteenth = 60_000.0 / float(tempi[0] if len(tempi) else 120.0) / TICKS_PER_QUARTER
    parts: list[list[Note]] = []
    velocities: list[int] = []
    deviations: list[float] = []
    has_drums = False
    # A generated song names its melody's track: that line is the melody, wherever its register lies.
    named = [i for i in pm.instruments if i.notes and not i.is_drum and i.name.endswith(MELODY_SUFFIX)]
    others = [i for i in pm.instruments if not (named and i is named[0])]
    for inst in named[:1] + others:
        if not inst.notes:
            continue
        if inst.is_drum:
            has_drums = True
            continue
        raw = []
        for n in inst.notes:
            on = pm.time_to_tick(n.start) / ticks_per_sixteenth
            off = pm.time_to_tick(n.end) / ticks_per_sixteenth
            onset = round(on)
            raw.append((onset, max(1, round(off) - onset), int(n.pitch)))
            velocities.append(int(n.velocity))
            deviations.append(abs(on - onset) * ms_per_sixteenth)
        parts.append(_monophonic(raw))
    return Score(parts, meter, has_drums, velocities, deviations, melody_named=bool(named))


def score_to_midi(
    parts: list[list[Note]],
    programs: list[int],
    tempo_bpm: float,
    meter: str,
    velocity: int = 80,
) -> pretty_midi.PrettyMIDI:
    """Per-part note lists (sixteenth ticks) to a PrettyMIDI with the tempo and meter written in.

    Notes end a hair before the next onset (as the generator writes them), so a repeated pitch stays two
    notes when the file is read back.
    """
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(tempo_bpm))
    num, den = parse_meter(meter)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, 0.0))
    s_per_tick = 60.0 / float(tempo_bpm) / TICKS_PER_QUARTER
    for notes, program in zip(parts, programs, strict=True):
        inst = pretty_midi.Instrument(program=int(program))
        for onset, dur, pitch in notes:
            start, end = onset * s_per_tick, (onset + dur) * s_per_tick
            inst.notes.append(
                pretty_midi.Note(
                    velocity=velocity,
                    pitch=int(pitch),
                    start=start,
                    end=end - min(0.01, 0.05 * (end - start)),
                )
            )
        pm.instruments.append(inst)
    return pm
