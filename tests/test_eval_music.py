"""The music evaluation can fail: its gate rejects random notes in the scale and most Markov-chain pieces,
and accepts held-out corpus pieces of the matching texture; the metrics measure what they say."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from personalize.corpus import Piece
from personalize.evaluate.music.baselines import MarkovChain, RandomInScale, training_lines
from personalize.evaluate.music.references import Track, corpus_tracks, track_from_request
from personalize.generate import METERS, Controls
from personalize.music import metrics as M
from personalize.music.gate import MusicGate, calibrate, check
from personalize.music.score import TEXTURES, Score, score_from_midi, score_to_midi

GATE_FILE = Path(__file__).resolve().parents[1] / "models" / "music_gate.json"
HELD_OUT_TUNES = 35  # Ryan tunes the gate never saw (one per file), beside every held-out chorale
TRAIN_CHORALES, TRAIN_TUNES = 12, 40  # for the Markov chain


def _parse(collection: str, source: str) -> list[Piece]:
    """The pieces of one music21 corpus file, in the first view (monophonic lines in sixteenths)."""
    import music21

    from personalize.corpus.parse import parse_source

    pieces, _ = parse_source(Path(music21.__file__).parent / "corpus" / source, collection)
    return [p.monophonic() for p in pieces if p.fits_v1()]


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Piece]]:
    """Held-out pieces, from the files the committed gate lists as never used to calibrate it (the corpus's
    val and test splits), and a few other files' pieces to train the Markov chain."""
    import music21

    held_sources = [
        tuple(s) for s in json.loads(GATE_FILE.read_text())["built_from"]["corpus"]["held_out_sources"]
    ]
    chorales = [s for s in held_sources if s[0] == "bach_chorales"]
    tunes = [s for s in held_sources if s[0] == "ryans_mammoth"][:HELD_OUT_TUNES]
    root = Path(music21.__file__).parent / "corpus"
    held = {s for _, s in held_sources}
    others = {
        folder: [
            f"{folder}/{f.name}"
            for f in sorted((root / folder).glob(pattern))
            if f"{folder}/{f.name}" not in held
        ]
        for folder, pattern in (("bach", "*.mxl"), ("ryansMammoth", "*.abc"))
    }
    train = [("bach_chorales", s) for s in others["bach"][:TRAIN_CHORALES]]
    train += [("ryans_mammoth", s) for s in others["ryansMammoth"][:TRAIN_TUNES]]
    return {
        "held": [replace(p, split="test") for c, s in chorales + tunes for p in _parse(c, s)],
        "train": [replace(p, split="train") for c, s in train for p in _parse(c, s)],
    }


@pytest.fixture(scope="module")
def gate() -> MusicGate:
    """The committed gate (``models/music_gate.json``), the one the nightly check would load."""
    return MusicGate.load(GATE_FILE)


def _matching_requests(tracks: list[Track], programs: list[int | str]) -> list[Controls]:
    """One request per corpus track: same key, meter and length, the texture's instruments."""
    return [
        Controls(
            key_pc=t.key_pc,
            mode=t.mode,
            tempo_bpm=100.0,
            meter=t.meter if t.meter in METERS else "4/4",
            density_bin=i % 4,
            programs=list(programs),
            bars=t.bars,
        )
        for i, t in enumerate(tracks)
    ]


PROGRAMS = {"chorale": [40, 41, 42, 43], "tune": [73], "band": [0, 33, "drums"]}


def _pass_rate(gate: MusicGate, tracks: list[Track]) -> float:
    passed = [gate.judge(score_from_midi(t.midi), t.key_pc, t.mode, t.texture).passed for t in tracks]
    return float(np.mean(passed))


def _noise(corpus, texture: str) -> tuple[list[Track], list[Track], list[Track]]:
    """Held-out corpus tracks of a texture, and random-in-scale and Markov tracks on matching requests."""
    held = corpus_tracks(corpus["held"], texture)
    requests = _matching_requests(held, PROGRAMS[texture])
    random_midis = RandomInScale().generate(requests, 1)
    markov_midis = MarkovChain().fit(training_lines(corpus["train"])).generate(requests, 2)
    return (
        held,
        [
            track_from_request("random_in_scale", texture, c, m)
            for c, m in zip(requests, random_midis, strict=True)
        ],
        [track_from_request("markov", texture, c, m) for c, m in zip(requests, markov_midis, strict=True)],
    )


@pytest.mark.parametrize("texture", TEXTURES)
def test_gate_accepts_held_out_corpus_and_rejects_noise(corpus, gate: MusicGate, texture: str) -> None:
    held, random_in_scale, markov = _noise(corpus, texture)
    assert len(held) >= 25, f"too few held-out {texture} pieces to judge the gate ({len(held)})"
    assert _pass_rate(gate, held) >= 0.85
    assert _pass_rate(gate, random_in_scale) <= 0.10
    assert _pass_rate(gate, markov) < 0.5


def test_a_gate_calibrated_on_corpus_pieces_refuses_noise(corpus) -> None:
    tunes = [(score_from_midi(x.midi), x.key_pc, x.mode) for x in corpus_tracks(corpus["train"], "tune")]
    own = calibrate({"tune": tunes})
    assert own.built_from["pieces"] == {"tune": len(tunes)} and 0 < own.thresholds["tune"] < 20
    _, random_in_scale, _ = _noise(corpus, "tune")
    assert _pass_rate(own, random_in_scale) <= 0.10


def _line(pitches: list[int], dur: int = 4, start: int = 0) -> list[tuple[int, int, int]]:
    return [(start + i * dur, dur, p) for i, p in enumerate(pitches)]


def test_a_drone_on_the_tonic_is_refused_with_a_reason(gate: MusicGate) -> None:
    # C major, 16 bars of 4/4: the melody sits on C (quarters) with a step now and then, over a tonic bass.
    melody = _line([72, 72, 72, 74] * 16)
    bass = _line([48] * 64)
    pm = score_to_midi([melody, bass], [73, 42], 100.0, "4/4")
    reasons = check(pm, "tune", 0, "major", gate=gate)
    assert reasons
    assert any("melody_tonic_share" in r or "melody_repeat_share" in r for r in reasons)


def test_check_names_the_corpus_band_and_refuses_an_unknown_texture(gate: MusicGate) -> None:
    rng = np.random.default_rng(0)
    scale = [60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79]
    melody = _line([int(rng.choice(scale)) for _ in range(64)])
    reasons = check(score_to_midi([melody], [0], 100.0, "4/4"), None, 0, "major", gate=gate)
    assert reasons and "corpus" in " ".join(reasons)
    with pytest.raises(ValueError, match="texture"):
        check(score_to_midi([melody], [0], 100.0, "4/4"), "symphony", 0, "major", gate=gate)


def test_melodic_and_repetition_metrics_on_known_lines() -> None:
    scale_up_down = _line([60, 62, 64, 65, 67, 65, 64, 62] * 4)  # 8 bars of 4/4, the same 2 bars 4 times
    s = Score([scale_up_down], "4/4")
    assert M.melody_step_share(s) == 1.0 and M.melody_repeat_share(s) == 0.0
    assert M.has_repeated_2bar_unit(s) == 1.0 and M.has_returning_section(s) == 1.0
    assert M.repeated_bar_share(s) == pytest.approx(6 / 7)
    assert M.melody_tonic_share(s, 0) == pytest.approx(4 / 32)
    never_again = Score([_line(list(range(48, 80)))], "4/4")  # a chromatic climb: no bar comes back
    assert M.has_repeated_2bar_unit(never_again) == 0.0 and M.has_returning_section(never_again) == 0.0
    assert M.bar_self_similarity(never_again) == 0.0


def test_voice_leading_counts_parallel_fifths_and_octaves() -> None:
    # Three voices in quarter notes: soprano and bass move in parallel octaves, alto a fifth above the bass.
    soprano = _line([72, 74, 76, 77])
    alto = _line([67, 69, 71, 72])
    bass = _line([60, 62, 64, 65])
    vl = M.voice_leading(Score([soprano, alto, bass], "4/4"))
    assert vl is not None and vl.chord_changes == 3
    assert vl.parallel_octaves == 3  # soprano-bass
    assert vl.parallel_fifths == 3  # alto-bass
    assert M.voice_leading(Score([soprano], "4/4")) is None


def test_compound_feel_and_the_tonic_ending() -> None:
    jig = Score([[*_line([67, 69, 71] * 8, dur=2), (48, 6, 67), (54, 6, 67)]], "6/8")
    waltz_in_six_eight = Score([_line([67, 69, 71] * 6, dur=4)], "6/8")  # quarter notes: a 3/4 feel
    assert M.metric_feel_share(jig) == 1.0
    assert M.metric_feel_share(waltz_in_six_eight) == 0.0
    ending = Score([_line([76, 74, 72]), _line([55, 55, 48])], "4/4")
    assert M.ends_on_tonic(ending, 0, "major") == 1.0
    assert M.ends_on_tonic(ending, 7, "major") == 0.0


def test_evaluate_music_reports_every_system_and_writes_its_files(corpus, tmp_path: Path) -> None:
    from personalize.evaluate.music.run import evaluate_music

    report = evaluate_music(
        n_tracks=6, seed=0, pieces=corpus["held"] + corpus["train"], out=tmp_path, gate_path=GATE_FILE
    )
    assert set(report["n_tracks_per_system"]) == {
        "corpus",
        "generated",
        "random_in_scale",
        "markov",
        "corpus_train",
    }
    assert report["auc"]["all"]["random_in_scale"]["auc"] > 0.9
    assert report["gate"]["pass_rate"]["all"]["random_in_scale"] == 0.0
    step = report["textures"]["tune"]["metrics"]["melody_step_share"]["systems"]
    assert step["random_in_scale"]["median"] < step["corpus"]["median"]
    for name in ("eval_music.json", "pieces.csv", "metrics.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "eval_music.json").read_text())["headline"]


def test_the_two_sample_test_ignores_what_the_corpus_cannot_have() -> None:
    """Accompaniment metrics of generated tunes have nothing to compare with in single-line corpus tunes:
    they must not let the classifier tell the two apart; a real difference in a shared feature must."""
    from personalize.evaluate.music.discriminate import two_sample_auc

    rng = np.random.default_rng(0)
    corpus = [np.r_[rng.normal(0, 1, 3), np.nan] for _ in range(60)]
    alike = [np.r_[rng.normal(0, 1, 3), 0.9] for _ in range(60)]  # same music, plus an accompaniment metric
    unlike = [np.r_[rng.normal(3, 1, 3), 0.9] for _ in range(60)]
    assert two_sample_auc(alike, corpus)["auc"] < 0.7
    assert two_sample_auc(unlike, corpus)["auc"] > 0.95


def test_a_pooled_test_is_not_fooled_by_the_mix_of_textures() -> None:
    """Pooled over textures, the two sides hold them in different numbers (80 generated tracks of each
    against 300 held-out tunes and 35 chorales). When the music of each texture is the corpus's, weighing
    each texture's two sides alike leaves nothing to tell; unweighted, the texture alone tells them apart.
    A real difference inside one texture still shows."""
    from personalize.evaluate.music.discriminate import two_sample_auc

    rng = np.random.default_rng(1)

    def pieces(texture: str, n: int, shift: float = 0.0) -> list[np.ndarray]:
        centre = {"tune": 0.0, "chorale": 4.0}[texture]
        flag = [1.0, 0.0] if texture == "tune" else [0.0, 1.0]
        return [np.r_[rng.normal(centre + shift, 1, 3), flag] for _ in range(n)]

    system = pieces("tune", 80) + pieces("chorale", 80)
    corpus = pieces("tune", 300) + pieces("chorale", 35)
    strata = ["tune"] * 80 + ["chorale"] * 80 + ["tune"] * 300 + ["chorale"] * 35
    assert two_sample_auc(system, corpus)["auc"] > 0.65  # the mix alone
    assert two_sample_auc(system, corpus, strata=strata)["auc"] < 0.6
    shifted = pieces("tune", 80) + pieces("chorale", 80, shift=2.0)
    assert two_sample_auc(shifted, corpus, strata=strata)["auc"] > 0.75


def test_a_detached_note_is_read_at_its_written_value() -> None:
    """A performance that plays a half note a little short (a pianist's detached touch) is still a half note
    to the metrics; a note played at half its length before a rest is read as what it sounds."""
    pm = score_to_midi([[(0, 8, 60), (8, 4, 62), (16, 4, 64), (24, 8, 65)]], [0], 120.0, "4/4")
    notes = pm.instruments[0].notes
    notes[0].end = notes[0].start + 0.88 * (notes[0].end - notes[0].start)  # 7 sixteenths of 8
    notes[1].end = notes[1].start + 0.5 * (notes[1].end - notes[1].start)  # a staccato quarter
    line = score_from_midi(pm).melody
    assert [d for _, d, _ in line] == [8, 2, 4, 8]


def test_music_eval_requests_match_their_held_out_pieces(corpus) -> None:
    from personalize.evaluate.music.references import corpus_tracks
    from personalize.evaluate.music.run import METER_GRID, request_controls

    refs = corpus_tracks(corpus["held"], "tune")
    requests = request_controls("tune", 24, refs, seed=0)
    assert len({c.key_pc for c in requests}) == 12  # every tonic
    pairs = {(r.mode, r.meter, min(max(r.bars, 8), 32)) for r in refs}
    for c in requests:
        assert (c.mode, c.meter, c.bars) in pairs or c.meter in METER_GRID
    # A reel written in 2/2 is asked for in 2/2 (the generator writes every corpus meter it was trained on).
    reel = next(replace(r, meter="2/2") for r in refs)
    assert {c.meter for c in request_controls("tune", 3, [reel], seed=0)} == {"2/2"}
