"""Small synthetic listening worlds with known taste segments, written straight into the database in bulk.

For the taste tests and ``bench/bench_taste.py``: it does not aim at musical realism (that is the demo
world of ``personalize.simulate``), only at a known answer (each listener's segment, preferred tempo and
key) and at writing millions of events fast (SQLite executemany, PostgreSQL COPY).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from personalize.context import Context

# (tempo centre BPM, keys as (pc, mode), GM programs) per segment: far apart in every respect.
_SEGMENTS = [
    (64.0, [(2, "minor"), (7, "minor")], ["40", "0", "73"]),
    (96.0, [(7, "major"), (2, "major")], ["24", "40", "33"]),
    (124.0, [(9, "minor"), (4, "minor")], ["65", "33", "drums"]),
    (156.0, [(6, "minor"), (1, "minor")], ["81", "89", "drums"]),
    (80.0, [(5, "major"), (0, "major")], ["19", "48", "56"]),
    (140.0, [(3, "major"), (8, "major")], ["56", "11", "drums"]),
]


@dataclass
class SyntheticWorld:
    listener_ids: list[str]
    segment_of: dict[str, int]  # listener -> true segment
    tempo_of: dict[str, float]  # listener -> preferred BPM
    key_of: dict[str, tuple[int, str]]  # listener -> preferred key
    n_events: int = 0
    tracks: pd.DataFrame = field(default_factory=pd.DataFrame)


def make_world(
    n_listeners: int,
    events_per_listener: int,
    run_date: dt.date,
    *,
    n_segments: int = 4,
    tracks_per_segment: int = 60,
    days: int = 28,
    seed: int = 0,
    prefix: str = "L",
    event_seed: int | None = None,
    segments: list[int] | None = None,
) -> tuple[SyntheticWorld, pd.DataFrame, pd.DataFrame]:
    """A world and its catalog and events as DataFrames (not yet written).

    The catalog and each listener's segment depend on ``seed`` only, so another ``event_seed`` (and run
    date) gives the same listeners a fresh history; ``segments`` restricts listeners to those segments.
    """
    if not 1 <= n_segments <= len(_SEGMENTS):
        raise ValueError(f"n_segments must be 1..{len(_SEGMENTS)}")
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_segments):
        tempo, keys, progs = _SEGMENTS[s]
        for j in range(tracks_per_segment):
            pc, mode = keys[j % len(keys)] if j % 5 else keys[0]
            rows.append(
                {
                    "track_id": f"T{s}_{j:04d}",
                    "title": f"segment {s} track {j}",
                    "source": "catalog",
                    "duration_s": float(rng.uniform(120, 300)),
                    "tempo_bpm": float(tempo * np.exp(rng.normal(0, 0.06))),
                    "key_pc": pc,
                    "mode": mode,
                    "meter": "3/4" if s == 0 else "4/4",
                    "programs": ";".join(progs[: 2 + (j % 2)]),
                    "density": float(rng.uniform(2, 4) * (1 + s)),
                    "segment": s,
                }
            )
    tracks = pd.DataFrame(rows)
    listener_ids = [f"{prefix}{i:07d}" for i in range(n_listeners)]
    seg = rng.choice(segments if segments else np.arange(n_segments), n_listeners)
    rng = np.random.default_rng([seed, event_seed if event_seed is not None else 0])
    by_seg = [np.flatnonzero(tracks["segment"].to_numpy() == s) for s in range(n_segments)]
    # 80 % of plays from the own segment, the rest anywhere; engagement follows the fit.
    own = rng.random((n_listeners, events_per_listener)) < 0.8
    pick_own = (
        np.stack([rng.choice(by_seg[s], events_per_listener) for s in seg])
        if n_listeners
        else np.zeros((0, 0), int)
    )
    pick_any = rng.integers(0, len(tracks), (n_listeners, events_per_listener))
    t_idx = np.where(own, pick_own, pick_any).ravel()
    l_idx = np.repeat(np.arange(n_listeners), events_per_listener)
    fits = tracks["segment"].to_numpy()[t_idx] == seg[l_idx]
    dur_ms = (tracks["duration_s"].to_numpy()[t_idx] * 1000).astype(np.int64)
    u = rng.random(len(t_idx))
    ms = np.where(fits, (dur_ms * np.clip(u + 0.4, 0, 1)).astype(np.int64), (u * 20_000).astype(np.int64))
    kind = np.where(fits & (ms >= dur_ms), "complete", np.where(fits, "play", "skip")).astype(object)
    kind[fits & (rng.random(len(t_idx)) < 0.05)] = "like"
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    age_s = rng.uniform(60, days * 86400 - 60, len(t_idx))
    ts = pd.to_datetime(end) - pd.to_timedelta(age_s, unit="s")
    events = pd.DataFrame(
        {
            "event_id": [f"{prefix}{run_date:%Y%m%d}e{event_seed or 0}_{i:09d}" for i in range(len(t_idx))],
            "listener_id": np.asarray(listener_ids, dtype=object)[l_idx] if n_listeners else [],
            "track_id": tracks["track_id"].to_numpy()[t_idx],
            "ts": ts,
            "ms_played": ms,
            "kind": kind,
        }
    )
    key_seg = [_SEGMENTS[s][1][0] for s in range(n_segments)]
    world = SyntheticWorld(
        listener_ids=listener_ids,
        segment_of={lid: int(s) for lid, s in zip(listener_ids, seg, strict=True)},
        tempo_of={lid: _SEGMENTS[s][0] for lid, s in zip(listener_ids, seg, strict=True)},
        key_of={lid: key_seg[s] for lid, s in zip(listener_ids, seg, strict=True)},
        n_events=len(events),
        tracks=tracks,
    )
    return world, tracks.drop(columns="segment"), events


def write_world(ctx: Context, tracks: pd.DataFrame, events: pd.DataFrame, listener_ids: list[str]) -> None:
    """Insert tracks (skipping ids already there), listeners and events in bulk."""
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        if ctx.dialect == "postgresql":
            cur.execute("SELECT track_id FROM tracks")
            have = {r[0] for r in cur.fetchall()}
            new_tracks = tracks[~tracks["track_id"].isin(have)]
            _copy(cur, "tracks", new_tracks)
            _copy(cur, "listeners", pd.DataFrame({"listener_id": listener_ids}))
            ev = events.assign(ts=events["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
            for start in range(0, len(ev), 1_000_000):
                _copy(cur, "listening_events", ev.iloc[start : start + 1_000_000])
        else:
            # A big page cache keeps the three event indexes' B-trees in memory while millions of rows land.
            cur.execute("PRAGMA cache_size = -1000000")
            cols = list(tracks.columns)
            cur.executemany(
                f"INSERT OR IGNORE INTO tracks ({', '.join(cols)}, created_at) "
                f"VALUES ({', '.join('?' * len(cols))}, CURRENT_TIMESTAMP)",
                tracks.itertuples(index=False, name=None),
            )
            cur.executemany(
                "INSERT INTO listeners (listener_id, created_at) VALUES (?, CURRENT_TIMESTAMP)",
                ((lid,) for lid in listener_ids),
            )
            ts = events["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
            cur.executemany(
                "INSERT INTO listening_events (event_id, listener_id, track_id, ts, ms_played, kind) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                zip(
                    events["event_id"],
                    events["listener_id"],
                    events["track_id"],
                    ts,
                    events["ms_played"].astype(int).tolist(),
                    events["kind"],
                    strict=True,
                ),
            )
        raw.commit()
    finally:
        raw.close()


def _copy(cur, table: str, df: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    if df.empty:
        return
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=False)
    cols = ", ".join(df.columns)  # created_at is left to its server default
    with cur.copy(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buf.getvalue())
