"""The performance pass: arranged notes (ticks) become a MIDI performance (seconds, velocities, pedal).

What a player would do, in numbers:

- **Dynamics by section and phrase**: a base level per section role (intro and outro soft, chorus loud),
  a little louder each time a section comes back, and an arch over every section (up to its middle, down
  to its cadence).
- **Metric accents**: the downbeat strongest, other beats next, off-beats lightest.
- **Balance**: the melody above the accompaniment, pads and chords underneath.
- **Articulation by instrument**: bowed, blown and sung lines legato, piano slightly detached (the pedal
  joins it), plucked strings and mallets short.
- **Timing**: a few milliseconds of human looseness, swing on the off-beat eighths where the song swings,
  guitar chords strummed (low to high on the beat, high to low off it), and a ritardando over the last two
  bars and the final chord held like a fermata, both written in the tempo map.
- **Sustain pedal** for pianos that play chords: down just after each chord change, up just before the
  next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pretty_midi

from personalize.generate.song.arrange import Note
from personalize.music.gm import family_of

SECTION_LEVEL = {
    "intro": 60,
    "verse": 72,
    "strain": 76,
    "phrase": 72,
    "chorus": 86,
    "bridge": 78,
    "outro": 70,
}
ROLE_OFFSET = {"melody": 6, "counter": -6, "bass": -2, "chords": -10, "pad": -14, "alto": -4, "tenor": -4}
LEGATO = {"strings", "ensemble", "brass", "reed", "pipe", "synth_lead", "synth_pad", "organ", "bass"}
SHORT = {"chromatic_percussion", "percussive"}
RELEASE_MAX = 0.4  # the most a sustained note is let go early, in sixteenths of its own


@dataclass
class Part:
    """One arranged instrument: its GM program (``None`` for drums), role and notes in ticks; drum notes
    carry their own velocities."""

    program: int | None
    role: str
    notes: list[Note]
    velocities: list[int] | None = None
    name: str = ""


@dataclass
class Span:
    """A section in playing order, in ticks, for dynamics: its role, start, length and how many times its
    material has been heard before."""

    role: str
    start: int
    ticks: int
    repeat: int


def _level(spans: Sequence[Span], tick: int) -> float:
    for s in spans:
        if s.start <= tick < s.start + s.ticks:
            x = (tick - s.start) / max(1, s.ticks)
            return SECTION_LEVEL.get(s.role, 74) + 3 * min(s.repeat, 2) + 7 * np.sin(np.pi * x) - 3
    return SECTION_LEVEL["outro"]


def perform(
    parts: Sequence[Part],
    spans: Sequence[Span],
    tempo_bpm: float,
    meter: str,
    ticks_per_quarter: int,
    chord_ticks: int,
    rng: np.random.Generator,
    swing: float = 0.5,
    ritardando_bars: int = 2,
) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI of ``parts``. The ritardando is written in the tempo map (the tempo falls beat by beat
    to 70 % over the last ``ritardando_bars`` bars), so every note stays on its beat in the file's own
    ticks, as a sequencer stores it; the asked tempo holds everywhere before. ``swing`` is the share of a
    quarter's first eighth (0.5 straight, about 0.6 swung)."""
    num, den = (int(x) for x in meter.split("/"))
    bar_ticks = num * 4 * ticks_per_quarter // den
    beat_ticks = (
        (3 * ticks_per_quarter // 2)
        if (den == 8 and num % 3 == 0 and num > 3)
        else (4 * ticks_per_quarter // den)
    )
    end_tick = max((n.start + n.duration for p in parts for n in p.notes), default=0)
    rit_from = max(0, end_tick - ritardando_bars * bar_ticks)
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(tempo_bpm))
    midi_per_tick = pm.resolution / ticks_per_quarter
    if ritardando_bars > 0 and end_tick > rit_from:
        # One tempo per beat of the ritardando, each the local tempo at the beat's middle: linear from 100 %
        # to 70 %. pretty_midi keeps its tempo map as (tick, seconds per tick) pairs.
        scales = [(0, 60.0 / (tempo_bpm * pm.resolution))]
        for t in range(rit_from, end_tick, beat_ticks):
            x = (t + beat_ticks / 2 - rit_from) / (end_tick - rit_from)
            local = tempo_bpm * (1.0 - 0.3 * min(1.0, x))
            scales.append((round(t * midi_per_tick), 60.0 / (local * pm.resolution)))
        scales.append((round(end_tick * midi_per_tick), 60.0 / (0.7 * tempo_bpm * pm.resolution)))
        # The final chord held like a fermata: its span 1.6 times as long, written as a slower tempo too,
        # so the chord keeps its written length and ends on its bar line.
        last = max(
            (n.start for p in parts for n in p.notes if n.start + n.duration >= end_tick), default=None
        )
        if last is not None:
            fermata = round(last * midi_per_tick)
            kept = [(t, sc) for t, sc in scales if t < fermata]
            in_force = kept[-1][1] if kept else scales[0][1]
            held = [(t, sc * 1.6) for t, sc in scales if fermata < t]
            scales = [*kept, (fermata, in_force * 1.6), *held]
        pm._tick_scales = scales
    pm._update_tick_to_time(round((end_tick + 4 * bar_ticks) * midi_per_tick) + 1)

    def seconds(tick: float) -> float:
        # Swing: an eighth off the beat is moved later; only in simple meters with quarter beats.
        if swing != 0.5 and beat_ticks == ticks_per_quarter:
            q, r = divmod(tick, ticks_per_quarter)
            half = ticks_per_quarter / 2
            r = r * swing / 0.5 if r <= half else half * swing / 0.5 + (r - half) * (1 - swing) / 0.5
            tick = q * ticks_per_quarter + r
        return float(pm.tick_to_time(round(tick * midi_per_tick)))

    pm.time_signature_changes = [pretty_midi.TimeSignature(num, den, 0.0)]
    for part in parts:
        is_drum = part.program is None
        inst = pretty_midi.Instrument(
            program=0 if is_drum else int(part.program), is_drum=is_drum, name=part.name
        )
        family = "drums" if is_drum else family_of(int(part.program))
        offset = ROLE_OFFSET.get(part.role, 0)
        strum_index: dict[int, int] = {}
        for k, note in enumerate(sorted(part.notes, key=lambda n: (n.start, n.pitch))):
            start = seconds(note.start)
            end = seconds(note.start + note.duration)
            if is_drum:
                velocity = part.velocities[k] if part.velocities else 90
                start += rng.normal(0, 0.003)
                end = start + 0.1
            else:
                in_bar = note.start % bar_ticks
                accent = 8 if in_bar == 0 else (3 if in_bar % beat_ticks == 0 else -3)
                velocity = _level(spans, note.start) + offset + accent + rng.normal(0, 2.5)
                velocity += 2 if note.duration > beat_ticks else 0
                length = end - start
                # A player lets go a little early, the more so on a detached instrument, but never by as
                # much as a written value is worth: the release is at most RELEASE_MAX of a sixteenth
                # (a guitar's half note cut by a tenth read back, and sounded, as seven sixteenths).
                release = RELEASE_MAX * length / max(1, note.duration)
                if family in LEGATO:
                    length -= min(0.02 * length, release)
                elif family == "piano":
                    length -= min(0.08 * length, release)
                elif family == "guitar":
                    length -= min(0.1 * length, release)
                elif family in SHORT:
                    length = min(length, 0.6 * length + 0.05)
                start += rng.normal(0, 0.006)
                if family == "guitar" and part.role == "chords":
                    # Strum: each string ~12 ms after the one before it, downward on beats, upward off them.
                    i = strum_index.get(note.start, 0)
                    strum_index[note.start] = i + 1
                    down = note.start % beat_ticks == 0
                    n_here = sum(1 for n in part.notes if n.start == note.start)
                    start += 0.012 * (i if down else n_here - 1 - i)
                    velocity -= 0 if down else 8
                end = start + max(0.03, length)
                velocity = float(np.clip(velocity, 20, 122))
            start = max(0.0, start)
            inst.notes.append(
                pretty_midi.Note(round(velocity), int(note.pitch), start, max(start + 0.03, end))
            )
        # The pedal is the instrument's, not a track's: a solo piano's melody track is pedalled with its
        # accompaniment track.
        pedalled = part.role == "chords" or (
            part.role == "melody" and any(q.role == "chords" and q.program == part.program for q in parts)
        )
        if not is_drum and family == "piano" and pedalled:
            for t in range(0, end_tick, chord_ticks):
                down, up = seconds(t) + 0.02, seconds(min(t + chord_ticks, end_tick)) - 0.03
                if up > down:
                    inst.control_changes.append(pretty_midi.ControlChange(64, 127, down))
                    inst.control_changes.append(pretty_midi.ControlChange(64, 0, up))
        pm.instruments.append(inst)
    return pm
