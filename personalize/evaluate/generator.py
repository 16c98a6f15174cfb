"""``personalize eval generator``: does the shipped generator follow its controls, does its music look like
the corpus, and does it model held-out music better than the baselines?

Three parts, one JSON report (plus a table and PNG plots):

1. **Control fidelity** over a grid of requests spread across all 24 keys, a tempo grid, four meters, the
   four density bins and several instrument sets (with and without drums). The first try of every
   request is measured by :func:`personalize.generate.verify.measure_piece` (key by Krumhansl-Schmuckler
   key-finding, never the model's word): key accuracy *before* resampling, with relative major/minor
   confusions counted apart; instrument-set F1; share of notes inside each instrument's range; tempo
   error; density inside its bin. Then the same after :func:`generate_verified` resampled the misses.
2. **Music metrics** (:mod:`personalize.music.metrics`, the ones that tell music from noise) of the
   verified pieces against the corpus's held-out test split: the generated median of each metric, the
   corpus 5-95 % band, and the Yang & Lerch (2018) overlap area. Drum parts only mark the texture.
3. **Validation NLL per note** of the Transformer, the VAE (its negative ELBO, an upper bound), the LSTM
   and the Markov chain, all on the same validation pieces and divided by the same note count (see
   :mod:`personalize.generate.baselines.lstm_markov` for the unit).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path

import numpy as np
import pretty_midi
import torch

from personalize.corpus import Piece, load_pieces
from personalize.generate import tokens as T
from personalize.music import metrics as M
from personalize.music.controls import METERS, N_DENSITY_BINS, Controls
from personalize.music.gm import DRUMS
from personalize.music.score import score_from_midi

TEMPO_GRID_BPM = (66.0, 80.0, 96.0, 112.0, 128.0, 144.0)
METER_GRID = ("4/4", "3/4", "6/8", "2/4")
# Instrument sets a listener cluster may ask for: solo, duos, trios, quartets, with and without drums.
INSTRUMENT_SETS: tuple[tuple[int | str, ...], ...] = (
    (0,),  # piano
    (73, 42),  # flute, cello
    (40, 41, 42, 43),  # string quartet with contrabass
    (0, 33, DRUMS),  # piano, electric bass, drums
    (71, 70),  # clarinet, bassoon
    (56, 60, 58),  # trumpet, horn, tuba
    (24, 32, DRUMS),  # nylon guitar, acoustic bass, drums
    (68, 71, 70, 43),  # oboe, clarinet, bassoon, contrabass
)
BARS = 16

TARGETS = {
    "key_accuracy": 0.95,
    "instrument_f1": 1.0,
    "in_range_share": 0.99,
    "density_in_bin_share": 0.90,
}


def evaluation_controls(n: int = 240, bars: int = BARS) -> list[Controls]:
    """``n`` requests: keys cycle through all 24, and tempo, meter, density and instruments rotate with
    different strides so that the combinations spread rather than repeat in lockstep."""
    out = []
    for i in range(n):
        key_idx = i % 24
        cycle = i // 24
        out.append(
            Controls(
                key_pc=key_idx // 2,
                mode="major" if key_idx % 2 == 0 else "minor",
                tempo_bpm=TEMPO_GRID_BPM[(i + cycle) % len(TEMPO_GRID_BPM)],
                meter=METER_GRID[(i // 2 + cycle) % len(METER_GRID)],
                density_bin=(i // 3 + cycle) % N_DENSITY_BINS,
                programs=list(INSTRUMENT_SETS[(i * 3 + cycle) % len(INSTRUMENT_SETS)]),
                bars=bars,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# Corpus pieces as MIDI, and the pieces every model can be scored on


def _covering_programs(piece: Piece) -> list[int]:
    """A GM program per part whose range covers the part, drawn as the training data draws them, seeded by
    the piece so that every run scores the same sequence."""
    from personalize.generate.dataset import programs_covering

    rng = np.random.default_rng(zlib.crc32(piece.piece_id.encode()))
    programs = []
    for part in piece.parts:
        cands = programs_covering(min(n[2] for n in part), max(n[2] for n in part)) if part else []
        programs.append(int(rng.choice(cands)) if len(cands) else 0)
    return programs


def piece_to_midi(piece: Piece, tempo_bpm: float = 100.0) -> pretty_midi.PrettyMIDI:
    """A corpus piece as MIDI (piano on every part; the quality metrics never look at programs)."""
    parts = [p for p in piece.parts if p]
    return T.parts_to_midi(parts, [0] * len(parts), piece.tempo_bpm or tempo_bpm, piece.meter)


def scorable_pieces(pieces: list[Piece]) -> list[Piece]:
    """Pieces every model can write: a meter the controls know, one to four non-empty parts."""
    return [p for p in pieces if p.meter in METERS and 1 <= len(p.parts) <= 4 and all(p.parts)]


# ----------------------------------------------------------------------------------------------------------
# Validation NLL per note


@torch.no_grad()
def transformer_nll(model: torch.nn.Module, pieces: list[Piece]) -> dict[str, float]:
    """Total NLL (nats) of the pieces' body tokens under the Transformer, and per corpus note.

    Each piece is written as training writes it (its key, its programs drawn among those covering each
    part, its density bin) and scored token by token with teacher forcing. Two figures: ``masked`` uses
    the distribution generation actually samples from (the decoding grammar's mask applied, renormalized;
    forced ``BAR``/``PART`` tokens cost nothing), ``unmasked`` the raw softmax. Pieces longer than the
    context are scored in windows that keep at least half a context of earlier tokens.
    """
    from personalize.generate.baselines.lstm_markov import count_notes

    model.eval()
    block = model.config.block_size
    masked_total = unmasked_total = 0.0
    tokens_scored = violations = 0
    for piece in pieces:
        programs = _covering_programs(piece)
        dens = T.window_density_bin(piece.parts, piece.bar_ticks, 0, piece.n_bars)
        prefix = T.prefix_tokens(
            piece.key_pc, piece.mode, piece.tempo_bpm or 100.0, piece.meter, dens, programs
        )
        body = T.bars_tokens(piece.parts, piece.bar_ticks, 0, piece.n_bars)
        grammar = T.Grammar([programs], [piece.bar_ticks], [piece.n_bars])
        half = max(1, (block - len(prefix)) // 2)
        logps_masked: list[float] = []
        logps_raw: list[float] = []
        for s in range(0, len(body), half):
            ctx_start = max(0, s - half)
            window = prefix + body[ctx_start : s + half]
            logits, _ = model(torch.tensor([window[:block]]))
            offset = len(prefix) + (s - ctx_start) - 1
            for j in range(s, min(s + half, len(body))):
                row = logits[0, offset + (j - s)]
                tok = body[j]
                mask, _ = grammar.allowed()
                logp_raw = torch.log_softmax(row, dim=-1)[tok]
                if bool(mask[0, tok]):
                    logp = torch.log_softmax(row.masked_fill(~mask[0], -math.inf), dim=-1)[tok]
                else:
                    violations += 1
                    logp = logp_raw
                logps_masked.append(float(logp))
                logps_raw.append(float(logp_raw))
                grammar.step(torch.tensor([tok]))
        masked_total -= sum(logps_masked)
        unmasked_total -= sum(logps_raw)
        tokens_scored += len(body)
    notes = count_notes(pieces)
    return {
        "nll_per_note_nats": masked_total / notes,
        "nll_per_note_unmasked_nats": unmasked_total / notes,
        "nll_per_token_nats": masked_total / max(1, tokens_scored),
        "tokens": tokens_scored,
        "notes": notes,
        "grammar_violations": violations,
    }


@torch.no_grad()
def song_nll(model: torch.nn.Module, pieces: list[Piece]) -> dict[str, float]:
    """NLL (nats) of what the song model decides when it writes each piece's melody, per melody note.

    Each piece is written as training writes it (:func:`personalize.generate.song.tokens.encode_piece`) and
    scored with teacher forcing. Only the tokens the model chooses count: onsets, pitches, lengths and the
    token that ends each bar; the chords and the conditioning prefix are given. A piece longer than the
    context is scored in windows: its prefix, then the next stretch of the stream.
    """
    from personalize.generate.song import tokens as S

    model.eval()
    block = model.config.block_size
    given = [n.startswith(("CHORD_", "MODE_", "METER_", "DENSITY_", "STYLE_")) for n in S.VOCAB]
    total, scored, notes = 0.0, 0, 0
    for piece in pieces:
        stream = S.encode_piece(piece)
        if stream is None:
            continue
        cut = stream.index(S.SEP) + 1
        prefix, body = stream[:cut], stream[cut:]
        step = block - len(prefix)
        for s in range(0, len(body), step):
            window = prefix + body[s : s + step]
            logits, _ = model(torch.tensor([window[:-1]]))
            logp = torch.log_softmax(logits[0], dim=-1)
            for j in range(len(prefix) - 1, len(window) - 1):
                tok = window[j + 1]
                if not given[tok]:
                    total -= float(logp[j, tok])
                    scored += 1
        notes += sum(1 for t in body if S.is_dur(t))
    return {
        "nll_per_note_nats": total / max(1, notes),
        "nll_per_token_nats": total / max(1, scored),
        "tokens": scored,
        "notes": notes,
        "unit": "melody notes (the song model writes the top line; chords and form are given)",
    }


def validation_nll(val: list[Piece], train: list[Piece], model_dir: Path) -> dict[str, dict[str, object]]:
    """NLL per note of the four models on ``val`` (a missing checkpoint is reported, not fatal)."""
    from personalize.generate.baselines.lstm_markov import (
        MarkovChain,
        count_notes,
        load_lstm,
        lstm_total_nll,
        piece_sequences,
    )
    from personalize.generate.baselines.vae import elbo_per_note, load_vae, piece_phrases

    out: dict[str, dict[str, object]] = {}
    notes = count_notes(val)

    def attempt(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            result = fn()
            result["seconds"] = round(time.perf_counter() - t0, 1)
            out[name] = result
        except FileNotFoundError as exc:
            out[name] = {"error": str(exc)}

    def transformer(folder: str = "transformer") -> dict[str, object]:
        config = model_dir / folder / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("representation") == "song":
            from personalize.generate.song.writer import SongGenerator

            return song_nll(SongGenerator.load(model_dir / folder).melody.model, val)
        from personalize.generate.sample import TransformerGenerator

        return transformer_nll(TransformerGenerator.load(model_dir / folder).model, val)

    def transformer_v1() -> dict[str, object]:
        return transformer("transformer_v1")

    def vae() -> dict[str, object]:
        model, _ = load_vae(model_dir / "vae")
        phrases = [ph for p in val for ph in piece_phrases(p, model.cfg.phrase_bars)]
        stats = elbo_per_note(model, phrases)
        return {
            "nll_per_note_nats": stats["neg_elbo_per_note_nats"],
            "bound": "negative ELBO (upper bound on NLL)",
            "recon_nll_per_note_nats": stats["recon_nll_per_note_nats"],
            "kl_per_note_nats": stats["kl_per_note_nats"],
            "notes": stats["notes"],
        }

    def lstm() -> dict[str, object]:
        model = load_lstm(model_dir / "baselines" / "lstm.pt")
        return {"nll_per_note_nats": lstm_total_nll(model, piece_sequences(val)) / notes, "notes": notes}

    def markov() -> dict[str, object]:
        chain = MarkovChain().fit(piece_sequences(train), piece_sequences(val))
        return {
            "nll_per_note_nats": chain.total_nll(piece_sequences(val)) / notes,
            "notes": notes,
            "alpha": chain.alpha,
            "beta": chain.beta,
        }

    models = [("transformer", transformer), ("vae", vae), ("lstm", lstm), ("markov", markov)]
    if (model_dir / "transformer_v1" / "config.json").is_file():  # the first model, kept to compare with
        models.insert(1, ("transformer_v1", transformer_v1))
    for name, fn in models:
        attempt(name, fn)
    for result in out.values():
        if "nll_per_note_nats" in result:
            result["nll_per_note_bits"] = float(result["nll_per_note_nats"]) / math.log(2)
    return out


# ----------------------------------------------------------------------------------------------------------
# Quality metrics against the corpus


def metric_table(pms: list[pretty_midi.PrettyMIDI], keys: list[tuple[int, str]]) -> dict[str, list[float]]:
    """Every music metric (:mod:`personalize.music.metrics`) over pieces, each in its key; drum parts only
    mark the texture; pieces with no pitched notes are skipped."""
    values: dict[str, list[float]] = {m.name: [] for m in M.METRICS}
    for pm, (key_pc, mode) in zip(pms, keys, strict=True):
        score = score_from_midi(pm)
        if not score.parts:
            continue
        for k, v in M.measure(score, key_pc, mode).items():
            values[k].append(v)
    return values


def compare_metrics(generated: dict[str, list[float]], corpus: dict[str, list[float]]) -> dict[str, dict]:
    """Generated median vs the corpus 5-95 % band, and the Yang & Lerch overlap area, per metric."""
    from personalize.evaluate.music.overlap import overlap

    out = {}
    for m in M.METRICS:
        g = np.asarray(generated[m.name], dtype=float)
        c = np.asarray(corpus[m.name], dtype=float)
        g, c = g[np.isfinite(g)], c[np.isfinite(c)]
        if len(g) == 0 or len(c) < 2:
            out[m.name] = {"error": "not enough pieces to compare"}
            continue
        lo, hi = np.percentile(c, [5, 95])
        med = float(np.median(g))
        out[m.name] = {
            "description": m.description,
            "generated_median": med,
            "corpus_median": float(np.median(c)),
            "corpus_p5": float(lo),
            "corpus_p95": float(hi),
            "inside_band": bool(lo <= med <= hi),
            "overlap_yang_lerch": overlap(g, c),
            "n_generated": len(g),
            "n_corpus": len(c),
        }
    return out


# ----------------------------------------------------------------------------------------------------------
# Control fidelity


def _fidelity(measurements: list[dict[str, object]]) -> dict[str, object]:
    n = len(measurements)
    key_ok = sum(bool(m.get("key_ok")) for m in measurements)
    relative = sum(bool(m.get("key_relative_confusion")) for m in measurements)
    tempo_err = [
        abs(float(m["tempo_bpm"]) - float(a)) / float(a)
        for m, a in ((m, m["_asked_tempo"]) for m in measurements)
    ]
    return {
        "pieces": n,
        "key_accuracy": key_ok / n,
        "key_relative_confusions": relative / n,
        "key_other_errors": (n - key_ok - relative) / n,
        "instrument_f1": float(np.mean([float(m["instrument_f1"]) for m in measurements])),
        "instrument_set_exact": sum(bool(m.get("programs_ok")) for m in measurements) / n,
        "in_range_share": float(np.mean([float(m["in_range_share"]) for m in measurements])),
        "in_range_share_min": float(np.min([float(m["in_range_share"]) for m in measurements])),
        "tempo_error_median_pct": 100 * float(np.median(tempo_err)),
        "tempo_error_max_pct": 100 * float(np.max(tempo_err)),
        "meter_ok_share": sum(bool(m.get("meter_ok")) for m in measurements) / n,
        "density_in_bin_share": sum(bool(m.get("density_ok")) for m in measurements) / n,
        "all_controls_met_share": sum(
            all(
                bool(m.get(c))
                for c in ("key_ok", "tempo_ok", "meter_ok", "programs_ok", "range_ok", "density_ok")
            )
            for m in measurements
        )
        / n,
    }


def _density_confusion(measurements: list[dict[str, object]], controls: list[Controls]) -> list[list[int]]:
    table = [[0] * N_DENSITY_BINS for _ in range(N_DENSITY_BINS)]
    for m, c in zip(measurements, controls, strict=True):
        table[c.density_bin][int(m["density_bin"])] += 1
    return table


# ----------------------------------------------------------------------------------------------------------
# Plots


def plot_metrics(
    generated: dict[str, list[float]], corpus: dict[str, list[float]], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(M.METRICS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(M.METRICS) :]:
        ax.axis("off")
    for ax, m in zip(axes.ravel(), M.METRICS, strict=False):
        g = np.asarray(generated[m.name], dtype=float)
        c = np.asarray(corpus[m.name], dtype=float)
        g, c = g[np.isfinite(g)], c[np.isfinite(c)]
        if len(c):
            lo, hi = np.percentile(c, [5, 95])
            ax.axvspan(lo, hi, color="0.85", label="corpus 5-95 %")
        both = np.concatenate([g, c]) if len(g) + len(c) else np.array([0.0, 1.0])
        bins = np.linspace(both.min(), both.max() + 1e-9, 30)
        ax.hist(c, bins=bins, density=True, alpha=0.55, label="corpus (test split)")
        ax.hist(g, bins=bins, density=True, alpha=0.55, label="generated")
        if len(g):
            ax.axvline(float(np.median(g)), color="C1", linestyle="--", label="generated median")
        ax.set_title(f"{m.name}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_piano_rolls(pms: list[pretty_midi.PrettyMIDI], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pms), 1, figsize=(12, 2.3 * len(pms)), squeeze=False)
    for ax, pm, label in zip(axes[:, 0], pms, labels, strict=True):
        for k, inst in enumerate(pm.instruments):
            name = "drums" if inst.is_drum else pretty_midi.program_to_instrument_name(inst.program)
            segs = [(n.start, n.end - n.start) for n in inst.notes]
            for n in inst.notes:
                ax.plot(
                    [n.start, n.end], [n.pitch, n.pitch], color=f"C{k}", linewidth=2.2, solid_capstyle="butt"
                )
            if segs:
                ax.plot([], [], color=f"C{k}", label=name)
        for t in pm.get_downbeats():
            ax.axvline(t, color="0.85", linewidth=0.6, zorder=0)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("MIDI pitch")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_fidelity(before: dict[str, object], after: dict[str, object], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["key_accuracy", "instrument_f1", "in_range_share", "meter_ok_share", "density_in_bin_share"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(x - 0.2, [float(before[n]) for n in names], 0.4, label="first try (before resampling)")
    ax.bar(x + 0.2, [float(after[n]) for n in names], 0.4, label="after resampling")
    for n, target in TARGETS.items():
        if n in names:
            i = names.index(n)
            ax.plot([i - 0.45, i + 0.45], [target, target], color="k", linewidth=1)
    ax.set_xticks(x, [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of pieces")
    ax.set_title(title + " (black lines: targets)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate_generator(
    model: str = "transformer",
    n: int = 240,
    out_dir: str | Path | None = None,
    seed: int = 0,
    max_attempts: int = 4,
    model_dir: str | Path | None = None,
    corpus_dir: str | Path | None = None,
    bars: int = BARS,
    with_nll: bool = True,
    progress: bool = True,
    threads: int = 1,
    guidance: bool = True,
) -> dict[str, object]:
    """Run the evaluation and write ``eval.json`` and the PNG plots into ``out_dir``; return the report.

    ``guidance=False`` turns off every decoding rule that steers toward the asked key or density (the
    song model's scale constraint and density steer; the first model's key and density guidance), to see
    what the model itself learned to follow."""
    from rich.progress import Progress

    from personalize.config import get_settings
    from personalize.generate import generate_verified, load_generator

    settings = get_settings()
    model_root = Path(model_dir) if model_dir is not None else settings.model_dir
    out = Path(out_dir) if out_dir is not None else settings.data_dir / "reports" / f"eval_generator_{model}"
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(corpus_dir) if corpus_dir is not None else None
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    from personalize.corpus.build import load_manifest

    load_manifest(corpus)  # the corpus the pieces are measured against: missing, say so before generating
    started = time.perf_counter()

    # One thread: on a shared machine, torch's thread pool spins against other jobs and runs far slower.
    torch.set_num_threads(threads)
    generator = load_generator(model_root / model, name=model, threads=threads)
    if not guidance:
        if hasattr(generator, "scale"):
            generator.scale = False
        melody = getattr(generator, "melody", None)
        if melody is not None and hasattr(melody, "density_gain"):
            melody.density_gain = 0.0  # the song model's density steer
            melody.exact_counts = False  # and its bars' note counts held exactly
        if hasattr(generator, "key_guidance"):
            generator.key_guidance, generator.density_guidance = 0.0, False
    controls = evaluation_controls(n, bars)
    pieces = []
    chunk = 24
    gen_started = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"generating with {model}", total=n)
        for start in range(0, n, chunk):
            batch = controls[start : start + chunk]
            pieces += generate_verified(generator, batch, seed=seed + start, max_attempts=max_attempts)
            bar.update(task, advance=len(batch))
    generation_s = time.perf_counter() - gen_started
    first = [dict(p.first_measurement, _asked_tempo=p.controls.tempo_bpm) for p in pieces]
    final = [dict(p.measurement, _asked_tempo=p.controls.tempo_bpm) for p in pieces]
    before, after = _fidelity(first), _fidelity(final)
    after["mean_attempts"] = float(np.mean([p.attempts for p in pieces]))
    after["verified_share"] = sum(p.ok for p in pieces) / len(pieces)

    test_pieces = scorable_pieces(load_pieces(corpus, split="test"))
    corpus_values = metric_table(
        [piece_to_midi(p) for p in test_pieces], [(p.found_key_pc, p.found_mode) for p in test_pieces]
    )
    generated_values = metric_table(
        [p.midi for p in pieces], [(p.controls.key_pc, p.controls.mode) for p in pieces]
    )
    quality = compare_metrics(generated_values, corpus_values)

    nll: dict[str, dict[str, object]] = {}
    if with_nll:
        val = scorable_pieces(load_pieces(corpus, split="val"))
        train = scorable_pieces(load_pieces(corpus, split="train"))
        nll = validation_nll(val, train, model_root)

    title = f"{model}: {n} pieces, {bars} bars"
    plot_metrics(generated_values, corpus_values, out / "metrics_vs_corpus.png", f"Quality metrics, {title}")
    picks = [0, n // 4, n // 2, (3 * n) // 4][: min(4, n)]
    plot_piano_rolls(
        [pieces[i].midi for i in picks],
        [pieces[i].controls.describe() for i in picks],
        out / "piano_rolls.png",
    )
    plot_fidelity(before, after, out / "control_fidelity.png", f"Control fidelity, {title}")

    def _nll(name: str) -> float | None:
        v = nll.get(name, {}).get("nll_per_note_nats")
        return float(v) if v is not None else None

    t_nll, l_nll, m_nll = _nll("transformer"), _nll("lstm"), _nll("markov")
    targets = {
        "key_accuracy_before_resampling": {"value": before["key_accuracy"], "target": ">= 0.95"},
        "instrument_f1": {"value": before["instrument_f1"], "target": "= 1.0"},
        "in_range_share": {"value": before["in_range_share"], "target": ">= 0.99"},
        "density_in_bin_share": {"value": before["density_in_bin_share"], "target": ">= 0.90"},
        "metric_medians_inside_corpus_band": {
            "value": sum(bool(q.get("inside_band")) for q in quality.values()),
            "target": f"= {len(quality)}",
        },
        "transformer_nll_beats_baselines": {
            "value": None if None in (t_nll, l_nll, m_nll) else bool(t_nll < l_nll and t_nll < m_nll),
            "target": "true",
        },
    }
    targets["key_accuracy_before_resampling"]["met"] = before["key_accuracy"] >= TARGETS["key_accuracy"]
    targets["instrument_f1"]["met"] = before["instrument_f1"] >= TARGETS["instrument_f1"] - 1e-12
    targets["in_range_share"]["met"] = before["in_range_share"] >= TARGETS["in_range_share"]
    targets["density_in_bin_share"]["met"] = before["density_in_bin_share"] >= TARGETS["density_in_bin_share"]
    targets["metric_medians_inside_corpus_band"]["met"] = all(
        bool(q.get("inside_band")) for q in quality.values()
    )
    targets["transformer_nll_beats_baselines"]["met"] = (
        targets["transformer_nll_beats_baselines"]["value"] is True
    )

    report: dict[str, object] = {
        "model": model,
        "model_version": getattr(generator, "version", getattr(generator, "model_version", model)),
        "pieces": n,
        "bars": bars,
        "seed": seed,
        "max_attempts": max_attempts,
        "grid": {
            "keys": 24,
            "tempi_bpm": list(TEMPO_GRID_BPM),
            "meters": list(METER_GRID),
            "density_bins": list(range(N_DENSITY_BINS)),
            "instrument_sets": [list(s) for s in INSTRUMENT_SETS],
        },
        "before_resampling": before,
        "after_resampling": after,
        "density_confusion_asked_by_measured": _density_confusion(first, controls),
        "quality_vs_corpus_test": quality,
        "val_nll_per_note": nll,
        "targets": targets,
        "generation_seconds": round(generation_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "plots": [str(out / f) for f in ("metrics_vs_corpus.png", "piano_rolls.png", "control_fidelity.png")],
    }
    (out / "eval.json").write_text(json.dumps(report, indent=1, default=_json_default))
    return report


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def report_table(report: dict[str, object]) -> object:
    """The report's headline figures as a rich table."""
    from rich.table import Table

    table = Table(
        title=f"eval generator: {report['model']} ({report['pieces']} pieces, {report['bars']} bars)"
    )
    table.add_column("figure")
    table.add_column("first try", justify="right")
    table.add_column("after resampling", justify="right")
    table.add_column("target", justify="right")
    b, a = report["before_resampling"], report["after_resampling"]
    rows = [
        ("key accuracy", "key_accuracy", ">= 95 %"),
        ("  relative major/minor confusions", "key_relative_confusions", ""),
        ("instrument-set F1", "instrument_f1", "1.0"),
        ("notes inside instrument range", "in_range_share", ">= 99 %"),
        ("density inside its bin", "density_in_bin_share", ">= 90 %"),
        ("meter as asked", "meter_ok_share", ""),
        ("all controls met", "all_controls_met_share", ""),
    ]
    for label, key, target in rows:
        table.add_row(label, f"{100 * b[key]:.1f} %", f"{100 * a[key]:.1f} %", target)
    table.add_row(
        "tempo error (median / max)",
        f"{b['tempo_error_median_pct']:.2f} / {b['tempo_error_max_pct']:.2f} %",
        "",
        "as asked",
    )
    for name, q in report["quality_vs_corpus_test"].items():
        if "error" in q:
            table.add_row(name, q["error"], "", "")
            continue
        inside = "inside" if q["inside_band"] else "OUTSIDE"
        table.add_row(
            f"{name} median (overlap)",
            f"{q['generated_median']:.3f} ({q['overlap_yang_lerch']:.2f})",
            "",
            f"band {q['corpus_p5']:.3f}-{q['corpus_p95']:.3f}: {inside}",
        )
    for name, r in report["val_nll_per_note"].items():
        value = f"{r['nll_per_note_nats']:.3f}" if "nll_per_note_nats" in r else str(r.get("error"))
        table.add_row(
            f"val NLL per note, {name} (nats)",
            value,
            "",
            "transformer lowest" if name == "transformer" else "",
        )
    return table
