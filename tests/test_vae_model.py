"""The conditional VAE: lossless phrase grid, tiny training with resume, controlled and seeded generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from personalize.corpus import build_corpus, load_pieces
from personalize.generate import Controls, generate_verified, load_generator
from personalize.generate.baselines.vae import (
    VAEConfig,
    VAEGenerator,
    grid_to_parts,
    key_shift,
    piece_phrases,
    train_vae,
)
from personalize.music.gm import program_range


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus")
    build_corpus(path, ["bach_chorales", "oneills1850"], workers=1, limit_per_collection=2, progress=False)
    return path


@pytest.fixture(scope="module")
def trained(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("vae")
    summary = train_vae(out_dir=out, corpus_dir=corpus_dir, config=VAEConfig.tiny(), progress=False)
    return out, summary


def test_phrases_hold_every_note_of_a_piece_and_decode_back_exactly(corpus_dir: Path):
    for piece in load_pieces(corpus_dir)[:20]:
        phrases = piece_phrases(piece, phrase_bars=4)
        assert sum(ph.n_notes for ph in phrases) == sum(len(p) for p in piece.parts)
        grid = np.concatenate([ph.grid for ph in phrases])
        decoded = grid_to_parts(grid, key_shift(piece.key_pc))
        for notes, original in zip(decoded, piece.parts, strict=True):
            # Notes come back with their onsets, durations (up to the next event) and pitches.
            assert [(o, p) for o, _, p in notes] == [(o, p) for o, _, p in original]
            assert all(d >= d0 for (_, d, _), (_, d0, _) in zip(notes, original, strict=True))


def test_tiny_training_writes_checkpoint_curve_and_improves_the_elbo(trained, corpus_dir: Path):
    out, summary = trained
    for name in ("checkpoint.pt", "model.pt", "history.json", "loss_curve.png", "train_summary.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["step"] == VAEConfig.tiny().steps
    untrained = train_vae(
        out_dir=out.parent / "untrained",
        corpus_dir=corpus_dir,
        config=VAEConfig.tiny(),
        steps=0,
        progress=False,
    )
    assert summary["val"]["neg_elbo_per_note_nats"] < untrained["val"]["neg_elbo_per_note_nats"]


def test_training_resumes_from_its_checkpoint(corpus_dir: Path, tmp_path: Path):
    cfg = VAEConfig.tiny()
    first = train_vae(out_dir=tmp_path, corpus_dir=corpus_dir, config=cfg, steps=15, progress=False)
    assert first["steps"] == 15
    second = train_vae(out_dir=tmp_path, corpus_dir=corpus_dir, config=cfg, steps=30, progress=False)
    assert second["steps"] == 30
    assert [h["step"] for h in json.loads((tmp_path / "history.json").read_text())] == [15, 30]
    with pytest.raises(ValueError, match="other settings"):
        train_vae(out_dir=tmp_path, corpus_dir=corpus_dir, config=cfg, hidden=32, progress=False)


def test_generation_follows_the_controls_and_is_seeded(trained):
    out, _ = trained
    gen = load_generator(out, name="vae")
    assert isinstance(gen, VAEGenerator)
    controls = [
        Controls(
            key_pc=2, mode="minor", tempo_bpm=92, meter="4/4", density_bin=1, programs=[0, 33, 40], bars=8
        ),
        Controls(
            key_pc=7, mode="major", tempo_bpm=132, meter="3/4", density_bin=2, programs=[73, "drums"], bars=5
        ),
    ]
    first = gen.generate(controls, seed=3)
    again = gen.generate(controls, seed=3)
    other = gen.generate(controls, seed=4)
    for pm, c in zip(first, controls, strict=True):
        progs = ["drums" if i.is_drum else i.program for i in pm.instruments]
        assert progs == list(c.programs)
        for inst in pm.instruments:
            if not inst.is_drum:
                lo, hi = program_range(inst.program)
                assert all(lo <= n.pitch <= hi for n in inst.notes)
        bar_s = 60.0 / c.tempo_bpm * (4 if c.meter == "4/4" else 3)
        assert pm.get_end_time() <= c.bars * bar_s + 1e-6
        assert abs(pm.get_tempo_changes()[1][0] - c.tempo_bpm) < 1e-6
    notes = [[(n.pitch, n.start) for i in pm.instruments for n in i.notes] for pm in first]
    assert notes == [[(n.pitch, n.start) for i in pm.instruments for n in i.notes] for pm in again]
    assert notes != [[(n.pitch, n.start) for i in pm.instruments for n in i.notes] for pm in other]

    verified = generate_verified(gen, controls, seed=1, max_attempts=1)
    assert all(p.measurement["programs_ok"] and p.measurement["tempo_ok"] for p in verified)


def test_interpolation_walks_from_one_latent_to_the_other(trained):
    out, _ = trained
    gen = VAEGenerator.load(out)
    c = Controls(key_pc=0, mode="major", tempo_bpm=100, meter="4/4", density_bin=1, programs=[0], bars=4)
    z_a, z_b = torch.zeros(gen.cfg.z_dim), torch.ones(gen.cfg.z_dim) * 2
    pieces = gen.interpolate(c, z_a, z_b, steps=4, seed=0)
    assert len(pieces) == 4
    assert all(p.instruments[0].program == 0 for p in pieces)
    with pytest.raises(ValueError, match="shape"):
        gen.interpolate(c, torch.zeros(3), z_b, steps=3)
