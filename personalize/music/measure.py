"""Measure a MIDI file's features without trusting its metadata: key by key-finding, tempo, meter,
instruments, duration and note density. Used for the catalog, the demo world and generator verification."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pretty_midi

from personalize.music.gm import DRUMS, Program
from personalize.music.keys import key_name

# Krumhansl-Kessler key profiles (probe-tone ratings, Krumhansl 1990), index 0 = tonic.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class KeyEstimate:
    key_pc: int
    mode: str
    correlation: float  # Pearson r of the winning profile
    margin: float  # r(best) - r(second best): how sure the finder is
    runner_up: tuple[int, str]

    @property
    def name(self) -> str:
        return key_name(self.key_pc, self.mode)


@dataclass
class MidiFeatures:
    duration_s: float
    tempo_bpm: float
    key_pc: int
    mode: str
    key_correlation: float
    meter: str
    programs: list[Program] = field(default_factory=list)
    n_notes: int = 0
    density: float = 0.0  # notes per second, all parts

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def pitch_class_histogram(pm: pretty_midi.PrettyMIDI) -> np.ndarray:
    """Duration-weighted pitch-class histogram over all pitched (non-drum) notes, shape (12,)."""
    hist = np.zeros(12)
    for inst in pm.instruments:
        if inst.is_drum or not inst.notes:
            continue
        pitches = np.fromiter((n.pitch for n in inst.notes), dtype=np.int64, count=len(inst.notes))
        durs = np.fromiter((n.end - n.start for n in inst.notes), dtype=float, count=len(inst.notes))
        np.add.at(hist, pitches % 12, np.clip(durs, 0.0, None))
    return hist


def find_key(histogram: np.ndarray) -> KeyEstimate:
    """Krumhansl-Schmuckler key-finding: correlate the histogram with the 24 rotated key profiles."""
    h = np.asarray(histogram, dtype=float)
    if h.sum() <= 0:
        raise ValueError("no pitched notes to find a key from")
    scores: list[tuple[float, int, str]] = []
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(h, np.roll(profile, tonic))[0, 1])
            scores.append((r if np.isfinite(r) else -1.0, tonic, mode))
    scores.sort(reverse=True)
    best, second = scores[0], scores[1]
    return KeyEstimate(best[1], best[2], best[0], best[0] - second[0], (second[1], second[2]))


def tempo_of(pm: pretty_midi.PrettyMIDI) -> float:
    """The piece's tempo in BPM from the file's tempo map: the tempo in force for the longest time (a
    ritardando written into the map does not move it), 120 when the file has none."""
    times, tempi = pm.get_tempo_changes()
    if len(tempi) == 0:
        return 120.0
    end = max(pm.get_end_time(), float(times[-1]) + 1e-6)
    spans = np.diff(np.append(times, end))
    if spans.sum() <= 0:
        return float(tempi[0])
    held: dict[float, float] = {}
    for tempo, span in zip(np.round(tempi, 2), spans, strict=True):
        held[float(tempo)] = held.get(float(tempo), 0.0) + float(span)
    return max(held, key=lambda t: held[t])


def meter_of(pm: pretty_midi.PrettyMIDI) -> str:
    if pm.time_signature_changes:
        ts = pm.time_signature_changes[0]
        return f"{ts.numerator}/{ts.denominator}"
    return "4/4"


def programs_of(pm: pretty_midi.PrettyMIDI) -> list[Program]:
    """Programs of the parts that have notes, in part order; drums as ``"drums"``; duplicates kept once."""
    out: list[Program] = []
    for inst in pm.instruments:
        if not inst.notes:
            continue
        p: Program = DRUMS if inst.is_drum else int(inst.program)
        if p not in out:
            out.append(p)
    return out


def measure(pm: pretty_midi.PrettyMIDI) -> MidiFeatures:
    """All features of one piece. Raises ``ValueError`` for a piece with no pitched notes."""
    key = find_key(pitch_class_histogram(pm))
    duration_s = float(pm.get_end_time())
    n_notes = sum(len(i.notes) for i in pm.instruments)
    return MidiFeatures(
        duration_s=duration_s,
        tempo_bpm=tempo_of(pm),
        key_pc=key.key_pc,
        mode=key.mode,
        key_correlation=key.correlation,
        meter=meter_of(pm),
        programs=programs_of(pm),
        n_notes=n_notes,
        density=n_notes / duration_s if duration_s > 0 else 0.0,
    )
