"""The music gate: does a track look like the corpus on the metrics that tell music from noise?

Per texture the gate holds each gated metric's corpus distribution (101 percentiles of the corpus train
split, stored in ``models/music_gate.json`` so the nightly check needs no corpus) and which side of it
means noise: too few steps, too many repeated notes or leaps, too much tonic, nothing that comes back, no
ending on the tonic, downbeats that ignore the tonic chord, parallels, crossings, dissonant beats and
dissonant outer voices where there are several parts, bars that do not move in their meter.

A track fails when

- one metric lies, on its noise side, beyond both the corpus's 0.1th (or 99.9th) percentile and Tukey's
  far-out fence, 3 interquartile ranges past the quartiles (a *hard* miss: a drone on the tonic, a melody
  that never steps), or
- its *atypicality* is above the corpus's: the sum over gated metrics of ``-log10(min(1, 2 p))``, ``p``
  being the corpus share at least as far out on the noise side. A metric on the typical side of the corpus
  median adds nothing, one at the corpus's 5 % tail adds 1, and several mild misses together (a Markov
  chain's) add up. The threshold per texture is set so that 95 % of the corpus train split passes the
  gate as a whole, each piece judged by bands fitted without it (5-fold), so that unseen corpus pieces
  pass at that rate too.

The corpus tunes are solo lines; a duo tune is held to the band texture's two-part bands (outer-voice
consonance, parallels, crossings) for what its second part adds.

``check`` returns the reasons a track fails, worded with the corpus band, and an empty list when it passes.
Only :mod:`personalize.music.score` and :mod:`personalize.music.metrics` are imported, so
the check can run inside verification without the corpus or torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi

from personalize.music.metrics import measure
from personalize.music.score import TEXTURES, Score, score_from_midi

GATE_VERSION = 1
# Gated metrics and the side on which a value means noise: "low", "high" or "both".
GATED: dict[str, str] = {
    "melody_step_share": "low",
    "melody_repeat_share": "high",
    "melody_leap_share": "high",
    "melody_tonic_share": "high",
    "melody_interval_entropy_bits": "both",
    "duration_entropy_bits": "both",
    "bar_self_similarity": "low",
    "has_returning_section": "low",
    "ends_on_tonic": "low",
    "downbeat_tonic_chord_share": "low",
    "parallel_fifths_per_100_changes": "high",
    "parallel_octaves_per_100_changes": "high",
    "voice_crossing_share": "high",
    "dissonant_slice_share": "high",
    "outer_consonance_share": "low",
    "metric_feel_share": "low",
}
BORROWS = {"tune": "band"}  # texture -> texture whose bands fill the metrics its own corpus lacks
# Metric feel depends on the meter's kind, not on the texture: its distribution is kept per kind, from the
# corpus pieces of every texture (the chorales hold no compound meters, the tunes plenty).
FEEL = "metric_feel_share"
HARD_PERCENTILE = 0.1  # a value beyond the corpus's 0.1th (or 99.9th) percentile ...
FENCE_IQR = 3.0  # ... and 3 interquartile ranges beyond the quartiles fails on its own
TARGET_ACCEPTANCE = (
    0.95  # the atypicality threshold passes this share of the corpus train split (out of fold)
)
CALIBRATION_FOLDS = 5
QUANTILES = np.linspace(0, 100, 101)


def default_gate_path() -> Path:
    from personalize.config import get_settings

    return get_settings().model_dir / "music_gate.json"


@dataclass
class Band:
    """One metric's corpus distribution for the gate: its percentiles and which side means noise."""

    direction: str
    quantiles: np.ndarray  # the 0th..100th percentiles of the corpus values
    n: int
    hard_low: float
    hard_high: float

    def tail(self, value: float) -> float:
        """Corpus share at least as far out as ``value`` on the noise side (two-sided: twice the smaller
        tail), floored at half a piece so no value is impossible."""
        q = self.quantiles
        below = np.searchsorted(q, value, side="right") / len(q)
        above = 1.0 - np.searchsorted(q, value, side="left") / len(q)
        p = {"low": below, "high": above, "both": 2 * min(below, above)}[self.direction]
        return float(max(p, 0.5 / (self.n + 1)))

    def surprise(self, value: float) -> float:
        """``-log10(min(1, 2 tail))``: 0 up to the corpus median, 1 at the corpus's 5 % tail."""
        return -math.log10(min(1.0, 2 * self.tail(value)))

    def hard_miss(self, value: float) -> bool:
        low = self.direction in ("low", "both") and value < self.hard_low
        high = self.direction in ("high", "both") and value > self.hard_high
        return bool(low or high)

    def describe(self) -> str:
        p5, p95 = np.percentile(self.quantiles, [5, 95]) if len(self.quantiles) else (math.nan, math.nan)
        return f"corpus 5-95 %: {p5:.3g}-{p95:.3g}"

    def to_dict(self) -> dict[str, object]:
        return {
            "direction": self.direction,
            "n": self.n,
            "hard_low": round(self.hard_low, 5),
            "hard_high": round(self.hard_high, 5),
            "quantiles": [round(float(v), 5) for v in self.quantiles],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Band:
        return cls(
            d["direction"],
            np.asarray(d["quantiles"], dtype=float),
            int(d["n"]),
            d["hard_low"],
            d["hard_high"],
        )

    @classmethod
    def fit(cls, values: Iterable[float], direction: str) -> Band | None:
        x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
        if len(x) < 10:
            return None
        lo, q1, q3, hi = np.percentile(x, [HARD_PERCENTILE, 25, 75, 100 - HARD_PERCENTILE])
        # A hard miss must lie beyond the corpus's extreme percentile *and* beyond Tukey's far-out fence (3
        # interquartile ranges past the quartiles): from a few hundred pieces the extreme percentile is
        # nearly the sample's extreme, which a new corpus piece passes one time in a few hundred per metric.
        # Rates that are mostly zero (parallels) have no interquartile range: their spread is read from the
        # standard deviation instead (1.349 sd is the interquartile range of a normal distribution).
        spread = max(q3 - q1, 1.349 * float(np.std(x)))
        hard_low, hard_high = min(lo, q1 - FENCE_IQR * spread), max(hi, q3 + FENCE_IQR * spread)
        return cls(direction, np.percentile(x, QUANTILES), len(x), float(hard_low), float(hard_high))


@dataclass
class Verdict:
    """What the gate found for one track: the reasons it fails (none when it passes) and the figures."""

    texture: str
    reasons: list[str]
    atypicality: float
    threshold: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class MusicGate:
    """Per-texture corpus bands and atypicality thresholds (see the module docstring)."""

    bands: dict[str, dict[str, Band]]  # texture -> metric -> band
    feel: dict[str, Band]  # "simple" | "compound" -> band of metric_feel_share
    thresholds: dict[str, float]  # texture -> atypicality threshold
    built_from: dict[str, object] = field(default_factory=dict)

    def _bands_for(self, texture: str, compound: bool) -> dict[str, Band]:
        bands = dict(self.bands[texture])
        # The corpus tunes are solo lines, so a duo tune's second part borrows the band texture's two-part
        # bands (a chorale's outer voices): without them its harmony would go unchecked.
        for name, band in self.bands.get(BORROWS.get(texture, ""), {}).items():
            bands.setdefault(name, band)
        kind = "compound" if compound else "simple"
        if kind in self.feel:
            bands[FEEL] = self.feel[kind]
        return bands

    def judge(
        self,
        score: Score,
        key_pc: int,
        mode: str,
        texture: str | None = None,
        values: dict[str, float] | None = None,
    ) -> Verdict:
        """The gate's verdict on one scored piece in ``key_pc`` / ``mode`` (texture from the score if None;
        ``values`` are its metrics when already measured)."""
        texture = texture or score.texture
        if texture not in self.bands:
            raise ValueError(
                f"the music gate has no bands for texture {texture!r}; it knows {', '.join(self.bands)}"
            )
        values = values if values is not None else measure(score, key_pc, mode)
        bands = self._bands_for(texture, score.compound)
        reasons: list[str] = []
        scored: list[tuple[float, str]] = []
        total = 0.0
        for name, band in bands.items():
            v = values.get(name, math.nan)
            if not np.isfinite(v):
                continue
            s = band.surprise(v)
            total += s
            if s > 0:
                scored.append((s, name))
            if band.hard_miss(v):
                side = "below" if v < band.hard_low else "above"
                edge = band.hard_low if side == "below" else band.hard_high
                reasons.append(
                    f"{name} {v:.3g} is far {side} every corpus {texture} (edge {edge:.3g}; {band.describe()})"
                )
        threshold = self.thresholds[texture]
        if total > threshold:
            worst = sorted(scored, reverse=True)[:4]
            detail = "; ".join(f"{n} {values[n]:.3g} ({bands[n].describe()})" for _, n in worst)
            reasons.append(
                f"atypical for a {texture}: score {total:.2f} above {threshold:.2f} (95 % of corpus {texture}s "
                f"stay below); furthest out: {detail}"
            )
        return Verdict(texture, reasons, float(total), float(threshold), values)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": GATE_VERSION,
            "built_from": self.built_from,
            "hard_percentile": HARD_PERCENTILE,
            "target_acceptance": TARGET_ACCEPTANCE,
            "thresholds": {t: round(v, 4) for t, v in self.thresholds.items()},
            "feel": {k: b.to_dict() for k, b in self.feel.items()},
            "bands": {t: {m: b.to_dict() for m, b in bands.items()} for t, bands in self.bands.items()},
        }

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1)
        # One line per list of numbers keeps the file short and its diffs readable.
        text = re.sub(r"\[\s+([-0-9.,eE\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        path.write_text(text + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> MusicGate:
        if d.get("version") != GATE_VERSION:
            raise ValueError(
                f"music gate file version {d.get('version')} is not {GATE_VERSION}: rebuild it with "
                "`personalize eval music --write-gate`"
            )
        return cls(
            bands={t: {m: Band.from_dict(b) for m, b in bands.items()} for t, bands in d["bands"].items()},
            feel={k: Band.from_dict(b) for k, b in d["feel"].items()},
            thresholds={t: float(v) for t, v in d["thresholds"].items()},
            built_from=d.get("built_from", {}),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> MusicGate:
        path = Path(path) if path is not None else default_gate_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"no music gate at {path}: build it with `personalize eval music --write-gate` "
                "(it reads the corpus train split)"
            )
        return cls.from_dict(json.loads(path.read_text()))


def against_corpus(verdicts: list[Verdict], gate: MusicGate) -> dict[str, dict[str, object]]:
    """What a run report shows per texture: each gated metric's median over the tracks next to the corpus's
    5th, 50th and 95th percentile, and the share of tracks the gate passed (reads only the gate file)."""
    out: dict[str, dict[str, object]] = {}
    for texture in sorted({v.texture for v in verdicts}):
        mine = [v for v in verdicts if v.texture == texture]
        rows: dict[str, dict[str, float | None]] = {}
        for name, band in gate.bands.get(texture, {}).items():
            vals = np.array([v.metrics.get(name, math.nan) for v in mine], dtype=float)
            vals = vals[np.isfinite(vals)]
            p5, p50, p95 = np.percentile(band.quantiles, [5, 50, 95])
            rows[name] = {
                "tracks_median": float(np.median(vals)) if len(vals) else None,
                "corpus_p5": float(p5),
                "corpus_median": float(p50),
                "corpus_p95": float(p95),
            }
        out[texture] = {
            "tracks": len(mine),
            "passed_share": sum(v.passed for v in mine) / len(mine),
            "metrics": rows,
        }
    return out


def _fit_bands(measured: dict[str, list[tuple[Score, dict[str, float]]]]) -> MusicGate:
    """Bands from measured corpus pieces per texture, thresholds left open (infinite)."""
    feel: dict[str, Band] = {}
    for kind, compound in (("simple", False), ("compound", True)):
        band = Band.fit(
            (v[FEEL] for rows in measured.values() for s, v in rows if s.compound == compound), "low"
        )
        if band is not None:
            feel[kind] = band
    bands: dict[str, dict[str, Band]] = {}
    for texture, rows in measured.items():
        bands[texture] = {}
        for name, direction in GATED.items():
            if name == FEEL:
                continue
            band = Band.fit((v[name] for _, v in rows), direction)
            if band is not None:
                bands[texture][name] = band
    return MusicGate(bands, feel, dict.fromkeys(measured, math.inf))


def calibrate(
    corpus: dict[str, list[tuple[Score, int, str]]],
    target_acceptance: float = TARGET_ACCEPTANCE,
    folds: int = CALIBRATION_FOLDS,
) -> MusicGate:
    """Build the gate from corpus pieces per texture (``(score, key_pc, mode)`` each, the train split).

    Bands are the percentiles of all the pieces. The atypicality threshold is set out of fold: every piece is
    judged by bands fitted without it (``folds``-fold), and the threshold is the level that lets
    ``target_acceptance`` of the pieces pass, hard misses counted. Judged in sample, a piece sits inside
    bands it helped draw, and unseen corpus pieces would fail more often than the target says.
    """
    measured = {t: [(s, measure(s, k, m)) for s, k, m in pieces] for t, pieces in corpus.items() if pieces}
    out_of_fold: dict[str, list[Verdict]] = {t: [] for t in measured}
    for fold in range(folds):
        fitted = _fit_bands(
            {t: [r for i, r in enumerate(rows) if i % folds != fold] for t, rows in measured.items()}
        )
        for texture, rows in measured.items():
            if texture not in fitted.bands:
                continue
            for i, (score, values) in enumerate(rows):
                if i % folds == fold:
                    # The key only enters through the measured values, which are passed in.
                    out_of_fold[texture].append(fitted.judge(score, 0, "major", texture, values=values))
    gate = _fit_bands(measured)
    for texture, verdicts in out_of_fold.items():
        hard = [v for v in verdicts if any(not r.startswith("atypical") for r in v.reasons)]
        clean = [v.atypicality for v in verdicts if v not in hard]
        q = target_acceptance * len(verdicts) / max(1, len(clean))
        gate.thresholds[texture] = float(np.quantile(clean, min(1.0, q))) if clean else math.inf
    gate.built_from = {"pieces": {t: len(rows) for t, rows in measured.items()}, "calibration_folds": folds}
    return gate


_DEFAULT: MusicGate | None = None


def check(
    pm: pretty_midi.PrettyMIDI,
    texture: str | None,
    key_pc: int,
    mode: str,
    meter: str | None = None,
    gate: MusicGate | None = None,
) -> list[str]:
    """Reasons ``pm`` fails the music gate for ``texture`` (inferred from its parts when None) in the key
    ``key_pc`` / ``mode``; an empty list when it passes.

    ``meter`` overrides the file's time signature; ``gate`` defaults to ``models/music_gate.json``.
    """
    global _DEFAULT
    if gate is None:
        if _DEFAULT is None:
            _DEFAULT = MusicGate.load()
        gate = _DEFAULT
    score = score_from_midi(pm)
    if meter is not None and meter != score.meter:
        score = Score(
            score.parts,
            meter,
            score.has_drums,
            score.velocities,
            score.onset_deviation_ms,
            melody_named=score.melody_named,
        )
    if texture is not None and texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}: choose from {', '.join(TEXTURES)}")
    return gate.judge(score, key_pc, mode, texture).reasons
