"""The profile stage: one taste vector per listener and run date from engagement- and recency-weighted
listening events, stored with readable columns (BPM, key, top families) in ``taste_profiles``.

How an event counts (settings ``profile_*``): a play counts its completion ratio (ms_played over the
track's length, at most 1), a ``complete`` counts 1, a play or skip shorter than ``profile_early_skip_s``
takes ``profile_skip_penalty`` off, a play or complete of a track the service wrote (``source =
'generated'``) counts ``profile_served_play_weight`` times as much (the listener played what was served:
weaker evidence of where their taste is going than music they chose themselves; likes, saves, dislikes and
skips of served tracks count in full), a like adds ``profile_like_weight``, a save ``profile_save_weight``, a
dislike takes ``profile_dislike_weight`` off. Each event is multiplied by ``0.5 ** (age_days /
profile_half_life_days)``, age counted from the end of the run date. Only events of the
``profile_window_days`` days ending with the run date count, and only listeners known by the end of the
run date get a profile (:func:`listeners_known_by`), so nothing after the date changes its profiles. Per
listener and track the weights are summed in SQL; a track whose sum is not positive does not pull the
profile. A track the listener chose is then weighed by how sparse the catalog is at its tempo
(:func:`availability_weights`, settings ``profile_availability_*``): what a listener finds leans towards
the crowded tempi, whatever their taste. The profile is the weighted mean of the tracks' own vectors
(:func:`personalize.profile.vector.track_vector`).

Cold start rule: a listener with at least ``profile_min_events`` events and some positive weight is
``profiled`` (and fits the clusters); with fewer events but some positive weight ``thin`` (own vector,
assigned to the nearest cluster, never fits one); with no positive weight at all ``cold`` (no vector;
the cluster stage assigns the largest cluster, whose centroid is then the listener's default profile).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sqlalchemy import delete, insert, select, text

from personalize.context import Context
from personalize.db.models import QuarantinedRow, TasteProfile, Track
from personalize.music.gm import DRUMS, FAMILIES, parse_programs
from personalize.music.keys import key_name
from personalize.profile.vector import (
    I_DENSITY,
    I_FAMILY0,
    I_TEMPO,
    I_TEMPO_SPREAD,
    N_FEATURES,
    N_KEYS,
    key_index,
    key_of_index,
    track_vector,
)

log = logging.getLogger(__name__)

N_PROGRAM_SLOTS = 129  # GM 0..127 plus drums at 128
TOP_PROGRAMS_KEPT = 12
QUARANTINE_SOURCE = "taste_profiles {run_date}"

Progress = Callable[[str], None]


def window(ctx: Context, run_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` in UTC: the ``profile_window_days`` days ending with the run date (inclusive)."""
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end - dt.timedelta(days=ctx.settings.profile_window_days), end


# --- Tracks -------------------------------------------------------------------------------------------


class TrackFeatures:
    """Raw vectors and sparse key/program/meter indicators of every usable track, row-aligned."""

    def __init__(
        self,
        track_ids: list[str],
        vectors: np.ndarray,
        key_idx: np.ndarray,
        programs: list,
        meters,
        served: np.ndarray | None = None,
    ):
        self.index = pd.Index(track_ids)
        self.vectors = vectors
        # True for tracks the service wrote (what a listener was served, not what they found themselves)
        self.served = np.zeros(len(track_ids), dtype=bool) if served is None else np.asarray(served, bool)
        n = len(track_ids)
        self.tempo_sq = vectors[:, I_TEMPO] ** 2
        self.density_sq = vectors[:, I_DENSITY] ** 2
        self.keys = sparse.csr_matrix((np.ones(n), (np.arange(n), key_idx)), shape=(n, N_KEYS))
        rows, cols, vals = [], [], []
        for i, progs in enumerate(programs):
            for p in progs:
                rows.append(i)
                cols.append(128 if p == DRUMS else int(p))
                vals.append(1.0 / len(progs))
        self.programs = sparse.csr_matrix((vals, (rows, cols)), shape=(n, N_PROGRAM_SLOTS))
        self.meter_names, meter_codes = np.unique(np.asarray(meters, dtype=str), return_inverse=True)
        self.meters = sparse.csr_matrix(
            (np.ones(n), (np.arange(n), meter_codes)), shape=(n, len(self.meter_names))
        )


def load_tracks(ctx: Context) -> tuple[TrackFeatures, list[dict[str, Any]]]:
    """Every track's vector. Tracks whose features cannot make a vector come back as problems, not errors;
    a missing density is filled with the catalog median (counted in the stage summary)."""
    with ctx.engine.connect() as conn:
        df = pd.DataFrame(
            conn.execute(
                select(
                    Track.track_id,
                    Track.tempo_bpm,
                    Track.key_pc,
                    Track.mode,
                    Track.programs,
                    Track.density,
                    Track.meter,
                    Track.source,
                )
            ).all(),
            columns=["track_id", "tempo_bpm", "key_pc", "mode", "programs", "density", "meter", "source"],
        )
    density = pd.to_numeric(df["density"], errors="coerce")
    usable_density = density[(density > 0) & np.isfinite(density)]
    fill = float(usable_density.median()) if len(usable_density) else 4.0
    imputed = ~((density > 0) & np.isfinite(density))
    ids, vectors, keys, programs, meters, served, problems = [], [], [], [], [], [], []
    for row, dens, was_imputed in zip(df.itertuples(index=False), density.fillna(fill), imputed, strict=True):
        try:
            progs = list(dict.fromkeys(parse_programs(row.programs)))
            vec = track_vector(row.tempo_bpm, row.key_pc, row.mode, progs, fill if was_imputed else dens)
            kidx = key_index(row.key_pc, row.mode)
        except (ValueError, TypeError) as exc:
            problems.append({"track": row._asdict(), "detail": str(exc)})
            continue
        ids.append(row.track_id)
        vectors.append(vec)
        keys.append(kidx)
        programs.append(progs)
        meters.append(row.meter or "4/4")
        served.append(row.source == "generated")
    feats = TrackFeatures(
        ids, np.array(vectors).reshape(-1, N_FEATURES), np.array(keys, dtype=int), programs, meters, served
    )
    feats.n_density_imputed = int(imputed.sum())  # type: ignore[attr-defined]
    return feats, problems


AVAILABILITY_CLIP = 4.0  # a chosen track's availability weight stays within 1/4..4


def availability_weights(tracks: TrackFeatures, power: float, bandwidth_log2: float) -> np.ndarray:
    """Per track, how much a play the listener chose counts for where the catalog is crowded or sparse.

    The catalog's tempo density (tracks the service did not write, a Gaussian kernel of ``bandwidth_log2``
    octaves over log2 tempo, binned) at each track, over its mean across the catalog; a chosen track's
    weight is that ratio, clipped to ``1/AVAILABILITY_CLIP..AVAILABILITY_CLIP``, to the power ``-power``
    (inverse propensity). Served tracks weigh 1. ``power`` 0 gives all ones.
    """
    n = len(tracks.index)
    out = np.ones(n)
    chosen = ~tracks.served
    if power <= 0 or chosen.sum() < 2:
        return out
    x = tracks.vectors[chosen, I_TEMPO]
    step = bandwidth_log2 / 4.0
    lo = float(x.min()) - 4 * bandwidth_log2
    edges = np.arange(lo, float(x.max()) + 4 * bandwidth_log2 + step, step)
    counts, _ = np.histogram(x, bins=edges)
    offsets = np.arange(-16, 17) * step  # the kernel to four bandwidths either side
    kernel = np.exp(-0.5 * (offsets / bandwidth_log2) ** 2)
    smooth = np.convolve(counts.astype(float), kernel, mode="same")
    centers = (edges[:-1] + edges[1:]) / 2.0
    density = np.interp(x, centers, smooth)
    ratio = np.clip(density / density.mean(), 1.0 / AVAILABILITY_CLIP, AVAILABILITY_CLIP)
    out[chosen] = ratio ** (-power)
    return out


# --- Events -------------------------------------------------------------------------------------------

_WEIGHT_SQL = """
CASE
  WHEN e.kind = 'like' THEN {like_w}
  WHEN e.kind = 'save' THEN {save_w}
  WHEN e.kind = 'dislike' THEN -{dislike_w}
  WHEN e.ms_played < {early_ms} AND e.kind <> 'complete' THEN -{skip_penalty}
  ELSE (CASE WHEN t.source = 'generated' THEN {served_w} ELSE 1.0 END) * (CASE
    WHEN e.kind = 'complete' OR e.ms_played >= t.duration_s * 1000.0 THEN 1.0
    ELSE e.ms_played / (t.duration_s * 1000.0)
  END)
END"""

# Age in days of an event at the end of the run date, per dialect.
_AGE_DAYS_SQL = {
    "sqlite": "(julianday({end}) - julianday(e.ts))",
    # date_part returns a double; EXTRACT returns numeric, which made the whole query 2.5x slower.
    "postgresql": "(({end_epoch!r} - date_part('epoch', e.ts)) / 86400.0)",
}


def weights_sql(
    ctx: Context,
    param: Callable[[str], str],
    grouped: bool,
    full_scan: bool = False,
    track_rowid: bool = False,
    end_epoch: float = 0.0,
) -> str:
    """SELECT of per-event weights in the window: ``(listener_id, track_id, weight, recent)`` per event,
    or grouped per listener and track as ``(listener_id, track_id, weight, n_events, recent)``; ``recent``
    is the weight of the events of the last ``profile_recent_days`` (0 for older ones)."""
    s = ctx.settings
    if ctx.dialect not in _AGE_DAYS_SQL:
        raise NotImplementedError(f"taste profiles support SQLite and PostgreSQL, not {ctx.dialect}")
    weight = _WEIGHT_SQL.format(
        like_w=float(s.profile_like_weight),
        save_w=float(s.profile_save_weight),
        dislike_w=float(s.profile_dislike_weight),
        early_ms=float(s.profile_early_skip_s * 1000.0),
        skip_penalty=float(s.profile_skip_penalty),
        served_w=float(s.profile_served_play_weight),
    )
    decay_per_day = -math.log(2.0) / float(s.profile_half_life_days)
    age = _AGE_DAYS_SQL[ctx.dialect].format(end=param("end"), end_epoch=float(end_epoch))
    weighted = f"({weight}) * EXP({decay_per_day!r} * {age})"
    recent = f"(CASE WHEN {age} < {float(s.profile_recent_days)!r} THEN {weighted} ELSE 0.0 END)"
    # SQLite: "+e.ts" keeps the planner off the ts index when the window holds most events, where a
    # sequential scan beats one index probe per row (9 s instead of 24 s for 1M events).
    ts = "+e.ts" if full_scan else "e.ts"
    where = f"FROM listening_events e JOIN tracks t ON t.track_id = e.track_id WHERE {ts} >= {param('start')} AND {ts} < {param('end')}"
    if track_rowid:
        # SQLite: the track's integer rowid crosses into Python about twice as fast as its text id.
        return f"SELECT e.listener_id, t.rowid, {weighted} AS weight, {recent} AS recent {where}"
    if grouped:
        return f"SELECT e.listener_id, e.track_id, SUM({weighted}) AS weight, COUNT(*) AS n_events, SUM({recent}) AS recent {where} GROUP BY e.listener_id, e.track_id"
    return f"SELECT e.listener_id, e.track_id, {weighted} AS weight, {recent} AS recent {where}"


def load_pair_weights(ctx: Context, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Weighted events of ``[start, end)``: ``listener_id, track_id, weight, n_events, recent`` (rows may
    repeat a listener-track pair; callers sum them).

    PostgreSQL groups per listener and track itself (hash aggregate) and streams the result with COPY.
    SQLite hands over one row per event: its GROUP BY sorts on disk and cost twice the transfer it saved.
    """
    columns = ["listener_id", "track_id", "weight", "n_events", "recent"]
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        if ctx.dialect == "postgresql":
            from psycopg import ClientCursor

            sql = weights_sql(ctx, lambda name: f"%({name})s", grouped=True, end_epoch=end.timestamp())
            # Enough memory to hash-aggregate instead of sorting on disk, and no JIT (it took longer to
            # compile than it saved): 8 s instead of 38 s for 1M events on a busy 2-core machine.
            cur.execute("SET LOCAL work_mem = '256MB'")
            cur.execute("SET LOCAL jit = off")
            # COPY cannot take parameters: render them with the driver's own quoting first.
            query = ClientCursor(raw.driver_connection).mogrify(sql, {"start": start, "end": end})
            buf = io.BytesIO()
            with cur.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
                for chunk in copy:
                    buf.write(chunk)
            buf.seek(0)
            df = pd.read_csv(
                buf, names=columns, dtype={"listener_id": str, "track_id": str}, keep_default_na=False
            )
        else:
            fmt = "%Y-%m-%d %H:%M:%S"
            params = {"start": start.strftime(fmt), "end": end.strftime(fmt)}
            in_window = cur.execute(
                "SELECT COUNT(*) FROM listening_events WHERE ts >= :start AND ts < :end", params
            ).fetchone()[0]
            all_rows = cur.execute("SELECT MAX(rowid) FROM listening_events").fetchone()[0] or 0
            sql = weights_sql(
                ctx,
                lambda name: f":{name}",
                grouped=False,
                full_scan=in_window > 0.2 * all_rows,
                track_rowid=True,
            )
            track_rows = cur.execute("SELECT rowid, track_id FROM tracks").fetchall()
            by_rowid = np.empty(max((r for r, _ in track_rows), default=0) + 1, dtype=object)
            for rowid, track_id in track_rows:
                by_rowid[rowid] = track_id
            cur.execute(sql, params)
            df = pd.DataFrame(cur.fetchall(), columns=["listener_id", "track_id", "weight", "recent"])
            df["track_id"] = by_rowid[df["track_id"].to_numpy(dtype=np.int64)]
            df["n_events"] = 1
        cur.close()
        raw.commit()
    finally:
        raw.close()
    df["weight"] = pd.to_numeric(df["weight"], errors="coerce").fillna(0.0)
    df["recent"] = pd.to_numeric(df["recent"], errors="coerce").fillna(0.0)
    df["n_events"] = df["n_events"].astype(np.int64)
    return df[columns]


# --- Listeners ----------------------------------------------------------------------------------------

_KNOWN_BY_SQL = """
SELECT l.listener_id FROM listeners l
WHERE EXISTS (SELECT 1 FROM listening_events e WHERE e.listener_id = l.listener_id AND e.ts < :end)
   OR (l.created_at < :end
       AND NOT EXISTS (SELECT 1 FROM listening_events e WHERE e.listener_id = l.listener_id))
ORDER BY l.listener_id"""


def listeners_known_by(ctx: Context, end: dt.datetime) -> list[str]:
    """Listeners the service knew before ``end`` (the end of the run date), sorted: those with a listening
    event before it, and those without any event at all whose row was created before it. A listener whose
    first event comes later is not part of that night, so a rerun of a past date serves the same listeners.
    """
    if ctx.dialect == "sqlite":
        # Timestamps are text there ("YYYY-MM-DD HH:MM:SS[.ffffff]"): compare in the same form.
        value: Any = end.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    else:
        value = end
    with ctx.engine.connect() as conn:
        return list(conn.execute(text(_KNOWN_BY_SQL), {"end": value}).scalars())


# --- Profiles -----------------------------------------------------------------------------------------

PROFILE_COLUMNS = [
    "listener_id",
    "status",
    "n_events",
    "weight_total",
    "tempo_bpm",
    "tempo_spread",
    "key_pc",
    "mode",
    "key_name",
    "major_share",
    "top_families",
    "density",
    "density_spread",
    "vector",
    "key_weights",
    "program_weights",
    "meter_weights",
]
_KEY_NAMES = [key_name(*key_of_index(i)) for i in range(N_KEYS)]


def _json_rows(matrix: np.ndarray, decimals: int) -> list[str]:
    return [json.dumps(row) for row in np.round(matrix, decimals).tolist()]


@dataclass(frozen=True)
class DriftRule:
    """When a listener counts as moving: see the settings ``profile_recent_days`` and ``profile_drift_*``.
    ``z_start=inf`` turns the rule off (every profile from the whole window)."""

    z_start: float = math.inf
    z_full: float = math.inf
    spread_floor: float = 0.05  # log2 units (3.5 % of a tempo): a listener of one tempo still has noise

    @classmethod
    def from_settings(cls, settings: Any) -> DriftRule:
        return cls(float(settings.profile_drift_z_start), float(settings.profile_drift_z_full))


def _row_sums(W: sparse.csr_matrix) -> np.ndarray:
    return np.asarray(W.sum(axis=1)).ravel()


def _kish(M: sparse.csr_matrix, total: np.ndarray) -> np.ndarray:
    """Kish's effective sample size of each row's weights (tracks are the samples)."""
    return total**2 / np.maximum(_row_sums(M.multiply(M)), 1e-12)


def drift_blend(
    W: sparse.csr_matrix, R: sparse.csr_matrix, tracks: TrackFeatures, rule: DriftRule
) -> np.ndarray:
    """Per listener, how far (0..1) the profile moves to the recent days' alone.

    The recent days' weighted tracks ``R`` against the older ones (``W - R``): for each continuous taste
    feature (log2 tempo, log2 density), the difference of the two means in standard errors (a two-sample
    z: the spread pooled within the two groups, so that the move itself does not widen it; each group's
    size its effective number of tracks). A listener's profile blends linearly from the window's at
    ``z_start`` to the recent days' at ``z_full``; the largest ``z`` of the features counts.
    """
    if not np.isfinite(rule.z_start):
        return np.zeros(W.shape[0])
    older = (W - R).tocsr()
    older.data = np.clip(older.data, 0.0, None)
    older.eliminate_zeros()
    n_r, n_o = _row_sums(R), _row_sums(older)
    both = (n_r > 0) & (n_o > 0)
    if not both.any():
        return np.zeros(W.shape[0])
    safe_r, safe_o = np.where(n_r > 0, n_r, 1.0), np.where(n_o > 0, n_o, 1.0)
    size = 1.0 / np.maximum(_kish(R, n_r), 1.0) + 1.0 / np.maximum(_kish(older, n_o), 1.0)
    z = np.zeros(W.shape[0])
    for col, squares in ((I_TEMPO, tracks.tempo_sq), (I_DENSITY, tracks.density_sq)):
        values = tracks.vectors[:, col]
        mean_r, mean_o = (R @ values) / safe_r, (older @ values) / safe_o
        within = (R @ squares - n_r * mean_r**2) + (older @ squares - n_o * mean_o**2)
        spread = np.sqrt(np.clip(within / np.maximum(n_r + n_o, 1e-12), 0.0, None))
        se = np.maximum(spread, rule.spread_floor) * np.sqrt(size)
        z = np.maximum(z, np.abs(mean_r - mean_o) / se)
    span = max(rule.z_full - rule.z_start, 1e-9)
    return np.where(both, np.clip((z - rule.z_start) / span, 0.0, 1.0), 0.0)


def compute_profiles(
    pairs: pd.DataFrame,
    tracks: TrackFeatures,
    listener_ids: list[str],
    min_events: int,
    drift: DriftRule | None = None,
    availability: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Profiles (``PROFILE_COLUMNS``; JSON columns as JSON text, cold rows with NULLs) for ``listener_ids``
    from weighted events or listener-track sums. With a ``drift`` rule and a ``recent`` column, a listener
    whose recent listening has moved away from the window's gets a profile blended towards the recent days
    (:func:`drift_blend`); ``counts["drifting"]`` says how many moved at all. ``availability`` (one weight per
    track, :func:`availability_weights`) scales each track's summed weight."""
    lidx = pd.Index(listener_ids)
    li = lidx.get_indexer(pairs["listener_id"])
    ti = tracks.index.get_indexer(pairs["track_id"])
    known = (li >= 0) & (ti >= 0)
    n_ev_all = pairs["n_events"].to_numpy(dtype=np.int64)
    counts = {"events_unknown_track": int(n_ev_all[ti < 0].sum())}
    li, ti = li[known], ti[known]
    n_listeners, n_tracks = len(lidx), len(tracks.index)
    n_events = np.bincount(li, weights=n_ev_all[known], minlength=n_listeners).astype(np.int64)
    # Sum per listener and track first (the sparse constructor adds duplicates), then drop tracks whose
    # net weight is not positive: a track skipped more than enjoyed does not pull the profile at all.
    W = sparse.csr_matrix(
        (pairs["weight"].to_numpy(dtype=float)[known], (li, ti)), shape=(n_listeners, n_tracks)
    )
    W.data = np.clip(W.data, 0.0, None)
    W.eliminate_zeros()
    total = np.asarray(W.sum(axis=1)).ravel()
    weight_total = total  # the engagement evidence, before the availability weight
    scale = sparse.diags(availability) if availability is not None else None
    if scale is not None:
        W = (W @ scale).tocsr()
        total = _row_sums(W)
    blend = np.zeros(n_listeners)
    if drift is not None and "recent" in pairs:
        R = sparse.csr_matrix(
            (pairs["recent"].to_numpy(dtype=float)[known], (li, ti)), shape=(n_listeners, n_tracks)
        )
        R.data = np.clip(R.data, 0.0, None)
        if scale is not None:
            R = R @ scale
        R = R.multiply(W > 0).tocsr()  # a track the window as a whole does not want stays out
        R.eliminate_zeros()
        blend = drift_blend(W, R, tracks, drift)
        if (blend > 0).any():
            # Both halves as shares of their own totals, mixed: every statistic below is then the blend
            # of the window's and the recent days' (the weights sum to 1 per listener).
            recent_total = _row_sums(R)
            keep = (1.0 - blend) / np.where(total > 0, total, 1.0)
            move = blend / np.where(recent_total > 0, recent_total, 1.0)
            W = (sparse.diags(keep) @ W + sparse.diags(move) @ R).tocsr()
            total = _row_sums(W)
    counts["drifting"] = int((blend > 0).sum())
    safe = np.where(total > 0, total, 1.0)
    mean = (W @ tracks.vectors) / safe[:, None]
    tempo_sq = (W @ tracks.tempo_sq) / safe
    dens_sq = (W @ tracks.density_sq) / safe
    mean[:, I_TEMPO_SPREAD] = np.sqrt(np.clip(tempo_sq - mean[:, I_TEMPO] ** 2, 0.0, None))
    dens_spread = np.sqrt(np.clip(dens_sq - mean[:, I_DENSITY] ** 2, 0.0, None))
    key_w = (W @ tracks.keys).toarray() / safe[:, None]
    meter_w = (W @ tracks.meters).toarray() / safe[:, None]
    prog_w = (W @ tracks.programs).tocsr()
    fam = mean[:, I_FAMILY0:]
    top_fam = np.argsort(-fam, axis=1, kind="stable")[:, :3]

    status = np.where(total <= 0, "cold", np.where(n_events >= min_events, "profiled", "thin"))
    has = status != "cold"
    kbest = key_w.argmax(axis=1)
    df = pd.DataFrame(
        {
            "listener_id": listener_ids,
            "status": status,
            "n_events": n_events,
            "weight_total": np.round(weight_total, 6),
            "tempo_bpm": np.round(2.0 ** mean[:, I_TEMPO], 3),
            "tempo_spread": np.round(mean[:, I_TEMPO_SPREAD], 5),
            "key_pc": kbest % 12,
            "mode": np.where(kbest >= 12, "minor", "major"),
            "key_name": np.asarray(_KEY_NAMES, dtype=object)[kbest],
            "major_share": np.round(key_w[:, :12].sum(axis=1), 5),
            "top_families": [
                ";".join(FAMILIES[j] for j in row if f[j] > 0) for row, f in zip(top_fam, fam, strict=True)
            ],
            "density": np.round(2.0 ** mean[:, I_DENSITY], 4),
            "density_spread": np.round(dens_spread, 5),
            "vector": _json_rows(mean, 6),
            "key_weights": _json_rows(key_w, 5),
        }
    )
    data, indices, indptr = prog_w.data.tolist(), prog_w.indices.tolist(), prog_w.indptr.tolist()
    names = [str(p) for p in range(128)] + [DRUMS]
    progs = []
    for i in range(n_listeners):
        a, b = indptr[i], indptr[i + 1]
        top = sorted(zip(data[a:b], indices[a:b], strict=True), reverse=True)[:TOP_PROGRAMS_KEPT]
        progs.append(json.dumps({names[p]: round(w / safe[i], 5) for w, p in top}))
    df["program_weights"] = progs
    meter_names = [str(m) for m in tracks.meter_names]
    df["meter_weights"] = [
        json.dumps({m: w for m, w in zip(meter_names, row, strict=True) if w > 0})
        for row in np.round(meter_w, 5).tolist()
    ]
    # Cold listeners have no evidence: every taste column is NULL.
    df.loc[~has, PROFILE_COLUMNS[4:]] = None
    df["key_pc"] = df["key_pc"].astype("Int64")  # stays an integer column with NULLs (COPY rejects "2.0")
    counts |= {name: int((status == name).sum()) for name in ("profiled", "thin", "cold")}
    return df[PROFILE_COLUMNS], counts


def write_profiles(conn, dialect: str, run_date: dt.date, df: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    """Bulk-insert profile rows inside the caller's transaction (COPY on PostgreSQL, executemany on SQLite).

    The ORM's per-row JSON encoding took longer than computing the profiles; the JSON here is text already.
    """
    out = df.assign(run_date=run_date.isoformat())
    cols = [*PROFILE_COLUMNS, "run_date"]
    dbapi = conn.connection.driver_connection
    if dialect == "postgresql":
        buf = io.StringIO()
        out[cols].to_csv(buf, index=False, header=False)
        with dbapi.cursor().copy(
            f"COPY taste_profiles ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)"
        ) as cp:
            cp.write(buf.getvalue())
        return
    values = out[cols].astype(object).where(out[cols].notna(), None)
    dbapi.cursor().executemany(
        f"INSERT INTO taste_profiles ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        values.itertuples(index=False, name=None),
    )


def run(ctx: Context, run_date: dt.date, progress: Progress | None = None) -> dict[str, Any]:
    """Profile every listener for ``run_date``; rewrites that date's profiles in one transaction."""
    say = progress or log.info
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    start, end = window(ctx, run_date)
    tracks, problems = load_tracks(ctx)
    timings["tracks_s"] = time.perf_counter() - t0
    say(f"{len(tracks.index)} tracks usable, {len(problems)} quarantined")

    t1 = time.perf_counter()
    pairs = load_pair_weights(ctx, start, end)
    timings["events_sql_s"] = time.perf_counter() - t1
    say(
        f"{int(pairs['n_events'].sum())} events in {start:%Y-%m-%d}..{end:%Y-%m-%d} "
        f"({len(pairs)} rows from the database) in {timings['events_sql_s']:.1f} s"
    )

    t2 = time.perf_counter()
    listener_ids = listeners_known_by(ctx, end)
    settings = ctx.settings
    availability = availability_weights(
        tracks, settings.profile_availability_power, settings.profile_availability_bandwidth_log2
    )
    profiles, counts = compute_profiles(
        pairs,
        tracks,
        listener_ids,
        settings.profile_min_events,
        DriftRule.from_settings(settings),
        availability,
    )
    timings["compute_s"] = time.perf_counter() - t2
    say(
        f"profiled {counts['profiled']}, thin {counts['thin']}, cold {counts['cold']}; "
        f"{counts['drifting']} moving towards their last {ctx.settings.profile_recent_days} days"
    )

    t3 = time.perf_counter()
    source = QUARANTINE_SOURCE.format(run_date=run_date)
    with ctx.engine.begin() as conn:
        conn.execute(delete(TasteProfile).where(TasteProfile.run_date == run_date))
        conn.execute(delete(QuarantinedRow).where(QuarantinedRow.source == source))
        write_profiles(conn, ctx.dialect, run_date, profiles)
        if problems:
            conn.execute(
                insert(QuarantinedRow),
                [
                    {
                        "source": source,
                        "row_number": n,
                        "raw": json.dumps(p["track"], default=str),
                        "reason": "bad_track_features",
                        "run_date": run_date,
                        "detail": f"track {p['track']['track_id']}: {p['detail']}; its events are left out of "
                        "taste profiles until the catalog row is fixed and re-ingested",
                    }
                    for n, p in enumerate(problems, start=1)
                ],
            )
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    say(f"wrote {len(profiles)} profiles for {run_date} in {timings['write_s']:.1f} s")
    return {
        "stage": "profile",
        "run_date": run_date.isoformat(),
        "n_listeners": len(profiles),
        "n_profiled": counts["profiled"],
        "n_thin": counts["thin"],
        "n_cold": counts["cold"],
        "n_events": int(pairs["n_events"].sum()),
        "n_weight_rows": len(pairs),
        "n_tracks_quarantined": len(problems),
        "n_events_unusable_track": counts["events_unknown_track"],
        "n_tracks_density_imputed": int(getattr(tracks, "n_density_imputed", 0)),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
