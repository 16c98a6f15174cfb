"""The generator end to end: a tiny model trained on real chorales, batched generation, the KV cache,
seeds, verification and resampling, and the shipped model behind the ``generate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pretty_midi
import pytest
import torch
from typer.testing import CliRunner

from personalize.generate import Controls, GeneratedPiece, Generator, generate_verified, load_generator
from personalize.generate import tokens as T
from personalize.generate.sample import TransformerGenerator, sample_tokens
from personalize.generate.train import train_transformer
from personalize.generate.verify import measure_piece, passes
from personalize.music.measure import programs_of

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "transformer"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    cfg = json.loads((REPO / "personalize" / "generate" / "configs" / "tiny.json").read_text())
    cfg["train"].update(
        out_dir=str(root / "model"), checkpoint_dir=str(root / "ckpt"), corpus_dir=str(root / "corpus")
    )
    path = root / "tiny.json"
    path.write_text(json.dumps(cfg))
    summary = train_transformer(path, progress=False, log=lambda *_: None)
    assert summary["steps"] == cfg["train"]["max_steps"]
    return root / "model"


def test_tiny_training_writes_checkpoint_curve_and_resumes(tiny_model_dir: Path) -> None:
    for name in ("model.pt", "config.json", "history.json", "loss_curve.png"):
        assert (tiny_model_dir / name).is_file(), name
    history = json.loads((tiny_model_dir / "history.json").read_text())
    assert history[-1]["val_loss"] < history[0]["val_loss"] + 0.5 and history[-1]["train_loss"] < T.VOCAB_SIZE
    # Rerunning with the same config resumes at the last step instead of starting over.
    cfg_path = tiny_model_dir.parent / "tiny.json"
    again = train_transformer(cfg_path, progress=False, log=lambda *_: None)
    assert again["steps"] == json.loads(cfg_path.read_text())["train"]["max_steps"]


def test_generated_pieces_have_exactly_the_requested_parts_tempo_and_ranges(tiny_model_dir: Path) -> None:
    gen = load_generator(tiny_model_dir)
    assert isinstance(gen, Generator)
    requests = [
        Controls(2, "minor", 92, "4/4", 1, [0, 33, 40], 4),
        Controls(7, "major", 130, "3/4", 2, [73, "drums"], 3),
        Controls(10, "major", 70, "6/8", 0, [42, 71, 56, 19], 2),
    ]
    midis = gen.generate(requests, seed=3)
    assert len(midis) == 3
    for pm, c in zip(midis, requests, strict=True):
        m = measure_piece(pm, c)
        assert [("drums" if i.is_drum else i.program) for i in pm.instruments] == c.programs
        assert m["programs_ok"] and m["tempo_ok"] and m["meter_ok"], m
        assert m["in_range_share"] == 1.0  # the decoding rule keeps every pitch inside its instrument
        assert m["bars"] == c.bars


def test_kv_cache_gives_the_same_tokens_as_recomputing_the_context(tiny_model_dir: Path) -> None:
    gen = load_generator(tiny_model_dir)
    assert isinstance(gen, TransformerGenerator)
    c = Controls(5, "minor", 100, "4/4", 2, [40, 42], 8)  # long enough to slide the 64-token context
    prefix, ordered = T.controls_prefix(c)

    def run(use_cache: bool) -> list[list[int]]:
        grammar = T.Grammar([ordered] * 3, [16] * 3, [c.bars] * 3)
        return sample_tokens(
            gen.model, [prefix] * 3, grammar, torch.Generator().manual_seed(11), use_cache=use_cache
        )

    cached, recomputed = run(True), run(False)
    assert len(cached[0]) > gen.model.config.block_size
    assert cached == recomputed

    x = torch.tensor([prefix + cached[0][:20]])
    full, _ = gen.model(x)
    cache = gen.model.new_cache(1)
    step_logits = [gen.model(x[:, : len(prefix)], cache=cache)[0][:, -1]]
    for i in range(len(prefix), x.shape[1]):
        step_logits.append(gen.model(x[:, i : i + 1], cache=cache)[0][:, -1])
    torch.testing.assert_close(
        torch.cat(step_logits[:-1]), full[0, len(prefix) - 1 : -1], atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("kv_heads", [None, 2, 1])
def test_grouped_query_attention_decodes_as_the_full_forward_does(kv_heads: int | None) -> None:
    """Key/value heads shared by several query heads: a cached decode (a prefill, then one token a step,
    through the 128-position buckets) gives the logits of one full forward pass, and the cache is smaller."""
    from personalize.generate.model import MusicTransformer, TransformerConfig

    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=50, block_size=300, n_layer=2, n_head=8, n_embd=64, n_kv_head=kv_heads
    )
    model = MusicTransformer(config).eval()
    x = torch.randint(0, 50, (3, 200))
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(3)
        steps = [model(x[:, :20], cache=cache)[0]]
        steps += [model(x[:, i : i + 1], cache=cache)[0] for i in range(20, 200)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    assert cache.k.shape[2] == (kv_heads or 8)


def test_same_seed_same_music_other_seed_other_music(tiny_model_dir: Path) -> None:
    gen = load_generator(tiny_model_dir)
    req = [Controls(0, "major", 110, "4/4", 2, [0, 33], 4)]

    def notes(seed: int) -> list[tuple[int, float, float]]:
        pm = gen.generate(req, seed=seed)[0]
        return [(n.pitch, round(n.start, 4), round(n.end, 4)) for i in pm.instruments for n in i.notes]

    assert notes(5) == notes(5)
    assert notes(5) != notes(6)


def _scale_midi(tonic: int, tempo_bpm: float = 120.0) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
    inst = pretty_midi.Instrument(program=0)
    beat = 60.0 / tempo_bpm
    steps = [0, 2, 4, 5, 7, 9, 11, 12, 7, 4, 0, 7, 4, 0, 12, 0]
    for k, s in enumerate(steps):
        inst.notes.append(pretty_midi.Note(80, 60 + tonic + s, k * beat, (k + 1) * beat))
    pm.instruments.append(inst)
    return pm


def test_verification_rejects_a_piece_in_the_wrong_key() -> None:
    pm = _scale_midi(0)
    right = measure_piece(pm, Controls(0, "major", 120, "4/4", 1, [0], 4))
    assert right["key_ok"] and passes(right), right
    wrong = measure_piece(pm, Controls(6, "major", 120, "4/4", 1, [0], 4))
    assert not wrong["key_ok"] and not passes(wrong)
    assert measure_piece(pm, Controls(0, "major", 120, "4/4", 1, [0, 33], 4))["programs_ok"] is False
    assert measure_piece(pm, Controls(0, "major", 90, "4/4", 1, [0], 4))["tempo_ok"] is False


def test_density_counts_a_performed_line_whole_and_leaves_out_the_accompaniment_under_it() -> None:
    """A melody track of eighths at 120 BPM (four a bar over 4 bars: 2 notes a quarter), performed: each
    onset a few milliseconds early or late, so falling notes touch the one before. Every note is the line's;
    notes a solo piano plays under a held melody note are not."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
    piano = pretty_midi.Instrument(0, name="Acoustic Grand Piano (melody)")
    pitches = [72, 71, 69, 67, 65, 64, 62, 60] * 4
    for k, p in enumerate(pitches):
        jitter = 0.004 if k % 2 else -0.004
        piano.notes.append(pretty_midi.Note(80, p, k * 0.25 + jitter, k * 0.25 + 0.245 + 0.006))
    measured = measure_piece(pm_with(pm, piano), Controls(0, "major", 120, "4/4", 3, [0], 4))
    assert measured["notes_per_quarter_per_part"] == pytest.approx(2.0)
    held = pretty_midi.PrettyMIDI(initial_tempo=120)
    held.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
    solo = pretty_midi.Instrument(0, name="Acoustic Grand Piano (melody)")
    for bar in range(4):  # a whole note in the tune, four quarter-note chords' roots under it
        solo.notes.append(pretty_midi.Note(80, 72, bar * 2.0, bar * 2.0 + 1.95))
        solo.notes += [
            pretty_midi.Note(60, 48, bar * 2.0 + q * 0.5, bar * 2.0 + q * 0.5 + 0.45) for q in range(4)
        ]
    measured = measure_piece(pm_with(held, solo), Controls(0, "major", 120, "4/4", 0, [0], 4))
    assert measured["notes_per_quarter_per_part"] == pytest.approx(0.25)


def pm_with(pm: pretty_midi.PrettyMIDI, inst: pretty_midi.Instrument) -> pretty_midi.PrettyMIDI:
    pm.instruments.append(inst)
    return pm


class _AlwaysCMajor:
    """A generator that ignores the requested key: verification must catch it."""

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]:
        return [_scale_midi(0, c.tempo_bpm) for c in controls]


def test_resampling_is_bounded_and_failures_name_their_controls() -> None:
    asks = [Controls(0, "major", 120, "4/4", 1, [0], 4), Controls(6, "minor", 120, "4/4", 1, [0], 4)]
    pieces = generate_verified(_AlwaysCMajor(), asks, seed=1, max_attempts=3)
    assert [p.ok for p in pieces] == [True, False]
    assert isinstance(pieces[1], GeneratedPiece) and pieces[1].attempts == 3
    assert "F# minor" in pieces[1].error and "key" in pieces[1].error
    with pytest.raises(RuntimeError, match="F# minor"):
        generate_verified(_AlwaysCMajor(), asks, seed=1, max_attempts=2, on_failure="raise")


def test_bad_controls_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="meter"):
        Controls(0, "major", 120, "5/4", 1, [0], 4)
    with pytest.raises(ValueError, match="at most 4"):
        Controls(0, "major", 120, "4/4", 1, [0, 1, 2, 3, 4], 4)
    with pytest.raises(ValueError, match="mode"):
        Controls(0, "dorian", 120, "4/4", 1, [0], 4)


@pytest.mark.skipif(not (SHIPPED / "model.pt").is_file(), reason="no shipped model yet")
def test_generate_command_writes_a_verified_midi_with_the_requested_programs(tmp_path: Path) -> None:
    from personalize.cli import app

    out = tmp_path / "x.mid"
    args = ["generate", "--key", "D", "--mode", "minor", "--tempo", "92", "--meter", "4/4"]
    args += ["--programs", "0,33,40,drums", "--bars", "4", "--seed", "1", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pm = pretty_midi.PrettyMIDI(str(out))
    assert sorted(map(str, programs_of(pm))) == sorted(["0", "33", "40", "drums"])
    assert abs(pm.get_tempo_changes()[1][0] - 92) < 0.01
