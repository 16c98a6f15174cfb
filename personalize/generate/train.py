"""Train a Transformer on the corpus: seeded, resumable, with checkpoints and a loss curve.

``train_transformer(config_path)`` reads a JSON config (``model`` = :class:`TransformerConfig` fields,
``train`` = the loop's knobs, see ``TrainConfig``), builds the corpus if it is missing, and writes into
``out_dir``. ``train.representation`` picks what is learned: ``"v1"`` (every part of a piece interleaved
bar by bar, :mod:`personalize.generate.tokens`) or ``"song"`` (a melody written section by section over
its chords, :mod:`personalize.generate.song.tokens`)::

    model.pt          the weights alone (float16, what ships), written at every checkpoint and at the end
    config.json       model config, training config, vocabulary size, corpus summary
    history.json      train/val loss per evaluation
    loss_curve.png    the same, plotted

and the resume point (model + optimizer + step + RNG state, every ``checkpoint_every_s``) to
``checkpoint_dir/checkpoint.pt`` (default ``<data_dir>/train/<out_dir name>/``), outside the repository.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from personalize.corpus import Piece, build_corpus, default_corpus_dir, load_pieces
from personalize.generate import tokens as T
from personalize.generate.dataset import collate, sample_example
from personalize.generate.fit import lr_at, plot_history
from personalize.generate.model import MusicTransformer, TransformerConfig


@dataclass
class TrainConfig:
    out_dir: str = "models/transformer"
    checkpoint_dir: str | None = (
        None  # resume state (with optimizer); default <data_dir>/train/<out_dir name>
    )
    corpus_dir: str | None = None  # default <data_dir>/corpus
    collections: list[str] = field(default_factory=lambda: ["bach_chorales", "oneills1850", "ryans_mammoth"])
    corpus_limit_per_collection: int | None = None  # tiny configs build a small corpus
    corpus_workers: int = 2
    seed: int = 1
    batch_size: int = 16
    max_steps: int = 4000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    chorale_share: float = 0.5  # share of examples drawn from multi-part pieces
    eval_every: int = 200
    eval_examples: int = 128
    checkpoint_every_s: float = 180.0
    threads: int = (
        1  # one thread: on a shared 2-core machine a second thread mostly waits (measured 3x slower)
    )
    max_minutes: float | None = None  # stop early (and checkpoint) after this long; resume continues
    representation: str = "v1"  # "v1" | "song": see the module docstring
    # Song runs go through personalize.generate.fit (packed tokens, CPU or GPU):
    eval_windows: int = 64  # validation windows tiling the validation stream
    patience: int | None = None  # evaluations without a better validation loss before stopping
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda"
    compile: bool = False


def vocab_size_of(representation: str) -> int:
    if representation == "song":
        from personalize.generate.song import tokens as S

        return S.VOCAB_SIZE
    if representation == "v1":
        return T.VOCAB_SIZE
    raise ValueError(f"unknown representation {representation!r}: 'v1' or 'song'")


def load_config(path: Path | None) -> tuple[TransformerConfig, TrainConfig]:
    """Model and training configs from a JSON file (``{"model": {...}, "train": {...}}``); defaults if None."""
    if path is None:
        return TransformerConfig(vocab_size=T.VOCAB_SIZE), TrainConfig()
    data = json.loads(Path(path).read_text())
    unknown = set(data) - {"model", "train", "comment"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)} (expected 'model' and 'train')")
    model_keys = {f.name for f in fields(TransformerConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    for section, keys in (("model", model_keys), ("train", train_keys)):
        bad = set(data.get(section, {})) - keys
        if bad:
            raise ValueError(f"{path}: unknown {section} settings {sorted(bad)}; known: {sorted(keys)}")
    train_cfg = TrainConfig(**data.get("train", {}))
    vocab_size = vocab_size_of(train_cfg.representation)
    return TransformerConfig(**{**data.get("model", {}), "vocab_size": vocab_size}), train_cfg


class ExampleSource:
    """Draws training examples: multi-part pieces with probability ``chorale_share``, else one-line tunes."""

    def __init__(self, pieces: list[Piece], block_size: int, chorale_share: float, seed: int) -> None:
        self.multi = [p for p in pieces if len(p.parts) > 1]
        self.single = [p for p in pieces if len(p.parts) == 1]
        if not pieces:
            raise ValueError("no training pieces: the corpus is empty")
        self.block_size = block_size
        self.share = chorale_share if self.multi and self.single else (1.0 if self.multi else 0.0)
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = []
        for _ in range(n):
            pool = self.multi if self.rng.random() < self.share else self.single
            piece = pool[int(self.rng.integers(len(pool)))]
            seqs.append(sample_example(piece, self.rng, self.block_size))
        x, y = collate(seqs)
        return torch.from_numpy(x), torch.from_numpy(y)


def pack_song_streams(pieces: list[Piece], chorale_share: float, seed: int) -> tuple[np.ndarray, int]:
    """Every piece's song token stream, laid end to end in a seeded order, chorales repeated until they
    make up ``chorale_share`` of the tokens (they are few, and the only source of the chorale style).
    Returns the buffer and the number of distinct tokens in it."""
    from personalize.generate.song import tokens as S

    streams = [(p, S.encode_piece(p)) for p in pieces]
    multi = [t for p, t in streams if t is not None and len(p.parts) > 1]
    single = [t for p, t in streams if t is not None and len(p.parts) == 1]
    if not multi and not single:
        raise ValueError("no training pieces: the corpus is empty")
    n_multi, n_single = sum(map(len, multi)), sum(map(len, single))
    repeat = 1
    if multi and single and chorale_share > 0:
        repeat = max(1, round(chorale_share * n_single / ((1 - chorale_share) * n_multi)))
    order = multi * repeat + single
    np.random.default_rng(seed).shuffle(order)
    return np.concatenate([np.asarray(t, dtype=np.int16) for t in order]), n_multi + n_single


def song_given_mask() -> np.ndarray:
    """The song tokens that carry no loss: what generation always gives (chords, bar note counts, the
    control prefix)."""
    from personalize.generate.song import tokens as S

    given = np.zeros(S.VOCAB_SIZE, dtype=bool)
    for i, name in enumerate(S.VOCAB):
        if name.startswith(("CHORD_", "NOTES_", "MODE_", "METER_", "DENSITY_", "STYLE_")):
            given[i] = True
    return given


def example_source(cfg: TrainConfig, pieces: list[Piece], block_size: int, seed: int) -> ExampleSource:
    return ExampleSource(pieces, block_size, cfg.chorale_share, seed)


@torch.no_grad()
def evaluate_loss(model: MusicTransformer, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy (nats per body token) over fixed batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        n = int((y != -100).sum())
        total += float(loss) * n
        count += n
    model.train()
    return total / max(1, count)


def _checkpoint_dir(cfg: TrainConfig) -> Path:
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir)
    from personalize.config import get_settings

    return get_settings().data_dir / "train" / Path(cfg.out_dir).name


def fit_config(cfg: TrainConfig):
    """The packed-token loop's settings (:class:`personalize.generate.fit.FitConfig`) from a train config."""
    from personalize.generate.fit import FitConfig

    shared = {f.name for f in fields(FitConfig)} & {f.name for f in fields(TrainConfig)}
    return FitConfig(**{k: getattr(cfg, k) for k in shared})


def _song_tokens(
    model_cfg: TransformerConfig,
    cfg: TrainConfig,
    train_pieces: list[Piece],
    val_pieces: list[Piece],
    corpus_summary: object,
) -> dict[str, object]:
    train, n_train = pack_song_streams(train_pieces, cfg.chorale_share, cfg.seed)
    val, _ = pack_song_streams(val_pieces, 0.0, cfg.seed + 1000)
    from personalize.generate.song import tokens as S

    meta = {
        "representation": "song",
        "vocab_size": model_cfg.vocab_size,
        "vocab": list(S.VOCAB),  # by name: a later vocabulary can warm-start from this model
        "model": model_cfg.to_dict(),
        "train": asdict(cfg),
        "fit": asdict(fit_config(cfg)),
        "corpus": corpus_summary,
        "train_pieces": len(train_pieces),
        "val_pieces": len(val_pieces),
        "train_tokens": int(n_train),
        "train_buffer_tokens": len(train),
        "val_tokens": len(val),
    }
    return {"train": train, "val": val, "given": song_given_mask(), "meta": meta}


def export_tokens(config_path: Path, path: Path, progress: bool = True) -> dict[str, object]:
    """Write a song config's training data as ``tokens.npz`` (plus the shipped side files into its
    ``out_dir``), for :mod:`personalize.generate.fit` to train on here or on a GPU machine."""
    model_cfg, cfg = load_config(config_path)
    if cfg.representation != "song":
        raise ValueError(f"{config_path}: exporting tokens needs representation 'song'")
    corpus_summary, train_pieces, val_pieces = _prepare(cfg, progress)
    tokens = _song_tokens(model_cfg, cfg, train_pieces, val_pieces, corpus_summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        train=tokens["train"],
        val=tokens["val"],
        given=tokens["given"],
        meta=np.array(json.dumps(tokens["meta"])),
    )
    return tokens["meta"]  # type: ignore[return-value]


def _prepare(cfg: TrainConfig, progress: bool) -> tuple[object, list[Piece], list[Piece]]:
    """Build the corpus when missing, fit the song writer's side files into ``out_dir``, and return the
    corpus summary and the training and validation pieces."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus_dir = Path(cfg.corpus_dir) if cfg.corpus_dir else None
    have_corpus = (corpus_dir or default_corpus_dir()) / "manifest.json"
    corpus_summary = build_corpus(
        corpus_dir,
        cfg.collections,
        limit_per_collection=cfg.corpus_limit_per_collection,
        workers=cfg.corpus_workers,
        progress=progress,
        parse_missing=not have_corpus.is_file(),  # an existing corpus is used as built
    )
    train_pieces = [p for p in load_pieces(corpus_dir, "train") if p.collection in cfg.collections]
    if cfg.representation == "song":
        # The song writer's chords come from the same training pieces: fitted here, shipped beside the weights.
        from personalize.generate.song.harmony import HarmonyModel

        HarmonyModel.fit(train_pieces).save(out / "harmony.json")
        # And the index the originality check searches: every training melody's two-bar windows.
        from personalize.music.originality import OriginalityIndex

        melodies = ((p.piece_id, p.parts[0], p.bar_ticks, p.n_bars) for p in train_pieces if p.parts)
        OriginalityIndex.build(melodies).save(out / "originality.npz")
        # And the melody prior fused with the model's pitch choices (personalize.generate.song.prior).
        from personalize.generate.song.prior import MelodyPrior

        MelodyPrior.fit(train_pieces).save(out / "melody_prior.json")
        # And the notes per bar the song model is asked for (personalize.generate.song.rhythm).
        from personalize.generate.song.rhythm import BarCounts

        BarCounts.fit(train_pieces).save(out / "bar_counts.json")
    val_pieces = [
        p for p in load_pieces(corpus_dir, "val") if p.collection in cfg.collections
    ] or train_pieces
    (out / "training_pieces.txt").write_text("\n".join(p.piece_id for p in train_pieces) + "\n")
    return corpus_summary, train_pieces, val_pieces


def train_transformer(config_path: Path | None = None, progress: bool = True, log=print) -> dict[str, object]:
    """Train (or resume) the Transformer described by ``config_path``; returns a summary dict."""
    model_cfg, cfg = load_config(config_path)
    torch.set_num_threads(max(1, cfg.threads))
    out = Path(cfg.out_dir)
    corpus_summary, train_pieces, val_pieces = _prepare(cfg, progress)
    if cfg.representation == "song":
        from personalize.generate.fit import fit

        tokens = _song_tokens(model_cfg, cfg, train_pieces, val_pieces, corpus_summary)
        return fit(tokens, model_cfg.to_dict(), fit_config(cfg), out, _checkpoint_dir(cfg), progress, log)

    torch.manual_seed(cfg.seed)
    model = MusicTransformer(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    source = example_source(cfg, train_pieces, model_cfg.block_size, cfg.seed)
    val_source = example_source(cfg, val_pieces, model_cfg.block_size, cfg.seed + 1000)
    val_batches = [
        val_source.batch(cfg.batch_size) for _ in range(max(1, cfg.eval_examples // cfg.batch_size))
    ]

    step, history, elapsed_before = 0, [], 0.0
    ckpt_dir = _checkpoint_dir(cfg)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history, elapsed_before = state["step"], state["history"], state.get("train_seconds", 0.0)
        source.rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resuming from step {step} ({elapsed_before / 60:.1f} min trained so far)")

    meta = {
        "model": model_cfg.to_dict(),
        "train": asdict(cfg),
        "vocab_size": model_cfg.vocab_size,
        "representation": cfg.representation,
        "n_params": model.n_params(),
        "corpus": corpus_summary,
        "train_pieces": len(train_pieces),
        "val_pieces": len(val_pieces),
    }

    def save(final: bool = False) -> None:
        train_seconds = elapsed_before + (time.time() - t0)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "history": history,
                "data_rng": source.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "train_seconds": train_seconds,
            },
            ckpt_path.with_suffix(".tmp"),
        )
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        weights = {k: v.half() for k, v in model.state_dict().items() if k != "head.weight"}
        torch.save(weights, out / "model.tmp")
        (out / "model.tmp").replace(out / "model.pt")
        (out / "config.json").write_text(
            json.dumps(
                {**meta, "steps": step, "train_seconds": round(train_seconds, 1), "final": final}, indent=1
            )
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if history:
            plot_history(history, out / "loss_curve.png")

    from tqdm import tqdm

    t0 = time.time()
    last_ckpt = t0
    running: list[float] = []
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, mininterval=10, desc="training")
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = source.batch(cfg.batch_size)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        running.append(loss.item())
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            val = evaluate_loss(model, val_batches)
            history.append(
                {
                    "step": step,
                    "train_loss": float(np.mean(running)),
                    "val_loss": val,
                    "lr": lr_at(step, cfg),
                }
            )
            log(f"step {step}: train {np.mean(running):.3f}  val {val:.3f}  ({time.time() - t0:.0f} s)")
            running = []
        now = time.time()
        if now - last_ckpt >= cfg.checkpoint_every_s:
            save()
            last_ckpt = now
        if cfg.max_minutes is not None and (now - t0) / 60 >= cfg.max_minutes:
            log(f"stopping after {cfg.max_minutes} min at step {step}; run again to resume")
            break
    bar.close()
    save(final=step >= cfg.max_steps)
    return {
        "out_dir": str(out),
        "steps": step,
        "n_params": model.n_params(),
        "val_loss": history[-1]["val_loss"] if history else None,
        "train_seconds": round(elapsed_before + time.time() - t0, 1),
    }
