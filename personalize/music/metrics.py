"""Metrics that tell music from noise: melodic motion, repetition, cadences, voice-leading, metric feel.

Every metric is a pure function of a :class:`~personalize.music.score.Score` (and the piece's key
where it needs one) and returns a float in the unit its name says: ``_share`` is a fraction 0..1, ``_bits``
an entropy, ``_per_100_changes`` a count per hundred chord changes, ``_semitones``, ``_ms`` and ``_midi``
what they say. A metric that does not apply to a piece (voice-leading in a single line, chord dissonance
with fewer than three parts, metric feel in a bar the beat does not divide) is NaN, never 0, so it neither
passes nor fails a piece.

Melodic metrics read the melody (the highest part); harmony and voice-leading read beat slices, the pitches
every part sounds at each beat of the meter (a quarter, or a dotted quarter in compound time), so passing
notes between beats do not count as chords. Voice-leading needs two parts (chord dissonance three).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from personalize.music.score import TICKS_PER_QUARTER, Note, Score

INTERVAL_CLIP = 12  # interval histograms fold everything beyond an octave into the outer bins
DURATION_CLIP = 16  # duration histograms in sixteenths: 1..16, longer notes in the last bin
# Phrase ends are checked for cadences every four bars counted back from the last bar (the common phrase of
# tunes and hymns; counting back keeps a pickup bar from shifting every phrase end by one).
PHRASE_BARS = 4
RETURN_MIN_DISTANCE_BARS = 4
RETURN_SIMILARITY = 0.6  # Jaccard similarity each bar of a 2-bar section must reach to count as returning

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor plus the leading tone


def scale_of(key_pc: int, mode: str) -> tuple[int, ...]:
    """Pitch classes of the key's scale (minor: natural minor with the raised leading tone)."""
    steps = _MINOR_SCALE if mode == "minor" else _MAJOR_SCALE
    return tuple((int(key_pc) + s) % 12 for s in steps)


def _tonic_triad(key_pc: int) -> set[int]:
    # Both thirds: a minor-key piece may end on a major tonic chord (the Picardy third).
    return {key_pc % 12, (key_pc + 3) % 12, (key_pc + 4) % 12, (key_pc + 7) % 12}


def _dominant_triad(key_pc: int) -> set[int]:
    return {(key_pc + 7) % 12, (key_pc + 11) % 12, (key_pc + 2) % 12}


# ----------------------------------------------------------------------------------------------------------
# Melody


def melody_intervals(score: Score) -> np.ndarray:
    """Signed melodic intervals of the melody, semitones (one fewer than its notes)."""
    pitches = np.array([n[2] for n in score.melody], dtype=int)
    return np.diff(pitches)


def _interval_share(score: Score, test: Callable[[np.ndarray], np.ndarray]) -> float:
    iv = np.abs(melody_intervals(score))
    return float(test(iv).mean()) if len(iv) else float("nan")


def melody_step_share(score: Score) -> float:
    """Share of melodic intervals that are steps (1 or 2 semitones), 0..1."""
    return _interval_share(score, lambda iv: (iv >= 1) & (iv <= 2))


def melody_repeat_share(score: Score) -> float:
    """Share of melodic intervals that repeat the previous pitch, 0..1."""
    return _interval_share(score, lambda iv: iv == 0)


def melody_leap_share(score: Score) -> float:
    """Share of melodic intervals of a fourth or more (5+ semitones), 0..1."""
    return _interval_share(score, lambda iv: iv >= 5)


def melody_mean_interval_semitones(score: Score) -> float:
    """Mean absolute melodic interval, semitones."""
    iv = np.abs(melody_intervals(score))
    return float(iv.mean()) if len(iv) else float("nan")


def melody_tonic_share(score: Score, key_pc: int) -> float:
    """Share of melody notes (counted once each) whose pitch class is the tonic, 0..1."""
    if not score.melody:
        return float("nan")
    return float(np.mean([n[2] % 12 == key_pc % 12 for n in score.melody]))


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if len(p) else float("nan")


def interval_histogram(score: Score) -> np.ndarray:
    """Counts of signed melodic intervals -12..+12 semitones (wider ones in the end bins), 25 bins."""
    iv = np.clip(melody_intervals(score), -INTERVAL_CLIP, INTERVAL_CLIP) + INTERVAL_CLIP
    return np.bincount(iv, minlength=2 * INTERVAL_CLIP + 1).astype(float)


def duration_histogram(score: Score) -> np.ndarray:
    """Counts of melody note durations 1..16 sixteenths (longer notes in the last bin), 16 bins."""
    d = np.clip([n[1] for n in score.melody], 1, DURATION_CLIP) - 1
    return np.bincount(np.asarray(d, dtype=int), minlength=DURATION_CLIP).astype(float)


def melody_interval_entropy_bits(score: Score) -> float:
    """Entropy of the melody's signed-interval histogram, bits (0 .. log2(25) = 4.64)."""
    return _entropy_bits(interval_histogram(score)) if len(score.melody) > 1 else float("nan")


def duration_entropy_bits(score: Score) -> float:
    """Entropy of the melody's duration histogram, bits (0 .. 4)."""
    return _entropy_bits(duration_histogram(score)) if score.melody else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Repetition


def bar_contents(line: list[Note], bar_ticks: int, n_bars: int) -> list[frozenset[tuple[int, int]]]:
    """Per bar, the set of ``(onset within the bar in ticks, pitch)`` of the notes starting in it."""
    bars: list[set[tuple[int, int]]] = [set() for _ in range(n_bars)]
    for onset, _, pitch in line:
        b = onset // bar_ticks
        if 0 <= b < n_bars:
            bars[b].add((onset - b * bar_ticks, pitch))
    return [frozenset(b) for b in bars]


def _exact_bars(line: list[Note], bar_ticks: int, n_bars: int) -> list[tuple[Note, ...]]:
    # Exact content includes durations (cut at the bar line) so that a held note and a short one differ.
    bars: list[list[Note]] = [[] for _ in range(n_bars)]
    for onset, dur, pitch in line:
        b = onset // bar_ticks
        if 0 <= b < n_bars:
            start = onset - b * bar_ticks
            bars[b].append((start, min(dur, bar_ticks - start), pitch))
    return [tuple(b) for b in bars]


def bar_similarity(score: Score) -> np.ndarray:
    """Bar-by-bar Jaccard similarity of the melody's ``(onset, pitch)`` sets, n_bars x n_bars, 0..1.

    Bars without an onset (a held note, a rest) are NaN: a drone would otherwise look like perfect repetition.
    """
    if "bar_similarity" not in score.derived:
        score.derived["bar_similarity"] = _bar_similarity(score)
    return np.array(score.derived["bar_similarity"])  # a copy: callers overwrite the diagonal


def _bar_similarity(score: Score) -> np.ndarray:
    bars = bar_contents(score.melody, score.bar_ticks, score.n_bars)
    n = len(bars)
    sim = np.full((n, n), np.nan)
    for i in range(n):
        if not bars[i]:
            continue
        for j in range(i, n):
            if bars[j]:
                sim[i, j] = sim[j, i] = len(bars[i] & bars[j]) / len(bars[i] | bars[j])
    return sim


def bar_self_similarity(score: Score) -> float:
    """Mean over the melody's bars of the similarity to the most similar other bar, 0..1.

    High when bars come back (a motif, a repeated phrase), low when every bar is new.
    """
    sim = bar_similarity(score)
    if len(sim) < 2:
        return float("nan")
    np.fill_diagonal(sim, np.nan)
    rows = sim[~np.all(np.isnan(sim), axis=1)]
    return float(np.nanmax(rows, axis=1).mean()) if len(rows) else float("nan")


def repeated_bar_share(score: Score) -> float:
    """Share of the melody's bars (from the second on, bars with an onset) that repeat an earlier bar exactly
    (same onsets, durations and pitches), 0..1."""
    bars = _exact_bars(score.melody, score.bar_ticks, score.n_bars)
    seen: set[tuple[Note, ...]] = set()
    repeats = counted = 0
    for i, b in enumerate(bars):
        if not b:
            continue
        if i > 0:
            counted += 1
            repeats += b in seen
        seen.add(b)
    return repeats / counted if counted else float("nan")


def has_repeated_2bar_unit(score: Score) -> float:
    """1.0 when a 2-bar unit of the melody (starting on a bar line, at least three notes) comes back exactly
    later without overlapping itself, else 0.0."""
    bars = _exact_bars(score.melody, score.bar_ticks, score.n_bars)
    first_at: dict[tuple[tuple[Note, ...], ...], int] = {}
    for i in range(len(bars) - 1):
        unit = (bars[i], bars[i + 1])
        if len(bars[i]) + len(bars[i + 1]) < 3:
            continue
        if unit in first_at and i - first_at[unit] >= 2:
            return 1.0
        first_at.setdefault(unit, i)
    return 0.0


def has_returning_section(score: Score) -> float:
    """1.0 when a 2-bar section of the melody returns at least 4 bars later, each bar at least
    ``RETURN_SIMILARITY`` alike (exactly or with small variation), else 0.0."""
    sim = np.nan_to_num(bar_similarity(score), nan=0.0)
    n = len(sim)
    for i in range(n - 1):
        for j in range(i + RETURN_MIN_DISTANCE_BARS, n - 1):
            if sim[i, j] >= RETURN_SIMILARITY and sim[i + 1, j + 1] >= RETURN_SIMILARITY:
                return 1.0
    return 0.0


# ----------------------------------------------------------------------------------------------------------
# Cadences


def _sounding(line: list[Note], tick: int) -> int | None:
    """Pitch of the line sounding at ``tick`` (None in a rest); ``line`` sorted by onset."""
    i = bisect.bisect_right(line, (tick, 1 << 30, 1 << 30)) - 1
    if i >= 0 and line[i][0] + line[i][1] > tick:
        return line[i][2]
    return None


def ends_on_tonic(score: Score, key_pc: int, mode: str) -> float:
    """1.0 when the piece ends on its tonic: the lowest part's last note is the tonic and every part's last
    note is a tone of the tonic chord (either third); a solo line must end on the tonic itself. Else 0.0."""
    if not score.parts:
        return float("nan")
    triad = _tonic_triad(key_pc)
    last = [p[-1][2] % 12 for p in score.parts]
    return float(last[-1] == key_pc % 12 and all(pc in triad for pc in last))


def phrase_end_cadence_share(score: Score, key_pc: int, mode: str) -> float:
    """Share of 4-bar phrase ends (the last bar, and every fourth bar before it) where the melody arrives: the
    last melody note starting in that bar lasts at least a quarter note (or the beat, when shorter) and is a
    tone of the tonic or dominant chord, 0..1. A bar where the melody neither starts nor holds a note (an
    instrumental introduction) ends no phrase of it and is not counted."""
    ends = [
        bar
        for bar in range(score.n_bars, 0, -PHRASE_BARS)
        if any(
            n[0] < bar * score.bar_ticks and n[0] + n[1] > (bar - 1) * score.bar_ticks for n in score.melody
        )
    ]
    if not ends or not score.melody:
        return float("nan")
    chord = _tonic_triad(key_pc) | _dominant_triad(key_pc)
    # A quarter, not the beat: a reel in 2/2 ends its phrases on quarter notes, a half-note beat apart.
    long_ticks = min(score.beat_ticks, TICKS_PER_QUARTER)
    hits = 0
    for bar in ends:
        start, stop = (bar - 1) * score.bar_ticks, bar * score.bar_ticks
        inside = [n for n in score.melody if start <= n[0] < stop]
        if inside and inside[-1][1] >= long_ticks and inside[-1][2] % 12 in chord:
            hits += 1
    return hits / len(ends)


def downbeat_tonic_chord_share(score: Score, key_pc: int, mode: str) -> float:
    """Share of bar downbeats where the melody sounds a tone of the tonic chord (either third), 0..1.

    Tonal melodies lean on the tonic chord where the meter is strongest; a line that ignores the bar does
    not. Downbeats where the melody rests are skipped.
    """
    triad = _tonic_triad(key_pc)
    hits = total = 0
    for bar in range(score.n_bars):
        p = _sounding(score.melody, bar * score.bar_ticks)
        if p is not None:
            total += 1
            hits += p % 12 in triad
    return hits / total if total else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Voice-leading and harmony (two or more parts)

_CHORD_TEMPLATES = (
    (0, 4, 7),
    (0, 3, 7),
    (0, 3, 6),
    (0, 4, 8),
    (0, 4, 7, 10),
    (0, 3, 7, 10),
    (0, 3, 6, 10),
    (0, 3, 6, 9),
    (0, 4, 7, 11),
)
# Consonant intervals between two parts, semitones mod 12: unison/octave, thirds, fifth, sixths.
_CONSONANT_INTERVALS = frozenset({0, 3, 4, 7, 8, 9})


@cache
def _chord_masks() -> frozenset[int]:
    """Every pitch-class set (12-bit mask) that fits inside some triad or seventh chord on some root."""
    masks: set[int] = set()
    for root in range(12):
        for template in _CHORD_TEMPLATES:
            full = sum(1 << ((root + s) % 12) for s in template)
            sub = full
            while sub:  # every non-empty subset of the chord
                masks.add(sub)
                sub = (sub - 1) & full
    return frozenset(masks)


def beat_slices(score: Score) -> np.ndarray:
    """Pitches sounding in every part at each beat, shape (beats, parts); -1 where a part rests."""
    ticks = range(0, score.n_bars * score.bar_ticks, score.beat_ticks)
    out = np.full((len(ticks), len(score.parts)), -1, dtype=int)
    for k, part in enumerate(score.parts):
        for b, t in enumerate(ticks):
            p = _sounding(part, t)
            if p is not None:
                out[b, k] = p
    return out


@dataclass(frozen=True)
class VoiceLeading:
    """Counts over the complete beat slices (every part sounding) of a piece of two or more parts."""

    parts: int
    slices: int
    chord_changes: int
    parallel_fifths: int
    parallel_octaves: int
    crossings: int
    dissonant_chords: int  # counted for three or more parts only
    outer_consonances: int


def voice_leading(score: Score) -> VoiceLeading | None:
    """Voice-leading counts, or None for a single line.

    A chord change is a pair of consecutive complete beat slices in which some part moves. A parallel fifth
    (octave) is a pair of parts a perfect fifth (octave or unison, compound intervals included) apart in both
    slices, both moving in the same direction. A slice's chord is dissonant when its pitch classes fit no
    triad or seventh chord (three or more parts); its outer voices are consonant when melody and bass are a
    unison, third, fifth, sixth or octave apart; a crossing is a slice where a higher part sounds below the
    part under it.
    """
    if "voice_leading" not in score.derived:
        score.derived["voice_leading"] = _voice_leading(score)
    return score.derived["voice_leading"]  # type: ignore[return-value]


def _voice_leading(score: Score) -> VoiceLeading | None:
    n_parts = len(score.parts)
    if n_parts < 2:
        return None
    s = beat_slices(score)
    complete = (s >= 0).all(axis=1)
    rows = s[complete]
    crossings = int((rows[:, :-1] < rows[:, 1:]).any(axis=1).sum())
    outer = int(sum(int(r[0] - r[-1]) % 12 in _CONSONANT_INTERVALS for r in rows))
    dissonant = 0
    if n_parts >= 3:
        chords = _chord_masks()
        for row in rows:
            mask = 0
            for p in row:
                mask |= 1 << (int(p) % 12)
            dissonant += mask not in chords
    changes = fifths = octaves = 0
    for b in range(len(s) - 1):
        if not (complete[b] and complete[b + 1]):
            continue
        a, c = s[b], s[b + 1]
        if (a == c).all():
            continue
        changes += 1
        for i in range(n_parts):
            for j in range(i + 1, n_parts):
                mi, mj = c[i] - a[i], c[j] - a[j]
                if mi == 0 or mj == 0 or np.sign(mi) != np.sign(mj):
                    continue
                before, after = (a[i] - a[j]) % 12, (c[i] - c[j]) % 12
                if before == after == 7:
                    fifths += 1
                elif before == after == 0:
                    octaves += 1
    return VoiceLeading(n_parts, len(rows), changes, fifths, octaves, crossings, dissonant, outer)


def _per_100(count: int, total: int) -> float:
    return 100.0 * count / total if total else float("nan")


def parallel_fifths_per_100_changes(score: Score) -> float:
    """Parallel perfect fifths per 100 chord changes, over every pair of parts (2+ parts; NaN otherwise)."""
    vl = voice_leading(score)
    return _per_100(vl.parallel_fifths, vl.chord_changes) if vl else float("nan")


def parallel_octaves_per_100_changes(score: Score) -> float:
    """Parallel octaves and unisons per 100 chord changes, over every pair of parts (2+ parts)."""
    vl = voice_leading(score)
    return _per_100(vl.parallel_octaves, vl.chord_changes) if vl else float("nan")


def voice_crossing_share(score: Score) -> float:
    """Share of complete beat slices with a voice crossing, 0..1 (2+ parts; NaN otherwise)."""
    vl = voice_leading(score)
    return vl.crossings / vl.slices if vl and vl.slices else float("nan")


def dissonant_slice_share(score: Score) -> float:
    """Share of complete beat slices whose pitch classes fit no triad or seventh chord, 0..1 (3+ parts)."""
    vl = voice_leading(score)
    return vl.dissonant_chords / vl.slices if vl and vl.parts >= 3 and vl.slices else float("nan")


def outer_consonance_share(score: Score) -> float:
    """Share of complete beat slices where melody and bass form a consonance (unison, third, fifth, sixth,
    octave), 0..1 (2+ parts; NaN otherwise)."""
    vl = voice_leading(score)
    return vl.outer_consonances / vl.slices if vl and vl.slices else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Metric feel and performance


def metric_feel_share(score: Score) -> float:
    """Share of the melody's bars that move in the meter's own beat, 0..1.

    A bar moves in its beat when no melody note that starts between beats is held across the next beat
    (dotted quarters in 6/8, 9/8, 12/8; quarters in 4/4, 3/4, 2/4; halves in 2/2). In 6/8 a bar of three
    quarter notes (a 3/4 feel) fails, quarter-eighth pairs or running eighths pass: for compound meters this
    is "moves in compound time". Bars where the melody starts no note are skipped.
    """
    beat, bar_ticks = score.beat_ticks, score.bar_ticks
    if bar_ticks % beat:
        return float("nan")
    bad: set[int] = set()
    active: set[int] = set()
    for onset, dur, _ in score.melody:
        active.add(onset // bar_ticks)
        if onset % beat == 0:
            continue
        next_beat = (onset // beat + 1) * beat
        if onset + dur > next_beat:
            bad.add(onset // bar_ticks)
    return 1.0 - len(bad) / len(active) if active else float("nan")


def velocity_std_midi(score: Score) -> float:
    """Standard deviation of the pitched notes' velocities, MIDI velocity units (0 for a flat performance)."""
    return float(np.std(score.velocities)) if score.velocities else float("nan")


def onset_deviation_ms(score: Score) -> float:
    """Median distance of pitched onsets from the sixteenth-note grid, milliseconds (0 when quantized)."""
    return float(np.median(score.onset_deviation_ms)) if score.onset_deviation_ms else float("nan")


# ----------------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Metric:
    """One metric: its name (with unit), family, what it needs and a one-line description."""

    name: str
    family: str  # melody | distribution | repetition | cadence | voice_leading | meter | performance
    fn: Callable[[Score, int, str], float]
    description: str
    binary: bool = False


def _k(fn: Callable[[Score, int], float]) -> Callable[[Score, int, str], float]:
    return lambda s, key_pc, mode: fn(s, key_pc)


def _s(fn: Callable[[Score], float]) -> Callable[[Score, int, str], float]:
    return lambda s, key_pc, mode: fn(s)


METRICS: tuple[Metric, ...] = (
    Metric("melody_step_share", "melody", _s(melody_step_share), "melodic intervals of 1-2 semitones"),
    Metric(
        "melody_repeat_share", "melody", _s(melody_repeat_share), "melodic intervals that repeat the pitch"
    ),
    Metric("melody_leap_share", "melody", _s(melody_leap_share), "melodic intervals of a fourth or more"),
    Metric("melody_tonic_share", "melody", _k(melody_tonic_share), "melody notes on the tonic"),
    Metric(
        "melody_mean_interval_semitones",
        "distribution",
        _s(melody_mean_interval_semitones),
        "mean |interval|",
    ),
    Metric(
        "melody_interval_entropy_bits", "distribution", _s(melody_interval_entropy_bits), "interval variety"
    ),
    Metric("duration_entropy_bits", "distribution", _s(duration_entropy_bits), "duration variety (melody)"),
    Metric(
        "bar_self_similarity", "repetition", _s(bar_self_similarity), "similarity to the closest other bar"
    ),
    Metric(
        "repeated_bar_share", "repetition", _s(repeated_bar_share), "bars repeating an earlier bar exactly"
    ),
    Metric(
        "has_repeated_2bar_unit", "repetition", _s(has_repeated_2bar_unit), "a 2-bar unit comes back", True
    ),
    Metric(
        "has_returning_section", "repetition", _s(has_returning_section), "a section returns 4+ bars on", True
    ),
    Metric(
        "ends_on_tonic", "cadence", ends_on_tonic, "final notes on the tonic chord, bass on the tonic", True
    ),
    Metric(
        "downbeat_tonic_chord_share", "cadence", downbeat_tonic_chord_share, "downbeats on tonic-chord tones"
    ),
    Metric("phrase_end_cadence_share", "cadence", phrase_end_cadence_share, "4-bar ends arriving on I or V"),
    Metric(
        "parallel_fifths_per_100_changes", "voice_leading", _s(parallel_fifths_per_100_changes), "3+ parts"
    ),
    Metric(
        "parallel_octaves_per_100_changes", "voice_leading", _s(parallel_octaves_per_100_changes), "3+ parts"
    ),
    Metric("voice_crossing_share", "voice_leading", _s(voice_crossing_share), "beat slices with a crossing"),
    Metric(
        "dissonant_slice_share", "voice_leading", _s(dissonant_slice_share), "beat slices fitting no chord"
    ),
    Metric(
        "outer_consonance_share", "voice_leading", _s(outer_consonance_share), "consonant melody-bass beats"
    ),
    Metric("metric_feel_share", "meter", _s(metric_feel_share), "bars moving in the meter's beat"),
    Metric("velocity_std_midi", "performance", _s(velocity_std_midi), "velocity variation"),
    Metric("onset_deviation_ms", "performance", _s(onset_deviation_ms), "timing off the grid"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
METRIC_BY_NAME = {m.name: m for m in METRICS}


def measure(score: Score, key_pc: int, mode: str) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one piece in the key ``key_pc`` / ``mode``, keyed by name."""
    return {m.name: float(m.fn(score, int(key_pc), mode)) for m in METRICS}
