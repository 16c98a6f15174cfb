"""Derived annotations for conditioning: sections, phrases with cadences, and a chord per harmony slot.

- **Sections** (:func:`find_sections`): the score's own structure. With repeats expanded, a jump back to an
  earlier measure opens a section, as do double bars, key changes and rehearsal marks. A section that starts
  at the same written measure as an earlier one is its repeat (same label); one whose top line matches an
  earlier section's (same length, most notes at the same place and pitch) gets that label too, so a
  written-out A B A reads as such.
- **Chords** (:func:`chordify_harmony`, :func:`estimate_harmony`): one per harmony slot (half a bar where
  the bar has an even number of beats, else one beat), as Roman numerals in the key as heard
  (``found_key_pc``, ``found_mode``: the key the first tokenizer's key token carries; an encoded key
  signature says nothing about the mode of a modal madrigal or a tune in the relative minor). Where several parts sound, the slot's notes (a
  chordify of the laid-out parts) are matched against chord templates, weighted by how long each pitch
  class sounds, with the bass note deciding root position against inversion. A single line has no harmony
  of its own, so one is estimated: the diatonic chord (and V7, and the modal IV / bVII of folk tunes) that
  best covers the slot's notes, chosen jointly over the piece (Viterbi) so chords persist and V leads to I.
- **Phrases** (:func:`find_phrases`): ends at fermatas, section starts and the last note; then at rests
  (a beat of silence in the top line, or half a beat in every part) and cadences (a V -> I or a V reached
  with a long melody note on a strong beat) at least one or two bars from any other end. Each phrase names
  its cadence from the chords at its end.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from personalize.corpus.parse import Cues
from personalize.corpus.piece import Chord, Note, Phrase, Piece, Section

# Chord templates: intervals above the root and a penalty (share of the slot's weight) for rarer qualities.
TEMPLATES: dict[str, tuple[tuple[int, ...], float]] = {
    "maj": ((0, 4, 7), 0.0),
    "min": ((0, 3, 7), 0.0),
    "dim": ((0, 3, 6), 0.05),
    "aug": ((0, 4, 8), 0.2),
    "dom7": ((0, 4, 7, 10), 0.02),
    "min7": ((0, 3, 7, 10), 0.06),
    "maj7": ((0, 4, 7, 11), 0.1),
    "hdim7": ((0, 3, 6, 10), 0.06),
    "dim7": ((0, 3, 6, 9), 0.06),
}
SEVENTH_MIN_SHARE = 0.75  # a seventh chord's seventh must weigh 3/4 of a slot (struck or held, not passing)
NON_CHORD_WEIGHT = 0.6  # a non-chord tone costs 0.6 of what a chord tone earns (passing tones are common)
MISSING_TONE = 0.05  # per template tone not heard in the slot
BASS_ROOT_BONUS = 0.15  # the bass on the root: root position is the default reading
STRUCK_BONUS = 0.5  # a note struck on the slot's first tick counts 1.5 times

# Single-line estimate: (semitones above the tonic, quality, prior) per candidate chord in each mode.
_CANDIDATES = {
    "major": (
        (0, "maj", 0.1), (2, "min", 0.0), (4, "min", -0.03), (5, "maj", 0.05), (7, "maj", 0.06),
        (9, "min", 0.0), (11, "dim", -0.1), (7, "dom7", -0.05), (10, "maj", -0.04),
    ),
    "minor": (
        (0, "min", 0.1), (2, "dim", -0.08), (3, "maj", 0.0), (5, "min", 0.03), (7, "maj", 0.06),
        (8, "maj", 0.0), (10, "maj", 0.0), (11, "dim", -0.1), (7, "dom7", -0.05), (5, "maj", -0.02),
    ),
}  # fmt: skip
STAY_BONUS = 0.25  # a chord tends to last (tunes change harmony about once a bar)
DOMINANT_TO_TONIC_BONUS = 0.1
FINAL_TONIC_BONUS = 0.5  # tunes end on the tonic unless the melody says otherwise
EST_NON_CHORD_WEIGHT = 0.7

MIN_BARS_AFTER_REST = 1
MIN_BARS_AFTER_CADENCE = 2
_STRONG_CUES = ("fermata", "section", "end")
_SECTION_CUE_RANK = {"repeat": 0, "double bar": 1, "key change": 2, "rehearsal mark": 3, "start": 4}


def annotate(piece: Piece, cues: Cues) -> None:
    """Fill the piece's sections, chords and phrases (in place) from its notes and the score's cues."""
    piece.sections = find_sections(piece, cues)
    piece.chord_ticks = harmony_slot_ticks(piece.meter)
    if len(piece.parts) > 1:
        piece.chord_source = "chordify"
        piece.chords = chordify_harmony(piece)
    else:
        piece.chord_source = "estimate"
        piece.chords = estimate_harmony(piece)
    piece.phrases = find_phrases(piece, cues)


def beat_ticks(meter: str, ticks_per_quarter: int = 12) -> tuple[int, int]:
    """(ticks per beat, beats per bar): compound meters (6/8, 9/8, 12/8, 6/4) beat in dotted notes.

    >>> beat_ticks("6/8"), beat_ticks("3/4"), beat_ticks("2/2"), beat_ticks("3/8")
    ((18, 2), (12, 3), (24, 2), (18, 1))
    """
    num, den = (int(x) for x in meter.split("/"))
    unit = ticks_per_quarter * 4 // den
    if num % 3 == 0 and (num > 3 or den == 8) and den >= 4:
        return unit * 3, max(1, num // 3)
    return unit, num


def harmony_slot_ticks(meter: str, ticks_per_quarter: int = 12) -> int:
    """Length of a harmony slot: half a bar when the bar has an even number of beats, else one beat.

    >>> [harmony_slot_ticks(m) for m in ("4/4", "2/4", "3/4", "6/8", "12/8", "3/2")]
    [24, 12, 12, 18, 36, 24]
    """
    beat, beats = beat_ticks(meter, ticks_per_quarter)
    return beat * beats // 2 if beats % 2 == 0 else beat


# --- sections ---------------------------------------------------------------------------------------------


def find_sections(piece: Piece, cues: Cues) -> list[Section]:
    """Sections over whole bars, labelled by repeat (same written start) or by a matching top line."""
    bar = piece.bar_ticks
    first_onset = min(n.onset for part in piece.parts for n in part)
    starts: dict[int, tuple[int, str]] = {0: (first_onset, "start")}  # start bar -> (tick, cue)
    for tick, cue in cues.boundaries:
        b = -(-tick // bar)  # a pickup stays in the bar before; the section starts at the next bar line
        if b <= 0 or b >= piece.n_bars:
            continue
        old = starts.get(b)
        if old is None or _SECTION_CUE_RANK[cue] < _SECTION_CUE_RANK[old[1]]:
            starts[b] = (tick if old is None else min(tick, old[0]), cue)
    bars = sorted(starts)
    written = dict(zip(cues.measure_ticks, cues.measure_numbers, strict=True))
    top = piece.parts[0]
    labels: dict[object, str] = {}  # written start measure -> label
    seen: list[tuple[str, int, set[tuple[int, int]]]] = []  # distinct sections: (label, bars, top-line notes)
    counts: dict[str, int] = {}
    out = []
    for i, b in enumerate(bars):
        end = bars[i + 1] if i + 1 < len(bars) else piece.n_bars
        tick, cue = starts[b]
        key = written.get(tick, ("tick", tick))
        notes = _top_line(top, b * bar, end * bar)
        label = labels.get(key)
        if label is None:
            label = next((lab for lab, n, ref in seen if n == end - b and _similar(notes, ref)), None)
        if label is None:
            label = _letter(len({lab for lab, _, _ in seen}))
            seen.append((label, end - b, notes))
        labels.setdefault(key, label)
        out.append(Section(b, end, label, counts.get(label, 0), tick, cue))
        counts[label] = counts.get(label, 0) + 1
    return out


def _top_line(notes: list[Note], start: int, end: int) -> set[tuple[int, int]]:
    return {(n.onset - start, n.pitch) for n in notes if start <= n.onset < end}


def _similar(a: set[tuple[int, int]], b: set[tuple[int, int]], threshold: float = 0.75) -> bool:
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= threshold


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"Z{i - 25}"


# --- chords ----------------------------------------------------------------------------------------------


def slot_weights(piece: Piece) -> tuple[np.ndarray, np.ndarray]:
    """Per harmony slot: pitch-class weights (ticks sounding, struck notes 1.5x) and the bass pitch (-1: none).

    The bass is the lowest pitch sounding at the slot's first tick, else the lowest struck in the slot.
    """
    s = piece.chord_ticks
    n_slots = piece.n_bars * piece.bar_ticks // s
    weights = np.zeros((n_slots, 12))
    bass_at_start = np.full(n_slots, 999)
    bass_struck = np.full(n_slots, 999)
    for part in piece.parts:
        for n in part:
            end = n.onset + n.duration
            for k in range(n.onset // s, min(n_slots, (end - 1) // s + 1)):
                a, b = k * s, (k + 1) * s
                overlap = min(end, b) - max(n.onset, a)
                struck = n.onset == a
                weights[k, n.pitch % 12] += overlap * (1.0 + STRUCK_BONUS * struck)
                if n.onset <= a < end:
                    bass_at_start[k] = min(bass_at_start[k], n.pitch)
                if a <= n.onset < b:
                    bass_struck[k] = min(bass_struck[k], n.pitch)
    bass = np.where(bass_at_start < 999, bass_at_start, bass_struck)
    return weights, np.where(bass < 999, bass, -1)


def chordify_harmony(piece: Piece) -> list[Chord | None]:
    """The chord each slot's sounding notes fit best, as a Roman numeral in the piece's key."""
    weights, bass = slot_weights(piece)
    out: list[Chord | None] = []
    for w, low in zip(weights, bass, strict=True):
        total = float(w.sum())
        if total <= 0:
            out.append(None)
            continue
        bass_pc = int(low) % 12
        best = max(
            (
                (_template_score(w, total, root, q, bass_pc, piece.chord_ticks), root, q)
                for root in range(12)
                for q in TEMPLATES
            ),
            key=lambda x: x[0],
        )
        _, root, quality = best
        out.append(
            Chord(
                root,
                quality,
                bass_pc,
                roman_numeral(piece.found_key_pc, piece.found_mode, root, quality, bass_pc),
            )
        )
    return out


def _template_score(w: np.ndarray, total: float, root: int, quality: str, bass_pc: int, slot: int) -> float:
    intervals, penalty = TEMPLATES[quality]
    pcs = [(root + i) % 12 for i in intervals]
    if len(intervals) == 4 and w[pcs[3]] < SEVENTH_MIN_SHARE * slot:
        return -1e9  # a passing seventh does not make a seventh chord
    inside = float(w[pcs].sum())
    missing = sum(1 for pc in pcs if w[pc] <= 0)
    score = inside - NON_CHORD_WEIGHT * (total - inside) - total * (MISSING_TONE * missing + penalty)
    if bass_pc == root:
        score += BASS_ROOT_BONUS * total
    elif bass_pc not in pcs:
        score -= BASS_ROOT_BONUS * total
    return score


def estimate_harmony(piece: Piece) -> list[Chord | None]:
    """A chord per slot for a single line: the diatonic chords that best cover its notes, chosen by Viterbi."""
    weights, _ = slot_weights(piece)
    cands = _CANDIDATES[piece.found_mode]
    tonic = piece.found_key_pc
    n_slots, n_c = len(weights), len(cands)
    emit = np.zeros((n_slots, n_c))
    for j, (offset, quality, prior) in enumerate(cands):
        pcs = [(tonic + offset + i) % 12 for i in TEMPLATES[quality][0]]
        inside = weights[:, pcs].sum(axis=1)
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fit = np.where(total > 0, (inside - EST_NON_CHORD_WEIGHT * (total - inside)) / total, 0.0)
        emit[:, j] = fit + prior
    sounding = np.flatnonzero(weights.sum(axis=1) > 0)
    if len(sounding):
        tonic_j = [j for j, (o, q, _) in enumerate(cands) if o == 0]
        emit[sounding[-1], tonic_j] += FINAL_TONIC_BONUS
    trans = np.zeros((n_c, n_c))
    for a, (oa, _, _) in enumerate(cands):
        for b, (ob, _, _) in enumerate(cands):
            if a == b:
                trans[a, b] += STAY_BONUS
            if oa == 7 and ob == 0:
                trans[a, b] += DOMINANT_TO_TONIC_BONUS
    score = emit[0].copy()
    back = np.zeros((n_slots, n_c), dtype=int)
    for k in range(1, n_slots):
        total = score[:, None] + trans
        back[k] = total.argmax(axis=0)
        score = total.max(axis=0) + emit[k]
    path = [int(score.argmax())]
    for k in range(n_slots - 1, 0, -1):
        path.append(int(back[k, path[-1]]))
    path.reverse()
    out: list[Chord | None] = []
    for k, j in enumerate(path):
        if weights[k].sum() <= 0:
            out.append(None)
            continue
        offset, quality, _ = cands[j]
        root = (tonic + offset) % 12
        out.append(Chord(root, quality, root, roman_numeral(tonic, piece.found_mode, root, quality, root)))
    return out


_DEGREES = {
    "major": {0: "I", 1: "bII", 2: "II", 3: "bIII", 4: "III", 5: "IV", 6: "#IV", 7: "V", 8: "bVI", 9: "VI",
              10: "bVII", 11: "VII"},
    "minor": {0: "I", 1: "bII", 2: "II", 3: "III", 4: "#III", 5: "IV", 6: "#IV", 7: "V", 8: "VI", 9: "#VI",
              10: "VII", 11: "#VII"},
}  # fmt: skip
_UPPER = {"maj", "aug", "dom7", "maj7"}
_SUFFIX = {"dim": "o", "aug": "+", "hdim7": "ø", "dim7": "o"}
_FIGURES = {3: ("", "6", "64"), 4: ("7", "65", "43", "42")}


@lru_cache(maxsize=4096)
def roman_numeral(key_pc: int, mode: str, root_pc: int, quality: str, bass_pc: int) -> str:
    """Roman numeral of a chord in a key, inversion from the bass; minor keys count from natural minor.

    >>> roman_numeral(7, "major", 2, "dom7", 0), roman_numeral(9, "minor", 4, "maj", 4)
    ('V42', 'V')
    >>> roman_numeral(0, "major", 11, "dim", 2), roman_numeral(0, "major", 2, "maj", 2)
    ('viio6', 'II')
    """
    degree = _DEGREES[mode][(root_pc - key_pc) % 12]
    numeral = degree if quality in _UPPER else degree.lower()
    intervals = TEMPLATES[quality][0]
    pcs = [(root_pc + i) % 12 for i in intervals]
    position = pcs.index(bass_pc) if bass_pc in pcs else 0
    figure = _FIGURES[len(intervals)][position]
    suffix = _SUFFIX.get(quality, "")
    if quality == "maj7":
        figure = figure or "7"
        suffix = "M" if figure == "7" else ""
    return f"{numeral}{suffix}{figure}"


# --- phrases ---------------------------------------------------------------------------------------------


def find_phrases(piece: Piece, cues: Cues) -> list[Phrase]:
    """Phrases between the cues, each with its cadence (see the module docstring)."""
    bar = piece.bar_ticks
    beat, _ = beat_ticks(piece.meter, piece.ticks_per_quarter)
    first = min(n.onset for part in piece.parts for n in part)
    last = max(n.onset + n.duration for part in piece.parts for n in part)
    ends: dict[int, set[str]] = {}
    for t in cues.fermata_ends:
        if first < t <= last:
            ends.setdefault(t, set()).add("fermata")
    for s in piece.sections[1:]:
        ends.setdefault(s.start_tick, set()).add("section")
    ends.setdefault(last, set()).add("end")
    strong = sorted(ends)
    weak: list[tuple[int, str, int]] = [(t, "rest", MIN_BARS_AFTER_REST) for t in _rests(piece, beat)]
    weak += [(t, "cadence", MIN_BARS_AFTER_CADENCE) for t in _cadence_points(piece, beat)]
    taken = [first, *strong]
    for t, cue, min_bars in sorted(weak, key=lambda x: (x[1] != "rest", x[0])):
        near = [u for u in taken if abs(u - t) < min_bars * bar]
        if not near:
            ends.setdefault(t, set()).add(cue)
            taken.append(t)
        elif cue == "cadence":
            for u in near:  # a cadence right at a fermata or a rest confirms it
                if abs(u - t) < beat and u in ends:
                    ends[u].add("cadence")
    out = []
    start = first
    for t in sorted(ends):
        if t <= start:
            continue
        out.append(Phrase(start, t, tuple(sorted(ends[t])), cadence_at(piece, t)))
        start = t
    return out


def _rests(piece: Piece, beat: int) -> list[int]:
    """Ticks where a rest starts: a beat of silence in the top line, or half a beat in every part."""
    out = []
    top = sorted(piece.parts[0])
    for a, b in itertools.pairwise(top):
        if b.onset - (a.onset + a.duration) >= beat:
            out.append(a.onset + a.duration)
    if len(piece.parts) > 1:
        spans = sorted((n.onset, n.onset + n.duration) for part in piece.parts for n in part)
        reach = spans[0][1]
        for onset, end in spans[1:]:
            if onset - reach >= beat // 2:
                out.append(reach)
            reach = max(reach, end)
    return sorted(set(out))


def _cadence_points(piece: Piece, beat: int) -> list[int]:
    """Ends of top-line notes that arrive on I after V, or on V, with a note of a beat or more on a strong slot."""
    s = piece.chord_ticks
    chords = piece.chords
    strong = s if piece.bar_ticks // s == 2 else piece.bar_ticks
    out = []
    for n in piece.parts[0]:
        if n.onset % strong or n.duration < beat:
            continue
        k = n.onset // s
        if k <= 0 or k >= len(chords) or chords[k] is None:
            continue
        kind = _cadence_kind(chords, k, piece.found_key_pc)
        if kind in ("authentic", "half") and (kind == "authentic" or n.duration >= 2 * beat):
            out.append(n.onset + n.duration)
    return out


def cadence_at(piece: Piece, end_tick: int) -> str:
    """The cadence of a phrase ending at ``end_tick``, from the chord sounding just before it."""
    k = (end_tick - 1) // piece.chord_ticks
    if not 0 <= k < len(piece.chords) or piece.chords[k] is None:
        k = next((j for j in range(min(k, len(piece.chords) - 1), -1, -1) if piece.chords[j] is not None), -1)
    if k < 0:
        return ""
    # The arrival chord starts where the run of slots holding it begins.
    arrival = piece.chords[k]
    while k > 0 and piece.chords[k - 1] is not None and piece.chords[k - 1].root_pc == arrival.root_pc:
        k -= 1
    return _cadence_kind(piece.chords, k, piece.found_key_pc)


def _cadence_kind(chords: list[Chord | None], k: int, key_pc: int) -> str:
    arrival = chords[k]
    if arrival is None:
        return ""
    before = next((c for c in reversed(chords[:k]) if c is not None and c.root_pc != arrival.root_pc), None)
    rel = (arrival.root_pc - key_pc) % 12
    prev_rel = None if before is None else (before.root_pc - arrival.root_pc) % 12
    dominant_before = before is not None and (
        (prev_rel == 7 and before.quality in ("maj", "dom7"))
        or (prev_rel == 11 and before.quality in ("dim", "dim7"))
    )
    if rel == 0 and arrival.quality in ("maj", "min"):
        if dominant_before:
            return "authentic"
        if before is not None and prev_rel == 5:
            return "plagal"
        return "tonic"
    if rel == 7 and arrival.quality in ("maj", "dom7"):
        return "half"
    if rel in (8, 9) and before is not None and (before.root_pc - key_pc) % 12 == 7:
        return "deceptive"
    return ""
