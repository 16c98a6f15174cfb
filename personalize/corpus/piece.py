"""The one ``Piece`` of the project: a corpus score as notes in ticks, with the annotations a tokenizer reads.

Time is counted in ticks of ``1 / TICKS_PER_QUARTER`` of a quarter note. Twelve ticks to the quarter hold
sixteenths (3 ticks), eighth-note triplets (4), sixteenth triplets (2) and the dotted beats of compound
meters (an 18-tick dotted quarter) exactly, which the first representation's sixteenth grid could not.
Bar lines fall at multiples of ``bar_ticks``; a pickup is shifted so that its downbeat lands on the first
bar line, and bar 0 then holds the pickup alone.

What a piece holds (see :class:`Piece`):

- ``parts``: per part, :class:`Note` tuples ``(onset, duration, pitch, velocity)`` sorted by onset then
  pitch. A part may sound several notes at once (double stops, a keyboard's chords); tied notes are one note.
- ``sections``: the form, from the repeat structure (repeats expanded, so A A B B is four sections with two
  labels), double bars, key changes and sections whose notes match an earlier one.
- ``phrases``: spans ending at a fermata, a rest, a section end or a cadence, with the cadence type.
- ``chords``: one :class:`Chord` per harmony slot of ``chord_ticks`` (half a bar where the bar has an even
  number of beats, else one beat), as a Roman numeral in the key as heard (``found_key_pc``, ``found_mode``).
- ``dynamics``: the marks and hairpins of the score; note velocities follow them (``dynamics_marked``).

The first representation (monophonic parts on a sixteenth grid, ``(onset, duration, pitch)``) is a view of
the same piece: :meth:`Piece.monophonic`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

from personalize.music.controls import METERS

TICKS_PER_QUARTER = 12
V1_TICKS_PER_QUARTER = 4  # the first token representation's grid (a sixteenth per tick)
V1_MAX_PARTS = 4
DEFAULT_VELOCITY = 80  # notes of a score without dynamics (the velocity the first representation writes)


class Note(NamedTuple):
    """One sounding note: onset and duration in ticks, MIDI pitch, MIDI velocity (1-127)."""

    onset: int
    duration: int
    pitch: int
    velocity: int


class Section(NamedTuple):
    """A span of whole bars ``[start_bar, end_bar)`` with a form label.

    ``label`` is "A", "B", ... by first appearance; a repeat or a matching section reuses its label, and
    ``occurrence`` counts how often the label has come before (0 the first time). ``start_tick`` is where
    the section really begins (a pickup starts it before its first bar line). ``cue`` says what opened it:
    "start", "repeat", "double bar", "key change" or "rehearsal mark".
    """

    start_bar: int
    end_bar: int
    label: str
    occurrence: int
    start_tick: int
    cue: str


class Phrase(NamedTuple):
    """A phrase ``[start_tick, end_tick)``; ``cues`` say why it ends there, ``cadence`` how it ends.

    Cues: "fermata", "rest", "section", "cadence", "end". Cadence: "authentic" (V -> I), "plagal" (IV -> I),
    "half" (ends on V), "deceptive" (V -> vi), "tonic" (ends on I without a dominant before), or "".
    """

    start_tick: int
    end_tick: int
    cues: tuple[str, ...]
    cadence: str


class Chord(NamedTuple):
    """The harmony of one slot: root and bass pitch classes (0 = C), quality, Roman numeral in the key as heard.

    Qualities: "maj", "min", "dim", "aug", "dom7", "maj7", "min7", "hdim7", "dim7". ``roman`` carries the
    inversion where the bass is known (``"V65"``, ``"I6"``); estimated harmonies of a single line are in
    root position.
    """

    root_pc: int
    quality: str
    bass_pc: int
    roman: str


class Dynamic(NamedTuple):
    """A dynamic mark of part ``part`` at ``tick`` (``end_tick == tick``), or a hairpin to ``end_tick``.

    ``mark`` is the score's text ("p", "mf", "sf", "fp", ...) or "crescendo" / "diminuendo" for a hairpin;
    ``velocity`` the MIDI velocity the mark sets (0 for hairpins).
    """

    tick: int
    end_tick: int
    part: int
    mark: str
    velocity: int


V1Note = tuple[int, int, int]  # (onset, duration, pitch) on the sixteenth grid


@dataclass
class Piece:
    """One score of the corpus (one tune of an ABC book, one chorale, one movement).

    Parts are ordered from the highest (by mean pitch) to the lowest. ``ticks_per_quarter`` is
    ``TICKS_PER_QUARTER`` for the corpus itself and ``V1_TICKS_PER_QUARTER`` for the view that
    :meth:`monophonic` returns, whose parts hold ``(onset, duration, pitch)`` triples instead of
    :class:`Note`. ``group`` and ``split`` come from the manifest (:func:`personalize.corpus.load_pieces`).
    """

    piece_id: str
    collection: str
    source: str  # path inside music21's corpus folder
    title: str
    meter: str
    bar_ticks: int
    n_bars: int
    tempo_bpm: float | None
    key_pc: int
    mode: str  # "major" | "minor"
    key_source: str  # "signature" (the encoded key) or "key-finding"
    found_key_pc: int  # Krumhansl-Schmuckler on the notes: the key as heard
    found_mode: str
    ticks_per_quarter: int = TICKS_PER_QUARTER
    group: str = ""  # versions of one tune or movements of one work share a group; splits never separate one
    split: str = ""  # train | val | test
    part_names: list[str] = field(default_factory=list)
    part_programs: list[int | None] = field(
        default_factory=list
    )  # General MIDI program where the score names one
    parts: list[list[Note]] = field(default_factory=list)
    repeats: str = "none"  # "expanded", "none" (the score has none) or "as written: <why not expanded>"
    source_bars: list[int] = field(default_factory=list)  # the written measure number each bar comes from
    irregular_bars: int = 0  # short bars padded with silence (encoding slips, mostly in ABC books)
    dynamics_marked: bool = False  # velocities follow the score's dynamics (else DEFAULT_VELOCITY)
    sections: list[Section] = field(default_factory=list)
    phrases: list[Phrase] = field(default_factory=list)
    chord_ticks: int = (
        0  # length of a harmony slot; chords[i] covers [i * chord_ticks, (i + 1) * chord_ticks)
    )
    chord_source: str = ""  # "chordify" (the parts' own harmony) or "estimate" (fitted to a single line)
    chords: list[Chord | None] = field(default_factory=list)  # None where nothing sounds
    dynamics: list[Dynamic] = field(default_factory=list)

    @property
    def n_notes(self) -> int:
        return sum(len(p) for p in self.parts)

    def to_json(self) -> dict:
        """A JSON-ready dict; tuples become arrays (see :meth:`from_json`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> Piece:
        """The inverse of :meth:`to_json`. Unknown keys (a manifest's extra columns) are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        v1 = kw.get("ticks_per_quarter", TICKS_PER_QUARTER) != TICKS_PER_QUARTER
        kw["parts"] = [
            [tuple(n) for n in part] if v1 else list(map(Note._make, part)) for part in kw.get("parts", [])
        ]
        kw["sections"] = list(map(Section._make, kw.get("sections", [])))
        kw["phrases"] = [Phrase(s, e, tuple(c), cad) for s, e, c, cad in kw.get("phrases", [])]
        kw["chords"] = [None if c is None else Chord._make(c) for c in kw.get("chords", [])]
        kw["dynamics"] = list(map(Dynamic._make, kw.get("dynamics", [])))
        return cls(**kw)

    def fits_v1(self) -> bool:
        """Whether the first representation can hold the piece: at most four parts, a meter it has a token for."""
        return len(self.parts) <= V1_MAX_PARTS and self.meter in METERS

    def monophonic(self, ticks_per_quarter: int = V1_TICKS_PER_QUARTER) -> Piece:
        """The first representation's view: each part one line of ``(onset, duration, pitch)`` on a coarser grid.

        Where a part sounds several notes at once it keeps its top note (its bottom note in the lowest of
        several parts, a bass line); where snapping to the grid (triplets) makes notes overlap, the next
        onset cuts the note before. Annotations keep their bars; their ticks are rescaled.
        """
        if self.ticks_per_quarter != TICKS_PER_QUARTER:
            raise ValueError(f"{self.piece_id}: already a {self.ticks_per_quarter}-tick view")
        if TICKS_PER_QUARTER % ticks_per_quarter or (self.bar_ticks * ticks_per_quarter) % TICKS_PER_QUARTER:
            raise ValueError(
                f"{self.piece_id}: a {self.meter} bar does not fit a grid of {ticks_per_quarter} ticks per quarter"
            )
        f = TICKS_PER_QUARTER // ticks_per_quarter
        last = len(self.parts) - 1
        parts = [_one_line(notes, f, lowest=(i == last and last > 0)) for i, notes in enumerate(self.parts)]
        return replace(
            self,
            ticks_per_quarter=ticks_per_quarter,
            bar_ticks=self.bar_ticks // f,
            parts=parts,
            sections=[s._replace(start_tick=s.start_tick // f) for s in self.sections],
            phrases=[
                p._replace(start_tick=p.start_tick // f, end_tick=p.end_tick // f) for p in self.phrases
            ],
            chord_ticks=self.chord_ticks // f,
            dynamics=[d._replace(tick=d.tick // f, end_tick=d.end_tick // f) for d in self.dynamics],
        )


def _one_line(notes: list[Note], factor: int, lowest: bool) -> list[V1Note]:
    """One monophonic line from a part's notes, snapped to a grid ``factor`` times coarser."""
    by_onset: dict[int, tuple[int, int]] = {}
    for n in notes:
        # Snap each end separately (round half to even, as the first representation's builder did).
        start, end = round(n.onset / factor), round((n.onset + n.duration) / factor)
        kept = by_onset.get(start)
        if kept is None or (n.pitch < kept[1] if lowest else n.pitch > kept[1]):
            by_onset[start] = (end, n.pitch)
    line: list[V1Note] = []
    onsets = sorted(by_onset)
    for i, start in enumerate(onsets):
        end, pitch = by_onset[start]
        if i + 1 < len(onsets):
            end = min(end, onsets[i + 1])
        if end > start:
            line.append((start, end - start, pitch))
    return line
