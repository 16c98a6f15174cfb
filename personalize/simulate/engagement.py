"""How a simulated listener reacts to a track: a fit score from taste vs. measured track features, and a
vectorized "listen" that turns fit into a skip, a partial play or a completion, plus rare likes, dislikes
and saves. The demo world's history is made with it, and evaluations let the same listeners hear new
tracks (generated ones included) with it, so both sides obey one model.

Listener taste columns (one row per listener, see ``truth.TRUTH_COLUMNS``): ``tempo_bpm``,
``tempo_tolerance`` (std of log tempo the listener enjoys), ``key_pc``, ``mode``, ``density`` (notes/s) and
``family_<name>`` weights over the 16 General MIDI families plus drums.
Track columns (measured, as in the ``tracks`` table): ``tempo_bpm``, ``key_pc``, ``mode``, ``programs``
(``"40;42;drums"``), ``density``, ``duration_s``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalize.music.gm import DRUMS, FAMILIES, family_of

FAMILY_COLUMNS = [f"family_{name}" for name in FAMILIES]

# How much each part of taste counts toward fit (sums to 1).
FIT_WEIGHTS = {"tempo": 0.35, "key": 0.25, "family": 0.25, "density": 0.15}
DENSITY_TOLERANCE = 0.35  # std of log(notes/s) a listener enjoys
RELATIVE_MODE_CREDIT = 0.55  # a key on the right spot of the circle of fifths but in the other mode

# Engagement, calibrated so a world with a recommender-like exposure gives ~25 % early skips, ~50 % plays
# ended before the end, likes a few %, dislikes and saves rarer (see tests/test_simulate_engagement.py).
SKIP_LOGIT = (1.2, -4.2)  # intercept, slope on fit: P(skip in the first seconds)
COMPLETE_LOGIT = (-2.2, 4.0)  # P(play to the end | not skipped)
LIKE_MAX, DISLIKE_MAX, SAVE_MAX = 0.12, 0.05, 0.05  # ceilings of P(reaction) at perfect (or worst) fit
EARLY_SKIP_S = (1.0, 9.0)  # an early skip stops within these seconds


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fifths_positions(key_pc: np.ndarray, is_minor: np.ndarray) -> np.ndarray:
    """Vectorized circle-of-fifths position 0..11; a minor key sits with its relative major."""
    major_pc = np.where(is_minor, np.asarray(key_pc) + 3, key_pc) % 12
    return (major_pc * 7) % 12


def family_shares(programs: pd.Series | list[str]) -> np.ndarray:
    """Share of each family (``FAMILIES`` order, 17 columns) among each track's distinct programs."""
    codes, uniques = pd.factorize(pd.Series(programs).astype(str))
    table = np.zeros((len(uniques), len(FAMILIES)))
    for j, text in enumerate(uniques):
        parts = sorted({p.strip() for p in str(text).split(";") if p.strip()})
        for part in parts:
            fam = DRUMS if part.lower() == DRUMS else family_of(int(float(part)))
            table[j, FAMILIES.index(fam)] += 1.0 / len(parts)
    return table[codes]


def _components(
    tempo_pref: np.ndarray,
    tolerance: np.ndarray,
    key_pref: np.ndarray,
    minor_pref: np.ndarray,
    density_pref: np.ndarray,
    family_weights: np.ndarray,
    tempo: np.ndarray,
    key: np.ndarray,
    minor: np.ndarray,
    density: np.ndarray,
    shares: np.ndarray,
) -> np.ndarray:
    """Weighted fit from broadcastable listener (``*_pref``) and track arrays; family arrays end in 17."""
    tempo_fit = np.exp(-0.5 * (np.log(tempo / tempo_pref) / tolerance) ** 2)
    d = np.abs(fifths_positions(key, minor) - fifths_positions(key_pref, minor_pref))
    d = np.minimum(d, 12 - d)
    key_fit = np.exp(-0.5 * d.astype(float) ** 2) * np.where(minor == minor_pref, 1.0, RELATIVE_MODE_CREDIT)
    top = family_weights.max(axis=-1)
    family_fit = np.einsum("...f,...f->...", shares, family_weights) / np.maximum(top, 1e-9)
    density_fit = np.exp(-0.5 * (np.log(np.maximum(density, 1e-3) / density_pref) / DENSITY_TOLERANCE) ** 2)
    w = FIT_WEIGHTS
    return np.clip(
        w["tempo"] * tempo_fit + w["key"] * key_fit + w["family"] * family_fit + w["density"] * density_fit,
        0.0,
        1.0,
    )


def _listener_arrays(truth: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in ("tempo_bpm", "tempo_tolerance", "key_pc", "mode", "density", *FAMILY_COLUMNS)
               if c not in truth.columns]  # fmt: skip
    if missing:
        raise ValueError(
            f"listener taste is missing columns {missing}: load it with simulate.truth.load_truth"
        )
    return {
        "tempo_pref": truth["tempo_bpm"].to_numpy(float),
        "tolerance": truth["tempo_tolerance"].to_numpy(float),
        "key_pref": truth["key_pc"].to_numpy(int),
        "minor_pref": (truth["mode"] == "minor").to_numpy(),
        "density_pref": truth["density"].to_numpy(float),
        "family_weights": truth[FAMILY_COLUMNS].to_numpy(float),
    }


def _track_arrays(tracks: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in ("tempo_bpm", "key_pc", "mode", "programs", "density") if c not in tracks.columns]
    if missing:
        raise ValueError(
            f"tracks are missing measured columns {missing} (tempo_bpm, key_pc, mode, programs, density)"
        )
    return {
        "tempo": tracks["tempo_bpm"].to_numpy(float),
        "key": tracks["key_pc"].to_numpy(int),
        "minor": (tracks["mode"] == "minor").to_numpy(),
        "density": tracks["density"].fillna(0.0).to_numpy(float),
        "shares": family_shares(tracks["programs"]),
    }


def _as_frame(listener_truth: pd.DataFrame | pd.Series, n: int) -> pd.DataFrame:
    if isinstance(listener_truth, pd.Series):
        return pd.DataFrame([listener_truth] * n).reset_index(drop=True)
    if len(listener_truth) == 1 and n != 1:
        return listener_truth.loc[listener_truth.index.repeat(n)].reset_index(drop=True)
    if len(listener_truth) != n:
        raise ValueError(
            f"{len(listener_truth)} listener rows for {n} tracks: pass one row, or one per track"
        )
    return listener_truth.reset_index(drop=True)


def fit(listener_truth: pd.DataFrame | pd.Series, tracks: pd.DataFrame) -> np.ndarray:
    """How well each track suits the listener, in [0, 1] (1 = their tempo, key, instruments and density).

    ``listener_truth`` is one listener (a Series or a one-row frame) or one row per track.
    """
    lt = _listener_arrays(_as_frame(listener_truth, len(tracks)))
    return _components(**lt, **_track_arrays(tracks))


def fit_matrix(listener_truth: pd.DataFrame, tracks: pd.DataFrame, tempo_widen: float = 1.0) -> np.ndarray:
    """Fit of every listener (rows) to every track (columns), float32. ``tempo_widen`` > 1 blurs tempo,
    the way a recommender knows a listener's tempo less sharply than the listener does."""
    lt = _listener_arrays(listener_truth)
    tr = _track_arrays(tracks)
    out = _components(
        tempo_pref=lt["tempo_pref"][:, None],
        tolerance=lt["tolerance"][:, None] * tempo_widen,
        key_pref=lt["key_pref"][:, None],
        minor_pref=lt["minor_pref"][:, None],
        density_pref=lt["density_pref"][:, None],
        family_weights=lt["family_weights"][:, None, :],
        tempo=tr["tempo"][None, :],
        key=tr["key"][None, :],
        minor=tr["minor"][None, :],
        density=tr["density"][None, :],
        shares=tr["shares"][None, :, :],
    )
    return out.astype(np.float32)


def listen(
    listener_truth: pd.DataFrame | pd.Series, tracks: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """Simulate one play of each track (row) by the listener on that row (or by one listener).

    Returns a frame aligned with ``tracks``: ``fit``, ``ms_played``, ``kind`` (``skip`` in the first
    seconds, ``play`` ended early, ``complete``) and booleans ``liked``, ``disliked``, ``saved``.
    Better fit means fewer skips, more completions, more likes and saves, fewer dislikes.
    """
    n = len(tracks)
    f = fit(listener_truth, tracks)
    duration_ms = np.maximum(tracks["duration_s"].to_numpy(float) * 1000.0, 1000.0)
    skip = rng.random(n) < _sigmoid(SKIP_LOGIT[0] + SKIP_LOGIT[1] * f)
    complete = ~skip & (rng.random(n) < _sigmoid(COMPLETE_LOGIT[0] + COMPLETE_LOGIT[1] * f))
    partial = ~skip & ~complete
    skip_ms = rng.uniform(EARLY_SKIP_S[0] * 1000, EARLY_SKIP_S[1] * 1000, n)
    # Partial plays stop anywhere after the first seconds, sooner when the fit is poor.
    share = rng.beta(1.2 + 2.0 * f, 2.0, n) * 0.93 + 0.05
    ms_played = np.where(
        skip, np.minimum(skip_ms, duration_ms), np.where(complete, duration_ms, share * duration_ms)
    )
    kind = np.where(skip, "skip", np.where(complete, "complete", "play"))
    liked = ~skip & (rng.random(n) < LIKE_MAX * f**4 * np.where(complete, 1.0, 0.3))
    saved = complete & (rng.random(n) < SAVE_MAX * f**5)
    disliked = (skip | partial) & ~liked & (rng.random(n) < DISLIKE_MAX * (1.0 - f) ** 2)
    return pd.DataFrame(
        {
            "fit": f,
            "ms_played": np.round(ms_played).astype(np.int64),
            "kind": kind,
            "liked": liked,
            "disliked": disliked,
            "saved": saved,
        },
        index=tracks.index,
    )


def plays_to_events(plays: pd.DataFrame) -> pd.DataFrame:
    """Expand plays into listening events: one ``skip``/``play``/``complete`` row per play, then one
    ``like``/``dislike``/``save`` row per reaction, timed at the moment the play stopped.

    ``plays`` needs ``listener_id``, ``track_id``, ``ts`` (UTC), ``ms_played``, ``kind``, ``liked``,
    ``disliked``, ``saved``. Reaction rows repeat the ``ms_played`` of the play they happened during.
    Returns ``listener_id, track_id, ts, ms_played, kind`` sorted by listener and time (no ``event_id``).
    """
    cols = ["listener_id", "track_id", "ts", "ms_played", "kind"]
    frames = [plays[cols]]
    for flag, kind in (("liked", "like"), ("disliked", "dislike"), ("saved", "save")):
        hit = plays.loc[plays[flag].to_numpy(bool), cols[:4]]
        reaction = hit.assign(kind=kind)
        reaction["ts"] = hit["ts"] + pd.to_timedelta(hit["ms_played"] + 500, unit="ms")
        frames.append(reaction)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["listener_id", "ts"], kind="stable").reset_index(drop=True)
