"""music21 scores to :class:`~personalize.corpus.piece.Piece`: repeats expanded, notes in ticks, velocities.

:func:`parse_source` reads one file of music21's corpus (an ABC book holds many tunes) and returns its
pieces, annotated (:mod:`personalize.corpus.annotate`), plus a record for every tune or score it could not
use and every repeat it could not expand, each with the reason.

Bars are laid out measure by measure rather than from music21's flat offsets, because encodings split bars
at repeat signs and section breaks (ABC writes the last three beats of a section and the next section's
pickup as two short measures): short measures that add up to a bar share one bar, a short measure that
stands alone before a full one is a pickup and ends on the bar line, and anything else is padded with
silence and counted in ``Piece.irregular_bars``. That keeps every bar line of the piece at a multiple of
``bar_ticks``, which both token representations rely on.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.corpus.licences import music21_corpus_root
from personalize.corpus.piece import DEFAULT_VELOCITY, TICKS_PER_QUARTER, Dynamic, Note, Piece
from personalize.music.measure import find_key

MIN_BARS = 4
MAX_PARTS = 8
SCORE_TIME_LIMIT_S = 300  # one score; a pathological encoding must not stall a whole build

_MINOR_MODES = {"minor", "aeolian", "dorian", "phrygian", "locrian"}
_SECTION_BARLINES = {"double", "final", "heavy", "heavy-light", "heavy-heavy", "light-light", "light-heavy"}

# MIDI velocity per dynamic level: equal steps of 13 from ppp to fff, as notation programs play them back.
LEVEL_VELOCITY = {
    "pppp": 10,
    "ppp": 23,
    "pp": 36,
    "p": 49,
    "mp": 62,
    "mf": 75,
    "f": 88,
    "ff": 101,
    "fff": 114,
    "ffff": 127,
}
# Accents set the velocity of the notes struck with them only; fp-like marks then drop to a soft level.
ACCENT_VELOCITY = {"sf": 104, "sfz": 110, "sffz": 118, "fz": 104, "rf": 98, "rfz": 98, "fp": 96, "sfp": 104}
_LEVEL_AFTER_ACCENT = {"fp": "p", "sfp": "p"}
HAIRPIN_STEP = 16  # velocity change over a hairpin that no later mark resolves


class ScoreError(ValueError):
    """A score the corpus cannot use; the message is the reason the failures list records."""


@dataclass
class Cues:
    """What the score itself marks, in ticks of the laid-out piece: the input of the annotations."""

    fermata_ends: list[int] = field(default_factory=list)  # where a note or rest carrying a fermata ends
    boundaries: list[tuple[int, str]] = field(default_factory=list)  # (tick, cue) where a section may start
    measure_ticks: list[int] = field(default_factory=list)  # start tick of every laid-out measure
    measure_numbers: list[int] = field(default_factory=list)  # its written measure number


def parse_source(path: Path, collection: str) -> tuple[list[Piece], list[dict]]:
    """Every usable score of one corpus file as an annotated piece, and a record per problem.

    A record is ``{"source", "index", "title", "stage", "reason", "kept"}``: ``stage`` is "parse" (the file),
    "score" (a tune or movement left out) or "repeats" (repeats left as written; the piece is kept).
    """
    from music21 import converter, stream

    from personalize.corpus.annotate import annotate

    rel = _relative(path)
    try:
        with _time_limit(SCORE_TIME_LIMIT_S):
            parsed = converter.parse(path)
    except Exception as exc:  # music21 raises many types on malformed files
        return [], [_record(rel, -1, "", "parse", f"unparseable: {_short(exc)}", False)]
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    pieces: list[Piece] = []
    problems: list[dict] = []
    for index, score in enumerate(scores):
        title = _title(score, path, index, len(scores))
        try:
            with _time_limit(SCORE_TIME_LIMIT_S):
                segments, repeat_problem = score_to_pieces(score, collection, rel, index, title)
                for piece, cues in segments:
                    if isinstance(piece, Piece):
                        annotate(piece, cues)
        except Exception as exc:
            problems.append(_record(rel, index, title, "score", _short(exc), False))
            continue
        if repeat_problem:
            problems.append(_record(rel, index, title, "repeats", repeat_problem, True))
        for piece, _ in segments:
            if isinstance(piece, Piece):
                pieces.append(piece)
            else:
                problems.append(_record(rel, index, piece[0], "score", piece[1], False))
    return pieces, problems


def score_to_pieces(
    score: object, collection: str, source: str, index: int, title: str
) -> tuple[list[tuple[Piece | tuple[str, str], Cues]], str | None]:
    """A music21 score as pieces without annotations, with the cues to annotate them, and a repeat problem.

    A score whose meter changes (a whole quartet in one file, a tune with a variation in another meter) is
    cut where it changes, one piece per stretch of one meter; a stretch that cannot be used comes back as
    ``(title, reason)`` in place of its piece.
    """
    from music21 import key as m21key
    from music21 import stream
    from music21 import tempo as m21tempo

    expanded, repeats, repeat_problem = _expand_repeats(score)
    parts = [p for p in expanded.parts if p.flatten().notes]  # type: ignore[attr-defined]
    if not parts:
        raise ScoreError("no notes")
    if len(parts) > MAX_PARTS:
        raise ScoreError(f"{len(parts)} parts (at most {MAX_PARTS} are used)")
    measures = [list(p.getElementsByClass(stream.Measure)) for p in parts]
    if any(len(m) != len(measures[0]) for m in measures) or not measures[0]:
        counts = sorted({len(m) for m in measures})
        raise ScoreError(f"parts have different numbers of measures ({counts}) after expanding repeats")
    spans = meter_spans(measures[0])
    keys = _marks_by_measure(measures[:1], m21key.Key)
    tempi = _marks_by_measure(measures, m21tempo.MetronomeMark)
    stem = source.rsplit(".", 1)[0]
    out: list[tuple[Piece | tuple[str, str], Cues]] = []
    for k, (a, b, meter) in enumerate(spans):
        one = len(spans) == 1
        seg = Segment(
            piece_id=f"{collection}/{stem}/{index}" + ("" if one else f".{k}"),
            collection=collection,
            source=source,
            title=title if one else f"{title} ({k + 1}/{len(spans)})",
            meter=meter,
            repeats=repeats,
        )
        try:
            seg_keys, seg_tempi = _in_force(keys, a, b), _in_force(tempi, a, b)
            out.append(_segment_to_piece(seg, parts, [ms[a:b] for ms in measures], seg_keys, seg_tempi))
        except ScoreError as exc:
            if one:
                raise
            out.append(((seg.title, str(exc)), Cues()))
    return out, repeat_problem


@dataclass
class Segment:
    """Which stretch of a score a piece is made from, and what is known about it before its notes."""

    piece_id: str
    collection: str
    source: str
    title: str
    meter: tuple[int, int]
    repeats: str


def _segment_to_piece(
    seg: Segment, parts: list, measures: list[list], key_mark: object | None, tempo_mark: object | None
) -> tuple[Piece, Cues]:
    """One stretch of one meter as a piece without annotations, and the cues to annotate it."""
    num, den = seg.meter
    bar_ticks_f = num * 4 / den * TICKS_PER_QUARTER
    if not bar_ticks_f.is_integer():
        raise ScoreError(f"meter {num}/{den} does not fit a grid of {TICKS_PER_QUARTER} ticks per quarter")
    bar_ticks = int(bar_ticks_f)
    lengths = [max(_measure_ticks(ms[i], bar_ticks) for ms in measures) for i in range(len(measures[0]))]
    breaks = section_breaks(measures[0])
    starts, irregular = layout_measures(lengths, bar_ticks, set(breaks))
    cues = Cues(
        boundaries=[(starts[i], cue) for i, cue in breaks.items()],
        measure_ticks=starts,
        measure_numbers=[int(m.number or 0) for m in measures[0]],
    )
    pickups = [
        (starts[i], starts[i] + lengths[i])
        for i in range(1, len(starts))
        if starts[i] < starts[i - 1] + lengths[i - 1]
    ]
    note_parts: list[list[Note]] = []
    marks: list[list[Dynamic]] = []
    fermatas: set[int] = set()
    kept = []
    for i, part_measures in enumerate(measures):
        notes, part_marks, part_fermatas, onsets_by_id = _part_notes(part_measures, starts, len(kept))
        notes = _cut_under_pickups(notes, pickups)
        fermatas |= part_fermatas
        if not notes:
            continue  # a part silent through this stretch (one movement of a multi-movement file)
        marks.append(part_marks + _hairpins(parts[i], onsets_by_id, len(kept)))
        note_parts.append(notes)
        kept.append(i)
    if not note_parts:
        raise ScoreError("no notes")
    cues.fermata_ends = sorted(fermatas)
    marked = any(marks)
    if marked:
        note_parts = [
            _apply_dynamics(notes, own, marks, bar_ticks)
            for notes, own in zip(note_parts, marks, strict=True)
        ]

    # Parts high to low by mean pitch: the order both token representations write them in.
    order = sorted(range(len(note_parts)), key=lambda i: -float(np.mean([n.pitch for n in note_parts[i]])))
    rank = {old: new for new, old in enumerate(order)}
    dynamics = sorted(d._replace(part=rank[d.part]) for part_marks in marks for d in part_marks)
    note_parts = [note_parts[i] for i in order]
    names = [str(parts[kept[i]].partName or f"part {kept[i] + 1}") for i in order]
    programs = [_program(parts[kept[i]]) for i in order]
    end_tick = max(n.onset + n.duration for part in note_parts for n in part)
    n_bars = -(-end_tick // bar_ticks)
    if n_bars < MIN_BARS:
        raise ScoreError(f"only {n_bars} bars")

    hist = np.zeros(12)
    for part in note_parts:
        for n in part:
            hist[n.pitch % 12] += n.duration
    found = find_key(hist)
    if key_mark is not None:
        key_pc, mode, key_source = key_mark.tonic.pitchClass, _mode(key_mark.mode), "signature"
    else:
        key_pc, mode, key_source = found.key_pc, found.mode, "key-finding"
    tempo_bpm = float(tempo_mark.getQuarterBPM()) if tempo_mark is not None else None
    piece = Piece(
        piece_id=seg.piece_id,
        collection=seg.collection,
        source=seg.source,
        title=seg.title,
        meter=f"{num}/{den}",
        bar_ticks=bar_ticks,
        n_bars=n_bars,
        tempo_bpm=tempo_bpm,
        key_pc=int(key_pc),
        mode=mode,
        key_source=key_source,
        found_key_pc=found.key_pc,
        found_mode=found.mode,
        part_names=names,
        part_programs=programs,
        parts=note_parts,
        repeats=seg.repeats,
        source_bars=_source_bars(starts, cues.measure_numbers, n_bars, bar_ticks),
        irregular_bars=irregular,
        dynamics_marked=marked,
        dynamics=dynamics,
    )
    return piece, cues


def _marks_by_measure(measures: list[list], cls: type) -> list[tuple[int, object]]:
    """(measure index, mark) of every ``cls`` in the parts' measures, in measure order; tempo marks that
    carry only a word (music21 gives "Allegro" a number of its own) are left out."""
    out = []
    for part_measures in measures:
        for i, m in enumerate(part_measures):
            for mark in m.recurse().getElementsByClass(cls):
                if getattr(mark, "numberImplicit", False) or (
                    hasattr(mark, "number") and mark.number is None
                ):
                    continue
                out.append((i, mark))
    return sorted(out, key=lambda x: x[0])


def _in_force(marks: list[tuple[int, object]], first: int, end: int) -> object | None:
    """The mark in force over measures [first, end): the first stated in them, else the last before them."""
    inside = [m for i, m in marks if first <= i < end]
    if inside:
        return inside[0]
    before = [m for i, m in marks if i < first]
    return before[-1] if before else None


def meter_spans(measures: list) -> list[tuple[int, int, tuple[int, int]]]:
    """Stretches of one meter as ``(first measure, end measure, (numerator, denominator))``.

    A signature that holds for one measure only, or that counts one beat (``1/8``, ``1/16``), is how
    music21 marks odd-length measures (its ABC reader writes ``1/16`` over a lone pickup note, and ``1/8``
    over every bar of a strain whose tuplets it misreads): those measures stay in the stretch around them,
    where the layout treats them as short bars and joins them into whole ones. A score that states no
    meter is in 4/4, music21's default.

    >>> class M:  # a measure with a time signature (numerator, denominator) or None
    ...     def __init__(self, sig):
    ...         self.timeSignature = None if sig is None else type("TS", (), dict(numerator=sig[0], denominator=sig[1]))
    >>> meter_spans([M((2, 4)), M(None), M((1, 16)), M((2, 4)), M(None), M((3, 4)), M(None), M(None)])
    [(0, 5, (2, 4)), (5, 8, (3, 4))]
    >>> meter_spans([M((2, 4)), M((6, 8)), M(None), M(None)])  # a one-bar opening in another meter
    [(0, 4, (6, 8))]
    """
    spans: list[list] = []  # [first measure, end measure, (numerator, denominator)]
    for i, m in enumerate(measures):
        ts = m.timeSignature
        sig = (ts.numerator, ts.denominator) if ts is not None and ts.numerator > 1 else None
        if not spans:
            spans.append([i, i + 1, sig or (4, 4)])
        elif sig is not None and sig != spans[-1][2]:
            spans.append([i, i + 1, sig])
        else:
            spans[-1][1] = i + 1
    merged: list[list] = []
    for span in spans:
        if merged and (span[1] - span[0] == 1 or span[2] == merged[-1][2]):
            merged[-1][1] = span[1]  # a one-measure blip (or the meter restated) stays in the stretch
        elif merged and merged[-1][1] - merged[-1][0] == 1:
            merged[-1] = [merged[-1][0], span[1], span[2]]  # an opening blip joins the stretch after it
        else:
            merged.append(span)
    return [(a, b, sig) for a, b, sig in merged]


def layout_measures(lengths: list[int], bar_ticks: int, breaks: set[int]) -> tuple[list[int], int]:
    """Start tick of every measure, and how many bars had to be padded with silence.

    ``lengths`` are the measures' lengths in ticks; ``breaks`` the indices of measures that open a section,
    where a short measure between full ones is that section's pickup. It is played in the last beats of
    the bar before (a repeat sign sends the player back to a pickup that the section's last bar leaves room
    for, with a rest or a held note), so it overlaps that bar: see :func:`_cut_under_pickups`.

    >>> layout_measures([12, 48, 36, 12, 48], 48, set())  # pickup, bar, 3 beats + pickup split at a repeat
    ([36, 48, 96, 132, 144], 0)
    >>> layout_measures([48, 12, 48], 48, {1})  # a full bar, then the next section's pickup
    ([0, 36, 48], 0)
    >>> layout_measures([48, 6, 48], 48, set())  # a stray eighth between two full bars: padded
    ([0, 48, 96], 1)
    """
    starts: list[int] = []
    t = 0
    irregular = 0
    for i, length in enumerate(lengths):
        length = length or bar_ticks  # an empty measure is a bar's rest
        pos = t % bar_ticks
        if i == 0 and length < bar_ticks:
            t = bar_ticks - length  # the opening pickup ends on the first bar line
        elif pos and pos + length > bar_ticks:
            t += bar_ticks - pos  # a short bar that nothing completes: silence to the bar line
            irregular += 1
            pos = 0
        lone = i + 1 < len(lengths) and lengths[i + 1] >= bar_ticks
        if not pos and i in breaks and length < bar_ticks and lone:
            t -= length  # the pickup of a new section, in the last beats of the bar before
        starts.append(t)
        t += length
    return starts, irregular


def _expand_repeats(score: object) -> tuple[object, str, str | None]:
    """(score with repeats played out, Piece.repeats, problem or None).

    music21 refuses repeats it finds badly formed. Two mendings are tried before giving up: an ending
    bracket without a number before ending 2 is ending 1 (Finale exports leave it blank), and da capo /
    segno / fine marks are dropped so the repeat barlines alone are expanded. If expansion still fails the
    piece is kept as written and the reason recorded.
    """
    from music21 import bar, repeat, spanner

    brackets = list(score.recurse().getElementsByClass(spanner.RepeatBracket))  # type: ignore[attr-defined]
    marks = list(score.recurse().getElementsByClass(repeat.RepeatExpression))  # type: ignore[attr-defined]
    barlines = [b for b in score.recurse().getElementsByClass(bar.Repeat)]  # type: ignore[attr-defined]
    if not (brackets or marks or barlines):
        return score, "none", None
    try:
        return score.expandRepeats(), "expanded", None  # type: ignore[attr-defined]
    except Exception as exc:
        reason = _short(exc)
    mended = []
    for i, bracket in enumerate(brackets):
        if not bracket.number and i + 1 < len(brackets) and str(brackets[i + 1].number) == "2":
            bracket.number = 1
            mended.append("unnumbered first ending")
    if marks:
        score.remove(marks, recurse=True)  # type: ignore[attr-defined]
    if marks:
        mended.append("da capo / segno / fine marks dropped")
    if mended:
        try:
            note = ", ".join(sorted(set(mended)))
            return score.expandRepeats(), "expanded", f"expanded after mending ({note}): {reason}"  # type: ignore[attr-defined]
        except Exception as exc:
            reason = _short(exc)
    return score, f"as written: {reason}", f"repeats left as written: {reason}"


def _part_notes(
    measures: list, starts: list[int], part_index: int
) -> tuple[list[Note], list[Dynamic], set[int], dict[int, tuple[int, int]]]:
    """Notes (ties joined), dynamic marks, fermata end ticks and {id(element): (onset, end)} of one part."""
    from music21 import dynamics as m21dyn
    from music21 import expressions

    notes: list[list[int]] = []  # [onset, duration, pitch], lists while ties extend them
    open_ties: dict[int, int] = {}  # pitch -> index in notes of the note a tie may continue
    marks: list[Dynamic] = []
    fermatas: set[int] = set()
    onsets_by_id: dict[int, tuple[int, int]] = {}
    for m, start in zip(measures, starts, strict=True):
        flat = m.flatten()
        for el in flat.notesAndRests:
            if el.duration.isGrace or el.quarterLength <= 0:
                continue
            onset = start + _ticks(el.offset)
            end = start + _ticks(el.offset + el.quarterLength)
            if end <= onset:
                continue
            onsets_by_id[id(el)] = (onset, end)
            if any(isinstance(x, expressions.Fermata) for x in el.expressions):
                fermatas.add(end)
            if el.isRest:
                continue
            components = el.notes if el.isChord else [el]
            for n in components:
                if not hasattr(n, "pitch"):  # unpitched percussion
                    continue
                pitch = int(n.pitch.midi)
                tie = n.tie or el.tie
                prev = open_ties.get(pitch)
                if (
                    tie is not None
                    and tie.type in ("stop", "continue")
                    and prev is not None
                    and notes[prev][0] + notes[prev][1] == onset
                ):
                    notes[prev][1] = end - notes[prev][0]
                else:
                    notes.append([onset, end - onset, pitch])
                    open_ties[pitch] = len(notes) - 1
        for d in flat.getElementsByClass(m21dyn.Dynamic):
            tick = start + _ticks(d.offset)
            value = str(d.value)
            marks.append(
                Dynamic(
                    tick, tick, part_index, value, LEVEL_VELOCITY.get(value, ACCENT_VELOCITY.get(value, 0))
                )
            )
    notes.sort()
    line: list[Note] = []
    for onset, dur, pitch in notes:
        # Two voices of a part striking one pitch, or a tie that overlaps: the earlier note stops.
        for j in range(len(line) - 1, max(-1, len(line) - 9), -1):
            prev = line[j]
            if prev.pitch == pitch and prev.onset + prev.duration > onset:
                if onset > prev.onset:
                    line[j] = prev._replace(duration=onset - prev.onset)
                break
        if line and line[-1].onset == onset and line[-1].pitch == pitch:
            continue
        line.append(Note(onset, dur, pitch, DEFAULT_VELOCITY))
    return line, marks, fermatas, onsets_by_id


def _measure_ticks(measure: object, bar_ticks: int) -> int:
    """A measure's length: what it holds, but never more than a bar because of rests alone (encoders write
    two whole-bar rests into one measure of a silent voice)."""
    length = _ticks(measure.duration.quarterLength)  # type: ignore[attr-defined]
    if length <= bar_ticks:
        return length
    notes_end = max(
        (_ticks(n.offset + n.quarterLength) for n in measure.flatten().notes),  # type: ignore[attr-defined]
        default=0,
    )
    return max(bar_ticks, notes_end)


def _cut_under_pickups(notes: list[Note], pickups: list[tuple[int, int]]) -> list[Note]:
    """Shorten notes that still sound where a section's pickup is laid over the end of the bar before.

    >>> _cut_under_pickups([Note(0, 48, 67, 80), Note(36, 12, 62, 80)], [(36, 48)])
    [Note(onset=0, duration=36, pitch=67, velocity=80), Note(onset=36, duration=12, pitch=62, velocity=80)]
    """
    if not pickups:
        return notes
    out = list(notes)
    for start, end in pickups:
        if not any(start <= n.onset < end for n in notes):
            continue  # this part is silent in the pickup: what it holds goes on sounding
        out = [
            n._replace(duration=start - n.onset) if n.onset < start < n.onset + n.duration else n for n in out
        ]
    return out


def _hairpins(part: object, onsets_by_id: dict[int, tuple[int, int]], part_index: int) -> list[Dynamic]:
    """Crescendo and diminuendo hairpins whose first and last notes lie in the laid-out part."""
    from music21 import dynamics as m21dyn

    out = []
    for wedge in part.spannerBundle.getByClass(m21dyn.DynamicWedge):  # type: ignore[attr-defined]
        first, last = wedge.getFirst(), wedge.getLast()
        if first is None or last is None or id(first) not in onsets_by_id or id(last) not in onsets_by_id:
            continue
        kind = "crescendo" if isinstance(wedge, m21dyn.Crescendo) else "diminuendo"
        out.append(Dynamic(onsets_by_id[id(first)][0], onsets_by_id[id(last)][1], part_index, kind, 0))
    return out


def _apply_dynamics(
    notes: list[Note], own: list[Dynamic], every: list[list[Dynamic]], bar_ticks: int
) -> list[Note]:
    """Velocities from the marks in force: the part's own, or every part's where it has none (a piano score
    marks dynamics once between its staves)."""
    marks = sorted(own if any(d.mark in LEVEL_VELOCITY for d in own) else [d for m in every for d in m])
    levels = [(d.tick, d.velocity) for d in marks if d.mark in LEVEL_VELOCITY]
    for d in marks:
        if d.mark in _LEVEL_AFTER_ACCENT:
            levels.append((d.tick + 1, LEVEL_VELOCITY[_LEVEL_AFTER_ACCENT[d.mark]]))
    levels.sort()
    accents = {d.tick: d.velocity for d in marks if d.mark in ACCENT_VELOCITY}
    wedges = [d for d in marks if d.mark in ("crescendo", "diminuendo")]
    ticks = np.array([t for t, _ in levels] or [0])
    values = [v for _, v in levels] or [DEFAULT_VELOCITY]

    def level_at(t: int) -> int:
        i = int(np.searchsorted(ticks, t, side="right")) - 1
        return values[i] if i >= 0 else DEFAULT_VELOCITY

    out = []
    for n in notes:
        velocity = level_at(n.onset)
        for w in wedges:
            if w.tick <= n.onset < w.end_tick:
                start = level_at(w.tick)
                later = level_at(w.end_tick + bar_ticks)  # a mark just after the hairpin says where it goes
                step = HAIRPIN_STEP if w.mark == "crescendo" else -HAIRPIN_STEP
                target = later if (later - start) * step > 0 else start + step
                velocity = round(start + (target - start) * (n.onset - w.tick) / max(1, w.end_tick - w.tick))
        velocity = accents.get(n.onset, velocity)
        out.append(n._replace(velocity=int(np.clip(velocity, 1, 127))))
    return out


def section_breaks(measures: list) -> dict[int, str]:
    """{measure index: cue} where a section may begin: a repeat jumps back, a double bar, a key change,
    a rehearsal mark."""
    from music21 import expressions
    from music21 import key as m21key

    out: dict[int, str] = {}
    sharps = None
    prev = None
    for i, m in enumerate(measures):
        ks = m.keySignature or next(iter(m.getElementsByClass(m21key.KeySignature)), None)
        cue = None
        if i > 0:
            right = prev.rightBarline.type if prev is not None and prev.rightBarline is not None else ""
            left = m.leftBarline.type if m.leftBarline is not None else ""
            if int(m.number or 0) < int(prev.number or 0):
                cue = "repeat"
            elif right in _SECTION_BARLINES or left in _SECTION_BARLINES:
                cue = "double bar"
            elif ks is not None and sharps is not None and ks.sharps != sharps:
                cue = "key change"
            elif m.getElementsByClass(expressions.RehearsalMark).first() is not None:
                cue = "rehearsal mark"
        if ks is not None:
            sharps = ks.sharps
        if cue:
            out[i] = cue
        prev = m
    return out


def _source_bars(starts: list[int], numbers: list[int], n_bars: int, bar_ticks: int) -> list[int]:
    """The written number of the measure sounding at each bar line."""
    idx = np.searchsorted(np.asarray(starts), np.arange(n_bars) * bar_ticks, side="right") - 1
    return [numbers[max(0, int(i))] for i in idx]


def _title(score: object, path: Path, index: int, n_scores: int) -> str:
    md = getattr(score, "metadata", None)
    title = ""
    if md is not None:
        title = str(md.title or md.movementName or "")
    if title:
        return title
    return path.stem if n_scores == 1 else f"{path.stem} #{index}"


def _program(part: object) -> int | None:
    inst = part.getInstrument(returnDefault=False)  # type: ignore[attr-defined]
    program = getattr(inst, "midiProgram", None) if inst is not None else None
    return int(program) if program is not None else None


def _mode(mode: str | None) -> str:
    return "minor" if (mode or "").lower() in _MINOR_MODES else "major"


def _ticks(quarters: object) -> int:
    return round(float(quarters) * TICKS_PER_QUARTER)


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(music21_corpus_root().resolve()).as_posix()
    except ValueError:
        return path.name


def _record(source: str, index: int, title: str, stage: str, reason: str, kept: bool) -> dict:
    return {"source": source, "index": index, "title": title, "stage": stage, "reason": reason, "kept": kept}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (main thread only: elsewhere no limit is set)."""
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _stop(signum: int, frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
