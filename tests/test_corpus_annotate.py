"""Annotations on known scores: a Bach chorale's form, fermata phrases and chords; fiddle tunes' sections and
final cadence; velocities from the dynamics of a small score; the first representation's view of a part."""

from __future__ import annotations

import pytest

from personalize.corpus import Piece
from personalize.corpus.licences import music21_corpus_root
from personalize.corpus.parse import LEVEL_VELOCITY, parse_source, score_to_pieces
from personalize.corpus.piece import Note

G, D, C, F = 7, 2, 0, 5  # pitch classes


@pytest.fixture(scope="module")
def chorale() -> Piece:
    """BWV 269, "Aus meines Herzens Grunde": G major, 3/4, the first two phrases repeated (A A B)."""
    pieces, problems = parse_source(music21_corpus_root() / "bach" / "bwv269.mxl", "bach_chorales")
    assert not problems
    return pieces[0]


def chord_at(piece: Piece, bar: int, beat: int) -> object:
    return piece.chords[(bar * piece.bar_ticks + beat * 12) // piece.chord_ticks]


def test_chorale_sections_follow_its_repeat_sign(chorale: Piece):
    assert [(s.label, s.occurrence, s.cue) for s in chorale.sections] == [
        ("A", 0, "start"),
        ("A", 1, "repeat"),
        ("B", 0, "double bar"),
    ]
    again = chorale.sections[1]
    assert chorale.source_bars[again.start_bar] == 1  # the repeat plays written bar 1 again
    assert chorale.repeats == "expanded" and chorale.n_bars == 29  # 22 written bars, 7 of them twice


def test_chorale_phrases_end_at_its_fermatas_with_their_cadences(chorale: Piece):
    # Six fermatas are written; the two of the repeated Stollen sound twice: eight phrases.
    assert len(chorale.phrases) == 8
    assert all("fermata" in p.cues for p in chorale.phrases)
    assert [p.cadence for p in chorale.phrases] == [
        "half", "authentic", "half", "authentic", "half", "", "half", "authentic"
    ]  # fmt: skip
    last_note_end = max(n.onset + n.duration for part in chorale.parts for n in part)
    assert "end" in chorale.phrases[-1].cues and chorale.phrases[-1].end_tick == last_note_end


def test_chorale_chords_are_roman_numerals_in_g_major(chorale: Piece):
    assert (chorale.found_key_pc, chorale.found_mode, chorale.chord_source) == (G, "major", "chordify")
    assert chorale.chord_ticks == 12  # 3/4: a chord per beat
    # The pickup and the first bar: I | I vi V6 (bass G, G, E, F sharp).
    assert chord_at(chorale, 0, 2).roman == "I"
    assert [chord_at(chorale, 1, b).roman for b in range(3)] == ["I", "vi", "V6"]
    # The final cadence: the last bar is I over G after a dominant (V or V7) over D.
    last_bar = chorale.n_bars - 1
    final = chord_at(chorale, last_bar, 0)
    assert (final.roman, final.root_pc, final.bass_pc) == ("I", G, G)
    before = chord_at(chorale, last_bar - 1, 2)
    assert before.root_pc == D and before.roman.startswith("V")
    # A fermata chord of a half cadence is D major (V).
    first_end = chorale.phrases[0].end_tick - 1
    assert chorale.chords[first_end // chorale.chord_ticks].roman == "V"


def test_tune_sections_come_from_its_repeats_and_it_ends_on_the_tonic():
    pieces, problems = parse_source(
        music21_corpus_root() / "ryansMammoth" / "FishersHornpipe.abc", "ryans_mammoth"
    )
    assert not problems
    tune = pieces[0]
    assert (tune.meter, tune.found_key_pc, tune.found_mode, tune.chord_source) == (
        "2/4",
        F,
        "major",
        "estimate",
    )
    # |: A :| |: B :| with pickups: four 8-bar sections, the A and B strains each played twice.
    assert [(s.label, s.occurrence) for s in tune.sections] == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    assert [s.end_bar - s.start_bar for s in tune.sections[1:]] == [8, 8, 8]
    assert tune.irregular_bars == 0
    last = [c for c in tune.chords if c is not None][-1]
    assert (last.roman, last.root_pc) == ("I", F)
    assert tune.phrases[-1].cadence in ("authentic", "tonic") and "end" in tune.phrases[-1].cues
    # Every half bar that sounds has an estimated chord.
    sounding = {n.onset // tune.chord_ticks for n in tune.parts[0]}
    assert all(tune.chords[k] is not None for k in sounding)


def test_tune_without_repeats_takes_its_sections_from_the_double_bar():
    pieces, _ = parse_source(music21_corpus_root() / "oneills1850" / "0001-0050.abc", "oneills1850")
    tune = next(p for p in pieces if p.title == "Fare You Well")
    assert tune.repeats == "none"
    assert [(s.label, s.cue) for s in tune.sections] == [("A", "start"), ("B", "double bar")]
    assert tune.sections[1].start_bar == 9  # the B strain's pickup stays in the bar before


def test_velocities_follow_the_scores_dynamics():
    from music21 import dynamics, meter, note, stream

    part = stream.Part()
    for i in range(4):
        m = stream.Measure(number=i + 1)
        if i == 0:
            m.append(meter.TimeSignature("4/4"))
        for k in range(4):
            m.append(note.Note(60 + k + 2 * i, quarterLength=1))
        part.append(m)
    part.measure(1).insert(0, dynamics.Dynamic("p"))
    part.measure(3).insert(0, dynamics.Dynamic("f"))
    part.measure(4).insert(2, dynamics.Dynamic("sf"))
    bar2 = list(part.measure(2).notes)
    part.insert(0, dynamics.Crescendo(bar2[0], bar2[-1]))
    [(piece, _)], problem = score_to_pieces(stream.Score([part]), "test", "test/x.xml", 0, "x")
    assert problem is None and piece.dynamics_marked
    velocity = [n.velocity for n in piece.parts[0]]
    p, f = LEVEL_VELOCITY["p"], LEVEL_VELOCITY["f"]
    assert velocity[:4] == [p] * 4
    assert (
        velocity[4] == p and velocity[4:8] == sorted(velocity[4:8]) and p < velocity[7] < f
    )  # crescendo to f
    assert velocity[8:12] == [f] * 4
    assert velocity[12:16] == [f, f, 104, f]  # sf accents one note
    assert [d.mark for d in piece.dynamics] == ["p", "crescendo", "f", "sf"]


def test_first_representation_view_keeps_the_top_note_and_snaps_triplets():
    piece = Piece(
        piece_id="t/x/0", collection="t", source="x", title="x", meter="2/4", bar_ticks=24, n_bars=1,
        tempo_bpm=None, key_pc=0, mode="major", key_source="signature", found_key_pc=0, found_mode="major",
        parts=[[Note(0, 12, 60, 80), Note(0, 12, 64, 80), Note(12, 4, 62, 80), Note(16, 4, 64, 80), Note(20, 4, 65, 80)]],
    )  # fmt: skip
    v1 = piece.monophonic()
    assert v1.bar_ticks == 8
    # A chord keeps its top note; eighth-note triplets (4 ticks of 12) land on the nearest sixteenth.
    assert v1.parts == [[(0, 4, 64), (4, 1, 62), (5, 2, 64), (7, 1, 65)]]
