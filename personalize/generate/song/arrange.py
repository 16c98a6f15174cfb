"""Arrangement: the melody and the chords become parts for the instruments asked for.

Every pitched instrument gets a role (:func:`assign_roles`):

- ``melody``: the model's line, moved by whole octaves into the instrument's range;
- ``bass``: chord roots on the strong beats, fifths and approach notes between them as the density rises;
- ``chords``: keyboards, guitars, harps and organs play the harmony in an idiom of their family (block
  chords, Alberti bass, broken chords and arpeggios, strums), voiced below the melody and led smoothly;
- ``pad``: ensembles and synth pads hold the chord, voice-led, a span at a time;
- ``counter``: a second melodic instrument plays a harmony line a third or sixth under the melody on the
  strong beats;
- ``alto`` / ``tenor`` / ``bass`` of a chorale: four-part voice leading (:func:`voice_chorale`), a search
  over voicings of each chord that avoids parallel fifths and octaves, voice crossing and wide spacing.

A chordal instrument that plays alone keeps the melody and adds its own accompaniment below it. All times
are in ticks (``TICKS_PER_QUARTER`` a quarter note); notes are ``Note(start, duration, pitch)``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from personalize.generate.song.form import CHORDAL_FAMILIES
from personalize.music.chords import Chord
from personalize.music.gm import family_of, program_range

HARP = 46
TIMPANI = 47
# Instruments that play the bass line whenever they accompany (cello, contrabass, tuba, bassoon, baritone
# sax), besides the bass family: a duo of fiddle and contrabass is a tune over a bass, not two tunes.
LOW_VOICES = frozenset({42, 43, 58, 67, 70})
BASS_ONLY = frozenset({43, 58})  # contrabass, tuba: the melody only when alone
MELODIC_PREFERENCE = ("pipe", "reed", "strings", "brass", "synth_lead", "piano", "guitar", "organ",
                      "chromatic_percussion", "ethnic", "ensemble", "synth_pad", "bass")  # fmt: skip


@dataclass(frozen=True)
class Note:
    start: int
    duration: int
    pitch: int


def _is_chordal(program: int) -> bool:
    return family_of(program) in CHORDAL_FAMILIES or program == HARP


def assign_roles(programs: Sequence[int], texture: str) -> list[str]:
    """A role per pitched program, in the order given (see the module docstring)."""
    n = len(programs)
    ranges = [program_range(p) for p in programs]
    mids = [(lo + hi) / 2 for lo, hi in ranges]
    if texture == "chorale":
        order = sorted(range(n), key=lambda i: -mids[i])
        voices = {4: ("melody", "alto", "tenor", "bass"), 3: ("melody", "tenor", "bass")}[min(4, max(3, n))]
        roles = [""] * n
        for rank, i in enumerate(order):
            roles[i] = voices[min(rank, len(voices) - 1)]
        return roles

    def melody_rank(i: int) -> tuple[bool, int, float]:
        # A contrabass or a tuba carries the tune only when nothing else can.
        fam = family_of(programs[i])
        rank = MELODIC_PREFERENCE.index(fam) if fam in MELODIC_PREFERENCE else 99
        return (programs[i] in BASS_ONLY, rank, -mids[i])

    candidates = [i for i in range(n) if programs[i] != TIMPANI] or list(range(n))
    melody = min(candidates, key=melody_rank)
    roles = ["melody" if i == melody else "" for i in range(n)]
    rest = [i for i in range(n) if i != melody]
    basses = [i for i in rest if family_of(programs[i]) == "bass"]
    basses += sorted((i for i in rest if programs[i] in LOW_VOICES), key=lambda i: mids[i])
    tuned = [i for i in rest if programs[i] != TIMPANI]
    if not basses and tuned and (texture == "band" or n >= 3):
        low = min(tuned, key=lambda i: mids[i])
        if not _is_chordal(programs[low]) or len(tuned) > 1:
            basses = [low]
    if basses and mids[basses[0]] > mids[melody]:
        # The line under the band sits above the tune (a bassoon's melody under a lead synth's bass line
        # crossed it on nearly every beat): the lower instrument takes the bass, the higher one the tune.
        low = basses[0]
        roles[melody], roles[low] = "", "melody"
        basses = [melody]
        melody = low
    for i in basses[:1]:
        roles[i] = "bass"
    for i in rest:
        if roles[i]:
            continue
        if programs[i] == TIMPANI:
            roles[i] = "timpani"
            continue
        fam = family_of(programs[i])
        if fam in ("synth_pad", "ensemble", "organ"):
            roles[i] = "pad"
        elif _is_chordal(programs[i]):
            roles[i] = "chords"
        else:
            roles[i] = "counter"
    return roles


def melody_octave(program: int, tonic_pc: int) -> int:
    """Octave shift (a multiple of 12) that puts a melody written around the tonic of octave 4 (the
    corpus's register, about a fifth below to an octave and a half above) inside ``program``'s range."""
    lo, hi = program_range(program)
    tonic = 60 + tonic_pc
    best, best_fit = 0, -1e9
    for shift in range(-36, 37, 12):
        a, b = tonic + shift - 5, tonic + shift + 19
        fit = min(b, hi) - max(a, lo) - 0.01 * abs(shift)
        if fit > best_fit:
            best, best_fit = shift, fit
    return best


def _nearest(pc: int, target: float, lo: int, hi: int) -> int:
    """The pitch of class ``pc`` inside [lo, hi] nearest ``target`` (or the nearest to the range)."""
    cands = [p for p in range(lo, hi + 1) if p % 12 == pc % 12]
    if not cands:
        cands = [p for p in range(lo - 12, hi + 13) if p % 12 == pc % 12]
    return min(cands, key=lambda p: abs(p - target))


def _voicing(
    pcs: Sequence[int], top_limit: int, lo: int, previous: Sequence[int] | None, n: int = 3
) -> list[int]:
    """``n`` chord tones, close position, all below ``top_limit`` and at or above ``lo``, the voicing
    nearest ``previous`` (the sum of each voice's move), else the highest that fits."""
    pcs = list(pcs)[:4]
    best: list[int] | None = None
    best_cost = 1e9
    for top in range(top_limit, max(lo + 6, top_limit - 13), -1):
        if top % 12 not in [p % 12 for p in pcs]:
            continue
        voicing = [top]
        while len(voicing) < n:
            below = max(p for p in range(voicing[-1] - 12, voicing[-1]) if p % 12 in [q % 12 for q in pcs])
            voicing.append(below)
        if min(voicing) < lo:
            continue
        voicing.sort()
        cost = sum(abs(a - b) for a, b in zip(voicing, previous, strict=False)) if previous else -top
        # The chord's third on top: an imperfect consonance under the melody, so the two cannot move in
        # parallel octaves or fifths (the root or fifth on top would double the melody's cadences).
        if len(pcs) > 1 and top % 12 != pcs[1] % 12:
            cost += 6
        if cost < best_cost:
            best, best_cost = voicing, cost
    if best is None:
        best = sorted(_nearest(pc, (lo + top_limit) / 2, lo, top_limit) for pc in pcs[:n])
    return best


def _sounding_at(notes: Sequence[Note], tick: int) -> int | None:
    for n in notes:
        if n.start <= tick < n.start + n.duration:
            return n.pitch
    return None


def bass_line(
    chords: Sequence[Chord], key_pc: int, span_ticks: int, beat_ticks: int, density_bin: int,
    program: int, rng: np.random.Generator, melody: Sequence[Note] = (),
) -> list[Note]:  # fmt: skip
    """Roots on every span's downbeat (the third instead where the root would move in parallel octaves or
    fifths with the melody); at density 2 and up, the fifth on the span's middle beat; at 3, an approach
    note (a step to the next root) on the span's last beat.

    The parallel is judged from what is heard just before the downbeat: the bass's last note and the
    melody's note sounding there, not the notes the span before began with (a tune that reached a fifth or
    octave above the bass only late in the bar, then stepped with it, went unnoticed)."""
    lo, hi = program_range(program)
    hi = min(hi, lo + 24)
    out: list[Note] = []
    prev = (lo + hi) // 2
    by_start = sorted(melody, key=lambda n: n.start)
    for s, chord in enumerate(chords):
        start = s * span_ticks
        pcs = chord.pitch_classes(key_pc)
        root = _nearest(pcs[0], prev, lo, hi)
        now = _sounding_at(by_start, start)
        heard = _sounding_at(by_start, start - 1) if start else None
        last = out[-1].pitch if out else None
        if now is not None and heard is not None and last is not None and now != heard and root != last:
            interval, before = (now - root) % 12, (heard - last) % 12
            if interval in (0, 7) and interval == before and len(pcs) > 1:
                root = _nearest(pcs[1], prev, lo, hi)
        beats = max(1, span_ticks // beat_ticks)
        if density_bin <= 1 or beats == 1:
            out.append(Note(start, span_ticks, root))
        else:
            half = (beats // 2) * beat_ticks if beats >= 2 else span_ticks
            out.append(Note(start, half, root))
            fifth = _nearest(pcs[2 if len(pcs) > 2 else 0], root + 4, lo, hi)
            if density_bin >= 3 and s + 1 < len(chords) and beats >= 3:
                out.append(Note(start + half, span_ticks - half - beat_ticks, fifth))
                nxt = _nearest(chords[s + 1].pitch_classes(key_pc)[0], root, lo, hi)
                step = nxt + (-2 if rng.random() < 0.5 else 1) if nxt != root else nxt + 7
                out.append(Note(start + span_ticks - beat_ticks, beat_ticks, int(np.clip(step, lo, hi))))
            else:
                out.append(Note(start + half, span_ticks - half, fifth))
        prev = root
    return out


_CONSONANT = frozenset((0, 3, 4, 7, 8, 9))  # unison/octave, thirds, fifth, sixths above the bass


def consonant_bass(
    bass: Sequence[Note], melody: Sequence[Note], chords: Sequence[Chord], key_pc: int, span_ticks: int,
    beat_ticks: int, program: int, others: Sequence[Sequence[Note]] = (),
) -> list[Note]:  # fmt: skip
    """The bass with the melody consonant above it on every beat it can be: where the melody sounds a
    dissonance (a second, fourth, tritone or seventh) against a bass note on a beat, the bass takes for
    that beat the nearest tone of its chord that is consonant with the melody note and lies under it, then
    returns to its own note, as a chorale's bass moves under the tune's passing tones (a held bass note is
    split on those beats). A tone that would move in parallel fifths or octaves with the melody or any of
    ``others`` (the inner voices), going there or coming back, is not taken; where none fits, the bass
    stays."""
    lo, hi = program_range(program)
    tune = sorted(melody, key=lambda n: n.start)
    lines = [tune, *others]

    def parallel_with_any(t: int, b0: int | None, b1: int | None) -> bool:
        """Whether the bass moving b0 -> b1 on beat ``t`` makes a parallel fifth or octave with a line."""
        if b0 is None or b1 is None or b0 == b1 or t < beat_ticks:
            return False
        return _moves_parallel(b0, b1, t, beat_ticks, lines)

    out: list[Note] = []
    ordered = sorted(bass, key=lambda n: n.start)
    for k, note in enumerate(ordered):
        end = note.start + note.duration
        after = ordered[k + 1].pitch if k + 1 < len(ordered) and ordered[k + 1].start == end else None
        beats = range(-(-note.start // beat_ticks) * beat_ticks, end, beat_ticks)  # beats inside the note
        cuts = [*sorted({note.start, *beats}), end]
        for a, b in itertools.pairwise(cuts):
            pitch = note.pitch
            top = _sounding_at(tune, a)
            if a % beat_ticks == 0 and top is not None and (top - pitch) % 12 not in _CONSONANT:
                chord = chords[min(len(chords) - 1, a // span_ticks)] if chords else None
                pcs = chord.pitch_classes(key_pc) if chord else ()
                before = out[-1].pitch if out else None
                options = [
                    p
                    for p in range(note.pitch - 7, note.pitch + 8)
                    if lo <= p <= hi and p < top and p % 12 in pcs and (top - p) % 12 in _CONSONANT
                    and not parallel_with_any(a, before, p)
                    and not parallel_with_any(b, p, note.pitch if b < end else after)
                ]  # fmt: skip
                if options:
                    pitch = min(options, key=lambda p: (abs(p - note.pitch), p))
            if out and out[-1].pitch == pitch and out[-1].start + out[-1].duration == a and a > note.start:
                out[-1] = Note(out[-1].start, b - out[-1].start, pitch)  # the same pitch goes on sounding
            else:
                out.append(Note(a, b - a, pitch))
    return out


def _moves_parallel(p0: int, p1: int, t: int, step: int, others: Sequence[Sequence[Note]]) -> bool:
    """Whether a voice going p0 -> p1 at ``t`` moves in parallel fifths or octaves with one of ``others``
    (each read as its top note ``step`` ticks before ``t`` and at ``t``)."""
    for line in others:
        a0, a1 = _top_at(line, t - step), _top_at(line, t)
        if a0 is None or a1 is None or a0 == a1 or (a1 > a0) != (p1 > p0):
            continue
        if (a1 - p1) % 12 in (0, 7) and (a0 - p0) % 12 == (a1 - p1) % 12:
            return True
    return False


def _top_at(notes: Sequence[Note], tick: int) -> int | None:
    """The highest pitch sounding at ``tick`` (how a part reads as one line)."""
    sounding = [n.pitch for n in notes if n.start <= tick < n.start + n.duration]
    return max(sounding) if sounding else None


def keep_under(
    notes: Sequence[Note], upper: Sequence[Sequence[Note]], lo: int, drop: bool = True
) -> list[Note]:
    """``notes`` kept under every line of ``upper``: a note that reaches the lowest pitch those lines sound
    while it sounds goes down an octave at a time (not below ``lo``, its instrument's floor), and one that
    still reaches it is left out (a chord loses a tone, a line rests for a note), or kept where it is with
    ``drop=False``. Accompaniment that climbs over the tune crosses it: the music gate, like the corpus, has
    the tune on top and the bass at the bottom."""
    above = sorted((n.start, n.start + n.duration, n.pitch) for line in upper for n in line)
    starts = [a[0] for a in above]
    longest = max((a[1] - a[0] for a in above), default=0)
    out: list[Note] = []
    for n in notes:
        end = n.start + n.duration
        first, last = bisect.bisect_left(starts, n.start - longest), bisect.bisect_left(starts, end)
        floor = min((p for s, e, p in above[first:last] if e > n.start), default=None)
        pitch = n.pitch
        while floor is not None and pitch >= floor and pitch - 12 >= lo:
            pitch -= 12
        if floor is None or pitch < floor:
            out.append(Note(n.start, n.duration, pitch))
        elif not drop:
            out.append(Note(n.start, n.duration, n.pitch))
    return out


def avoid_parallels(
    line: list[Note], others: Sequence[Sequence[Note]], chords: Sequence[Chord], key_pc: int,
    span_ticks: int, beat_ticks: int, program: int,
) -> list[Note]:  # fmt: skip
    """``line`` (a bass, a counter-line, or a chord part read as its top line) with every note that would
    move in parallel fifths or octaves with another part, from one beat to the next, re-pitched: the same
    pitch class an octave away (contrary motion, or a chord's top tone dropped inside it) or another tone of
    its chord, whichever is nearest and makes no parallel with any part."""
    lo, hi = program_range(program)
    out = sorted(line, key=lambda n: n.start)

    def parallel(a0: int, a1: int, b0: int, b1: int) -> bool:
        if a0 == a1 or b0 == b1 or (a1 - a0 > 0) != (b1 - b0 > 0):
            return False
        return abs(a0 - b0) % 12 == abs(a1 - b1) % 12 and abs(a1 - b1) % 12 in (0, 7)

    for k, note in enumerate(out):
        t = note.start
        if t == 0 or t % beat_ticks or note.pitch != _top_at(out, t):
            continue  # only what is heard as the line: its top note on a beat
        before = _top_at(out, t - beat_ticks)
        if before is None:
            continue
        pairs = [(_top_at(o, t - beat_ticks), _top_at(o, t)) for o in others]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]

        def clashes(pitch: int, before: int = before, pairs: list = pairs) -> bool:
            return any(parallel(before, pitch, x, y) for x, y in pairs)

        if not clashes(note.pitch):
            continue
        chord = chords[min(len(chords) - 1, t // span_ticks)] if chords else None
        pcs = chord.pitch_classes(key_pc) if chord else (note.pitch % 12,)
        options = [note.pitch - 12, note.pitch + 12]
        options += [p for p in range(note.pitch - 7, note.pitch + 8) if p % 12 in pcs and p != note.pitch]
        options = [p for p in options if lo <= p <= hi and not clashes(p)]
        if options:
            pitch = min(options, key=lambda p: (abs(p - note.pitch), p))
            out[k] = Note(note.start, note.duration, pitch)
    return out


def chord_part(
    chords: Sequence[Chord], key_pc: int, span_ticks: int, beat_ticks: int, density_bin: int,
    program: int, top_limit: int, compound: bool,
) -> list[Note]:  # fmt: skip
    """The harmony in the idiom of the instrument's family, below ``top_limit``."""
    lo, hi = program_range(program)
    family = "harp" if program == HARP else family_of(program)
    # Under the melody where the range allows, else as low as the instrument voices a chord.
    top_limit = min(hi, max(top_limit, lo + 16))
    lo = max(lo, top_limit - 24)
    out: list[Note] = []
    prev: list[int] | None = None
    sub = beat_ticks if compound else max(1, beat_ticks // 2)  # the accompaniment's pulse
    for s, chord in enumerate(chords):
        start = s * span_ticks
        v = _voicing(chord.pitch_classes(key_pc), top_limit, lo, prev)
        prev = v
        if family in ("organ", "synth_pad", "ensemble") or density_bin == 0:
            out += [Note(start, span_ticks, p) for p in v]
        elif family == "guitar":
            # Strums on every beat (and off-beats when busy); the performance pass spreads each strum.
            step = sub if density_bin >= 2 else beat_ticks
            for t in range(0, span_ticks, step):
                out += [Note(start + t, step, p) for p in v]
        elif family == "harp" or density_bin >= 3:
            # Broken chord, rising then falling, one note per pulse.
            pattern = [v[0], v[1], v[2], v[1]] if len(v) >= 3 else v
            step = max(1, sub // (2 if density_bin >= 3 and not compound else 1))
            for k, t in enumerate(range(0, span_ticks, step)):
                out.append(Note(start + t, step, pattern[k % len(pattern)]))
        elif family == "piano" and density_bin == 2 and not compound and span_ticks >= 4 * sub // 2:
            # Alberti: low - high - middle - high.
            pattern = [v[0], v[2], v[1], v[2]]
            for k, t in enumerate(range(0, span_ticks, sub)):
                out.append(Note(start + t, sub, pattern[k % 4]))
        else:
            for t in range(0, span_ticks, beat_ticks):
                out += [Note(start + t, beat_ticks, p) for p in v]
    return out


def timpani_part(
    chords: Sequence[Chord], key_pc: int, span_ticks: int, bar_ticks: int, density_bin: int
) -> list[Note]:
    """Timpani as an orchestra uses them: the chord's root (or fifth) struck at the start of each bar, or of
    each chord at higher densities, and a roll on the last chord."""
    lo, hi = program_range(TIMPANI)
    every = span_ticks if density_bin >= 2 else bar_ticks
    total = len(chords) * span_ticks
    out: list[Note] = []
    for t in range(0, total, every):
        pcs = chords[t // span_ticks].pitch_classes(key_pc)
        tone = pcs[0] if any(p % 12 == pcs[0] for p in range(lo, hi + 1)) else pcs[-1]
        pitch = _nearest(tone, (lo + hi) / 2, lo, hi)
        if t + every >= total:  # the last chord: a roll of sixteenths to the end
            out += [Note(k, 1, pitch) for k in range(t, total)]
        else:
            out.append(Note(t, min(every, 4), pitch))
    return out


def counter_line(
    melody: Sequence[Note],
    chords: Sequence[Chord],
    key_pc: int,
    span_ticks: int,
    beat_ticks: int,
    program: int,
) -> list[Note]:
    """A harmony line under the melody: at each strong beat, the chord tone a third or sixth below the
    sounding melody note (else the nearest chord tone below), held to the next strong beat."""
    lo, hi = program_range(program)
    out: list[Note] = []
    total = len(chords) * span_ticks
    step = beat_ticks * (2 if span_ticks >= 2 * beat_ticks * 2 else 1)
    for t in range(0, total, step):
        sounding = [n for n in melody if n.start <= t < n.start + n.duration]
        if not sounding:
            continue
        top = sounding[0].pitch
        pcs = chords[min(len(chords) - 1, t // span_ticks)].pitch_classes(key_pc)
        cands = [p for p in range(max(lo, top - 12), min(hi, top - 2) + 1) if p % 12 in pcs]
        if not cands:
            continue
        pick = min(cands, key=lambda p: (0 if top - p in (3, 4, 8, 9) else 1, top - p))
        out.append(Note(t, min(step, total - t), pick))
    return out


_PERFECT = (0, 7)
# Scale steps a passing tone may take: major, and melodic minor (raised sixth and seventh going up).
_PASSING_SCALES = {
    ("major", 1): (0, 2, 4, 5, 7, 9, 11),
    ("major", -1): (0, 2, 4, 5, 7, 9, 11),
    ("minor", 1): (0, 2, 3, 5, 7, 9, 11),
    ("minor", -1): (0, 2, 3, 5, 7, 8, 10),
}


def passing_tones(
    lines: Sequence[Sequence[Note]], soprano: Sequence[Note], key_pc: int, mode: str, beat_ticks: int,
    sub_ticks: int, share: float, rng: np.random.Generator,
) -> list[list[Note]]:  # fmt: skip
    """Chorale lower voices (high to low) with their leaps of a third between beats filled by the scale
    tone between, on the beat's last ``sub_ticks`` (an eighth in 4/4), ``share`` of those leaps. In Bach's
    chorales the alto, tenor and bass move inside a beat on about a quarter of the beats, passing tones seven
    times in ten.

    A passing tone is not written where it would reach or cross the voice above or below it, or move in
    parallel fifths or octaves with a voice that moves at the same moment. A leap that moves in parallel
    fifths or octaves with another voice from one beat to the next (a parallel :func:`voice_chorale` let
    through with ``broken``) is always filled: the passing tone breaks the parallel, as in Bach's chorales,
    where nine in ten of the parallels heard beat to beat have a note of one of the two voices between. Such
    a step instead reaches its note half a beat early, an anticipation.
    """
    out = [sorted(line, key=lambda n: n.start) for line in lines]
    for v in range(len(out)):
        line, new = out[v], []
        others = [soprano, *out[:v], *out[v + 1 :]]
        for k, note in enumerate(line):
            nxt = line[k + 1] if k + 1 < len(line) else None
            leap = nxt.pitch - note.pitch if nxt is not None else 0
            t = nxt.start - sub_ticks if nxt is not None else 0
            joined = (
                nxt is not None
                and nxt.start == note.start + note.duration
                and nxt.start % beat_ticks == 0
                and note.duration >= beat_ticks
            )
            parallel = joined and _moves_parallel(note.pitch, nxt.pitch, nxt.start, beat_ticks, others)
            if (
                parallel
                and 1 <= abs(leap) <= 2
                and not _moves_parallel(note.pitch, nxt.pitch, t, sub_ticks, others)
            ):
                # A step in parallel: the voice takes its next note half a beat early (an anticipation,
                # the commonest note between Bach's beat-to-beat parallels), so the two never move together
                # (unless the other voice already has: then it is broken).
                new.append(Note(note.start, note.duration - sub_ticks, note.pitch))
                new.append(Note(t, sub_ticks, nxt.pitch))
                continue
            if not joined or not 3 <= abs(leap) <= 4 or (rng.random() >= share and not parallel):
                new.append(note)
                continue
            direction = 1 if leap > 0 else -1
            scale = {(key_pc + d) % 12 for d in _PASSING_SCALES[(mode, direction)]}
            options = [
                p
                for p in range(min(note.pitch, nxt.pitch) + 1, max(note.pitch, nxt.pitch))
                if p % 12 in scale and abs(p - note.pitch) <= 2 and abs(nxt.pitch - p) <= 2
            ]
            above = soprano if v == 0 else out[v - 1]
            below = out[v + 1] if v + 1 < len(out) else None
            hi = _sounding_at(above, t)
            lo = _sounding_at(below, t) if below is not None else None
            fits = [
                p
                for p in options
                if (hi is None or p < hi)
                and (lo is None or p > lo)
                and not _moves_parallel(note.pitch, p, t, sub_ticks, others)
            ]
            if not fits:
                new.append(note)
                continue
            new.append(Note(note.start, note.duration - sub_ticks, note.pitch))
            new.append(Note(t, sub_ticks, fits[0]))
        out[v] = new
    return out


def _breakable(now: Sequence[int], before: Sequence[int], i: int, j: int) -> bool:
    """Whether a parallel of voices ``i < j`` (0 the soprano, high to low) from voicing ``before`` to ``now``
    may be let through and broken (:func:`voice_chorale`'s ``broken``): one of the two is a lower voice
    moving a third or less, which a passing tone or an anticipation then breaks. Octaves with the tune and
    parallels of the outer voices, the ones heard most, never are (Bach's are mostly fifths, and inner)."""
    if i == 0 and ((now[0] - now[j]) % 12 == 0 or j == len(now) - 1):
        return False
    return any(v > 0 and 1 <= abs(now[v] - before[v]) <= 4 for v in (i, j))


def voice_chorale(
    soprano: Sequence[Note], chords: Sequence[Chord], key_pc: int, span_ticks: int,
    programs: Sequence[int], beam: int = 12, beat_ticks: int | None = None, moving: float = 0.0,
    crossing: float | None = None, broken: float | None = None, broken_max: int = 0,
) -> list[list[Note]]:  # fmt: skip
    """Lower voices for a chorale: one chord tone per voice and beat, found by a beam search over voicings.

    ``programs`` are the lower voices' instruments, high to low (alto, tenor, bass; or tenor, bass). Cost
    of a voicing: how far every voice moves, plus penalties for parallel fifths or octaves against any
    other voice (soprano included), a voice crossing the one above it, more than an octave between upper
    neighbours, a missing third, a doubled leading tone, and a bass on anything but the root or third.

    The search steps by ``beat_ticks`` (by the span without it). Inside a span the chord stays, and a voice
    that moves to another of its tones by a third or less earns ``moving`` (a bass from root to third, an
    alto from fifth to third): Bach's lower voices move on six beats in ten, chords or not. With ``crossing``
    (three lower voices), the tenor may sound up to a major third above the alto at that cost, and at twice
    it again on the next beat: Bach's inner voices cross on about 2 % of the beats, briefly, where their
    lines lead them. The bass stays under every voice.

    With ``broken``, up to ``broken_max`` times in the piece a parallel fifth or octave from one beat to the
    next costs ``broken`` instead of the full penalty where one of its two voices is a lower voice moving a
    third or less: :func:`passing_tones` fills that leap with a passing tone, or has that step anticipated,
    and the note breaks the parallel between the beats (:func:`_breakable` says which may be). Bach's
    chorales have such beat-to-beat parallels in four pieces in ten (1.5 fifths and 0.6 octaves per 100
    chord changes), nine in ten with a note of one voice between the beats.
    """
    ranges = [program_range(p) for p in programs]
    n_low = len(programs)
    step = beat_ticks if beat_ticks and span_ticks % beat_ticks == 0 else span_ticks
    per_span = span_ticks // step
    chords = [chord for chord in chords for _ in range(per_span)]
    starts = [s % per_span == 0 for s in range(len(chords))]
    span_ticks = step

    def soprano_at(t: int, default: int) -> int:
        sounding = [n.pitch for n in soprano if n.start <= t < n.start + n.duration]
        if sounding:
            return sounding[0]
        earlier = [n for n in soprano if n.start < t]
        later = [n.pitch for n in soprano if n.start >= t]
        return max(earlier, key=lambda n: n.start).pitch if earlier else (later[0] if later else default)

    sop_at = [soprano_at(s * span_ticks, 72) for s in range(len(chords))]
    # The soprano on the last beat before each span: what a listener (and a beat-by-beat check of parallel
    # fifths and octaves) hears the lower voices move from, which is not the span's first soprano note.
    beat = beat_ticks or span_ticks
    sop_before = [sop_at[0]] + [
        soprano_at(s * span_ticks - beat, sop_at[s - 1]) for s in range(1, len(chords))
    ]
    # Beam search with back-pointers: kept[s] holds (total cost, voicing, index of its parent in kept[s-1],
    # broken parallels on the path so far).
    kept: list[list[tuple[float, tuple[int, ...], int, int]]] = []
    for s, chord in enumerate(chords):
        pcs = chord.pitch_classes(key_pc)
        sop = sop_at[s]
        options: list[list[int]] = []
        for v, (lo, hi) in enumerate(ranges):
            allowed = pcs[:2] if v == n_low - 1 else pcs
            options.append([p for p in range(lo, hi + 1) if p % 12 in allowed and p < sop])
        combos: list[tuple[int, ...]] = [()]
        for v in range(n_low):
            # The tenor may sound above the alto (within a third of it): the only crossing allowed.
            cross = crossing is not None and n_low == 3 and v == 1
            combos = [
                (*c, p)
                for c in combos
                for p in options[v]
                if not c or p < c[-1] or (cross and p != c[-1] and p - c[-1] <= 4)
            ]
            if v == n_low - 1:  # the bass under every voice
                combos = [c for c in combos if len(c) < 2 or c[-1] < min(c[:-1])]
        if not combos:  # nothing fits under this soprano note: keep the previous voicing
            combos = [kept[-1][0][1]] if kept else [tuple(sorted((lo + hi) // 2 for lo, hi in ranges))[::-1]]
        statics = []
        leading = (key_pc + 11) % 12
        centers = [lo + (hi - lo) * (0.3 if v == n_low - 1 else 0.45) for v, (lo, hi) in enumerate(ranges)]
        for combo in combos:
            voices = (sop, *combo)
            cost = 0.0
            if any(a - b > 12 for a, b in itertools.pairwise(voices[:-1])):  # upper neighbours
                cost += 20
            if len(pcs) >= 2 and pcs[1] not in {p % 12 for p in voices}:
                cost += 15
            if sum(p % 12 == leading for p in voices) > 1:
                cost += 10
            if combo[-1] % 12 != pcs[0]:
                cost += 3
            # Each voice stays near the middle of its register (else a bass can climb for a whole piece).
            cost += 0.15 * sum(abs(p - c) for p, c in zip(combo, centers, strict=True))
            if crossing is not None and len(combo) == 3 and combo[1] > combo[0]:
                cost += crossing
            statics.append(cost)
        row: list[tuple[float, tuple[int, ...], int, int]] = []
        parents = kept[-1] if kept else [(0.0, (), -1, 0)]
        prev_sop = sop_before[s]
        for k, (total, prev, _, n_broken) in enumerate(parents):
            for combo, static in zip(combos, statics, strict=True):
                cost, breaks = total + static, n_broken
                if prev:
                    cost += 0.5 * sum(abs(a - b) for a, b in zip(combo, prev, strict=True))
                    if moving and not starts[s]:
                        cost -= moving * sum(0 < abs(a - b) <= 4 for a, b in zip(combo, prev, strict=True))
                    now, before = (sop, *combo), (prev_sop, *prev)
                    for i in range(len(now)):
                        for j in range(i + 1, len(now)):
                            if now[i] != before[i] and now[j] != before[j]:
                                iv = (now[i] - now[j]) % 12
                                if iv in _PERFECT and iv == (before[i] - before[j]) % 12:
                                    if (
                                        broken is not None
                                        and breaks < broken_max
                                        and _breakable(now, before, i, j)
                                    ):
                                        cost, breaks = cost + broken, breaks + 1
                                    else:
                                        cost += 50
                    if abs(combo[-1] - prev[-1]) > 12:
                        cost += 5
                    if crossing is not None and len(combo) == 3 and combo[1] > combo[0] and prev[1] > prev[0]:
                        cost += 2 * crossing  # a crossing is brief: a beat, not a passage
                row.append((cost, combo, k, breaks))
        row.sort(key=lambda x: x[0])
        kept.append(row[:beam])
    best: list[tuple[int, ...]] = []
    k = 0
    for s in range(len(kept) - 1, -1, -1):
        _, combo, parent, _ = kept[s][k]
        best.append(combo)
        k = parent
    best.reverse()
    parts: list[list[Note]] = [[] for _ in range(n_low)]
    for s, combo in enumerate(best):
        for v, p in enumerate(combo):
            prev_notes = parts[v]
            if (
                prev_notes
                and prev_notes[-1].pitch == p
                and prev_notes[-1].start + prev_notes[-1].duration == s * span_ticks
            ):
                last = prev_notes[-1]
                prev_notes[-1] = Note(last.start, last.duration + span_ticks, p)  # a held note, not a repeat
            else:
                prev_notes.append(Note(s * span_ticks, span_ticks, p))
    return parts
