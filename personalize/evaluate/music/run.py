"""``personalize eval music``: can the evaluation tell music from noise, and where does the shipped model sit?

Four systems are measured the same way, texture by texture (chorale, tune, band):

- ``corpus``: held-out corpus pieces (the val and test splits, never trained on);
- ``generated``: the shipped generator through :func:`personalize.generate.generate_verified`, on requests
  each matched to a held-out piece of its texture (its mode, meter, melody density bin and length; the
  two-sample test compares music written for the same controls), keys cycling through all twelve tonics,
  six tempi and several instrument sets per texture (how well the generator follows controls over their
  whole range is ``personalize eval generator``'s question);
- ``random_in_scale`` and ``markov``: the two baselines of :mod:`personalize.evaluate.music.baselines`, on
  the same requests.

A fifth set, ``corpus_train`` (train-split pieces, as many as held out), is the corpus measured against
itself: the overlap and AUC that "looks like the corpus" can reach.

For every metric: median and 5-95 % band per system, Yang & Lerch overlap with the held-out corpus; the
pooled interval and duration distributions; the two-sample classifier's AUC per system; the music gate's
pass rate per system; and the issue's headline figures with a pass/fail per target.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.corpus import Piece, load_pieces
from personalize.evaluate.music.baselines import MarkovChain, RandomInScale, training_lines
from personalize.evaluate.music.discriminate import feature_names, feature_vector, two_sample_auc
from personalize.evaluate.music.overlap import (
    BANDWIDTH_FLOOR,
    histogram_overlap,
    overlap,
    spread,
    summary,
)
from personalize.evaluate.music.references import (
    CHORALE_COLLECTIONS,
    Track,
    corpus_tracks,
    track_from_request,
)
from personalize.generate import METERS, Controls
from personalize.music import metrics as M
from personalize.music.controls import bar_quarters, density_bin
from personalize.music.gate import MusicGate, calibrate, default_gate_path
from personalize.music.gm import DRUMS
from personalize.music.score import TEXTURES, Score, score_from_midi

SYSTEMS = ("corpus", "generated", "random_in_scale", "markov")
SELF = "corpus_train"
TEMPO_GRID_BPM = (66.0, 80.0, 96.0, 112.0, 128.0, 144.0)
METER_GRID = ("4/4", "3/4", "6/8", "2/4")
INSTRUMENT_SETS: dict[str, tuple[tuple[int | str, ...], ...]] = {
    "chorale": (
        (40, 41, 42, 43),  # string quartet with contrabass
        (68, 71, 70, 43),  # oboe, clarinet, bassoon, contrabass
        (56, 60, 57, 58),  # trumpet, horn, trombone, tuba
        (56, 60, 58),  # brass trio
    ),
    "tune": ((73,), (40,), (71,), (0,), (73, 42), (71, 70)),
    "band": ((0, 33, DRUMS), (24, 32, DRUMS), (73, 0, 33, DRUMS), (56, 24, 33, DRUMS)),
}
MIN_BARS, MAX_BARS = 8, 32
COMPOUND_FEEL_SHARE = 0.75  # a compound-meter track "moves in compound time" when this share of bars does
# The evaluation can fail: on these metrics the baselines' overlap with the held-out corpus must stay clearly
# (by CLEARLY) below the corpus's own self-overlap. A first-order Markov chain copies the corpus's interval
# statistics by construction (so do the figures: steps 0.57-0.63 against 0.61-0.65), so it is held
# to the repetition metrics only; random notes to both.
MELODIC = ("melody_step_share", "melody_leap_share", "melody_interval_entropy_bits")
REPETITION = ("bar_self_similarity", "repeated_bar_share", "has_repeated_2bar_unit", "has_returning_section")
CLEARLY = 0.05


@dataclass
class Measured:
    """One track with its score, metric values, feature vector and gate verdict."""

    track: Track
    score: Score
    values: dict[str, float]
    features: np.ndarray
    gate_reasons: list[str] = field(default_factory=list)


def request_controls(texture: str, n: int, references: list[Track], seed: int) -> list[Controls]:
    """``n`` requests of one texture, each matched to a held-out piece of that texture: its mode, meter
    (when the generator writes it), melody density bin and length, so that the two-sample test compares
    music written for the same controls. Keys cycle through all twelve tonics, tempi and instruments rotate
    with different strides. With no reference pieces, modes, meters and densities rotate too."""
    rng = np.random.default_rng(seed)
    sets = INSTRUMENT_SETS[texture]
    order = rng.permutation(len(references)) if references else []
    out = []
    for i in range(n):
        cycle = i // 24
        tempo = TEMPO_GRID_BPM[(i + cycle) % len(TEMPO_GRID_BPM)]
        programs = list(sets[(i * 5 + cycle) % len(sets)])
        if references:
            ref = references[int(order[i % len(references)])]
            score = score_from_midi(ref.midi)
            quarters = max(1.0, ref.bars * bar_quarters(ref.meter))
            # Every meter the generator writes is matched (a reel in 2/2, a slip jig in 9/8): a reel asked
            # for in 4/4 would compare its rhythm with a bar of another length.
            meter = ref.meter if ref.meter in METERS else METER_GRID[i % len(METER_GRID)]
            mode, density = ref.mode, density_bin(len(score.melody) / quarters)
            bars = int(np.clip(ref.bars, MIN_BARS, MAX_BARS))
        else:
            mode = "major" if i % 2 == 0 else "minor"
            meter = METER_GRID[(i // 2 + cycle) % len(METER_GRID)]
            density, bars = (i // 3 + cycle) % 4, 16
        out.append(Controls((i * 7) % 12, mode, tempo, meter, density, programs, bars=bars))
    return out


def _measure(track: Track, gate: MusicGate) -> Measured:
    score = score_from_midi(track.midi)
    values = M.measure(score, track.key_pc, track.mode)
    verdict = gate.judge(score, track.key_pc, track.mode, track.texture, values=values)
    return Measured(track, score, values, feature_vector(score, values), verdict.reasons)


def _generate(
    controls: list[Controls], model: str, model_dir: Path | None, seed: int, max_attempts: int, threads: int
) -> tuple[list, float, str]:
    import torch

    from personalize.generate import generate_verified, load_generator

    torch.set_num_threads(threads)  # a shared machine: one thread runs faster than a contended pool
    kwargs = {"threads": threads} if model == "transformer" else {}
    generator = load_generator(None if model_dir is None else Path(model_dir) / model, name=model, **kwargs)
    version = str(getattr(generator, "version", model))
    started = time.perf_counter()
    pieces = []
    chunk = 24
    for start in range(0, len(controls), chunk):
        pieces += generate_verified(
            generator, controls[start : start + chunk], seed=seed + start, max_attempts=max_attempts
        )
    return pieces, time.perf_counter() - started, version


# ----------------------------------------------------------------------------------------------------------
# Summaries


def _metric_table(sets: dict[str, list[Measured]], reference: list[Measured]) -> dict[str, dict]:
    """Per metric and system: summary and Yang & Lerch overlap against ``reference``."""
    table: dict[str, dict] = {}
    for m in M.METRICS:
        ref = [x.values[m.name] for x in reference]
        # One kernel floor per metric, from its spread over every system, so overlaps compare like with like.
        floor = BANDWIDTH_FLOOR * spread(np.array([x.values[m.name] for xs in sets.values() for x in xs]))
        row: dict[str, dict] = {}
        for system, measured in sets.items():
            vals = [x.values[m.name] for x in measured]
            entry = summary(vals)
            if m.binary:
                entry["share"] = entry["mean"]
            if system != "corpus":
                entry["overlap"] = overlap(vals, ref, floor)
            row[system] = entry
        table[m.name] = {"family": m.family, "description": m.description, "systems": row}
    return table


def _histograms(sets: dict[str, list[Measured]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    ref_iv = sum((M.interval_histogram(x.score) for x in sets["corpus"]), np.zeros(2 * M.INTERVAL_CLIP + 1))
    ref_du = sum((M.duration_histogram(x.score) for x in sets["corpus"]), np.zeros(M.DURATION_CLIP))
    for system, measured in sets.items():
        iv = sum((M.interval_histogram(x.score) for x in measured), np.zeros_like(ref_iv))
        du = sum((M.duration_histogram(x.score) for x in measured), np.zeros_like(ref_du))
        out[system] = {
            "interval_share_-12_to_12": [round(float(v), 4) for v in iv / max(1.0, iv.sum())],
            "duration_share_1_to_16": [round(float(v), 4) for v in du / max(1.0, du.sum())],
            "interval_overlap_with_corpus": histogram_overlap(iv, ref_iv),
            "duration_overlap_with_corpus": histogram_overlap(du, ref_du),
        }
    return out


def _voice_leading_rates(measured: list[Measured]) -> dict[str, float | None]:
    """Pooled parallels per 100 chord changes and share of beat slices with a crossing (all pieces' counts
    together)."""
    vls = [M.voice_leading(x.score) for x in measured]
    vls = [v for v in vls if v is not None]
    changes = sum(v.chord_changes for v in vls)
    slices = sum(v.slices for v in vls)
    crossing = sum(v.crossings for v in vls) / slices if slices else None
    if not changes:
        return {
            "parallel_fifths_per_100_changes": None,
            "parallel_octaves_per_100_changes": None,
            "voice_crossing_share": crossing,
        }
    return {
        "parallel_fifths_per_100_changes": 100 * sum(v.parallel_fifths for v in vls) / changes,
        "parallel_octaves_per_100_changes": 100 * sum(v.parallel_octaves for v in vls) / changes,
        "voice_crossing_share": crossing,
    }


def _pooled(
    by_texture: dict[str, dict[str, list[Measured]]], system: str
) -> tuple[list[Measured], np.ndarray]:
    """A system's tracks over all textures, each weighted so that every texture counts equally."""
    xs, ws = [], []
    for sets in by_texture.values():
        got = sets.get(system, [])
        if not got:
            continue
        xs += got
        ws += [1.0 / len(got)] * len(got)
    return xs, np.asarray(ws)


def _weighted_share(xs: list[Measured], ws: np.ndarray, test) -> float | None:
    vals = np.array([test(x) for x in xs], dtype=float)
    keep = np.isfinite(vals)
    return float(np.average(vals[keep], weights=ws[keep])) if keep.any() else None


def _headline(by_texture: dict[str, dict[str, list[Measured]]]) -> dict[str, dict[str, object]]:
    """The issue's table, measured here: one row per figure, one column per system (textures weighed equally;
    the 4-part rows read the chorale texture)."""
    systems = [s for s in (*SYSTEMS, SELF) if any(sets.get(s) for sets in by_texture.values())]

    def med_band(name: str):
        def f(system: str) -> dict[str, float | None]:
            xs, ws = _pooled(by_texture, system)
            s = summary([x.values[name] for x in xs], ws)
            return {k: s[k] for k in ("median", "p5", "p25", "p75", "p95")}

        return f

    def share(name: str):
        def f(system: str) -> float | None:
            xs, ws = _pooled(by_texture, system)
            return _weighted_share(xs, ws, lambda x: x.values[name])

        return f

    def chorale(system: str) -> list[Measured]:
        return by_texture.get("chorale", {}).get(system, [])

    def chorale_share(name: str):
        return lambda s: _weighted_share(chorale(s), np.ones(len(chorale(s))), lambda x: x.values[name])

    def compound(system: str) -> float | None:
        xs, ws = _pooled(by_texture, system)
        keep = [i for i, x in enumerate(xs) if x.track.meter == "6/8"]
        return _weighted_share(
            [xs[i] for i in keep],
            ws[keep],
            lambda x: float(x.values["metric_feel_share"] >= COMPOUND_FEEL_SHARE),
        )

    rows = {
        "melody: stepwise intervals (share)": med_band("melody_step_share"),
        "melody: repeated notes (share)": med_band("melody_repeat_share"),
        "melody: leaps of a fourth or more (share)": med_band("melody_leap_share"),
        "melody notes on the tonic (share)": med_band("melody_tonic_share"),
        "bar self-similarity": med_band("bar_self_similarity"),
        "pieces with a repeated 2-bar unit": share("has_repeated_2bar_unit"),
        "pieces with a section returning >= 4 bars later": share("has_returning_section"),
        "pieces ending on the tonic": share("ends_on_tonic"),
        "4-part: parallel 5ths per 100 chord changes": lambda s: _voice_leading_rates(chorale(s))[
            "parallel_fifths_per_100_changes"
        ],
        "4-part: parallel 8ves per 100 chord changes": lambda s: _voice_leading_rates(chorale(s))[
            "parallel_octaves_per_100_changes"
        ],
        "4-part: voice crossing (share of beats)": lambda s: _voice_leading_rates(chorale(s))[
            "voice_crossing_share"
        ],
        "4-part: ends on the tonic chord": chorale_share("ends_on_tonic"),
        "4-part: dissonant beat slices (share)": chorale_share("dissonant_slice_share"),
        "6/8 tracks that move in compound time": compound,
    }
    return {name: {s: fn(s) for s in systems} for name, fn in rows.items()}


def _targets(report: dict[str, object]) -> dict[str, dict[str, object]]:
    """Pass/fail of the generated tracks against the corpus, figure by figure."""
    head = report["headline"]
    out: dict[str, dict[str, object]] = {}

    def iqr_target(row: str) -> None:
        gen, corpus = head[row]["generated"]["median"], head[row]["corpus"]
        lo, hi = corpus["p25"], corpus["p75"]
        out[row] = {
            "generated": gen,
            "corpus": corpus["median"],
            "target": f"generated median inside the corpus's middle half {lo:.3f}-{hi:.3f}",
            "met": gen is not None and lo <= gen <= hi,
        }

    def share_target(row: str, factor: float = 0.8) -> None:
        gen, corpus = head[row]["generated"], head[row]["corpus"]
        out[row] = {
            "generated": gen,
            "corpus": corpus,
            "target": f">= {factor:.0%} of the corpus share",
            "met": gen is not None and corpus is not None and gen >= factor * corpus,
        }

    def at_most_target(row: str, slack: float) -> None:
        gen, corpus = head[row]["generated"], head[row]["corpus"]
        out[row] = {
            "generated": gen,
            "corpus": corpus,
            "target": f"<= corpus + {slack:g}",
            "met": gen is not None and corpus is not None and gen <= corpus + slack,
        }

    for row in (
        "melody: stepwise intervals (share)",
        "melody: repeated notes (share)",
        "melody notes on the tonic (share)",
        "bar self-similarity",
    ):
        iqr_target(row)
    for row in (
        "pieces with a repeated 2-bar unit",
        "pieces with a section returning >= 4 bars later",
        "4-part: ends on the tonic chord",
        "6/8 tracks that move in compound time",
    ):
        share_target(row)
    at_most_target("4-part: parallel 5ths per 100 chord changes", 1.0)
    at_most_target("4-part: parallel 8ves per 100 chord changes", 1.0)
    row = "4-part: voice crossing (share of beats)"
    gen = head[row]["generated"]
    out[row] = {
        "generated": gen,
        "corpus": head[row]["corpus"],
        "target": "<= 0.02 of the beats",
        "met": gen is not None and gen <= 0.02,
    }
    auc = report["auc"]["all"]["generated"]["auc"]
    out["two-sample AUC, generated vs corpus"] = {
        "generated": auc,
        "corpus": report["auc"]["all"][SELF]["auc"],
        "target": "<= 0.75 (hard to tell from the corpus)",
        "met": auc is not None and auc <= 0.75,
    }
    gate = report["gate"]["pass_rate"]["all"]
    out["music gate pass rate"] = {
        "generated": gate["generated"],
        "corpus": gate["corpus"],
        "target": ">= 0.9 of generated tracks",
        "met": gate["generated"] is not None and gate["generated"] >= 0.9,
    }
    return out


def _can_fail(report: dict[str, object]) -> dict[str, object]:
    """Checks that the evaluation separates noise from music (it is not a test everything passes)."""
    checks: dict[str, object] = {}
    held_to = {"random_in_scale": MELODIC + REPETITION, "markov": REPETITION}
    for texture, t in report["textures"].items():
        for baseline, metrics in held_to.items():
            for metric in metrics:
                systems = t["metrics"][metric]["systems"]
                ov, self_overlap = systems[baseline].get("overlap"), systems[SELF].get("overlap")
                if ov is None or self_overlap is None:
                    continue
                checks[f"{texture}: {baseline} overlap clearly below corpus self-overlap on {metric}"] = {
                    "overlap": ov,
                    "self_overlap": self_overlap,
                    "met": ov < self_overlap - CLEARLY,
                }
    rates = report["gate"]["pass_rate"]["all"]
    checks["gate rejects >= 90 % of random-in-scale"] = {
        "pass_rate": rates["random_in_scale"],
        "met": rates["random_in_scale"] <= 0.1,
    }
    checks["gate rejects most Markov pieces"] = {"pass_rate": rates["markov"], "met": rates["markov"] < 0.5}
    checks["gate accepts >= 85 % of held-out corpus"] = {
        "pass_rate": rates["corpus"],
        "met": rates["corpus"] >= 0.85,
    }
    return checks


# ----------------------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate_music(
    n_tracks: int = 240,
    seed: int = 0,
    corpus_dir: Path | None = None,
    model: str = "transformer",
    model_dir: Path | None = None,
    out: Path | None = None,
    max_attempts: int = 4,
    gate_path: Path | None = None,
    write_gate: bool = False,
    threads: int = 1,
    generated: bool = True,
    pieces: list[Piece] | None = None,
) -> dict[str, object]:
    """Run the music evaluation (module docstring) on ``n_tracks`` requests spread evenly over the three
    textures; return the report, and write ``eval_music.json``, ``pieces.csv`` and ``metrics.png`` into
    ``out`` when given.

    The gate comes from ``gate_path`` (default ``models/music_gate.json``); when that file is missing, or with
    ``write_gate=True``, it is calibrated now on the corpus train split (and saved with ``write_gate``).
    ``generated=False`` skips the model and measures the corpus and the baselines only; ``pieces`` replaces
    the corpus read from ``corpus_dir`` (their ``split`` decides train or held out).
    """
    if n_tracks < 3:
        raise ValueError(f"n_tracks must be at least 3 (one per texture), got {n_tracks}")
    started = time.perf_counter()
    if pieces is None:
        pieces = load_pieces(corpus_dir)
    train = [p for p in pieces if p.split == "train"]
    held = [p for p in pieces if p.split != "train"]
    rng = np.random.default_rng(seed)

    references = {t: corpus_tracks(held, t) for t in TEXTURES}
    train_refs = {t: corpus_tracks(train, t, system=SELF) for t in TEXTURES}
    missing = [t for t in TEXTURES if not references[t] or not train_refs[t]]
    if missing:
        raise ValueError(
            f"the corpus at {corpus_dir or 'the default corpus folder'} has no held-out or train pieces for "
            f"{', '.join(missing)}: build it with `personalize corpus build` (Bach chorales and the fiddle tunes)"
        )

    gate_file = Path(gate_path) if gate_path is not None else default_gate_path()
    if write_gate or not gate_file.is_file():
        gate = calibrate(
            {t: [(score_from_midi(x.midi), x.key_pc, x.mode) for x in v] for t, v in train_refs.items()}
        )
        gate.built_from["corpus"] = {
            "split": "train",
            "collections": sorted({p.collection for p in train}),
            "pieces": len(train),
            "held_out_sources": held_out_sources(train, held),
        }
        gate_source = (
            f"calibrated now on the corpus train split ({sum(map(len, train_refs.values()))} pieces)"
        )
        if write_gate:
            gate.save(gate_file)
            gate_source += f", saved to {gate_file}"
    else:
        gate = MusicGate.load(gate_file)
        gate_source = str(gate_file)

    per_texture = [n_tracks // 3 + (1 if i < n_tracks % 3 else 0) for i in range(3)]
    controls = {
        t: request_controls(t, n, references[t], seed + 101 * i)
        for i, (t, n) in enumerate(zip(TEXTURES, per_texture, strict=True))
    }
    for texture, cs in controls.items():
        bad = [c.meter for c in cs if c.meter not in METERS]
        if bad:
            raise ValueError(f"{texture}: meters {bad} are not ones the generator knows")

    tracks: dict[str, dict[str, list[Track]]] = {t: {} for t in TEXTURES}
    timings: dict[str, float] = {}
    verification: dict[str, object] = {}
    for texture in TEXTURES:
        tracks[texture]["corpus"] = references[texture]
        k = min(len(train_refs[texture]), len(references[texture]))
        pick = rng.choice(len(train_refs[texture]), size=k, replace=False)
        tracks[texture][SELF] = [train_refs[texture][i] for i in sorted(pick)]

    if generated:
        flat = [(t, c) for t in TEXTURES for c in controls[t]]
        made, seconds, version = _generate(
            [c for _, c in flat], model, model_dir, seed, max_attempts, threads
        )
        timings["generate_s"] = round(seconds, 1)
        for (texture, c), piece in zip(flat, made, strict=True):
            tracks[texture].setdefault("generated", []).append(
                track_from_request("generated", texture, c, piece.midi)
            )
        verification = {
            "model": model,
            "model_version": version,
            "verified_share": sum(p.ok for p in made) / len(made),
            "mean_attempts": float(np.mean([p.attempts for p in made])),
        }

    t0 = time.perf_counter()
    markov = MarkovChain().fit(training_lines(train))
    for i, texture in enumerate(TEXTURES):
        cs = controls[texture]
        for system, model in (("random_in_scale", RandomInScale()), ("markov", markov)):
            midis = model.generate(cs, seed + 7919 * (i + 1) + (0 if system == "markov" else 1))
            tracks[texture][system] = [
                track_from_request(system, texture, c, m) for c, m in zip(cs, midis, strict=True)
            ]
    timings["baselines_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    measured = {
        t: {s: [_measure(x, gate) for x in xs] for s, xs in sets.items()} for t, sets in tracks.items()
    }
    timings["measure_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    systems = [s for s in (*SYSTEMS, SELF) if s in measured["chorale"]]
    report: dict[str, object] = {
        "n_tracks_per_system": {s: sum(len(measured[t].get(s, [])) for t in TEXTURES) for s in systems},
        "seed": seed,
        "textures": {},
    }
    auc: dict[str, dict[str, object]] = {}
    for texture in TEXTURES:
        sets = measured[texture]
        corpus = sets["corpus"]
        groups = [x.track.group or x.track.source for x in corpus]
        auc[texture] = {
            s: two_sample_auc(
                [x.features for x in sets[s]],
                [x.features for x in corpus],
                seed,
                groups,
                [x.track.group or x.track.source for x in sets[s]],
                feature_names(),
            )
            for s in systems
            if s != "corpus"
        }
        report["textures"][texture] = {
            "n": {s: len(sets[s]) for s in systems},
            "metrics": _metric_table({s: sets[s] for s in systems}, corpus),
            "distributions": _histograms({s: sets[s] for s in systems}),
            "auc": auc[texture],
        }
    tex_col = {t: i for i, t in enumerate(TEXTURES)}

    def with_texture(x: Measured) -> np.ndarray:
        return np.r_[x.features, np.eye(len(TEXTURES))[tex_col[x.track.texture]]]

    all_corpus = [x for t in TEXTURES for x in measured[t]["corpus"]]
    auc["all"] = {
        s: two_sample_auc(
            [with_texture(x) for t in TEXTURES for x in measured[t][s]],
            [with_texture(x) for x in all_corpus],
            seed,
            [x.track.group or x.track.source for x in all_corpus],
            [x.track.group or x.track.source for t in TEXTURES for x in measured[t][s]],
            [*feature_names(), *(f"texture_{t}" for t in TEXTURES)],
            # Each texture's two sides weigh the same: the held-out side has 300 tunes and 35 chorales, the
            # generated side as many of each, and the texture alone would tell them apart.
            [*(t for t in TEXTURES for _ in measured[t][s]), *(x.track.texture for x in all_corpus)],
        )
        for s in systems
        if s != "corpus"
    }
    report["auc"] = auc
    report["overlap_mean_over_textures"] = {
        m: {
            s: _mean_or_none(
                [report["textures"][t]["metrics"][m]["systems"][s].get("overlap") for t in TEXTURES]
            )
            for s in systems
            if s != "corpus"
        }
        for m in M.METRIC_NAMES
    }

    def rate(xs: list[Measured]) -> float | None:
        return sum(not x.gate_reasons for x in xs) / len(xs) if xs else None

    def pooled_rate(system: str) -> float | None:
        xs, ws = _pooled(measured, system)
        return _weighted_share(xs, ws, lambda x: float(not x.gate_reasons))

    report["gate"] = {
        "source": gate_source,
        "thresholds": gate.thresholds,
        # "all" weighs the three textures equally, as the generated set does.
        "pass_rate": {
            **{t: {s: rate(measured[t][s]) for s in systems} for t in TEXTURES},
            "all": {s: pooled_rate(s) for s in systems},
        },
        "generated_reasons": _reason_counts([x for t in TEXTURES for x in measured[t].get("generated", [])]),
    }
    report["headline"] = _headline(measured)
    if generated:
        report["targets"] = _targets(report)
        report["verification"] = verification
    report["can_fail"] = _can_fail(report)
    timings["analyse_s"] = round(time.perf_counter() - t0, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    report["timings"] = timings

    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_music.json").write_text(json.dumps(report, indent=1, default=_json_default))
        _write_pieces_csv(measured, out / "pieces.csv")
        from personalize.evaluate.music.plot import plot_metrics

        plot_metrics(measured, out / "metrics.png")
        report["files"] = [str(out / f) for f in ("eval_music.json", "pieces.csv", "metrics.png")]
    return report


def held_out_sources(train: list[Piece], held: list[Piece]) -> list[tuple[str, str]]:
    """``(collection, source file)`` of the chorale and Ryan-tune files none of whose pieces is in ``train``:
    recorded with the gate so that a test can parse a few pieces the gate was never calibrated on."""
    seen = {p.source for p in train}
    wanted = (*CHORALE_COLLECTIONS, "ryans_mammoth")  # one piece per file: cheap to parse one by one
    return sorted({(p.collection, p.source) for p in held if p.collection in wanted and p.source not in seen})


def _mean_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _reason_counts(measured: list[Measured]) -> dict[str, int]:
    """How often each metric is named in a failing track's reasons (the atypicality reason counts apart)."""
    counts: dict[str, int] = {}
    for x in measured:
        for reason in x.gate_reasons:
            key = "atypical" if reason.startswith("atypical") else reason.split(" ")[0]
            counts[key] = counts.get(key, 0) + 1
            if key == "atypical":
                for name in M.METRIC_NAMES:
                    if f"; {name} " in reason or f": {name} " in reason:
                        counts[f"atypical: {name}"] = counts.get(f"atypical: {name}", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _write_pieces_csv(measured: dict[str, dict[str, list[Measured]]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["system", "texture", "source", "key_pc", "mode", "meter", "bars", "gate_passed", *M.METRIC_NAMES]
        )
        for texture, sets in measured.items():
            for system, xs in sets.items():
                for x in xs:
                    t = x.track
                    w.writerow(
                        [system, texture, t.source, t.key_pc, t.mode, t.meter, t.bars, not x.gate_reasons]
                        + [f"{x.values[m]:.4g}" for m in M.METRIC_NAMES]
                    )


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")
