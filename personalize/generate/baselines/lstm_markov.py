"""Baselines the generators are measured against: a first-order Markov chain and an LSTM next-note model.

Both read the corpus (music21-parsed scores, see :mod:`personalize.corpus`) as the classic tutorials do:
each part is a sequence of notes, and a note is one event ``(rest before it, duration, pitch)`` in
sixteenths and MIDI numbers. They know nothing of the controls (key, meter, instruments), which is part of
what the conditioned models are supposed to gain over them.

**NLL per note, the one unit all models are compared in.** Every model's total negative log-likelihood
(nats) of the validation split is divided by the same count: the notes of the validation pieces as the
corpus holds them (every note of every part). Here a note's NLL is ``-log P(rest, duration, pitch | the
part so far)``: the three together pin the note down exactly, as the Transformer's ``PITCH DUR`` tokens
(plus ``REST DUR`` for silences and ``BAR``/``PART`` tokens) do, and as the VAE's grid steps do; their
sums of token NLLs over a piece are divided by the same note count (see
:mod:`personalize.evaluate.generator`). Both baselines use the split the Transformer uses (the corpus
manifest's ``val``).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from personalize.corpus import Piece

MAX_TICKS = 256  # longest rest/duration a note event holds (16 bars of 4/4); longer ones are clipped
N_PITCH = 128
BOS_PITCH = N_PITCH  # the "start of part" input of the LSTM
BOS_TICKS = MAX_TICKS + 1

Event = tuple[int, int, int]  # (rest ticks before the note, duration ticks, MIDI pitch)


def part_events(part: list[tuple[int, int, int]]) -> list[Event]:
    """A monophonic part's notes ``(onset, duration, pitch)`` as events ``(rest before, duration, pitch)``."""
    events: list[Event] = []
    t = 0
    for onset, dur, pitch in part:
        rest = max(0, onset - t)
        events.append((min(rest, MAX_TICKS), min(max(dur, 1), MAX_TICKS), int(pitch)))
        t = onset + dur
    return events


def piece_sequences(pieces: list[Piece]) -> list[list[Event]]:
    """Every non-empty part of every piece as an event sequence."""
    return [part_events(part) for p in pieces for part in p.parts if part]


def count_notes(pieces: list[Piece]) -> int:
    """Notes of the pieces, all parts: the denominator of every "NLL per note" figure."""
    return sum(len(part) for p in pieces for part in p.parts)


# ----------------------------------------------------------------------------------------------------------
# First-order Markov chain


class MarkovChain:
    """First-order Markov chain over note events, smoothed by backing off to how common each event is.

    ``P(x | prev) = (c(prev, x) + alpha P1(x)) / (c(prev) + alpha)`` with the unigram
    ``P1(x) = (c(x) + beta P0(x)) / (N + beta)`` and ``P0`` the product of add-half smoothed rest,
    duration and pitch frequencies, so every event (even one never seen) has a probability and the
    probabilities sum to one. ``alpha`` and ``beta`` are picked by :meth:`fit` on the validation split
    from a small grid, which can only flatter the baseline.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        self.alpha = alpha
        self.beta = beta
        self.bigram: dict[Event | None, Counter[Event]] = defaultdict(Counter)
        self.context_total: Counter[Event | None] = Counter()
        self.unigram: Counter[Event] = Counter()
        self.n_events = 0
        self.p_rest = np.ones(MAX_TICKS + 1)
        self.p_dur = np.ones(MAX_TICKS + 1)
        self.p_pitch = np.ones(N_PITCH)

    def fit_counts(self, sequences: list[list[Event]]) -> MarkovChain:
        rest_c = np.full(MAX_TICKS + 1, 0.5)
        dur_c = np.full(MAX_TICKS + 1, 0.5)
        dur_c[0] = 0.0  # a note lasts at least one sixteenth
        pitch_c = np.full(N_PITCH, 0.5)
        for seq in sequences:
            prev: Event | None = None
            for ev in seq:
                self.bigram[prev][ev] += 1
                self.context_total[prev] += 1
                self.unigram[ev] += 1
                rest_c[ev[0]] += 1
                dur_c[ev[1]] += 1
                pitch_c[ev[2]] += 1
                prev = ev
        self.n_events = sum(self.unigram.values())
        self.p_rest, self.p_dur, self.p_pitch = (
            rest_c / rest_c.sum(),
            dur_c / dur_c.sum(),
            pitch_c / pitch_c.sum(),
        )
        return self

    def fit(self, train: list[list[Event]], val: list[list[Event]]) -> MarkovChain:
        """Count on ``train``; choose the smoothing weights with the lowest NLL on ``val``."""
        self.fit_counts(train)
        best = (math.inf, 1.0, 1.0)
        for alpha in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
            for beta in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0):
                self.alpha, self.beta = alpha, beta
                nll = self.total_nll(val)
                best = min(best, (nll, alpha, beta))
        self.alpha, self.beta = best[1], best[2]
        return self

    def log_prob(self, ev: Event, prev: Event | None) -> float:
        p0 = self.p_rest[ev[0]] * self.p_dur[ev[1]] * self.p_pitch[ev[2]]
        p1 = (self.unigram.get(ev, 0) + self.beta * p0) / (self.n_events + self.beta)
        row = self.bigram.get(prev)
        c_x = row.get(ev, 0) if row is not None else 0
        c_prev = self.context_total.get(prev, 0)
        return math.log((c_x + self.alpha * p1) / (c_prev + self.alpha))

    def total_nll(self, sequences: list[list[Event]]) -> float:
        """Negative log-likelihood (nats) of every note of the sequences, each part from its start."""
        total = 0.0
        for seq in sequences:
            prev: Event | None = None
            for ev in seq:
                total -= self.log_prob(ev, prev)
                prev = ev
        return total

    def sample(self, n: int, rng: np.random.Generator) -> list[Event]:
        """A sequence of ``n`` events drawn from the chain's seen transitions (for listening, not scoring)."""
        out: list[Event] = []
        prev: Event | None = None
        for _ in range(n):
            row = self.bigram.get(prev) or self.unigram
            events = list(row)
            counts = np.array([row[e] for e in events], dtype=float)
            ev = events[int(rng.choice(len(events), p=counts / counts.sum()))]
            out.append(ev)
            prev = ev
        return out


def markov_val_nll_per_note(corpus_dir: Path | None = None) -> dict[str, float]:
    """Fit the chain on the train split and report its NLL per note on the val split."""
    from personalize.corpus import load_pieces

    train, val = load_pieces(corpus_dir, split="train"), load_pieces(corpus_dir, split="val")
    chain = MarkovChain().fit(piece_sequences(train), piece_sequences(val))
    notes = count_notes(val)
    nll = chain.total_nll(piece_sequences(val))
    return {
        "nll_per_note_nats": nll / notes,
        "notes": notes,
        "alpha": chain.alpha,
        "beta": chain.beta,
        "distinct_events": len(chain.unigram),
    }


# ----------------------------------------------------------------------------------------------------------
# LSTM next-note model


@dataclass
class LSTMConfig:
    emb_dim: int = 96
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.3
    seed: int = 0
    steps: int = 1500
    batch_size: int = 32
    window: int = 96  # notes per training window (truncated back-propagation through time)
    lr: float = 2e-3
    eval_every: int = 250
    threads: int = 1
    max_minutes: float | None = None  # stop early with the best weights so far (saved at every evaluation)

    @classmethod
    def tiny(cls) -> LSTMConfig:
        return cls(emb_dim=8, hidden=16, layers=1, steps=20, batch_size=4, window=16, eval_every=10)


class NextNoteLSTM(nn.Module):
    """Stacked LSTM reading the notes so far and predicting the next note's rest, duration and pitch.

    The three are predicted from the same state (conditionally independent given the history), so
    ``log P(note) = log P(rest) + log P(duration) + log P(pitch)``.
    """

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pitch_emb = nn.Embedding(N_PITCH + 1, cfg.emb_dim)
        self.dur_emb = nn.Embedding(MAX_TICKS + 2, cfg.emb_dim)
        self.rest_emb = nn.Embedding(MAX_TICKS + 2, cfg.emb_dim)
        self.lstm = nn.LSTM(
            cfg.emb_dim,
            cfg.hidden,
            cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.rest_head = nn.Linear(cfg.hidden, MAX_TICKS + 1)
        self.dur_head = nn.Linear(cfg.hidden, MAX_TICKS + 1)
        self.pitch_head = nn.Linear(cfg.hidden, N_PITCH)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # inputs (B, T, 3) of (rest, dur, pitch), BOS values at position 0
        x = self.rest_emb(inputs[..., 0]) + self.dur_emb(inputs[..., 1]) + self.pitch_emb(inputs[..., 2])
        h, _ = self.lstm(self.drop(x))
        h = self.drop(h)
        return self.rest_head(h), self.dur_head(h), self.pitch_head(h)

    def note_nll(self, targets: torch.Tensor) -> torch.Tensor:
        """NLL (nats) of each note of ``targets`` (B, T, 3) given the notes before it; padding is -1."""
        bos = torch.tensor([BOS_TICKS, BOS_TICKS, BOS_PITCH])
        inputs = torch.cat([bos.expand(targets.shape[0], 1, 3), targets[:, :-1].clamp(min=0)], dim=1)
        rest, dur, pitch = self(inputs)
        t = targets
        nll = (
            F.cross_entropy(rest.transpose(1, 2), t[..., 0], ignore_index=-1, reduction="none")
            + F.cross_entropy(dur.transpose(1, 2), t[..., 1], ignore_index=-1, reduction="none")
            + F.cross_entropy(pitch.transpose(1, 2), t[..., 2], ignore_index=-1, reduction="none")
        )
        return nll * (t[..., 0] >= 0)


def _pad(seqs: list[list[Event]]) -> torch.Tensor:
    t = max(len(s) for s in seqs)
    out = torch.full((len(seqs), t, 3), -1, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


@torch.no_grad()
def lstm_total_nll(model: NextNoteLSTM, sequences: list[list[Event]], batch_size: int = 32) -> float:
    """NLL (nats) of every note of every sequence, each read whole from its first note."""
    model.eval()
    total = 0.0
    ordered = sorted(sequences, key=len)
    for i in range(0, len(ordered), batch_size):
        total += float(model.note_nll(_pad(ordered[i : i + batch_size])).sum())
    return total


def default_lstm_path() -> Path:
    from personalize.config import get_settings

    return get_settings().model_dir / "baselines" / "lstm.pt"


def train_lstm(
    out_path: str | Path | None = None,
    corpus_dir: str | Path | None = None,
    config: LSTMConfig | None = None,
    progress: bool = True,
    **overrides: object,
) -> dict[str, object]:
    """Train the LSTM baseline on the train split, report NLL per note on the val split, save to ``out_path``
    (default ``models/baselines/lstm.pt``) with its config and training history."""
    from rich.progress import Progress

    from personalize.corpus import load_pieces

    cfg = config or LSTMConfig()
    known = {f.name for f in fields(LSTMConfig)}
    for k, v in overrides.items():
        if k not in known:
            raise ValueError(f"unknown LSTM config key {k!r}; known: {sorted(known)}")
        setattr(cfg, k, v)
    out = Path(out_path) if out_path is not None else default_lstm_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    corpus = Path(corpus_dir) if corpus_dir is not None else None
    train_p, val_p = load_pieces(corpus, split="train"), load_pieces(corpus, split="val")
    train, val = piece_sequences(train_p), piece_sequences(val_p)
    val_notes = count_notes(val_p)
    model = NextNoteLSTM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 20)
    lengths = np.array([len(s) for s in train], dtype=float)
    weights = lengths / lengths.sum()
    history: list[dict[str, float]] = []
    best_state, best_val = None, math.inf
    started = time.perf_counter()
    running: list[float] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("LSTM baseline", total=cfg.steps)
        for step in range(1, cfg.steps + 1):
            model.train()
            windows = []
            for i in rng.choice(len(train), size=cfg.batch_size, p=weights):
                seq = train[i]
                start = int(rng.integers(0, max(1, len(seq) - cfg.window + 1)))
                windows.append(seq[start : start + cfg.window])
            targets = _pad(windows)
            nll = model.note_nll(targets)
            loss = nll.sum() / (targets[..., 0] >= 0).sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running.append(float(loss.detach()))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_nll = lstm_total_nll(model, val) / val_notes
                history.append(
                    {"step": step, "train_nll_per_note": float(np.mean(running)), "val_nll_per_note": val_nll}
                )
                running = []
                if val_nll < best_val:
                    best_val = val_nll
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                    _save_lstm(out, cfg, best_state, best_val, val_notes, history, started, step)
                bar.update(task, description=f"LSTM baseline (val {val_nll:.3f} nats/note)")
            bar.update(task, completed=step)
            if cfg.max_minutes is not None and time.perf_counter() - started >= 60 * cfg.max_minutes:
                break
    assert best_state is not None
    return _save_lstm(out, cfg, best_state, best_val, val_notes, history, started, step)


def _save_lstm(
    out: Path,
    cfg: LSTMConfig,
    state: dict,
    val_nll: float,
    val_notes: int,
    history: list,
    started: float,
    step: int,
) -> dict[str, object]:
    """Write the best weights so far with their config and figures; returns the summary."""
    summary = {
        "val_nll_per_note_nats": val_nll,
        "val_notes": val_notes,
        "params": sum(v.numel() for v in state.values()),
        "steps": step,
        "train_time_s": round(time.perf_counter() - started, 1),
        "history": history,
    }
    tmp = out.with_suffix(".tmp")
    torch.save({"config": asdict(cfg), "model": state, "summary": summary}, tmp)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps({"config": asdict(cfg), **summary}, indent=1))
    return summary


def load_lstm(path: str | Path | None = None) -> NextNoteLSTM:
    p = Path(path) if path is not None else default_lstm_path()
    if not p.is_file():
        raise FileNotFoundError(f"no LSTM baseline at {p}: train it with `personalize train lstm-baseline`")
    state = torch.load(p, weights_only=False)
    model = NextNoteLSTM(LSTMConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def lstm_val_nll_per_note(path: str | Path | None = None, corpus_dir: Path | None = None) -> dict[str, float]:
    """The shipped LSTM baseline's NLL per note on the val split, measured now (not read from its file)."""
    from personalize.corpus import load_pieces

    val_p = load_pieces(corpus_dir, split="val")
    model = load_lstm(path)
    notes = count_notes(val_p)
    return {"nll_per_note_nats": lstm_total_nll(model, piece_sequences(val_p)) / notes, "notes": notes}
