"""The profile stage: one taste vector per listener and run date from engagement- and recency-weighted
listening events, stored with readable columns (BPM, key, top families) in ``taste_profiles``.

How an event counts (settings ``profile_*``): a play counts its completion ratio (ms_played over the
track's length, at most 1), a ``complete`` counts 1, a play or skip shorter than ``profile_early_skip_s``
takes ``profile_skip_penalty`` off, a like adds ``profile_like_weight``, a save ``profile_save_weight``, a
dislike takes ``profile_dislike_weight`` off. Each event is multiplied by ``0.5 ** (age_days /
profile_half_life_days)``, age counted from the end of the run date. Only events of the
``profile_window_days`` days ending with the run date count. Per listener and track the weights are
summed in SQL; a track whose sum is not positive does not pull the profile. The profile is the weighted
mean of the tracks' own vectors (:func:`personalize.features.vector.track_vector`).

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
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sqlalchemy import delete, insert, select

from personalize.context import Context
from personalize.db.models import Listener, QuarantinedRow, TasteProfile, Track
from personalize.features.vector import (
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
from personalize.music.gm import DRUMS, FAMILIES, parse_programs
from personalize.music.keys import key_name

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
        self, track_ids: list[str], vectors: np.ndarray, key_idx: np.ndarray, programs: list, meters
    ):
        self.index = pd.Index(track_ids)
        self.vectors = vectors
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
                )
            ).all(),
            columns=["track_id", "tempo_bpm", "key_pc", "mode", "programs", "density", "meter"],
        )
    density = pd.to_numeric(df["density"], errors="coerce")
    usable_density = density[(density > 0) & np.isfinite(density)]
    fill = float(usable_density.median()) if len(usable_density) else 4.0
    imputed = ~((density > 0) & np.isfinite(density))
    ids, vectors, keys, programs, meters, problems = [], [], [], [], [], []
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
    feats = TrackFeatures(
        ids, np.array(vectors).reshape(-1, N_FEATURES), np.array(keys, dtype=int), programs, meters
    )
    feats.n_density_imputed = int(imputed.sum())  # type: ignore[attr-defined]
    return feats, problems


# --- Events -------------------------------------------------------------------------------------------

_WEIGHT_SQL = """
CASE
  WHEN e.kind = 'like' THEN {like_w}
  WHEN e.kind = 'save' THEN {save_w}
  WHEN e.kind = 'dislike' THEN -{dislike_w}
  WHEN e.kind = 'complete' THEN 1.0
  WHEN e.ms_played < {early_ms} THEN -{skip_penalty}
  WHEN e.ms_played >= t.duration_s * 1000.0 THEN 1.0
  ELSE e.ms_played / (t.duration_s * 1000.0)
END"""

# Age in days of an event at the end of the run date, per dialect.
_AGE_DAYS_SQL = {
    "sqlite": "(julianday({end}) - julianday(e.ts))",
    "postgresql": "(EXTRACT(EPOCH FROM (CAST({end} AS TIMESTAMPTZ) - e.ts)) / 86400.0)",
}


def pair_weights_sql(ctx: Context, param: Callable[[str], str]) -> str:
    """SELECT of (listener_id, track_id, weight, n_events) per listener and track in the window."""
    s = ctx.settings
    if ctx.dialect not in _AGE_DAYS_SQL:
        raise NotImplementedError(f"taste profiles support SQLite and PostgreSQL, not {ctx.dialect}")
    weight = _WEIGHT_SQL.format(
        like_w=float(s.profile_like_weight),
        save_w=float(s.profile_save_weight),
        dislike_w=float(s.profile_dislike_weight),
        early_ms=float(s.profile_early_skip_s * 1000.0),
        skip_penalty=float(s.profile_skip_penalty),
    )
    decay_per_day = -math.log(2.0) / float(s.profile_half_life_days)
    age = _AGE_DAYS_SQL[ctx.dialect].format(end=param("end"))
    return f"""
SELECT e.listener_id, e.track_id,
       SUM(({weight}) * EXP({decay_per_day!r} * {age})) AS weight,
       COUNT(*) AS n_events
FROM listening_events e JOIN tracks t ON t.track_id = e.track_id
WHERE e.ts >= {param("start")} AND e.ts < {param("end")}
GROUP BY e.listener_id, e.track_id"""


def load_pair_weights(ctx: Context, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """One row per (listener, track) heard in ``[start, end)`` with the summed event weight.

    The grouping runs in the database; PostgreSQL streams the result with COPY, SQLite through its cursor.
    """
    columns = ["listener_id", "track_id", "weight", "n_events"]
    raw = ctx.engine.raw_connection()
    try:
        if ctx.dialect == "postgresql":
            sql = pair_weights_sql(ctx, lambda name: f"%({name})s")
            cur = raw.cursor()
            # COPY cannot take parameters: render them with the driver's own quoting first.
            from psycopg import ClientCursor

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
            sql = pair_weights_sql(ctx, lambda name: f":{name}")
            fmt = "%Y-%m-%d %H:%M:%S"
            cur = raw.cursor()
            cur.execute(sql, {"start": start.strftime(fmt), "end": end.strftime(fmt)})
            df = pd.DataFrame(cur.fetchall(), columns=columns)
        cur.close()
        raw.commit()
    finally:
        raw.close()
    df["weight"] = pd.to_numeric(df["weight"], errors="coerce").fillna(0.0)
    df["n_events"] = df["n_events"].astype(np.int64)
    return df


# --- Profiles -----------------------------------------------------------------------------------------


def compute_profiles(
    pairs: pd.DataFrame, tracks: TrackFeatures, listener_ids: list[str], min_events: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Profile rows (without run_date) for ``listener_ids`` from per-(listener, track) weights."""
    lidx = pd.Index(listener_ids)
    li = lidx.get_indexer(pairs["listener_id"])
    ti = tracks.index.get_indexer(pairs["track_id"])
    known = (li >= 0) & (ti >= 0)
    counts = {"pairs_unknown_track": int((ti < 0).sum()), "events_unknown_track": 0}
    counts["events_unknown_track"] = int(pairs["n_events"].to_numpy()[ti < 0].sum())
    li, ti = li[known], ti[known]
    weight = pairs["weight"].to_numpy(dtype=float)[known]
    n_ev = pairs["n_events"].to_numpy(dtype=np.int64)[known]
    n_listeners, n_tracks = len(lidx), len(tracks.index)
    n_events = np.bincount(li, weights=n_ev, minlength=n_listeners).astype(np.int64)
    pos = np.clip(weight, 0.0, None)
    W = sparse.csr_matrix((pos, (li, ti)), shape=(n_listeners, n_tracks))
    total = np.asarray(W.sum(axis=1)).ravel()
    safe = np.where(total > 0, total, 1.0)[:, None]
    mean = (W @ tracks.vectors) / safe
    tempo_sq = (W @ tracks.tempo_sq) / safe.ravel()
    dens_sq = (W @ tracks.density_sq) / safe.ravel()
    mean[:, I_TEMPO_SPREAD] = np.sqrt(np.clip(tempo_sq - mean[:, I_TEMPO] ** 2, 0.0, None))
    dens_spread = np.sqrt(np.clip(dens_sq - mean[:, I_DENSITY] ** 2, 0.0, None))
    key_w = np.asarray((W @ tracks.keys).todense()) / safe
    prog_w = (W @ tracks.programs).tocsr()
    meter_w = np.asarray((W @ tracks.meters).todense()) / safe
    fam = mean[:, I_FAMILY0:]
    top_fam = np.argsort(-fam, axis=1, kind="stable")[:, :3]

    rows: list[dict[str, Any]] = []
    n_status = {"profiled": 0, "thin": 0, "cold": 0}
    for i, listener_id in enumerate(listener_ids):
        if total[i] <= 0:
            status = "cold"
        elif n_events[i] >= min_events:
            status = "profiled"
        else:
            status = "thin"
        n_status[status] += 1
        row: dict[str, Any] = {
            "listener_id": listener_id,
            "status": status,
            "n_events": int(n_events[i]),
            "weight_total": round(float(total[i]), 6),
        }
        if status == "cold":
            row.update(
                tempo_bpm=None,
                tempo_spread=None,
                key_pc=None,
                mode=None,
                key_name=None,
                major_share=None,
                top_families=None,
                density=None,
                density_spread=None,
                vector=None,
                key_weights=None,
                program_weights=None,
                meter_weights=None,
            )
            rows.append(row)
            continue
        v = mean[i]
        kbest = int(np.argmax(key_w[i]))
        pc, mode = key_of_index(kbest)
        start, stop = prog_w.indptr[i], prog_w.indptr[i + 1]
        progs = sorted(
            zip(prog_w.data[start:stop] / total[i], prog_w.indices[start:stop], strict=True), reverse=True
        )[:TOP_PROGRAMS_KEPT]
        row.update(
            tempo_bpm=round(float(2.0 ** v[I_TEMPO]), 3),
            tempo_spread=round(float(v[I_TEMPO_SPREAD]), 5),
            key_pc=pc,
            mode=mode,
            key_name=key_name(pc, mode),
            major_share=round(float(key_w[i, :12].sum()), 5),
            top_families=";".join(FAMILIES[j] for j in top_fam[i] if fam[i, j] > 0),
            density=round(float(2.0 ** v[I_DENSITY]), 4),
            density_spread=round(float(dens_spread[i]), 5),
            vector=[round(float(x), 6) for x in v],
            key_weights=[round(float(x), 5) for x in key_w[i]],
            program_weights={("drums" if p == 128 else str(int(p))): round(float(w), 5) for w, p in progs},
            meter_weights={
                str(m): round(float(w), 5)
                for m, w in zip(tracks.meter_names, meter_w[i], strict=True)
                if w > 0
            },
        )
        rows.append(row)
    return rows, n_status | counts


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
        f"({len(pairs)} listener-track pairs) in {timings['events_sql_s']:.1f} s"
    )

    t2 = time.perf_counter()
    with ctx.engine.connect() as conn:
        listener_ids = list(
            conn.execute(select(Listener.listener_id).order_by(Listener.listener_id)).scalars()
        )
    rows, counts = compute_profiles(pairs, tracks, listener_ids, ctx.settings.profile_min_events)
    timings["compute_s"] = time.perf_counter() - t2
    say(f"profiled {counts['profiled']}, thin {counts['thin']}, cold {counts['cold']}")

    t3 = time.perf_counter()
    source = QUARANTINE_SOURCE.format(run_date=run_date)
    with ctx.engine.begin() as conn:
        conn.execute(delete(TasteProfile).where(TasteProfile.run_date == run_date))
        conn.execute(delete(QuarantinedRow).where(QuarantinedRow.source == source))
        for part in range(0, len(rows), 20_000):
            chunk = [r | {"run_date": run_date, "cluster_id": None} for r in rows[part : part + 20_000]]
            conn.execute(insert(TasteProfile), chunk)
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
    say(f"wrote {len(rows)} profiles for {run_date} in {timings['write_s']:.1f} s")
    return {
        "stage": "profile",
        "run_date": run_date.isoformat(),
        "n_listeners": len(rows),
        "n_profiled": counts["profiled"],
        "n_thin": counts["thin"],
        "n_cold": counts["cold"],
        "n_events": int(pairs["n_events"].sum()),
        "n_pairs": len(pairs),
        "n_tracks_quarantined": len(problems),
        "n_events_unusable_track": counts["events_unknown_track"],
        "n_tracks_density_imputed": int(getattr(tracks, "n_density_imputed", 0)),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
