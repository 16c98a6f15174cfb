"""The training loop over packed token windows, on the CPU here or on a GPU when one is lent.

:func:`personalize.generate.train.export_tokens` turns the corpus into one file, ``tokens.npz``: the
training and validation token streams laid end to end, the mask of tokens that carry no loss (what
generation always gives: chords and the control prefix) and the run's metadata. This module needs nothing
but numpy and torch, so the same loop runs on the 2-core CPU machine and, as a script, on a GPU machine
that has no copy of the corpus or of the product's other dependencies::

    python personalize/generate/fit.py --tokens tokens.npz --out models/transformer \
        --set model.n_layer=6 --set train.batch_size=64 --set train.max_minutes=8

What it does, per step: ``batch_size`` windows of ``window + 1`` consecutive tokens (``window`` defaults to
``block_size``; shorter windows make a cheap fine-tune) from random offsets (no padding), AdamW with
warmup and cosine decay, gradient clipping; bf16 autocast on a GPU. Every ``eval_every`` steps it measures the validation loss over fixed windows that tile the validation stream and
keeps the best weights (``model.pt``, float16, what ships), so a run that overfits ends with its best
model; it stops early after ``patience`` evaluations without improvement. ``checkpoint.pt`` (weights,
optimizer, step, history, RNG state) lets a stopped run resume.

A run may start from an earlier model's weights instead of from scratch (``init_from``, a model folder):
the tokens both vocabularies name are matched by name, so a representation that gained tokens (a new
bar-level control) keeps everything the earlier model learned and learns only what is new. The
architecture must match; new tokens start from the fresh model's initialisation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

try:  # inside the product
    from personalize.generate.model import MusicTransformer, TransformerConfig
except ImportError:  # as a script on a machine with torch alone: the model file sits beside this one
    import importlib.util
    import sys

    _spec = importlib.util.spec_from_file_location("song_model", Path(__file__).with_name("model.py"))
    _mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["song_model"] = _mod
    _spec.loader.exec_module(_mod)  # type: ignore[union-attr]
    MusicTransformer, TransformerConfig = _mod.MusicTransformer, _mod.TransformerConfig


@dataclass
class FitConfig:
    seed: int = 1
    batch_size: int = 8
    max_steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 256  # validation windows (tiling the validation stream from its start)
    patience: int | None = None  # evaluations without a new best before stopping; None: never
    checkpoint_every_s: float = 180.0
    max_minutes: float | None = None
    threads: int = 1
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda"
    compile: bool = False  # torch.compile the training step (GPU runs)
    init_from: str | None = None  # a model folder (model.pt + config.json with "vocab") to start from
    window: int | None = (
        None  # tokens per training window; None: the model's block_size (validation always is)
    )


def lr_at(step: int, cfg: FitConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class PackedWindows:
    """Random training windows and fixed validation windows over token streams held on the device."""

    def __init__(
        self, tokens: np.ndarray, given: np.ndarray, block_size: int, device: torch.device, seed: int
    ) -> None:
        if len(tokens) < block_size + 2:
            raise ValueError(f"{len(tokens)} tokens cannot fill one window of {block_size + 1}")
        self.buffer = torch.from_numpy(tokens.astype(np.int64)).to(device)
        self.given = torch.from_numpy(given.astype(bool)).to(device)
        self.block_size = block_size
        self.offsets = torch.arange(block_size + 1, device=device)
        self.rng = np.random.default_rng(seed)

    def _windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(starts).to(self.buffer.device)[:, None] + self.offsets
        w = self.buffer[idx]
        x, y = w[:, :-1], w[:, 1:].clone()
        y[self.given[y]] = -100  # no loss on what generation always gives
        return x, y

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.rng.integers(0, len(self.buffer) - self.block_size - 1, size=n))

    def tiles(self, n_max: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        starts = np.arange(0, len(self.buffer) - self.block_size - 1, self.block_size)[:n_max]
        return [self._windows(starts[i : i + batch_size]) for i in range(0, len(starts), batch_size)]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def validation_loss(model: MusicTransformer, tiles: list, autocast) -> float:
    """Mean cross-entropy (nats per scored token) over the fixed validation windows."""
    model.eval()
    total, count = 0.0, 0
    for x, y in tiles:
        with autocast():
            _, loss = model(x, y)
        n = int((y != -100).sum())
        total += float(loss) * n
        count += n
    model.train()
    return total / max(1, count)


def plot_history(
    history: list[dict],
    path: Path,
    title: str = "Transformer: loss",
    series: tuple[tuple[str, str], ...] = (("train_loss", "train"), ("val_loss", "validation")),
    ylabel: str = "cross-entropy (nats per scored token)",
) -> None:
    """Loss per evaluation as a PNG: the one loss plot of every training loop (``series`` names the history
    keys to draw and their labels)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in series:
        ax.plot(steps, [h[key] for h in history], label=label, linestyle=":" if "kl" in key else "-")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if history:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_tokens(path: Path) -> dict[str, object]:
    with np.load(path, allow_pickle=False) as z:
        return {
            "train": z["train"],
            "val": z["val"],
            "given": z["given"],
            "meta": json.loads(str(z["meta"])),
        }


def fit(
    tokens: dict[str, object],
    model_cfg: dict[str, object],
    cfg: FitConfig,
    out_dir: Path,
    checkpoint_dir: Path,
    progress: bool = True,
    log=print,
) -> dict[str, object]:
    """Train (or resume) a model on packed tokens; writes ``model.pt``, ``config.json``, ``history.json``,
    ``loss_curve.png`` into ``out_dir`` and ``checkpoint.pt`` into ``checkpoint_dir``."""
    meta = dict(tokens["meta"])  # type: ignore[arg-type]
    mcfg = TransformerConfig(**{**model_cfg, "vocab_size": int(meta["vocab_size"])})
    device = pick_device(cfg.device)
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_dir / "checkpoint.pt"
    model = MusicTransformer(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        fused=cuda,
    )
    given = np.asarray(tokens["given"])
    window = min(cfg.window or mcfg.block_size, mcfg.block_size)
    source = PackedWindows(np.asarray(tokens["train"]), given, window, device, cfg.seed)
    val = PackedWindows(np.asarray(tokens["val"]), given, mcfg.block_size, device, cfg.seed + 1)
    tiles = val.tiles(cfg.eval_windows, max(cfg.batch_size, 8))

    step, history, elapsed_before, best = 0, [], 0.0, math.inf
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        elapsed_before, best = state.get("train_seconds", 0.0), state.get("best_val", math.inf)
        source.rng.bit_generator.state = state["data_rng"]
        log(f"resuming from step {step} ({elapsed_before / 60:.1f} min trained so far, best val {best:.4f})")
    elif cfg.init_from:
        log(warm_start(model, Path(cfg.init_from), list(meta.get("vocab") or [])))
    step_model = torch.compile(model) if cfg.compile else model

    info = {
        **meta,
        "model": mcfg.to_dict(),
        "fit": asdict(cfg),
        "n_params": model.n_params(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
    }
    t0 = time.time()

    def write_weights() -> None:
        weights = {k: v.detach().half().cpu() for k, v in model.state_dict().items() if k != "head.weight"}
        torch.save(weights, out_dir / "model.tmp")
        (out_dir / "model.tmp").replace(out_dir / "model.pt")

    def write_meta(final: bool) -> None:
        best_step = min(history, key=lambda h: h["val_loss"])["step"] if history else 0
        record = {
            **info,
            "steps": step,
            "best_step": best_step,
            "best_val_loss": None if math.isinf(best) else round(best, 5),
            "tokens_seen": step * cfg.batch_size * window,
            "train_seconds": round(elapsed_before + time.time() - t0, 1),
            "final": final,
        }
        (out_dir / "config.json").write_text(json.dumps(record, indent=1))
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        if history:
            plot_history(history, out_dir / "loss_curve.png")

    def checkpoint() -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "history": history,
                "best_val": best,
                "data_rng": source.rng.bit_generator.state,
                "train_seconds": elapsed_before + time.time() - t0,
            },
            ckpt_path.with_suffix(".tmp"),
        )
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    from contextlib import nullcontext

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - the product depends on tqdm; a bare GPU machine may not
        tqdm = None
    bar = (
        tqdm(total=cfg.max_steps, initial=step, disable=not progress, mininterval=10, desc="training")
        if tqdm
        else None
    )
    last_ckpt, running, stale = t0, [], 0
    model.train()
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = source.batch(cfg.batch_size)
        with autocast() if cuda else nullcontext():
            _, loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        running.append(loss.detach())
        if bar:
            bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            v = validation_loss(model, tiles, autocast)
            train_loss = float(torch.stack(running).float().mean())
            history.append({"step": step, "train_loss": train_loss, "val_loss": v, "lr": lr_at(step, cfg)})
            running = []
            improved = v < best
            if improved:
                best, stale = v, 0
                write_weights()
            else:
                stale += 1
            log(
                f"step {step}: train {train_loss:.4f}  val {v:.4f}{'  (best)' if improved else ''}"
                f"  ({time.time() - t0:.0f} s)"
            )
            write_meta(final=False)
            if cfg.patience is not None and stale >= cfg.patience:
                log(f"no better validation loss in {stale} evaluations: stopping at step {step}")
                break
        now = time.time()
        if now - last_ckpt >= cfg.checkpoint_every_s:
            checkpoint()
            last_ckpt = now
        if cfg.max_minutes is not None and (now - t0) / 60 >= cfg.max_minutes:
            log(f"stopping after {cfg.max_minutes} min at step {step}; run again to resume")
            break
    if bar:
        bar.close()
    if math.isinf(best):  # never evaluated: keep what there is
        write_weights()
    checkpoint()
    write_meta(final=step >= cfg.max_steps or (cfg.patience is not None and stale >= cfg.patience))
    return {
        "out_dir": str(out_dir),
        "steps": step,
        "n_params": model.n_params(),
        "best_val_loss": best,
        "train_seconds": round(elapsed_before + time.time() - t0, 1),
    }


def warm_start(model: MusicTransformer, folder: Path, vocab: list[str]) -> str:
    """Load an earlier model's weights from ``folder`` into ``model``, matching token rows by name
    (``vocab`` names this run's tokens; the earlier model's config.json names its own). Returns a line
    saying what was carried over."""
    old_vocab = json.loads((folder / "config.json").read_text()).get("vocab")
    if not vocab or not old_vocab:
        raise ValueError(f"warm start from {folder} needs both vocabularies by name (config.json 'vocab')")
    old = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    state = model.state_dict()
    for name, value in old.items():
        if name == "wte.weight":
            continue
        if name not in state or state[name].shape != value.shape:
            raise ValueError(f"{folder}: {name} {tuple(value.shape)} does not fit this architecture")
        state[name] = value.to(state[name].dtype)
    where = {tok: i for i, tok in enumerate(old_vocab)}
    table = state["wte.weight"].clone()
    kept = [(i, where[tok]) for i, tok in enumerate(vocab) if tok in where]
    for new, was in kept:
        table[new] = old["wte.weight"][was].to(table.dtype)
    state["wte.weight"] = state["head.weight"] = table  # the output head is tied to the embedding
    model.load_state_dict(state)
    return f"warm start from {folder}: {len(kept)} of {len(vocab)} tokens carried over, {len(vocab) - len(kept)} new"


def _parse_sets(items: list[str]) -> tuple[dict[str, object], dict[str, object]]:
    model, train = {}, {}
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        {"model": model, "train": train}[section][name] = value
    return model, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=Path, required=True, help="tokens.npz written by export_tokens")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="default: <out>/../<out name>.ckpt")
    ap.add_argument("--set", action="append", default=[], help="model.X=V or train.X=V (JSON values)")
    args = ap.parse_args(argv)
    tokens = load_tokens(args.tokens)
    model_over, train_over = _parse_sets(args.set)
    meta = tokens["meta"]
    known = {f.name for f in fields(FitConfig)}
    train_cfg = {k: v for k, v in dict(meta.get("fit", {})).items() if k in known}  # type: ignore[union-attr]
    cfg = FitConfig(**{**train_cfg, **train_over})
    model_cfg = {**dict(meta.get("model", {})), **model_over}  # type: ignore[arg-type]
    ckpt = args.checkpoint_dir or args.out.parent / f"{args.out.name}.ckpt"
    summary = fit(tokens, model_cfg, cfg, args.out, ckpt, progress=False)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
