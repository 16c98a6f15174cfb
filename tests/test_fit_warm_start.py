"""Warm start: a model whose vocabulary gained tokens starts from the earlier model, row by row by name."""

from __future__ import annotations

import json

import pytest
import torch

from personalize.generate.fit import warm_start
from personalize.generate.model import MusicTransformer, TransformerConfig


def _model(vocab: int, seed: int) -> MusicTransformer:
    torch.manual_seed(seed)
    return MusicTransformer(
        TransformerConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, n_embd=16)
    )


def test_warm_start_keeps_every_named_token_and_the_blocks(tmp_path):
    old_vocab = ["PAD", "BOS", "PITCH_0", "PITCH_1"]
    new_vocab = ["PAD", "BOS", "NOTES_0", "NOTES_1", "PITCH_0", "PITCH_1"]
    old = _model(len(old_vocab), 0)
    weights = {k: v for k, v in old.state_dict().items() if k != "head.weight"}
    torch.save(weights, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps({"vocab": old_vocab}))

    new = _model(len(new_vocab), 1)
    fresh_notes = new.wte.weight[2:4].detach().clone()
    line = warm_start(new, tmp_path, new_vocab)
    assert "4 of 6 tokens carried over, 2 new" in line
    for name in ("PAD", "BOS", "PITCH_0", "PITCH_1"):
        torch.testing.assert_close(
            new.wte.weight[new_vocab.index(name)], old.wte.weight[old_vocab.index(name)]
        )
    torch.testing.assert_close(new.wte.weight[2:4], fresh_notes)  # new tokens keep their initialisation
    torch.testing.assert_close(new.head.weight, new.wte.weight)  # still tied
    torch.testing.assert_close(new.blocks[0].mlp.fc.weight, old.blocks[0].mlp.fc.weight)

    with pytest.raises(ValueError, match="does not fit this architecture"):
        bigger = MusicTransformer(
            TransformerConfig(vocab_size=6, block_size=32, n_layer=1, n_head=2, n_embd=32)
        )
        warm_start(bigger, tmp_path, new_vocab)
