"""Check every generated piece against its controls with measurements that do not trust the model.

``measure_piece`` reads the MIDI back: key by Krumhansl-Schmuckler key-finding on the notes, tempo from the
tempo map, meter from the time signature, the parts that actually sound, the share of each instrument's
notes inside its playable range, and the density bin from counted notes. ``passes`` says whether all of
those match. ``generate_verified`` resamples the misses (bounded tries) and returns every piece with its
controls, measurement and attempt count; a piece that never passes is kept with ``ok=False`` and an
error naming its controls (or raises, with ``on_failure="raise"``), so a nightly batch goes on with the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pretty_midi

from personalize.music.controls import Controls, bar_quarters, density_bin
from personalize.music.gm import DRUMS, program_range
from personalize.music.keys import key_name
from personalize.music.measure import find_key, meter_of, pitch_class_histogram, tempo_of
from personalize.music.score import (  # a song names its melody track (song.writer)
    ACCOMPANIMENT_SUFFIX,
    MELODY_SUFFIX,
)

TEMPO_TOLERANCE = 0.01  # relative
MIN_IN_RANGE_SHARE = 0.99


def _parts(pm: pretty_midi.PrettyMIDI) -> list[object]:
    """The instruments playing: a chordal instrument's accompaniment track (``ACCOMPANIMENT_SUFFIX``) is the
    same instrument as its melody track, as a piano's two staves are one piano."""
    sounding = [inst for inst in pm.instruments if inst.notes]
    melodic = {
        int(i.program) for i in sounding if not i.is_drum and not i.name.endswith(ACCOMPANIMENT_SUFFIX)
    }
    return [
        DRUMS if inst.is_drum else int(inst.program)
        for inst in sounding
        if inst.is_drum or not (inst.name.endswith(ACCOMPANIMENT_SUFFIX) and int(inst.program) in melodic)
    ]


# Accompaniment under a held melody note starts at least a sixteenth (79 ms at 190 BPM) before the held
# note ends; performance timing moves onsets by a few milliseconds.
UNDER_HELD_S = 0.05


def _melodic_onsets(notes: list[pretty_midi.Note]) -> int:
    """Onsets heard as the line: one per onset time, none under a higher note still sounding (a solo piano
    or guitar plays its accompaniment in the melody's track, below and between the melody's notes). A note
    that starts within ``UNDER_HELD_S`` of the end of the higher one is the next note of the line, not one
    under it: the performance pass moves onsets by a few milliseconds, and legato notes touch."""
    ordered = sorted(notes, key=lambda n: (round(n.start, 2), -n.pitch))
    count, held_until, held_pitch, last_start = 0, -1.0, -1, None
    for n in ordered:
        start = round(n.start, 2)
        if start == last_start:
            continue
        last_start = start
        if n.start < held_until - UNDER_HELD_S and n.pitch < held_pitch:
            continue
        count += 1
        held_until, held_pitch = n.end, n.pitch
    return count


def measure_piece(pm: pretty_midi.PrettyMIDI, controls: Controls) -> dict[str, object]:
    """Measured features of ``pm`` next to what ``controls`` asked for, with a verdict per control."""
    m: dict[str, object] = {"controls": controls.describe()}
    hist = pitch_class_histogram(pm)
    if hist.sum() > 0:
        key = find_key(hist)
        m.update(
            key_pc=key.key_pc,
            mode=key.mode,
            key=key.name,
            key_correlation=round(key.correlation, 4),
            key_margin=round(key.margin, 4),
        )
        m["key_ok"] = key.key_pc == controls.key_pc and key.mode == controls.mode
        rel_pc = (controls.key_pc + 9) % 12 if controls.mode == "major" else (controls.key_pc + 3) % 12
        rel_mode = "minor" if controls.mode == "major" else "major"
        m["key_relative_confusion"] = key.key_pc == rel_pc and key.mode == rel_mode
    else:
        m.update(key_pc=None, mode=None, key=None, key_ok=False, key_relative_confusion=False)
    m["key_asked"] = key_name(controls.key_pc, controls.mode)

    tempo = tempo_of(pm)
    m["tempo_bpm"] = round(tempo, 3)
    m["tempo_ok"] = abs(tempo - controls.tempo_bpm) <= TEMPO_TOLERANCE * controls.tempo_bpm
    m["meter"] = meter_of(pm)
    m["meter_ok"] = m["meter"] == controls.meter

    parts = _parts(pm)
    asked = list(controls.programs)
    m["programs"] = parts
    m["programs_ok"] = Counter(map(str, parts)) == Counter(map(str, asked))
    measured_set, asked_set = set(map(str, parts)), set(map(str, asked))
    hit = len(measured_set & asked_set)
    precision = hit / len(measured_set) if measured_set else 0.0
    recall = hit / len(asked_set) if asked_set else 0.0
    m["instrument_f1"] = 2 * precision * recall / (precision + recall) if hit else 0.0

    in_range, pitched = 0, 0
    per_part: dict[str, float] = {}
    for inst in pm.instruments:
        if inst.is_drum or not inst.notes:
            continue
        lo, hi = program_range(int(inst.program))
        inside = sum(lo <= n.pitch <= hi for n in inst.notes)
        per_part[str(inst.program)] = round(inside / len(inst.notes), 4)
        in_range += inside
        pitched += len(inst.notes)
    m["in_range_share"] = round(in_range / pitched, 4) if pitched else 0.0
    m["in_range_by_program"] = per_part
    m["range_ok"] = pitched > 0 and in_range / pitched >= MIN_IN_RANGE_SHARE

    # Density: notes per quarter note per pitched part, over whole bars of the measured meter. A song
    # names its melody track ("... (melody)"): its density is the melody's, the line the model wrote
    # for the requested bin (the accompaniment follows the bin by its pattern, chords count as chords).
    # Bars up to the one holding the last onset: a final chord held past its bar (a fermata, a ritardando,
    # the release) is not more music to count notes over.
    onsets = [n.start for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    quarters = pm.time_to_tick(max(onsets) if onsets else pm.get_end_time()) / pm.resolution
    bq = bar_quarters(m["meter"]) if m["meter_ok"] else bar_quarters(controls.meter)
    bars = max(1, math.floor(quarters / bq + 1e-3) + 1)
    melody = [i for i in pm.instruments if not i.is_drum and i.name.endswith(MELODY_SUFFIX)]
    if melody:
        dens = _melodic_onsets(melody[0].notes) / (bars * bq)
    else:
        n_pitched_parts = sum(1 for inst in pm.instruments if not inst.is_drum and inst.notes)
        dens = pitched / (bars * bq) / max(1, n_pitched_parts)
    m["bars"] = bars
    m["notes_per_quarter_per_part"] = round(dens, 4)
    m["density_bin"] = density_bin(dens)
    m["density_ok"] = m["density_bin"] == controls.density_bin
    m["duration_s"] = round(pm.get_end_time(), 3)
    m["n_notes"] = sum(len(i.notes) for i in pm.instruments)
    return m


CHECKS = ("key_ok", "tempo_ok", "meter_ok", "programs_ok", "range_ok", "density_ok")


# Checks a generator adds by reviewing its own output (``generator.review(pm, controls)``): the music gate
# (music that looks like the corpus, not noise) and originality (no copied training bars).
REVIEW_CHECKS = ("music_ok", "original_ok")


def _checks(measurement: dict[str, object]) -> tuple[str, ...]:
    return CHECKS + tuple(c for c in REVIEW_CHECKS if c in measurement)


def passes(measurement: dict[str, object]) -> bool:
    """True when every control was met (key, tempo, meter, instrument set, range, density bin) and every
    review the generator made passed."""
    return all(bool(measurement.get(c)) for c in _checks(measurement))


def missed(measurement: dict[str, object]) -> list[str]:
    return [c.removesuffix("_ok") for c in _checks(measurement) if not measurement.get(c)]


@dataclass
class GeneratedPiece:
    """A generated piece with what was asked, what was measured and how many tries it took."""

    midi: pretty_midi.PrettyMIDI
    controls: Controls
    measurement: dict[str, object]
    attempts: int
    ok: bool
    error: str | None = None
    first_measurement: dict[str, object] = field(default_factory=dict)  # the first try, before resampling


class GenerationError(RuntimeError):
    """Raised by ``generate_verified(..., on_failure="raise")`` when pieces miss their controls."""


def generate_verified(
    generator: object,
    controls_list: list[Controls],
    seed: int,
    max_attempts: int = 4,
    on_failure: str = "record",
) -> list[GeneratedPiece]:
    """Generate, measure and resample until each piece passes or ``max_attempts`` tries are spent.

    Tries after the first use derived seeds, batched over the pieces still missing. A piece that never
    passes keeps its best try (most checks met) with ``ok=False`` and ``error`` naming its controls and
    what it missed; ``on_failure="raise"`` raises :class:`GenerationError` instead.
    """
    if on_failure not in ("record", "raise"):
        raise ValueError(f"on_failure must be 'record' or 'raise', not {on_failure!r}")
    n = len(controls_list)
    best: list[GeneratedPiece | None] = [None] * n
    pending = list(range(n))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        batch_seed = int(seed) if attempt == 1 else int(seed) * 1_000_003 + attempt * 7919
        midis = generator.generate([controls_list[i] for i in pending], batch_seed)  # type: ignore[attr-defined]
        still = []
        review = getattr(generator, "review", None)
        for i, pm in zip(pending, midis, strict=True):
            m = measure_piece(pm, controls_list[i])
            if review is not None:
                m.update(review(pm, controls_list[i]))
            ok = passes(m)
            prev = best[i]
            score = sum(bool(m.get(c)) for c in _checks(m))
            first = prev.first_measurement if prev else m
            if (
                prev is None
                or ok
                or score > sum(bool(prev.measurement.get(c)) for c in _checks(prev.measurement))
            ):
                best[i] = GeneratedPiece(pm, controls_list[i], m, attempt, ok, None, first)
            else:
                prev.attempts = attempt
            if not ok:
                still.append(i)
        pending = still
    failures = []
    for i in pending:
        piece = best[i]
        assert piece is not None
        piece.attempts = max_attempts
        piece.error = (
            f"controls {controls_list[i].describe()} missed {', '.join(missed(piece.measurement))} "
            f"after {max_attempts} tries"
        )
        failures.append(piece.error)
    if failures and on_failure == "raise":
        raise GenerationError(f"{len(failures)} of {n} pieces failed verification: " + "; ".join(failures))
    return [p for p in best if p is not None]
