"""Song tokens (representation v2): a melody written section by section over a given chord progression,
in pitches relative to the tonic.

A sequence reads::

    BOS MODE_<m> METER_<m> DENSITY_<bin> STYLE_<tune|chorale> SEP
    SEC_<A..D> [FINAL] BAR_0 CHORD_<c> [CHORD_<c>] NOTES_<n> (POS_<t> PITCH_<rel> DUR_<d>)* BAR_1 ...
    SEC_<B> BAR_0 ... EOS

- **Pitches relative to the tonic** (``PITCH_<rel>``, rel = MIDI pitch - (60 + tonic pitch class)): the
  model never has to learn twelve transpositions of one tune, and a melody written for "D minor" is in D
  minor because its chords and its mode are; the key itself is applied when the notes become MIDI.
- **The conditioning the arranger knows is in the stream**: the section's role (``SEC_A`` is the first new
  material, ``SEC_B`` the next, a letter that comes back is a return), ``FINAL`` on the last section (it
  ends on the tonic), the bar's position in its section (``BAR_i``) and one chord per half bar or bar
  (:func:`personalize.music.chords.spans_per_bar`). Generation forces these tokens and lets the model write
  only the notes, so the notes are learned from real tunes written over the same kind of progression.
- **Rhythmic activity per bar** (``NOTES_<n>``, the number of notes that start in the bar, 16 meaning 16 or
  more): a bar-level attribute control. Trained on the bar's real count and forced at generation, it is
  how the model carries the asked density itself: the song's density is what its bars are asked for
  (:mod:`personalize.generate.song.rhythm` draws the counts from the corpus), and the model has learned
  to fill a bar with that many notes. ``DENSITY_<bin>`` in the prefix stays as the piece-level summary.
  These tokens come last in the vocabulary: a model trained before them (its vocabulary ends at
  ``NOTES0``) reads the same ids, and the writer leaves the counts out of its stream.
- **Time**: ``POS_t`` is a note's onset in sixteenths from the bar line and ``DUR_d`` its length; a rest
  is a gap between one note's end and the next onset. Notes are one line (the melody).
- **Context**: a three-minute song writes each distinct section once (repeats are reused by the arranger),
  about 700 tokens, so the whole song so far sits inside a 1,024-token context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from personalize.music.chords import N_CHORDS, Chord, estimate_chords, spans_per_bar
from personalize.music.controls import METERS, N_DENSITY_BINS, density_bin

TICKS_PER_QUARTER = 4
REL_LO, REL_HI = -24, 39  # pitch relative to 60 + tonic pitch class
MAX_BAR_TICKS = 24
MAX_SECTION_BARS = 16
MAX_NOTES_TOKEN = 16  # NOTES_16 stands for 16 notes or more in a bar
SECTION_LETTERS = ("A", "B", "C", "D")
STYLES = ("tune", "chorale")

T = TypeVar("T")


def _build_vocab() -> list[str]:
    names = ["PAD", "BOS", "EOS", "SEP", "FINAL"]
    names += ["MODE_major", "MODE_minor"]
    names += [f"METER_{m}" for m in METERS]
    names += [f"DENSITY_{b}" for b in range(N_DENSITY_BINS)]
    names += [f"STYLE_{s}" for s in STYLES]
    names += [f"SEC_{s}" for s in SECTION_LETTERS]
    names += [f"BAR_{i}" for i in range(MAX_SECTION_BARS)]
    names += [f"CHORD_{Chord.from_index(i).root}{Chord.from_index(i).quality}" for i in range(N_CHORDS)]
    names += [f"POS_{t}" for t in range(MAX_BAR_TICKS)]
    names += [f"PITCH_{r}" for r in range(REL_LO, REL_HI + 1)]
    names += [f"DUR_{d}" for d in range(1, MAX_BAR_TICKS + 1)]
    # Tokens added later go at the end, so a model trained on the shorter vocabulary reads its ids unchanged.
    names += [f"NOTES_{n}" for n in range(MAX_NOTES_TOKEN + 1)]
    return names


VOCAB: list[str] = _build_vocab()
TOKEN_ID: dict[str, int] = {name: i for i, name in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
PAD, BOS, EOS, SEP, FINAL = (TOKEN_ID[n] for n in ("PAD", "BOS", "EOS", "SEP", "FINAL"))
SEC0, BAR0 = TOKEN_ID["SEC_A"], TOKEN_ID["BAR_0"]
CHORD0, POS0 = TOKEN_ID["CHORD_0maj"], TOKEN_ID["POS_0"]
PITCH0, DUR1 = TOKEN_ID[f"PITCH_{REL_LO}"], TOKEN_ID["DUR_1"]
NOTES0 = TOKEN_ID["NOTES_0"]


def is_bar(tok: int) -> bool:
    return BAR0 <= tok < BAR0 + MAX_SECTION_BARS


def is_pos(tok: int) -> bool:
    return POS0 <= tok < POS0 + MAX_BAR_TICKS


def is_pitch(tok: int) -> bool:
    return PITCH0 <= tok <= PITCH0 + REL_HI - REL_LO


def is_dur(tok: int) -> bool:
    return DUR1 <= tok < DUR1 + MAX_BAR_TICKS


def is_notes(tok: int) -> bool:
    return NOTES0 <= tok <= NOTES0 + MAX_NOTES_TOKEN


def notes_token(count: int) -> int:
    """The bar-level count token for ``count`` notes starting in a bar."""
    return NOTES0 + min(max(int(count), 0), MAX_NOTES_TOKEN)


def chord_token(chord: Chord) -> int:
    return CHORD0 + chord.index


def section_token(letter: str) -> int:
    return TOKEN_ID[f"SEC_{letter}"]


def bar_ticks_of(meter: str) -> int:
    num, den = (int(x) for x in meter.split("/"))
    return num * 4 * TICKS_PER_QUARTER // den


def style_of(piece: object) -> str:
    """A corpus piece's style as the song model reads it: ``chorale`` for part writing, ``tune`` for a
    single line."""
    return "chorale" if len(piece.parts) > 1 else "tune"  # type: ignore[attr-defined]


def by_style(pieces: Sequence[object]) -> dict[str, list[object]]:
    """Corpus pieces grouped by :func:`style_of`, styles in name order (pieces without parts left out)."""
    groups: dict[str, list[object]] = {}
    for piece in pieces:
        if piece.parts:  # type: ignore[attr-defined]
            groups.setdefault(style_of(piece), []).append(piece)
    return dict(sorted(groups.items()))


def counted_by_style(
    count: Callable[[list[object]], T], pieces: Iterable[object], per_style: bool = True
) -> tuple[T, dict[str, T]]:
    """``count`` over all ``pieces``, and (with ``per_style``) over each style's pieces alone."""
    pieces = list(pieces)
    return count(pieces), ({s: count(g) for s, g in by_style(pieces).items()} if per_style else {})


def prefix_tokens(mode: str, meter: str, density: int, style: str) -> list[int]:
    return [
        BOS,
        TOKEN_ID[f"MODE_{mode}"],
        TOKEN_ID[f"METER_{meter}"],
        TOKEN_ID[f"DENSITY_{int(density)}"],
        TOKEN_ID[f"STYLE_{style}"],
        SEP,
    ]


@dataclass
class Section:
    """A run of bars with one role: its letter (``A`` first, a repeated letter is a return) and length."""

    letter: str
    start_bar: int
    n_bars: int
    final: bool = False


def bar_notes(line: Sequence[tuple[int, int, int]], bar_ticks: int, bar: int) -> list[tuple[int, int, int]]:
    """Notes of one line starting in ``bar`` as ``(position, duration, pitch)``, cut at the bar line."""
    lo, hi = bar * bar_ticks, (bar + 1) * bar_ticks
    return [(o - lo, min(d, hi - o), p) for o, d, p in line if lo <= o < hi and d > 0]


def find_sections(
    line: Sequence[tuple[int, int, int]], bar_ticks: int, n_bars: int, block: int
) -> list[Section]:
    """Split a piece into blocks of ``block`` bars and letter them by content: a block whose bars (all but
    its last two, where endings differ) match an earlier block's in at least 3 of 4 bars takes its letter."""
    bars = [tuple(bar_notes(line, bar_ticks, b)) for b in range(n_bars)]
    sections: list[Section] = []
    next_letter = 0
    for start in range(0, n_bars, block):
        length = min(block, n_bars - start)
        letter = None
        head = max(1, length - 2)
        for earlier in sections:
            if earlier.n_bars < head:
                continue
            same = sum(bars[start + i] == bars[earlier.start_bar + i] for i in range(head))
            if same / head >= 0.75:
                letter = earlier.letter
                break
        if letter is None:
            letter = SECTION_LETTERS[min(next_letter, len(SECTION_LETTERS) - 1)]
            next_letter += 1
        sections.append(Section(letter, start, length))
    if sections:
        sections[-1].final = True
    return sections


def melody_density(line: Sequence[tuple[int, int, int]], bar_ticks: int, n_bars: int) -> int:
    quarters = n_bars * bar_ticks / TICKS_PER_QUARTER
    return density_bin(len(line) / max(quarters, 1e-9))


def encode_piece(piece: object) -> list[int] | None:
    """The token stream of a corpus piece (its top line as the melody, its chords estimated from every
    part), or None when it cannot be written in this vocabulary (meter, bar length, pitch span)."""
    meter, bar_ticks = piece.meter, piece.bar_ticks  # type: ignore[attr-defined]
    if meter not in METERS or bar_ticks > MAX_BAR_TICKS or not piece.parts or not piece.parts[0]:  # type: ignore[attr-defined]
        return None
    key_pc, mode = piece.found_key_pc, piece.found_mode  # type: ignore[attr-defined]
    line = piece.parts[0]  # type: ignore[attr-defined]
    tonic = 60 + key_pc
    rel = [p - tonic for _, _, p in line]
    shift = 0
    while min(rel) + shift < REL_LO:
        shift += 12
    while max(rel) + shift > REL_HI:
        shift -= 12
    if min(rel) + shift < REL_LO:
        return None
    n_bars = piece.n_bars  # type: ignore[attr-defined]
    spans = spans_per_bar(meter)
    span_ticks = bar_ticks // spans
    chords = estimate_chords(piece.parts, key_pc, mode, span_ticks, n_bars * spans)  # type: ignore[attr-defined]
    style = style_of(piece)
    block = 4 if style == "chorale" else 8
    out = prefix_tokens(mode, meter, melody_density(line, bar_ticks, n_bars), style)
    for section in find_sections(line, bar_ticks, n_bars, block):
        out.append(section_token(section.letter))
        if section.final:
            out.append(FINAL)
        for i in range(section.n_bars):
            bar = section.start_bar + i
            out.append(BAR0 + i)
            out += [chord_token(c) for c in chords[bar * spans : (bar + 1) * spans]]
            notes = bar_notes(line, bar_ticks, bar)
            out.append(notes_token(len(notes)))
            for pos, dur, pitch in notes:
                out += [POS0 + pos, PITCH0 + pitch - tonic + shift - REL_LO, DUR1 + dur - 1]
    out.append(EOS)
    return out


@dataclass
class WrittenBar:
    """What the model wrote in one bar: notes as ``(position, duration, rel_pitch)`` in ticks."""

    chords: list[Chord]
    notes: list[tuple[int, int, int]]


def decode_sections(tokens: Sequence[int]) -> list[tuple[str, list[WrittenBar]]]:
    """Sections of a token stream as ``(letter, bars)``; stops at EOS. Tolerates a stream cut anywhere."""
    sections: list[tuple[str, list[WrittenBar]]] = []
    pos = None
    pitch = None
    for tok in tokens:
        if tok == EOS:
            break
        if SEC0 <= tok < SEC0 + len(SECTION_LETTERS):
            sections.append((SECTION_LETTERS[tok - SEC0], []))
        elif is_bar(tok) and sections:
            sections[-1][1].append(WrittenBar([], []))
        elif CHORD0 <= tok < CHORD0 + N_CHORDS and sections and sections[-1][1]:
            sections[-1][1][-1].chords.append(Chord.from_index(tok - CHORD0))
        elif is_pos(tok):
            pos, pitch = tok - POS0, None
        elif is_pitch(tok) and pos is not None:
            pitch = tok - PITCH0 + REL_LO
        elif is_dur(tok) and pos is not None and pitch is not None and sections and sections[-1][1]:
            sections[-1][1][-1].notes.append((pos, tok - DUR1 + 1, pitch))
            pos, pitch = None, None
    return sections


def window(tokens: list[int], block_size: int, rng: np.random.Generator) -> list[int]:
    """A training window of at most ``block_size + 1`` tokens: the whole stream when it fits, else the
    prefix followed by the stream from a random section start (as generation continues a long song)."""
    if len(tokens) <= block_size + 1:
        return tokens
    prefix = tokens[: tokens.index(SEP) + 1]
    starts = [i for i, t in enumerate(tokens) if SEC0 <= t < SEC0 + len(SECTION_LETTERS)]
    room = [s for s in starts if s <= len(tokens) - 32] or starts[:1]
    start = int(rng.choice(room))
    return (prefix + tokens[start:])[: block_size + 1]
