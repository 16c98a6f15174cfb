"""The conditional VAE: four-bar phrases of up to four monophonic parts, encoded to a latent ``z`` and decoded
under the controls (mode, meter, density bin, number of parts, each part's instrument range).

Representation. A phrase is a grid of sixteenth-note steps; at every step each part holds one token:
``HOLD`` (the previous note or rest goes on), ``REST`` (silence starts) or the onset of a pitch. Pitches are
stored relative to the key: the piece is transposed by at most a tritone so that its tonic becomes C, and
generation transposes back to the requested key. The key control therefore needs no learning, and every
training phrase teaches the model about "a major (or minor) key" at once. The grid is lossless for the
corpus (monophonic lines quantized to sixteenths), so the ELBO bounds the likelihood of the real notes.

Model. Encoder: a bidirectional GRU over the steps (each step's input is the embeddings of the parts'
tokens side by side, plus the step's place in the bar and phrase) -> ``mu, logvar`` of ``z``. Decoder: a
GRU whose state starts from ``[z, controls]`` and which reads the previous step's tokens; at each step the
parts are written top to bottom, each part's head also seeing the tokens the parts above it just chose,
so voices hear each other within a step. Training: teacher forcing, KL annealed linearly from 0 to 1,
and free bits (the KL term is not pushed below a floor, so ``z`` keeps carrying information).

Generation strings ``ceil(bars / 4)`` phrases together, their latents a stationary AR(1) chain
(``z_k+1 = rho z_k + sqrt(1 - rho^2) eps``) so neighbouring phrases are related but the piece still moves.
Decoding is masked so that every onset lies inside its instrument's range.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pretty_midi
import torch
import torch.nn as nn
from torch.nn import functional as F

from personalize.corpus import V1_TICKS_PER_QUARTER, Piece
from personalize.generate.drums import drum_part
from personalize.generate.tokens import bar_ticks_of, part_order, parts_to_midi
from personalize.music.controls import METERS, N_DENSITY_BINS, Controls, density_bin
from personalize.music.gm import DRUMS, program_range

HOLD, REST = 0, 1
N_PITCH = 128
VOCAB = 2 + N_PITCH  # HOLD, REST, onset of MIDI pitch 0..127 (key-relative)
PAD = VOCAB  # input-only padding / absent-part token
MAX_PARTS = 4
MAX_BAR_STEPS = 24


@dataclass
class VAEConfig:
    """Model size and training schedule. ``tiny()`` trains in seconds for tests."""

    phrase_bars: int = 4
    emb_dim: int = 32
    hidden: int = 128  # width of the encoder and decoder (self-attention layers)
    n_layers: int = 2
    n_heads: int = 4
    z_dim: int = 32
    cond_dim: int = 64
    head_hidden: int = 192
    dropout: float = 0.1
    # Training
    seed: int = 0
    steps: int = 5000
    batch_size: int = 32
    lr: float = 2e-3
    lr_min: float = 1e-4
    kl_warmup_steps: int = 1500
    free_bits_nats: float = 16.0  # KL floor for the whole z (nats per phrase); below it KL is not penalized
    subset_prob: float = 0.5  # chance a multi-part phrase trains with a random subset of its parts
    eval_every: int = 250
    checkpoint_every: int = 250
    max_val_phrases: int = 400
    threads: int = 1
    max_minutes: float | None = None  # stop (and checkpoint) after this long; running again resumes
    collections: list[str] = field(default_factory=list)  # empty: every collection in the corpus manifest
    max_train_pieces: int | None = None

    @classmethod
    def tiny(cls) -> VAEConfig:
        return cls(
            emb_dim=8, hidden=16, n_layers=1, n_heads=2, z_dim=4, cond_dim=8, head_hidden=16, steps=30, batch_size=8,
            kl_warmup_steps=10, free_bits_nats=1.0, eval_every=15, checkpoint_every=15, max_val_phrases=20,
            max_train_pieces=40,
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path | None, **overrides: object) -> VAEConfig:
        """Defaults, then the JSON (or TOML) file's keys, then ``overrides``; unknown keys are an error."""
        values: dict[str, object] = {}
        if path is not None:
            path = Path(path)
            if path.suffix == ".toml":
                import tomllib

                values.update(tomllib.loads(path.read_text()))
            else:
                values.update(json.loads(path.read_text()))
            # Also accept the Transformer's layout, {"model": {...}, "train": {...}}: one flat set of keys here.
            for section in ("model", "train"):
                if isinstance(values.get(section), dict):
                    values.update(values.pop(section))
            values.pop("comment", None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VAE config keys {unknown} in {path}; known: {sorted(known)}")
        if values.get("tiny"):
            raise ValueError("use VAEConfig.tiny() rather than a 'tiny' key")
        return cls(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# Representation


@dataclass
class Phrase:
    """One training/evaluation phrase: a (steps, parts) token grid and its conditioning."""

    grid: np.ndarray  # (steps, n_parts) int64
    bar_steps: int
    meter_idx: int
    minor: int
    density: int
    programs_mid: list[float]  # each part's register (mean key-relative pitch), high to low
    n_notes: int  # onsets in the grid: the "notes" the ELBO is divided by
    piece_id: str = ""


def key_shift(key_pc: int) -> int:
    """Semitones to add to a piece in ``key_pc`` so its tonic becomes C, at most a tritone either way."""
    return -(((int(key_pc) + 6) % 12) - 6)


def piece_phrases(piece: Piece, phrase_bars: int = 4) -> list[Phrase]:
    """Cut a corpus piece into consecutive phrases of ``phrase_bars`` bars (the last may be shorter).

    Every note of the piece has its onset in exactly one phrase; a note held across a phrase boundary goes
    on as ``HOLD`` in the next phrase, so the phrases together describe the piece without loss.
    """
    if piece.bar_ticks > MAX_BAR_STEPS or piece.meter not in METERS:
        raise ValueError(f"{piece.piece_id}: meter {piece.meter} is not supported by the VAE grid")
    parts = [p for p in piece.parts if p][:MAX_PARTS]
    shift = key_shift(piece.key_pc)
    total = piece.n_bars * piece.bar_ticks
    grid = np.full((total, len(parts)), HOLD, dtype=np.int64)
    grid[0, :] = REST
    for j, notes in enumerate(parts):
        t = 0
        for onset, dur, pitch in notes:
            if onset >= total:
                break
            if onset > t:
                grid[t, j] = REST
            grid[onset, j] = 2 + min(max(pitch + shift, 0), N_PITCH - 1)
            t = onset + dur
        if t < total:
            grid[t, j] = REST
    mids = [float(np.mean([n[2] for n in notes])) + shift for notes in parts]
    step = phrase_bars * piece.bar_ticks
    out = []
    for s in range(0, total, step):
        g = grid[s : s + step].copy()
        n_notes = int((g >= 2).sum())
        quarters = len(g) / V1_TICKS_PER_QUARTER
        out.append(
            Phrase(
                grid=g,
                bar_steps=piece.bar_ticks,
                meter_idx=METERS.index(piece.meter),
                minor=int(piece.mode == "minor"),
                density=density_bin(n_notes / quarters / len(parts)),
                programs_mid=mids,
                n_notes=n_notes,
                piece_id=piece.piece_id,
            )
        )
    return out


def grid_to_parts(grid: np.ndarray, shift: int) -> list[list[tuple[int, int, int]]]:
    """A (steps, parts) token grid back to per-part notes (onset step, duration steps, absolute pitch)."""
    steps, n_parts = grid.shape
    parts: list[list[tuple[int, int, int]]] = []
    for j in range(n_parts):
        notes: list[tuple[int, int, int]] = []
        onset, pitch = -1, -1
        for t in range(steps + 1):
            tok = int(grid[t, j]) if t < steps else REST
            if tok == HOLD:
                continue
            if pitch >= 0:
                notes.append((onset, t - onset, pitch))
            onset, pitch = (t, tok - 2 - shift) if tok >= 2 else (-1, -1)
        parts.append(notes)
    return parts


# ----------------------------------------------------------------------------------------------------------
# Model


class StepEmbedding(nn.Module):
    """Input of one grid step: the parts' tokens side by side, projected, plus where the step sits."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB + 1, cfg.emb_dim)
        self.proj = nn.Linear(MAX_PARTS * cfg.emb_dim, cfg.hidden)
        self.pos_in_bar = nn.Embedding(MAX_BAR_STEPS, cfg.hidden)
        self.bar_in_phrase = nn.Embedding(cfg.phrase_bars, cfg.hidden)
        self.step = nn.Embedding(cfg.phrase_bars * MAX_BAR_STEPS, cfg.hidden)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, bar: torch.Tensor) -> torch.Tensor:
        # tokens (B, T, MAX_PARTS) with PAD for absent parts; pos, bar (B, T)
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        e = self.proj(self.tok(tokens).flatten(2))
        return e + self.pos_in_bar(pos) + self.bar_in_phrase(bar) + self.step(steps)[None]


def _transformer(cfg: VAEConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        cfg.hidden,
        cfg.n_heads,
        2 * cfg.hidden,
        cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)


class ConditionalVAE(nn.Module):
    """Encoder (bidirectional self-attention over the steps, mean-pooled) -> z; causal decoder over steps."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = StepEmbedding(cfg)
        c = cfg.cond_dim
        self.mode_emb = nn.Embedding(2, c)
        self.meter_emb = nn.Embedding(len(METERS), c)
        self.density_emb = nn.Embedding(N_DENSITY_BINS, c)
        self.nparts_emb = nn.Embedding(MAX_PARTS, c)
        self.register = nn.Linear(MAX_PARTS, c)  # part registers (mean key-relative pitch / 128), 0 if absent
        self.encoder = _transformer(cfg)
        self.to_stats = nn.Linear(cfg.hidden + c, 2 * cfg.z_dim)
        self.z_to_in = nn.Linear(cfg.z_dim + c, cfg.hidden)
        self.decoder = _transformer(cfg)
        self.norm = nn.LayerNorm(cfg.hidden)
        # Part head: decoder state + embeddings of the tokens the parts above chose at this step + part slot.
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden + MAX_PARTS * cfg.emb_dim + MAX_PARTS, cfg.head_hidden),
            nn.GELU(),
            nn.Linear(cfg.head_hidden, VOCAB),
        )

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def condition(self, minor, meter, density, n_parts, registers) -> torch.Tensor:
        return (
            self.mode_emb(minor)
            + self.meter_emb(meter)
            + self.density_emb(density)
            + self.nparts_emb(n_parts - 1)
            + self.register(registers)
        )

    def encode(self, tokens, pos, bar, lengths, cond) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(tokens, pos, bar)
        pad = torch.arange(tokens.shape[1])[None, :] >= lengths[:, None]
        h = self.encoder(x, src_key_padding_mask=pad)
        pooled = (h * ~pad[..., None]).sum(dim=1) / lengths[:, None].clamp(min=1)
        stats = self.to_stats(torch.cat([pooled, cond], dim=-1))
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-8.0, 8.0)

    def decoder_states(self, zc: torch.Tensor, prev: torch.Tensor, pos, bar) -> torch.Tensor:
        """Decoder output (B, T, hidden) at every step, each seeing ``[z, controls]`` and the steps before."""
        x = self.embed(prev, pos, bar) + self.z_to_in(zc)[:, None, :]
        t = prev.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        return self.norm(self.decoder(x, mask=causal, is_causal=True))

    def _head_inputs(self, h: torch.Tensor, tokens: torch.Tensor, part: int) -> torch.Tensor:
        # tokens (..., MAX_PARTS): only those of parts above `part` are shown to its head.
        e = self.embed.tok(tokens)
        keep = (torch.arange(MAX_PARTS, device=tokens.device) < part).to(e.dtype)
        e = (e * keep[:, None]).flatten(-2)
        slot = F.one_hot(torch.tensor(part, device=tokens.device), MAX_PARTS).to(h.dtype)
        return torch.cat([h, e, slot.expand(*h.shape[:-1], MAX_PARTS)], dim=-1)

    def decode_logits(self, z, cond, tokens, pos, bar) -> torch.Tensor:
        """Teacher-forced logits (B, T, MAX_PARTS, VOCAB) for the grid ``tokens`` (B, T, MAX_PARTS)."""
        zc = torch.cat([z, cond], dim=-1)
        prev = torch.cat([torch.full_like(tokens[:, :1], PAD), tokens[:, :-1]], dim=1)
        out = self.decoder_states(zc, prev, pos, bar)
        logits = [self.head(self._head_inputs(out, tokens, j)) for j in range(MAX_PARTS)]
        return torch.stack(logits, dim=2)


# ----------------------------------------------------------------------------------------------------------
# Batches and the loss


def _phrase_arrays(ph: Phrase, parts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    grid = ph.grid if parts is None else ph.grid[:, parts]
    mids = ph.programs_mid if parts is None else [ph.programs_mid[i] for i in parts]
    tokens = np.full((len(grid), MAX_PARTS), PAD, dtype=np.int64)
    tokens[:, : grid.shape[1]] = grid
    registers = np.zeros(MAX_PARTS, dtype=np.float32)
    registers[: len(mids)] = np.asarray(mids) / 128.0
    n_notes = int((grid >= 2).sum())
    quarters = len(grid) / V1_TICKS_PER_QUARTER
    return tokens, registers, grid.shape[1], density_bin(n_notes / quarters / grid.shape[1])


def make_batch(
    phrases: list[Phrase], rng: np.random.Generator | None = None, subset_prob: float = 0.0
) -> dict[str, torch.Tensor]:
    """Pad phrases to one tensor batch; with ``rng``, multi-part phrases sometimes keep a random subset of
    their parts (high to low order kept), so two- and three-part requests have training data."""
    t_max = max(len(ph.grid) for ph in phrases)
    b = len(phrases)
    tokens = np.full((b, t_max, MAX_PARTS), PAD, dtype=np.int64)
    pos = np.zeros((b, t_max), dtype=np.int64)
    bar = np.zeros((b, t_max), dtype=np.int64)
    lengths = np.zeros(b, dtype=np.int64)
    regs = np.zeros((b, MAX_PARTS), dtype=np.float32)
    n_parts = np.zeros(b, dtype=np.int64)
    dens = np.zeros(b, dtype=np.int64)
    for i, ph in enumerate(phrases):
        parts = None
        n = ph.grid.shape[1]
        if rng is not None and n > 1 and rng.random() < subset_prob:
            k = int(rng.integers(1, n))
            parts = sorted(rng.choice(n, size=k, replace=False).tolist())
        tok, reg, n_used, d = _phrase_arrays(ph, parts)
        t = len(tok)
        tokens[i, :t] = tok
        steps = np.arange(t)
        pos[i, :t] = steps % ph.bar_steps
        bar[i, :t] = steps // ph.bar_steps
        lengths[i] = t
        regs[i] = reg
        n_parts[i] = n_used
        dens[i] = d
    return {
        "tokens": torch.from_numpy(tokens),
        "pos": torch.from_numpy(pos),
        "bar": torch.from_numpy(bar),
        "lengths": torch.from_numpy(lengths),
        "registers": torch.from_numpy(regs),
        "n_parts": torch.from_numpy(n_parts),
        "density": torch.from_numpy(dens),
        "minor": torch.tensor([ph.minor for ph in phrases]),
        "meter": torch.tensor([ph.meter_idx for ph in phrases]),
    }


def phrase_losses(model: ConditionalVAE, batch: dict[str, torch.Tensor], sample: bool = True):
    """Per-phrase reconstruction NLL (nats, summed over steps and parts), KL (nats) and onset counts."""
    bar = batch["bar"].clamp(max=model.cfg.phrase_bars - 1)
    cond = model.condition(
        batch["minor"], batch["meter"], batch["density"], batch["n_parts"], batch["registers"]
    )
    mu, logvar = model.encode(batch["tokens"], batch["pos"], bar, batch["lengths"], cond)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
    logits = model.decode_logits(z, cond, batch["tokens"], batch["pos"], bar)
    target = batch["tokens"]
    valid = target != PAD
    nll = F.cross_entropy(
        logits.reshape(-1, VOCAB), target.clamp(max=VOCAB - 1).reshape(-1), reduction="none"
    )
    nll = (nll.view(target.shape) * valid).sum(dim=(1, 2))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)
    n_notes = ((target >= 2) & valid).sum(dim=(1, 2))
    return nll, kl, n_notes


@torch.no_grad()
def elbo_per_note(model: ConditionalVAE, phrases: list[Phrase], batch_size: int = 64) -> dict[str, float]:
    """Negative ELBO of the phrases divided by their notes (nats per note), with its two terms.

    ``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z))`` per phrase, the expectation estimated with one sample
    of ``z`` (seeded); the sum over all phrases of a piece bounds the piece's negative log-likelihood from
    above, so dividing by the piece's notes gives an upper bound on NLL per note.
    """
    model.eval()
    gen = torch.random.get_rng_state()
    torch.manual_seed(1234)
    nll_sum = kl_sum = 0.0
    notes = 0
    for i in range(0, len(phrases), batch_size):
        chunk = phrases[i : i + batch_size]
        nll, kl, _ = phrase_losses(model, make_batch(chunk), sample=True)
        nll_sum += float(nll.sum())
        kl_sum += float(kl.sum())
        notes += sum(ph.n_notes for ph in chunk)
    torch.random.set_rng_state(gen)
    notes = max(notes, 1)
    return {
        "neg_elbo_per_note_nats": (nll_sum + kl_sum) / notes,
        "recon_nll_per_note_nats": nll_sum / notes,
        "kl_per_note_nats": kl_sum / notes,
        "notes": notes,
        "phrases": len(phrases),
    }


# ----------------------------------------------------------------------------------------------------------
# Training


def _load_phrases(corpus_dir: Path | None, split: str, cfg: VAEConfig) -> list[Phrase]:
    from personalize.corpus import load_pieces

    pieces = load_pieces(corpus_dir, split=split)
    if cfg.collections:
        pieces = [p for p in pieces if p.collection in cfg.collections]
    if split == "train" and cfg.max_train_pieces is not None:
        pieces = pieces[: cfg.max_train_pieces]
    out: list[Phrase] = []
    for p in pieces:
        if p.meter in METERS and p.bar_ticks <= MAX_BAR_STEPS:
            out.extend(piece_phrases(p, cfg.phrase_bars))
    if not out:
        raise ValueError(f"no {split} phrases in the corpus at {corpus_dir}: run `personalize corpus build`")
    return out


def _lr_at(cfg: VAEConfig, step: int) -> float:
    warm = min(200, max(1, cfg.steps // 20))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


# Settings a resumed run may change: how long and how often, not what is trained.
_RESUMABLE_KEYS = {"steps", "max_minutes", "eval_every", "checkpoint_every", "threads", "max_val_phrases"}


def default_vae_dir() -> Path:
    from personalize.config import get_settings

    return get_settings().model_dir / "vae"


def train_vae(
    config_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    corpus_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    config: VAEConfig | None = None,
    **overrides: object,
) -> dict[str, object]:
    """Train the VAE on the corpus's train split; validate on its val split (the Transformer's split).

    Writes into ``out_dir`` (default ``models/vae``): ``checkpoint.pt`` every ``checkpoint_every`` steps
    (model, optimizer, RNG states, history; ``resume=True`` continues from it), ``model.pt`` (weights and
    config, what :class:`VAEGenerator` loads), ``history.json`` and ``loss_curve.png``.
    Returns a summary with the final validation ELBO per note.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if config is not None:
        known = {f.name for f in fields(VAEConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown VAE config keys {unknown}; known: {sorted(known)}")
        cfg = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    else:
        cfg = VAEConfig.from_file(config_path, **overrides)
    out = Path(out_dir) if out_dir is not None else default_vae_dir()
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(corpus_dir) if corpus_dir is not None else None
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train = _load_phrases(corpus, "train", cfg)
    val = _load_phrases(corpus, "val", cfg)
    val_eval = val[:: max(1, len(val) // cfg.max_val_phrases)][: cfg.max_val_phrases]
    model = ConditionalVAE(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    history: list[dict[str, float]] = []
    step = 0
    elapsed_s = 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        changed = {
            k for k, v in asdict(cfg).items() if k not in _RESUMABLE_KEYS and ckpt["config"].get(k) != v
        }
        if changed:
            raise ValueError(
                f"{ckpt_path} was trained with other settings ({', '.join(sorted(changed))}); "
                "pass resume=False (--no-resume) to start over"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, history, elapsed_s = ckpt["step"], ckpt["history"], ckpt.get("elapsed_s", 0.0)
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.random.set_rng_state(ckpt["torch_rng"])

    def save() -> None:
        state = {
            "config": asdict(cfg),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "history": history,
            "elapsed_s": elapsed_s,
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.random.get_rng_state(),
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)
        torch.save({"config": asdict(cfg), "model": model.state_dict(), "step": step}, out / "model.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        plot_loss_curve(history, out / "loss_curve.png")

    # Sample phrases in proportion to their length so every step of music is seen equally often.
    weights = np.array([len(ph.grid) * ph.grid.shape[1] for ph in train], dtype=float)
    weights /= weights.sum()
    started = time.perf_counter() - elapsed_s
    session_start = time.perf_counter()
    running: list[float] = []
    with Progress(
        TextColumn("[bold]VAE"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} {task.fields[msg]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, msg="")
        while step < cfg.steps:
            model.train()
            idx = rng.choice(len(train), size=cfg.batch_size, p=weights)
            batch = make_batch([train[i] for i in idx], rng, cfg.subset_prob)
            nll, kl, n_notes = phrase_losses(model, batch)
            beta = min(1.0, step / max(1, cfg.kl_warmup_steps))
            kl_term = torch.clamp(kl.mean(), min=cfg.free_bits_nats)
            loss = (nll.mean() + beta * kl_term) / batch["lengths"].float().mean()
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            running.append(float((nll.detach().sum() + kl.detach().sum()) / n_notes.sum().clamp(min=1)))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_stats = elbo_per_note(model, val_eval)
                elapsed_s = time.perf_counter() - started
                history.append(
                    {
                        "step": step,
                        "train_neg_elbo_per_note": float(np.mean(running)),
                        "val_neg_elbo_per_note": val_stats["neg_elbo_per_note_nats"],
                        "val_kl_per_note": val_stats["kl_per_note_nats"],
                        "beta": beta,
                        "elapsed_s": elapsed_s,
                    }
                )
                running = []
                bar.update(task, msg=f"val -ELBO {val_stats['neg_elbo_per_note_nats']:.3f} nats/note")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                elapsed_s = time.perf_counter() - started
                save()
            bar.update(task, completed=step)
            if cfg.max_minutes is not None and time.perf_counter() - session_start >= 60 * cfg.max_minutes:
                break

    final = elbo_per_note(model, val)
    elapsed_s = time.perf_counter() - started
    if step and (not history or history[-1]["step"] != step):
        # A run stopped by its time budget between evaluations still ends its curve at its last step.
        history.append(
            {
                "step": step,
                "train_neg_elbo_per_note": float(np.mean(running)) if running else float("nan"),
                "val_neg_elbo_per_note": final["neg_elbo_per_note_nats"],
                "val_kl_per_note": final["kl_per_note_nats"],
                "beta": min(1.0, step / max(1, cfg.kl_warmup_steps)),
                "elapsed_s": elapsed_s,
            }
        )
    save()
    summary = {
        "out_dir": str(out),
        "steps": step,
        "params": model.n_params(),
        "train_phrases": len(train),
        "val_phrases": len(val),
        "val": final,
        "train_time_s": round(elapsed_s, 1),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def plot_loss_curve(history: list[dict[str, float]], path: Path) -> None:
    """Train and validation negative ELBO per note against training step, as a PNG."""
    from personalize.generate.fit import plot_history

    series = (
        ("train_neg_elbo_per_note", "train"),
        ("val_neg_elbo_per_note", "validation"),
        ("val_kl_per_note", "validation KL"),
    )
    plot_history(history, path, "Conditional VAE", series, "-ELBO (nats per note)")


# ----------------------------------------------------------------------------------------------------------
# Generation


def load_vae(model_dir: str | Path | None = None) -> tuple[ConditionalVAE, dict[str, object]]:
    """The trained model in ``model_dir`` (default ``models/vae``) and its checkpoint metadata."""
    path = Path(model_dir) if model_dir is not None else default_vae_dir()
    weights = path / "model.pt" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"no VAE at {weights}: train one with `personalize train vae`")
    state = torch.load(weights, weights_only=False)
    cfg = VAEConfig(**state["config"])
    model = ConditionalVAE(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


@dataclass
class _Request:
    controls: Controls
    order: list[int]  # pitched program indices, high to low
    programs: list[int]  # pitched programs, high to low
    shift: int
    bar_steps: int


class VAEGenerator:
    """Writes pieces for :class:`Controls` with the trained VAE (the ``Generator`` interface).

    ``temperature`` scales the logits; ``rho`` is the correlation of neighbouring phrases' latents.
    """

    name = "vae"

    def __init__(
        self,
        model: ConditionalVAE,
        temperature: float = 0.9,
        rho: float = 0.7,
        threads: int = 1,
        model_version: str = "vae",
    ) -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.temperature = temperature
        self.rho = rho
        self.threads = threads
        self.model_version = model_version

    @classmethod
    def load(cls, model_dir: str | Path | None = None, **kwargs: object) -> VAEGenerator:
        model, state = load_vae(model_dir)
        return cls(model, model_version=f"vae@{state.get('step', 0)}", **kwargs)  # type: ignore[arg-type]

    # -- public API -----------------------------------------------------------------------------------
    def generate(self, controls: list[Controls], seed: int = 0) -> list[pretty_midi.PrettyMIDI]:
        """One piece per controls, sampled with latents drawn from the prior; deterministic for a seed."""
        gen = torch.Generator().manual_seed(int(seed))
        zs = [self._latent_chain(c, gen) for c in controls]
        return self._decode_many(controls, zs, gen, int(seed))

    def interpolate(
        self, controls: Controls, z_a: torch.Tensor, z_b: torch.Tensor, steps: int, seed: int = 0
    ) -> list[pretty_midi.PrettyMIDI]:
        """``steps`` pieces decoded from latents spherically interpolated from ``z_a`` to ``z_b``.

        Each latent is used for every phrase of its piece, so piece ``i`` is the pure sound of one point
        on the path; the first piece comes from ``z_a`` and the last from ``z_b``.
        """
        if steps < 2:
            raise ValueError(f"interpolate needs at least 2 steps, got {steps}")
        za, zb = torch.as_tensor(z_a, dtype=torch.float32), torch.as_tensor(z_b, dtype=torch.float32)
        if za.shape != (self.cfg.z_dim,) or zb.shape != (self.cfg.z_dim,):
            raise ValueError(
                f"latents must have shape ({self.cfg.z_dim},), got {tuple(za.shape)}, {tuple(zb.shape)}"
            )
        n_phrases = -(-controls.bars // self.cfg.phrase_bars)
        zs = [slerp(za, zb, float(a)).expand(n_phrases, -1) for a in np.linspace(0.0, 1.0, steps)]
        gen = torch.Generator().manual_seed(int(seed))
        return self._decode_many([controls] * steps, zs, gen, int(seed))

    def encode(self, pm_or_piece: Piece) -> torch.Tensor:
        """Posterior mean of ``z`` for the first phrase of a corpus piece (a starting point to interpolate)."""
        ph = piece_phrases(pm_or_piece, self.cfg.phrase_bars)[0]
        batch = make_batch([ph])
        bar = batch["bar"].clamp(max=self.cfg.phrase_bars - 1)
        with torch.no_grad():
            cond = self.model.condition(
                batch["minor"], batch["meter"], batch["density"], batch["n_parts"], batch["registers"]
            )
            mu, _ = self.model.encode(batch["tokens"], batch["pos"], bar, batch["lengths"], cond)
        return mu[0]

    # -- internals ------------------------------------------------------------------------------------
    def _latent_chain(self, c: Controls, gen: torch.Generator) -> torch.Tensor:
        n = -(-c.bars // self.cfg.phrase_bars)
        eps = torch.randn(n, self.cfg.z_dim, generator=gen)
        z = torch.empty_like(eps)
        z[0] = eps[0]
        for k in range(1, n):
            z[k] = self.rho * z[k - 1] + math.sqrt(1 - self.rho**2) * eps[k]
        return z

    def _request(self, c: Controls) -> _Request:
        pitched = c.pitched_programs
        order = part_order(pitched)
        return _Request(c, order, [pitched[i] for i in order], key_shift(c.key_pc), bar_ticks_of(c.meter))

    def _decode_many(
        self, controls: list[Controls], zs: list[torch.Tensor], gen: torch.Generator, seed: int
    ) -> list[pretty_midi.PrettyMIDI]:
        torch.set_num_threads(self.threads)
        reqs = [self._request(c) for c in controls]
        # Rows with the same grid shape decode together, one batch per (steps per bar, parts, phrases).
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.bar_steps, len(r.programs), len(zs[i])), []).append(i)
        grids: dict[int, np.ndarray] = {}
        for (bar_steps, n_parts, n_phrases), rows in groups.items():
            grid = self._decode_group(
                [reqs[i] for i in rows], [zs[i] for i in rows], bar_steps, n_parts, n_phrases, gen
            )
            for k, i in enumerate(rows):
                grids[i] = grid[k]
        return [self._to_midi(reqs[i], grids[i], seed + i) for i in range(len(reqs))]

    @torch.no_grad()
    def _decode_group(self, reqs, zs, bar_steps: int, n_parts: int, n_phrases: int, gen) -> np.ndarray:
        m, cfg = self.model, self.cfg
        b = len(reqs)
        steps = cfg.phrase_bars * bar_steps
        # Onsets allowed per row and part: pitches inside the instrument's range, written key-relative.
        allowed = torch.zeros(b, MAX_PARTS, VOCAB, dtype=torch.bool)
        allowed[:, :, HOLD] = True
        allowed[:, :, REST] = True
        registers = torch.zeros(b, MAX_PARTS)
        for r, req in enumerate(reqs):
            for j, prog in enumerate(req.programs):
                lo, hi = program_range(prog)
                allowed[r, j, 2 + lo + req.shift : 2 + hi + req.shift + 1] = True
                registers[r, j] = (_register_for(prog, j, n_parts) + req.shift) / 128.0
        cond = m.condition(
            torch.tensor([int(q.controls.mode == "minor") for q in reqs]),
            torch.tensor([METERS.index(q.controls.meter) for q in reqs]),
            torch.tensor([q.controls.density_bin for q in reqs]),
            torch.full((b,), n_parts),
            registers,
        )
        z_all = torch.stack(zs)  # (b, n_phrases, z_dim)
        pos = torch.arange(steps) % bar_steps
        bar = (torch.arange(steps) // bar_steps).clamp(max=cfg.phrase_bars - 1)
        out = np.zeros((b, n_phrases * steps, n_parts), dtype=np.int64)
        for k in range(n_phrases):
            zc = torch.cat([z_all[:, k], cond], dim=-1)
            # Inputs of the phrase so far: PAD at step 0 (as in training), then each step's chosen tokens.
            prev = torch.full((b, steps, MAX_PARTS), PAD, dtype=torch.long)
            for t in range(steps):
                o = m.decoder_states(
                    zc, prev[:, : t + 1], pos[None, : t + 1].expand(b, -1), bar[None, : t + 1].expand(b, -1)
                )
                o = o[:, -1]
                cur = torch.full((b, MAX_PARTS), PAD, dtype=torch.long)
                for j in range(n_parts):
                    logits = m.head(m._head_inputs(o, cur, j)) / self.temperature
                    if k == 0 and t == 0:
                        logits[:, HOLD] = -math.inf  # nothing to hold before the first step
                    logits = logits.masked_fill(~allowed[:, j], -math.inf)
                    tok = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=gen)[:, 0]
                    cur[:, j] = tok
                out[:, k * steps + t, :] = cur[:, :n_parts].numpy()
                if t + 1 < steps:
                    prev[:, t + 1] = cur
        return out

    def _to_midi(self, req: _Request, grid: np.ndarray, seed: int) -> pretty_midi.PrettyMIDI:
        c = req.controls
        grid = grid[: c.bars * req.bar_steps]
        parts_hl = grid_to_parts(grid, req.shift)
        # Back to the order the controls listed the programs in.
        parts = [[] for _ in req.programs]
        for pos_hl, idx in enumerate(req.order):
            parts[idx] = parts_hl[pos_hl]
        pm = parts_to_midi(parts, c.pitched_programs, c.tempo_bpm, c.meter)
        # Parts in the order the controls list them, the drum part (a pattern, see drums.py) where asked.
        pitched_insts = iter(pm.instruments)
        pm.instruments = [
            drum_part(c.meter, c.tempo_bpm, c.density_bin, c.bars, seed)
            if p == DRUMS
            else next(pitched_insts)
            for p in c.programs
        ]
        return pm


# Typical mean pitch of the corpus voices, high to low, by number of parts: soprano, alto, tenor, bass
# for chorales, a fiddle line for a single part.
_VOICE_REGISTERS = {1: (70.0,), 2: (68.0, 50.0), 3: (68.0, 58.0, 50.0), 4: (68.0, 62.0, 56.0, 48.0)}


def _register_for(program: int, slot: int, n_parts: int) -> float:
    """The mean pitch (absolute) a part is conditioned on: the corpus voice of its slot, moved inside the
    instrument's range when that voice would sit outside it (a bass line given to a flute moves up)."""
    lo, hi = program_range(program)
    voice = _VOICE_REGISTERS[n_parts][slot]
    margin = min(7.0, (hi - lo) / 3)
    return float(min(max(voice, lo + margin), hi - margin))


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two latents (stays at the prior's typical radius, unlike a line)."""
    an, bn = a / a.norm().clamp(min=1e-8), b / b.norm().clamp(min=1e-8)
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if float(omega) < 1e-4:
        return (1 - alpha) * a + alpha * b
    so = torch.sin(omega)
    return torch.sin((1 - alpha) * omega) / so * a + torch.sin(alpha * omega) / so * b


def load(model_dir: str | Path | None = None, **kwargs: object) -> VAEGenerator:
    """The shipped VAE as a ``Generator`` (what ``load_generator(name="vae")`` calls)."""
    return VAEGenerator.load(model_dir, **kwargs)
