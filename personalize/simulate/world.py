"""Build the demo world: a catalog made from real music, listeners drawn from latent taste segments, and a
listening history produced by the engagement model, written as files the ingest commands read, with the
ground truth beside them.

Layout under ``<data_dir>/sim/``: ``catalog.csv``, ``midi/<track_id>.mid``, ``events.parquet`` and
``truth/`` (``listeners.parquet``, ``segments.json``, ``world.json``, ``catalog.parquet``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personalize.music.gm import FAMILIES
from personalize.music.keys import key_name
from personalize.simulate import truth as truth_files
from personalize.simulate.catalog import CATALOG_COLUMNS, build_catalog
from personalize.simulate.corpus import default_cache_dir, load_pieces
from personalize.simulate.engagement import FAMILY_COLUMNS, fit_matrix, listen, plays_to_events
from personalize.simulate.segments import Segment, make_segments

CHUNK_LISTENERS = 4000  # listeners simulated together; fixed, so a seed gives the same files on any machine
EXPOSURE_SHARPNESS = 6.0  # how strongly the "recommender" favours tracks that fit (fit ** sharpness)
EXPOSURE_TEMPO_WIDEN = 1.6  # the recommender knows tempo taste less sharply than the listener
DRIFTING_SHARE = 0.35  # listeners whose tempo taste drifts
DRIFT_BPM_PER_WEEK = (0.5, 2.5)  # range of drift speed (either direction)
_TRACK_COLUMNS = ["tempo_bpm", "key_pc", "mode", "programs", "density", "duration_s"]
_DAY_MS = 86_400_000


@dataclass
class WorldConfig:
    """What world to build. The same config and seed give byte-identical files."""

    listeners: int = 2000
    days: int = 30
    seed: int = 7
    overlap: bool = False
    end_date: dt.date | None = None  # default: yesterday (UTC), so no event lies in the future
    catalog_size: int = 600
    plays_per_day: float = 6.0  # median plays on an active day (each listener's own mean is lognormal)
    random_exposure: float = 0.25  # share of plays that are random catalog tracks
    corpus_limit: int | None = None  # use only the first pieces of each collection (small test worlds)

    def resolved_end_date(self) -> dt.date:
        return self.end_date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))

    def tag(self) -> str:
        """Short fingerprint of everything that shapes the history; event ids start with it, so events of
        two different worlds are never taken for each other."""
        fields = {**asdict(self), "end_date": self.resolved_end_date().isoformat()}
        return "w" + hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class WorldSummary:
    out_dir: str
    listeners: int
    tracks: int
    events: int
    plays: int
    counts_by_kind: dict[str, int]
    segments: int
    start_date: str
    end_date: str
    catalog_key_agreement: float  # share of tracks whose measured key equals the assigned key
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, float]:
        c, plays = self.counts_by_kind, max(self.plays, 1)
        return {
            "skip_early": c.get("skip", 0) / plays,
            "ended_early": (c.get("skip", 0) + c.get("play", 0)) / plays,
            "complete": c.get("complete", 0) / plays,
            "like": c.get("like", 0) / plays,
            "dislike": c.get("dislike", 0) / plays,
            "save": c.get("save", 0) / plays,
        }

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "rates": {k: round(v, 4) for k, v in self.rates.items()}}


def make_listeners(
    segments: list[Segment], n: int, days: int, plays_per_day: float, overlap: bool, rng: np.random.Generator
) -> pd.DataFrame:
    """True taste of ``n`` listeners (``truth.TRUTH_COLUMNS``): segment, tempo with drift, key, families,
    density, and heavy-tailed activity."""
    k = len(segments)
    seg_idx = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 12.0)))
    seg_tempo = np.array([s.tempo_bpm for s in segments])[seg_idx]
    spread = np.array([s.tempo_spread for s in segments])[seg_idx]
    tempo_start = seg_tempo * np.exp(rng.normal(0.0, spread))
    drifting = rng.random(n) < DRIFTING_SHARE
    drift = np.where(drifting, rng.uniform(*DRIFT_BPM_PER_WEEK, n) * rng.choice([-1.0, 1.0], n), 0.0)
    tempo_end = tempo_start + drift * (days - 1) / 7.0

    key_pick = rng.random(n)
    key_pc = np.empty(n, dtype=int)
    modes = np.empty(n, dtype=object)
    seg_weights = np.zeros((k, len(FAMILIES)))
    for s in segments:
        for fam, w in s.family_weights.items():
            seg_weights[s.segment_id, FAMILIES.index(fam)] = w
        rows = np.flatnonzero(seg_idx == s.segment_id)
        choice = np.minimum((key_pick[rows] * len(s.keys)).astype(int), len(s.keys) - 1)
        tuples = s.key_tuples
        key_pc[rows] = [tuples[c][0] for c in choice]
        modes[rows] = [tuples[c][1] for c in choice]
    weights = seg_weights[seg_idx] * rng.lognormal(0.0, 0.25, (n, len(FAMILIES)))
    if overlap:
        # Some listeners borrow a share of another segment's instruments.
        other = seg_weights[rng.integers(k, size=n)]
        weights = weights + rng.uniform(0.0, 0.35, (n, 1)) * other
    weights = weights + rng.uniform(0.0, 0.01, weights.shape)  # a little of everything
    weights /= weights.sum(axis=1, keepdims=True)
    top3 = np.argsort(-weights, axis=1)[:, :3]

    seg_density = np.array([s.density for s in segments])[seg_idx]
    truth = pd.DataFrame(
        {
            "listener_id": [f"L{i + 1:06d}" for i in range(n)],
            "segment_id": seg_idx.astype(int),
            "segment_name": [segments[i].name for i in seg_idx],
            "tempo_bpm": np.round(tempo_end, 3),
            "tempo_bpm_start": np.round(tempo_start, 3),
            "drift_bpm_per_week": np.round(drift, 3),
            "tempo_tolerance": rng.uniform(0.06, 0.10, n),
            "key_pc": key_pc,
            "mode": modes.astype(str),
            "key": [key_name(p, m) for p, m in zip(key_pc, modes, strict=True)],
            "top_families": [";".join(FAMILIES[j] for j in row) for row in top3],
            "density": np.round(seg_density * np.exp(rng.normal(0.0, 0.12, n)), 3),
            "plays_per_day": np.minimum(rng.lognormal(np.log(plays_per_day), 0.8, n), 150.0),
            "active_share": rng.beta(2.0, 2.5, n),
        }
    )
    for j, col in enumerate(FAMILY_COLUMNS):
        truth[col] = weights[:, j]
    return truth


def _sample_rows(weights: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each draw ``u`` in [0, 1), a column index sampled in proportion to ``weights[row]``."""
    cdf = np.cumsum(weights, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    # One searchsorted over all rows at once: row r's CDF is shifted into (r, r + 1].
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()
    pos = np.searchsorted(flat, rows + np.minimum(u, 1.0 - 1e-12), side="right")
    return np.minimum(pos - rows * weights.shape[1], weights.shape[1] - 1)


def simulate_chunk(
    truth: pd.DataFrame,
    tracks: pd.DataFrame,
    days: int,
    start_date: dt.date,
    random_exposure: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Listening events of a group of listeners over ``days`` days. Listener and track columns hold row
    positions in ``truth`` and ``tracks`` (cheap to sort); the caller turns them into ids."""
    n_listeners, n_tracks = len(truth), len(tracks)
    active = rng.random((n_listeners, days)) < truth["active_share"].to_numpy()[:, None]
    counts = rng.poisson(truth["plays_per_day"].to_numpy()[:, None], (n_listeners, days)) * active
    cell = np.repeat(np.arange(n_listeners * days), counts.ravel())
    listener, day = cell // days, cell % days
    n_plays = len(cell)

    # Exposure: mostly tracks a recommender thinks fit (taste as of the first day), some at random.
    start_taste = truth.assign(tempo_bpm=truth["tempo_bpm_start"])
    exposure = fit_matrix(start_taste, tracks, tempo_widen=EXPOSURE_TEMPO_WIDEN) ** EXPOSURE_SHARPNESS + 1e-12
    track = _sample_rows(exposure, listener, rng.random(n_plays))
    random_pick = rng.random(n_plays) < random_exposure
    track = np.where(random_pick, rng.integers(n_tracks, size=n_plays), track)

    # The listener reacts with the taste of the day: drift moves the preferred tempo week by week.
    play_taste = truth.iloc[listener].reset_index(drop=True)
    play_taste["tempo_bpm"] = (
        play_taste["tempo_bpm_start"].to_numpy() + play_taste["drift_bpm_per_week"].to_numpy() * day / 7.0
    )
    plays = listen(play_taste, tracks.iloc[track].reset_index(drop=True), rng)

    # Sessions: plays of a listener's day follow each other with short gaps and an occasional break,
    # starting at a time of day that leaves room for the whole day's listening before midnight.
    gap_ms = rng.uniform(500, 4000, n_plays) + (rng.random(n_plays) < 0.1) * rng.exponential(1.5e6, n_plays)
    span = plays["ms_played"].to_numpy() + gap_ms
    ends = np.cumsum(span)
    begins = ends - span
    first = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    group = np.cumsum(np.r_[True, cell[1:] != cell[:-1]]) - 1
    offset = begins - begins[first][group]
    total = np.add.reduceat(span, first) if n_plays else np.zeros(0)
    hour = np.select(
        [rng.random(len(first)) < 0.25, rng.random(len(first)) < 0.4],
        [rng.normal(8.0, 1.5, len(first)), rng.normal(13.0, 2.0, len(first))],
        rng.normal(20.0, 2.5, len(first)),
    )
    latest = np.maximum(_DAY_MS - total - 60_000, 0)
    session_start = np.clip(hour * 3_600_000, 0, latest)
    day0_ms = pd.Timestamp(start_date, tz="UTC").value // 1_000_000
    ts_ms = day0_ms + day.astype(np.int64) * _DAY_MS + (session_start[group] + offset).astype(np.int64)

    plays["listener_id"] = listener
    plays["track_id"] = track
    plays["ts"] = pd.to_datetime(ts_ms, unit="ms", utc=True)
    return plays_to_events(plays)


def _segment_densities(segments: list[Segment], catalog: pd.DataFrame) -> None:
    """Each segment's preferred density is what its own style of track actually measures."""
    for seg in segments:
        mine = catalog.loc[catalog["style_segment"] == seg.segment_id, "density"]
        seg.density = round(float(mine.median()) if len(mine) else float(catalog["density"].median()), 3)


def build_world(
    out_dir: Path,
    config: WorldConfig,
    cache_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> WorldSummary:
    """Write the world's files under ``out_dir`` (normally ``<data_dir>/sim``), replacing an older world.

    ``progress(stage, done, total)`` is called while the corpus is parsed, the catalog written and the
    listeners simulated.
    """
    if config.listeners < 1 or config.days < 1 or config.catalog_size < 10:
        raise ValueError("a world needs at least 1 listener, 1 day and 10 catalog tracks")
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    end_date = config.resolved_end_date()
    start_date = end_date - dt.timedelta(days=config.days - 1)
    out_dir = Path(out_dir)
    for stale in ("midi", "truth", "catalog.csv", "events.parquet"):
        target = out_dir / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    pieces = load_pieces(
        cache_dir or default_cache_dir(), config.corpus_limit, lambda d, n: report("corpus", d, n)
    )
    timings["corpus_s"] = time.perf_counter() - t

    t = time.perf_counter()
    segments = make_segments(config.overlap)
    catalog = build_catalog(
        pieces,
        segments,
        config.catalog_size,
        out_dir / "midi",
        np.random.default_rng([config.seed, 1]),
        progress=lambda d: report("catalog", d, config.catalog_size),
    )
    catalog[CATALOG_COLUMNS].to_csv(out_dir / "catalog.csv", index=False)
    catalog.to_parquet(truth_dir / truth_files.CATALOG_TRUTH_FILE, index=False)
    _segment_densities(segments, catalog)
    timings["catalog_s"] = time.perf_counter() - t

    t = time.perf_counter()
    truth = make_listeners(
        segments, config.listeners, config.days, config.plays_per_day, config.overlap,
        np.random.default_rng([config.seed, 2]),
    )  # fmt: skip
    tracks = catalog[_TRACK_COLUMNS]
    track_ids = pa.array(catalog["track_id"].to_numpy(str))
    listener_ids = pa.array(truth["listener_id"].to_numpy(str))
    counts: dict[str, int] = {}
    n_events = 0
    world_tag = config.tag()
    schema = pa.schema(
        [
            ("event_id", pa.string()),
            ("listener_id", pa.string()),
            ("track_id", pa.string()),
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("ms_played", pa.int64()),
            ("kind", pa.string()),
        ]
    )
    with pq.ParquetWriter(out_dir / "events.parquet", schema) as writer:
        for chunk_no, lo in enumerate(range(0, config.listeners, CHUNK_LISTENERS)):
            part = truth.iloc[lo : lo + CHUNK_LISTENERS]
            events = simulate_chunk(
                part, tracks, config.days, start_date, config.random_exposure,
                np.random.default_rng([config.seed, 3, chunk_no]),
            )  # fmt: skip
            n = len(events)
            serial = pa.array(np.arange(n_events + 1, n_events + n + 1), pa.int64())
            table = pa.table(
                {
                    "event_id": pc.binary_join_element_wise(
                        world_tag, pc.utf8_lpad(pc.cast(serial, pa.string()), 9, "0"), "-"
                    ),
                    "listener_id": pc.take(listener_ids, pa.array(events["listener_id"].to_numpy() + lo)),
                    "track_id": pc.take(track_ids, pa.array(events["track_id"].to_numpy())),
                    "ts": pa.array(
                        events["ts"].dt.tz_convert(None).to_numpy().astype("datetime64[ms]"),
                        pa.timestamp("ms", tz="UTC"),
                    ),
                    "ms_played": pa.array(events["ms_played"].to_numpy(np.int64)),
                    "kind": pa.array(events["kind"].to_numpy(str)),
                },
                schema=schema,
            )
            writer.write_table(table, row_group_size=1_000_000)
            for kind_name, c in events["kind"].value_counts().items():
                counts[str(kind_name)] = counts.get(str(kind_name), 0) + int(c)
            n_events += n
            report("listeners", min(lo + CHUNK_LISTENERS, config.listeners), config.listeners)
    timings["events_s"] = time.perf_counter() - t

    truth[truth_files.TRUTH_COLUMNS].to_parquet(truth_dir / truth_files.LISTENERS_FILE, index=False)
    sizes = truth["segment_id"].value_counts()
    seg_out = [{**s.to_dict(), "listeners": int(sizes.get(s.segment_id, 0))} for s in segments]
    (truth_dir / truth_files.SEGMENTS_FILE).write_text(json.dumps(seg_out, indent=2))
    key_ok = float(
        (
            (catalog["key_pc"] == catalog["assigned_key_pc"]) & (catalog["mode"] == catalog["assigned_mode"])
        ).mean()
    )
    summary = WorldSummary(
        out_dir=str(out_dir),
        listeners=config.listeners,
        tracks=len(catalog),
        events=n_events,
        plays=sum(counts.get(k, 0) for k in ("skip", "play", "complete")),
        counts_by_kind=dict(sorted(counts.items())),
        segments=len(segments),
        start_date=start_date.isoformat(),
        end_date=end_date.isoformat(),
        catalog_key_agreement=round(key_ok, 4),
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )
    world = {
        **{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(config).items()},
        "end_date": end_date.isoformat(),
        "start_date": start_date.isoformat(),
        "tag": world_tag,
        # Timings stay out so the same seed writes byte-identical files.
        "summary": {k: v for k, v in summary.to_dict().items() if k not in ("timings_s", "out_dir")},
    }
    (truth_dir / truth_files.WORLD_FILE).write_text(json.dumps(world, indent=2, default=str))
    return summary


def load_world(ctx, out_dir: Path, progress: bool = False) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Load the world's catalog and events into the database through the ingest functions (the same
    validation and quarantine as any file); returns both ingest reports and ``replaced_events``.

    Loading the same world again adds nothing. A different world written to the same folder (another
    seed, size or end date) replaces the events earlier loaded from that folder's events file, so the
    database never mixes two histories of the same listeners.
    """
    from sqlalchemy import delete, func, select

    from personalize.db.models import ListeningEvent, QuarantinedRow, Track
    from personalize.ingest import ingest_catalog, ingest_events

    out_dir = Path(out_dir)
    events_path = out_dir / "events.parquet"
    source = str(events_path.resolve())[-300:]
    tag = json.loads((out_dir / "truth" / truth_files.WORLD_FILE).read_text())["tag"]
    older = (ListeningEvent.source == source) & ~ListeningEvent.event_id.startswith(f"{tag}-")
    with ctx.sessions.begin() as session:
        replaced = session.scalar(select(func.count()).select_from(ListeningEvent).where(older)) or 0
        if replaced:
            session.execute(delete(ListeningEvent).where(older))
            session.execute(delete(QuarantinedRow).where(QuarantinedRow.source == source))
    catalog = pd.read_csv(out_dir / "catalog.csv")
    with ctx.sessions() as session:
        known = dict(
            session.execute(
                select(Track.track_id, Track.title).where(Track.track_id.in_(list(catalog["track_id"])))
            ).all()
        )
    changed = [
        t
        for t, title in zip(catalog["track_id"], catalog["title"], strict=True)
        if t in known and known[t] != title
    ]
    if changed:
        raise ValueError(
            f"the database already holds {len(changed)} different tracks under this world's ids "
            f"(e.g. {changed[0]}): it was loaded with another catalog (--seed/--catalog-size/--overlap). "
            "Use a fresh database (PERSONALIZE_DATABASE_URL or PERSONALIZE_DATA_DIR) for this world."
        )
    catalog_report = ingest_catalog(ctx, out_dir / "catalog.csv")
    events_report = ingest_events(ctx, events_path, progress=progress)
    return {"catalog": catalog_report, "events": events_report, "replaced_events": int(replaced)}
