"""Batched, seeded generation with the Transformer: KV cache, temperature/top-p, and the decoding grammar.

``TransformerGenerator.generate(controls, seed)`` writes one PrettyMIDI per request. Requests with the
same number of pitched parts share a batch (their prefixes have one length, so one KV cache serves them
all). Every step either takes a token the grammar forces (``BAR``, ``PART_i``) or samples among the
tokens it allows: pitches inside the part's instrument range and durations that end at or before the bar
line. Those two are decoding rules, not learned behaviour; the model card says so. A third rule, density
guidance (``Grammar.bias``), nudges duration logits toward the requested density bin, and a fourth, key
guidance, adds a fixed bonus (+1 logit) to the requested key's tonic-triad pitches and a penalty (-2) to
tones outside its scale (``tokens.scale_prior``). Both can be turned off (``density_guidance=False``, ``key_guidance=0``) to
see what the model does alone.

Pieces longer than the model's context slide it: when the cache is full, the prefix plus the most recent
half of the body are fed again into a fresh cache (the model was trained on such mid-stream starts).
"""

from __future__ import annotations

import json
from pathlib import Path

import pretty_midi
import torch

from personalize.generate import tokens as T
from personalize.generate.controls import Controls
from personalize.generate.drums import drum_part
from personalize.generate.transformer import MusicTransformer, TransformerConfig
from personalize.music.gm import DRUMS

# Density each bin steers toward, notes per quarter note per pitched part: inside the bin, away from its
# edges (the edges are 0.9, 1.35 and 1.8).
DENSITY_TARGETS = (0.7, 1.12, 1.57, 2.2)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


@torch.no_grad()
def sample_tokens(
    model: MusicTransformer,
    prefixes: list[list[int]],
    grammar: T.Grammar,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_p: float = 0.95,
    use_cache: bool = True,
) -> list[list[int]]:
    """Body tokens for each prefix (all prefixes the same length), until the grammar says every row is done.

    ``use_cache=False`` recomputes the whole context at every step (the reference decoder the benchmark
    and the tests compare against); it gives the same tokens as the cached path.
    """
    model.eval()
    block = model.config.block_size
    prefix = torch.tensor(prefixes, dtype=torch.long)
    b, p_len = prefix.shape
    keep = max(1, (block - p_len) // 2)
    body: list[torch.Tensor] = []
    ctx_start = 0  # the context is the prefix plus body[ctx_start:]
    cache = model.new_cache(b) if use_cache else None
    logits, _ = model(prefix, cache=cache)
    last = logits[:, -1]
    while True:
        mask, forced = grammar.allowed()
        if bool((forced == T.PAD).all()):
            break
        scores = last / max(temperature, 1e-4)
        bias = grammar.bias()
        if bias is not None:
            scores = scores + bias
        scores = scores.masked_fill(~mask, float("-inf"))
        scores = _top_p_filter(scores, top_p)
        # Inverse-CDF sampling: one uniform draw per row (cheaper than torch.multinomial on CPU).
        cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1)
        u = torch.rand(b, 1, generator=generator) * cdf[:, -1:]
        sampled = (cdf < u).sum(dim=-1).clamp(max=scores.size(-1) - 1)
        tok = torch.where(forced >= 0, forced, sampled)
        grammar.step(tok)
        body.append(tok)
        slid = False
        if p_len + len(body) - ctx_start > block:
            # Slide: the prefix and the latest `keep` body tokens become the whole context.
            ctx_start, slid = len(body) - keep, True
        if use_cache and not slid:
            logits, _ = model(tok[:, None], cache=cache)
        else:
            ctx = torch.cat([prefix, torch.stack(body[ctx_start:], dim=1)], dim=1)
            cache = model.new_cache(b) if use_cache else None
            logits, _ = model(ctx, cache=cache)
        last = logits[:, -1]
    if not body:
        return [[] for _ in range(b)]
    out = torch.stack(body, dim=1).tolist()
    return [[t for t in row if t != T.PAD] for row in out]


class TransformerGenerator:
    """The shipped conditional generator (implements :class:`personalize.generate.Generator`)."""

    name = "transformer"

    def __init__(
        self,
        model: MusicTransformer,
        temperature: float = 1.0,
        top_p: float = 0.95,
        max_batch: int = 64,
        threads: int | None = None,
        version: str = "transformer",
        density_guidance: bool = True,
        key_guidance: float = 1.0,
    ) -> None:
        self.model = model.eval()
        self.temperature = temperature
        self.top_p = top_p
        self.max_batch = max_batch
        self.threads = threads
        self.version = version
        self.density_guidance = density_guidance
        self.key_guidance = key_guidance

    @classmethod
    def load(cls, model_dir: Path, **kwargs: object) -> TransformerGenerator:
        """Load ``model.pt`` + ``config.json`` written by ``personalize train transformer``."""
        model_dir = Path(model_dir)
        cfg_path, weights_path = model_dir / "config.json", model_dir / "model.pt"
        for path in (cfg_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: train a model with `personalize train transformer` "
                    f"or point PERSONALIZE_MODEL_DIR at a folder holding one"
                )
        meta = json.loads(cfg_path.read_text())
        if meta.get("vocab_size") != T.VOCAB_SIZE:
            raise ValueError(
                f"{model_dir}: checkpoint vocabulary has {meta.get('vocab_size')} tokens, this code {T.VOCAB_SIZE}; "
                "retrain with `personalize train transformer`"
            )
        model = MusicTransformer(TransformerConfig(**meta["model"]))
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if unexpected or set(missing) - {"head.weight"}:
            raise ValueError(
                f"{weights_path} does not match its config: missing {missing}, unexpected {unexpected}"
            )
        version = f"transformer-{meta.get('steps', 0)}steps"
        return cls(model, version=version, **kwargs)  # type: ignore[arg-type]

    def generate(self, controls: list[Controls], seed: int) -> list[pretty_midi.PrettyMIDI]:
        """One MIDI per request, parts in the order of ``controls[i].programs``; deterministic for a seed."""
        if self.threads:
            torch.set_num_threads(self.threads)
        out: list[pretty_midi.PrettyMIDI | None] = [None] * len(controls)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(controls):
            groups.setdefault(len(c.pitched_programs), []).append(i)
        gen = torch.Generator().manual_seed(int(seed))
        for n_parts in sorted(groups):
            idx = groups[n_parts]
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start : start + self.max_batch]
                for i, pm in zip(
                    chunk, self._generate_batch([controls[i] for i in chunk], gen, seed), strict=True
                ):
                    out[i] = pm
        return out  # type: ignore[return-value]

    def _generate_batch(
        self, controls: list[Controls], gen: torch.Generator, seed: int
    ) -> list[pretty_midi.PrettyMIDI]:
        prefixes, ordered = zip(*(T.controls_prefix(c) for c in controls), strict=True)
        targets = [DENSITY_TARGETS[c.density_bin] for c in controls] if self.density_guidance else None
        grammar = T.Grammar(
            list(ordered),
            [T.bar_ticks_of(c.meter) for c in controls],
            [c.bars for c in controls],
            targets,
            keys=[(c.key_pc, c.mode) for c in controls],
            key_strength=self.key_guidance,
        )
        bodies = sample_tokens(self.model, list(prefixes), grammar, gen, self.temperature, self.top_p)
        return [
            assemble_midi(c, body, progs, seed + k)
            for k, (c, body, progs) in enumerate(zip(controls, bodies, ordered, strict=True))
        ]


def assemble_midi(
    controls: Controls, body: list[int], ordered_programs: list[int], seed: int
) -> pretty_midi.PrettyMIDI:
    """Decode body tokens into parts, put them in the requested order and add the drum part if asked."""
    bar_ticks = T.bar_ticks_of(controls.meter)
    parts = T.decode_body(body, len(ordered_programs), bar_ticks)
    pm = T.parts_to_midi(parts, ordered_programs, controls.tempo_bpm, controls.meter)
    by_program: dict[int, list[pretty_midi.Instrument]] = {}
    for inst in pm.instruments:
        by_program.setdefault(inst.program, []).append(inst)
    instruments = []
    for p in controls.programs:
        if p == DRUMS:
            instruments.append(
                drum_part(controls.meter, controls.tempo_bpm, controls.density_bin, controls.bars, seed)
            )
        else:
            instruments.append(by_program[int(p)].pop(0))
    pm.instruments = instruments
    return pm
