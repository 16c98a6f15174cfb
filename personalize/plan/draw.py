"""Draw a track's generator controls from a taste cluster's distribution: key from the cluster's key
weights, tempo and density from log-normal spreads around the members' means, meter and instruments from
their shares. Each track is drawn from its own seeded generator, so a cluster gets varied tracks and the
same run date, cluster and slot always give the same controls."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

import numpy as np

from personalize.music.controls import MAX_PITCHED_PARTS, METERS, Controls, bar_quarters, density_bin_for
from personalize.music.gm import DRUMS, Program, family_of, playable_program
from personalize.music.keys import parse_key

TEMPO_LIMITS_BPM = (50.0, 200.0)  # drawn tempi are kept inside what the generator was trained on
DENSITY_LIMITS_NPS = (0.5, 30.0)
FALLBACK_PROGRAMS: tuple[Program, ...] = (0, 40, 42)  # piano, violin, cello: only when a cluster says nothing


def track_seed(run_date: dt.date, cluster_id: int, slot: int) -> int:
    """A stable 31-bit seed from the run date, cluster and slot (same inputs, same seed, every machine).

    31 bits because the generator derives retry seeds by multiplying, inside a signed 64-bit range."""
    digest = hashlib.blake2b(f"{run_date.isoformat()}|{int(cluster_id)}|{int(slot)}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str | None:
    items = [(k, float(w)) for k, w in weights.items() if w and w > 0]
    if not items:
        return None
    names, w = zip(*items, strict=True)
    p = np.asarray(w) / sum(w)
    return names[int(rng.choice(len(names), p=p))]


# Width of the 10-90 % range of a normal distribution, in standard deviations.
_P10_P90_SPAN = 2.5631


def _lognormal(rng: np.random.Generator, spec: dict[str, Any], limits: tuple[float, float]) -> float:
    """A draw around the members' geometric mean, at most two spreads away, inside ``limits``.

    The spread is that of the members' own means (from their 10th and 90th percentiles): the variety of
    tastes inside the cluster. Each listener's listening spread is wider (it includes whatever they were
    exposed to), and drawing from it would write many tracks that suit nobody in the cluster.
    """
    mean_log2 = float(spec.get("mean_log2", math.log2(spec.get("mean", 100.0))))
    if spec.get("p10") and spec.get("p90"):
        spread = (math.log2(float(spec["p90"])) - math.log2(float(spec["p10"]))) / _P10_P90_SPAN
    else:
        spread = float(spec.get("spread_log2") or 0.0)
    spread = min(max(spread, 0.02), 0.25)  # some variety even in a tight cluster, never a different cluster
    z = float(np.clip(rng.normal(), -2.0, 2.0))
    return float(np.clip(2.0 ** (mean_log2 + z * spread), *limits))


def _programs(rng: np.random.Generator, dist: dict[str, Any]) -> list[Program]:
    """Instruments: 2-3 pitched parts drawn without replacement by share, a drum part as often as the
    cluster's tracks have one."""
    shares = {k: float(v) for k, v in (dist.get("programs") or {}).items() if v and v > 0}
    pitched = {int(k): v for k, v in shares.items() if k != DRUMS and str(k).isdigit()}
    families = dist.get("families") or {}
    n_parts = int(rng.choice([2, 3, 3])) if len(pitched) >= 3 else max(1, len(pitched))
    n_parts = min(n_parts, MAX_PITCHED_PARTS)
    chosen: list[Program] = []
    if pitched:
        names = list(pitched)
        p = np.asarray([pitched[n] for n in names])
        picks = rng.choice(len(names), size=min(n_parts, len(names)), replace=False, p=p / p.sum())
        # A percussive or sound-effect patch is played by the melodic instrument nearest it (music.gm).
        chosen = [playable_program(names[int(i)]) for i in picks]
    if not chosen:
        chosen = list(FALLBACK_PROGRAMS[:n_parts]) if n_parts > 1 else [FALLBACK_PROGRAMS[0]]
    # Low parts last: the generator writes part 1 as the top voice, so a bass line should not come first.
    chosen.sort(key=lambda p: (family_of(p) == "bass", -int(p) if family_of(p) == "bass" else 0))
    # The drum family's share is the mean share of a track's parts that are drums: times the parts a
    # drummed track has, that is about the chance a track has drums at all.
    p_drums = float(np.clip(float(families.get(DRUMS, 0.0)) * (len(chosen) + 1), 0.0, 1.0))
    if p_drums > 0 and rng.random() < p_drums:
        chosen.append(DRUMS)
    return chosen


def draw_controls(
    dist: dict[str, Any],
    run_date: dt.date,
    cluster_id: int,
    slot: int,
    seconds: tuple[float, float],
    fallback_key: tuple[int, str] = (0, "major"),
) -> tuple[Controls, float, int]:
    """Controls for one planned track: ``(controls, asked density in notes/s, seed)``. Its length is drawn
    between ``seconds`` (min, max) and asked for in bars of its meter at its tempo.

    ``fallback_key`` (the cluster's own key) is used when no member has key weights (cold members only).
    """
    seed = track_seed(run_date, cluster_id, slot)
    rng = np.random.default_rng(seed)
    key_text = _choice(rng, dist.get("keys") or {})
    key_pc, mode = parse_key(key_text) if key_text else fallback_key
    tempo_bpm = round(_lognormal(rng, dist.get("tempo_bpm") or {"mean": 100.0}, TEMPO_LIMITS_BPM), 1)
    meter = _choice(rng, {m: w for m, w in (dist.get("meters") or {}).items() if m in METERS}) or "4/4"
    programs = _programs(rng, dist)
    density_nps = _lognormal(rng, dist.get("density_nps") or {"mean": 4.0}, DENSITY_LIMITS_NPS)
    n_pitched = sum(1 for p in programs if p != DRUMS)
    length_s = float(rng.uniform(min(seconds), max(seconds)))
    bars = max(4, round(length_s * tempo_bpm / 60.0 / bar_quarters(meter)))
    controls = Controls(
        key_pc=key_pc,
        mode=mode,
        tempo_bpm=tempo_bpm,
        meter=meter,
        density_bin=density_bin_for(density_nps, tempo_bpm, n_pitched),
        programs=programs,
        bars=bars,
    )
    return controls, round(density_nps, 4), seed


def allocate(sizes: dict[int, int], total: int, minimum: int, maximum: int) -> dict[int, int]:
    """Tracks per cluster proportional to its size (largest remainder), each inside ``[minimum, maximum]``.

    The minimum wins over the total: every cluster gets at least ``minimum`` tracks even when that exceeds
    ``total`` (so a small cluster is never left without fresh music).
    """
    if not sizes:
        return {}
    if minimum > maximum:
        raise ValueError(f"tracks_per_cluster_min {minimum} is above tracks_per_cluster_max {maximum}")
    n_all = sum(max(s, 0) for s in sizes.values()) or 1
    exact = {c: total * max(s, 0) / n_all for c, s in sizes.items()}
    out = {c: math.floor(x) for c, x in exact.items()}
    leftover = total - sum(out.values())
    for c in sorted(exact, key=lambda c: (-(exact[c] - out[c]), c))[: max(leftover, 0)]:
        out[c] += 1
    return {c: int(min(max(n, minimum), maximum)) for c, n in out.items()}
