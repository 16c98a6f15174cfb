"""The taste space: what each number of a taste vector means, a track's vector in that same space, and the
per-date standardization that makes distances between listeners and tracks comparable.

A raw vector is in readable units (log2 BPM, shares, log2 notes per second). Listener vectors are
engagement-weighted means of the vectors of the tracks they played, so a track's own vector
(:func:`track_vector`) lies in the same space and can be ranked against a listener's. Distances are taken
after :class:`TasteSpace` standardizes each feature with the run date's scaler (stored in ``taste_runs``)
and applies :data:`FEATURE_WEIGHTS`, so that 17 family shares do not outvote tempo and key.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from personalize.music.gm import FAMILIES, Program, family_index, parse_programs
from personalize.music.keys import MODES, fifths_angle, key_name

FAMILY_FEATURES = tuple(f"family_{name}" for name in FAMILIES)
FEATURE_NAMES: tuple[str, ...] = (
    "tempo_log2_bpm",  # mean of log2(BPM)
    "tempo_spread_log2",  # std of log2(BPM) in octaves (0 for a single track)
    "key_fifths_cos",  # mean position on the circle of fifths (relative minor = its major)
    "key_fifths_sin",
    "major_share",  # share of weight on major-mode tracks
    "density_log2_nps",  # mean of log2(notes per second)
    *FAMILY_FEATURES,  # share of parts per GM family (16 families + drums), sums to 1
)
N_FEATURES = len(FEATURE_NAMES)
I_TEMPO, I_TEMPO_SPREAD, I_COS, I_SIN, I_MAJOR, I_DENSITY = range(6)
I_FAMILY0 = 6

# Applied after standardizing. Each family share gets 1/sqrt(17/4) so the 17 of them weigh about as much
# as four single features; tempo spread is a weaker signal than the tempo itself.
_FAMILY_WEIGHT = 1.0 / math.sqrt(len(FAMILIES) / 4.0)
FEATURE_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 1.0, 1.0, 1.0, 1.0, *([_FAMILY_WEIGHT] * len(FAMILIES)))

N_KEYS = 24  # index = key_pc for major, 12 + key_pc for minor


def key_index(key_pc: int, mode: str) -> int:
    """0..23: major keys first (C major = 0), then minor keys (C minor = 12)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not 'major' or 'minor'")
    return int(key_pc) % 12 + (12 if mode == "minor" else 0)


def key_of_index(index: int) -> tuple[int, str]:
    return int(index) % 12, ("minor" if index >= 12 else "major")


def key_name_of_index(index: int) -> str:
    return key_name(*key_of_index(index))


def family_shares(programs: str | Sequence[Program]) -> np.ndarray:
    """Share of a track's distinct parts in each of the 17 families (shape (17,), sums to 1)."""
    progs = parse_programs(programs) if isinstance(programs, str) else list(programs)
    if not progs:
        raise ValueError("a track needs at least one program")
    shares = np.zeros(len(FAMILIES))
    for program in dict.fromkeys(progs):  # a doubled part counts once
        shares[family_index(program)] += 1.0
    return shares / shares.sum()


def track_vector(
    tempo_bpm: float, key_pc: int, mode: str, programs: str | Sequence[Program], density: float
) -> np.ndarray:
    """A track's raw taste vector (shape ``(N_FEATURES,)``), in the same space as listener vectors.

    ``density`` is notes per second over all parts; ``programs`` a ``"0;33;drums"`` string or a list.
    """
    if not tempo_bpm or tempo_bpm <= 0:
        raise ValueError(f"tempo_bpm must be positive, got {tempo_bpm!r}")
    if density is None or not density > 0:
        raise ValueError(f"density (notes per second) must be positive, got {density!r}")
    cos, sin = fifths_angle(int(key_pc), mode)
    vec = np.empty(N_FEATURES)
    vec[I_TEMPO] = math.log2(tempo_bpm)
    vec[I_TEMPO_SPREAD] = 0.0
    vec[I_COS], vec[I_SIN] = cos, sin
    vec[I_MAJOR] = 1.0 if mode == "major" else 0.0
    vec[I_DENSITY] = math.log2(density)
    vec[I_FAMILY0:] = family_shares(programs)
    return vec


@dataclass(frozen=True)
class TasteSpace:
    """Standardization of one run date: ``(raw - mean) / scale * weights``. Distances are Euclidean here."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    def transform(self, raw: np.ndarray | Sequence[float]) -> np.ndarray:
        return (np.asarray(raw, dtype=float) - self.mean) / self.scale * self.weights

    def distance(
        self, raw_a: np.ndarray | Sequence[float], raw_b: np.ndarray | Sequence[float]
    ) -> np.ndarray:
        """Distance(s) between raw vectors; broadcasts (e.g. one listener against many tracks)."""
        return np.linalg.norm(self.transform(raw_a) - self.transform(raw_b), axis=-1)

    @classmethod
    def fit(cls, raw: np.ndarray, weights: Iterable[float] = FEATURE_WEIGHTS) -> TasteSpace:
        raw = np.asarray(raw, dtype=float)
        scale = raw.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)  # a constant feature stays put instead of dividing by 0
        return cls(mean=raw.mean(axis=0), scale=scale, weights=np.asarray(list(weights), dtype=float))


def load_space(ctx, run_date: dt.date) -> TasteSpace:  # type: ignore[no-untyped-def]
    """The taste space the cluster stage fitted for ``run_date`` (raises ``LookupError`` if it has not run)."""
    from sqlalchemy import select

    from personalize.db.models import TasteRun

    with ctx.sessions() as session:
        row = session.execute(select(TasteRun).where(TasteRun.run_date == run_date)).scalar_one_or_none()
    if row is None:
        raise LookupError(
            f"no taste space for {run_date}: run `personalize profile --date {run_date}` and "
            f"`personalize cluster --date {run_date}` first"
        )
    if list(row.feature_names) != list(FEATURE_NAMES):
        raise LookupError(
            f"taste space of {run_date} has features {row.feature_names}, this code expects {FEATURE_NAMES}: "
            "rerun the profile and cluster stages for that date"
        )
    return TasteSpace(
        mean=np.asarray(row.scaler_mean, dtype=float),
        scale=np.asarray(row.scaler_scale, dtype=float),
        weights=np.asarray(row.feature_weights, dtype=float),
    )
