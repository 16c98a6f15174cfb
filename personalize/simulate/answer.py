"""The world that answers back: night after night the demo world's listeners hear what the product
published to them (plus some listening of their own), and their plays, skips and likes go in through the
same ingest function as the app's ``POST /v1/events``.

Everything a day does is drawn from the world's seed and the day's number, so answering a day again
gives the same events (with the same ids, which ingest stores once) and the same measurements. Who is
around also follows from the seed: each listener of the history leaves on a night drawn once, new
listeners join every night (drawn from the same taste segments), and drifting listeners keep drifting
(:meth:`personalize.simulate.truth.WorldTruth.at`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from personalize.db.models import Playlist, PlaylistItem, Track, TrackPlan
from personalize.simulate.engagement import COMPLETE_LOGIT, LIKE_MAX, SKIP_LOGIT, fit_matrix, listen
from personalize.simulate.engagement import plays_to_events as to_events
from personalize.simulate.segments import Segment
from personalize.simulate.truth import WorldTruth
from personalize.simulate.world import EXPOSURE_SHARPNESS, EXPOSURE_TEMPO_WIDEN, make_listeners

HEAR_SHARE = 0.85  # share of a playlist's items an active listener gets to on a day
OUTSIDE_SHARE = 0.5  # a day's own listening (outside the playlist), as a share of the listener's usual plays
OUTSIDE_RANDOM = 0.25  # share of that outside listening that is random catalog tracks
JOIN_PER_NIGHT = 0.004  # new listeners a night, as a share of the history's listeners
LEAVE_PER_NIGHT = 0.003  # chance a listener leaves on any one night
_DAY_MS = 86_400_000


def expected_like(fit: np.ndarray) -> np.ndarray:
    """The engagement model's chance of a like for one play at this fit (what ``listen`` draws from)."""
    f = np.asarray(fit, dtype=float)
    heard = 1.0 - 1.0 / (1.0 + np.exp(-(SKIP_LOGIT[0] + SKIP_LOGIT[1] * f)))
    complete = 1.0 / (1.0 + np.exp(-(COMPLETE_LOGIT[0] + COMPLETE_LOGIT[1] * f)))
    return heard * LIKE_MAX * f**4 * (complete + 0.3 * (1.0 - complete))


@dataclass
class Population:
    """Every listener the loop's world has had by a night: taste (``truth`` columns), ``join_night`` (0
    for the history's listeners) and ``leave_night`` (the first night they are gone)."""

    listeners: pd.DataFrame

    def around(self, night: int) -> pd.DataFrame:
        lt = self.listeners
        return lt[(lt["join_night"] <= night) & (lt["leave_night"] > night)]


@dataclass
class AnsweringWorld:
    """The demo world's truth and seed, and what its listeners do on the days after its history."""

    truth: WorldTruth
    seed: int
    tag: str
    join_per_night: float = JOIN_PER_NIGHT
    leave_per_night: float = LEAVE_PER_NIGHT
    _population: dict[int, Population] = field(default_factory=dict, repr=False)

    @property
    def end_date(self) -> dt.date:
        return self.truth.end_date

    def date_of(self, night: int) -> dt.date:
        return self.end_date + dt.timedelta(days=night)

    def population(self, nights: int) -> Population:
        """The history's listeners and everyone who joined on nights 1..``nights``."""
        if nights in self._population:
            return self._population[nights]
        base = self.truth.listeners.copy()
        base["join_night"] = 0
        base["leave_night"] = np.random.default_rng([self.seed, 21]).geometric(
            self.leave_per_night, len(base)
        )
        frames = [base]
        segments = [
            Segment(**{k: v for k, v in s.items() if k != "listeners"})  # type: ignore[arg-type]
            for s in self.truth.segments
        ]
        ppd = float(self.truth.world.get("plays_per_day", 6.0))
        for night in range(1, nights + 1):
            rng = np.random.default_rng([self.seed, 22, night])
            n = int(rng.poisson(self.join_per_night * len(base)))
            if n == 0:
                continue
            joined = make_listeners(segments, n, 1, ppd, bool(self.truth.world.get("overlap")), rng)
            joined["listener_id"] = [f"N{night:03d}-{i:04d}" for i in range(n)]
            # Their drift starts on the day they join: truth.at() counts weeks from the world's first day.
            weeks = (self.date_of(night) - self.truth.start_date).days / 7.0
            joined["tempo_bpm_start"] = joined["tempo_bpm_start"] - joined["drift_bpm_per_week"] * weeks
            joined["join_night"] = night
            joined["leave_night"] = night + rng.geometric(self.leave_per_night, n)
            frames.append(joined[base.columns])
        pop = Population(pd.concat(frames, ignore_index=True))
        self._population[nights] = pop
        return pop

    def taste_on(self, night: int, listeners: pd.DataFrame) -> pd.DataFrame:
        """True taste of ``listeners`` on the loop's night (tempo after drift)."""
        weeks = (self.date_of(night) - self.truth.start_date).days / 7.0
        out = listeners.copy()
        out["tempo_bpm"] = (out["tempo_bpm_start"] + out["drift_bpm_per_week"] * weeks).clip(40.0, 240.0)
        return out


@dataclass
class DayAnswer:
    """One simulated day: the events to ingest and what the day measured."""

    events: pd.DataFrame  # event_id, listener_id, track_id, ts, ms_played, kind
    measures: dict[str, float | int | None]


def _published(ctx, before: dt.date) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Items of every listener's newest published playlist before ``before``, with the tracks' measured
    features and the listener a track was written for (None for a cluster's track)."""
    newest = (
        select(Playlist.listener_id, func.max(Playlist.run_date).label("run_date"))
        .where(Playlist.status == "published", Playlist.run_date < before)
        .group_by(Playlist.listener_id)
        .subquery()
    )
    query = (
        select(
            Playlist.listener_id, Playlist.run_date, PlaylistItem.position, Track.track_id, Track.tempo_bpm,
            Track.key_pc, Track.mode, Track.programs, Track.density, Track.duration_s, Track.cluster_id,
            TrackPlan.listener_id.label("written_for"),
        )
        .join(newest, (Playlist.listener_id == newest.c.listener_id) & (Playlist.run_date == newest.c.run_date))
        .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
        .join(Track, Track.track_id == PlaylistItem.track_id)
        .outerjoin(TrackPlan, TrackPlan.track_id == Track.track_id)
        .where(Playlist.status == "published")
        .order_by(Playlist.listener_id, PlaylistItem.position)
    )  # fmt: skip
    with ctx.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))


def _night_tracks(ctx, run_date: dt.date) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The night's rendered cluster tracks (not the personal ones): what a random-cluster playlist draws from."""
    query = (
        select(
            Track.track_id, Track.tempo_bpm, Track.key_pc, Track.mode, Track.programs, Track.density,
            Track.duration_s, Track.cluster_id,
        )
        .outerjoin(TrackPlan, TrackPlan.track_id == Track.track_id)
        .where(
            Track.source == "generated", Track.run_date == run_date, Track.audio_uri.is_not(None),
            TrackPlan.listener_id.is_(None),
        )
        .order_by(Track.track_id)
    )  # fmt: skip
    with ctx.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))


def _catalog(ctx) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    query = (
        select(
            Track.track_id,
            Track.tempo_bpm,
            Track.key_pc,
            Track.mode,
            Track.programs,
            Track.density,
            Track.duration_s,
        )
        .where(Track.source == "catalog")
        .order_by(Track.track_id)
    )
    with ctx.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))


def _rate(hits: np.ndarray) -> float | None:
    return round(float(np.mean(hits)), 5) if len(hits) else None


def answer_day(ctx, world: AnsweringWorld, night: int) -> DayAnswer:  # type: ignore[no-untyped-def]
    """What the listeners around on loop night ``night`` (>= 1) do that day: play the playlist published
    to them the night before and some music of their own. Nothing is written; see :func:`post_day`."""
    if night < 1:
        raise ValueError("night 0 is the world's own history; the world answers from night 1 on")
    day = world.date_of(night)
    rng = np.random.default_rng([world.seed, 30, night])
    pop = world.population(night)
    here = world.taste_on(night, pop.around(night)).reset_index(drop=True)
    active = here[rng.random(len(here)) < here["active_share"].to_numpy()].reset_index(drop=True)
    row_of = {lid: i for i, lid in enumerate(active["listener_id"])}

    # The playlists: each active listener gets to most of their items.
    items = _published(ctx, day)
    items = items[items["listener_id"].isin(row_of)].reset_index(drop=True)
    items = items[rng.random(len(items)) < HEAR_SHARE].reset_index(drop=True)
    heard = listen(active.iloc[[row_of[x] for x in items["listener_id"]]].reset_index(drop=True), items, rng)
    heard["listener_id"] = items["listener_id"].to_numpy()
    heard["track_id"] = items["track_id"].to_numpy()
    personal = (items["written_for"] == items["listener_id"]).to_numpy(bool)

    # Their own listening: catalog tracks that suit today's taste, some at random.
    catalog = _catalog(ctx)
    n_own = rng.poisson(active["plays_per_day"].to_numpy() * OUTSIDE_SHARE)
    who = np.repeat(np.arange(len(active)), n_own)
    if len(who) and len(catalog):
        exposure = fit_matrix(active, catalog, tempo_widen=EXPOSURE_TEMPO_WIDEN) ** EXPOSURE_SHARPNESS + 1e-12
        cdf = np.cumsum(exposure, axis=1)
        cdf /= cdf[:, -1:]
        pick = np.array([np.searchsorted(cdf[w], u) for w, u in zip(who, rng.random(len(who)), strict=True)])
        pick = np.minimum(pick, len(catalog) - 1)
        pick = np.where(
            rng.random(len(who)) < OUTSIDE_RANDOM, rng.integers(len(catalog), size=len(who)), pick
        )
        own = listen(active.iloc[who].reset_index(drop=True), catalog.iloc[pick].reset_index(drop=True), rng)
        own["listener_id"] = active["listener_id"].to_numpy()[who]
        own["track_id"] = catalog["track_id"].to_numpy()[pick]
    else:
        own = heard.iloc[0:0].copy()

    # The counterfactual: the same listeners, the same number of plays, tracks of a random cluster of
    # the night those playlists came from (never posted; only measured, with its own random stream).
    base_rng = np.random.default_rng([world.seed, 31, night])
    base_like, base_expected = np.zeros(0), np.zeros(0)
    alone_expected = np.zeros(0)
    if len(items):
        pool = _night_tracks(ctx, items["run_date"].max())
        clusters = sorted(pool["cluster_id"].dropna().unique().tolist())
        if clusters:
            pick_cluster = base_rng.choice(clusters, size=len(items))
            rows = []
            for cid in pick_cluster:
                members = np.flatnonzero(pool["cluster_id"].to_numpy() == cid)
                rows.append(int(base_rng.choice(members)))
            base_tracks = pool.iloc[rows].reset_index(drop=True)
            base = listen(
                active.iloc[[row_of[x] for x in items["listener_id"]]].reset_index(drop=True),
                base_tracks,
                base_rng,
            )
            base_like, base_expected = base["liked"].to_numpy(bool), expected_like(base["fit"].to_numpy())
            # The outliers' own counterfactual: for each play of a track written for them, a track of the
            # cluster that track was written in, that night (what the cluster alone would have given them).
            personal_rows = np.flatnonzero((items["written_for"] == items["listener_id"]).to_numpy(bool))
            alone_rows, alone_who = [], []
            for k in personal_rows:
                members = np.flatnonzero(pool["cluster_id"].to_numpy() == items["cluster_id"].iloc[k])
                if len(members):
                    alone_rows.append(int(base_rng.choice(members)))
                    alone_who.append(row_of[items["listener_id"].iloc[k]])
            if alone_rows:
                alone = fit_matrix(active.iloc[alone_who].reset_index(drop=True), pool.iloc[alone_rows])
                alone_expected = expected_like(np.diagonal(alone).astype(float))

    plays = pd.concat([heard, own], ignore_index=True)
    n = len(plays)
    # A day's plays run one after another from a time of day drawn per listener.
    order = np.lexsort((np.arange(n), plays["listener_id"].to_numpy()))
    plays = plays.iloc[order].reset_index(drop=True)
    first = np.r_[True, plays["listener_id"].to_numpy()[1:] != plays["listener_id"].to_numpy()[:-1]]
    group = np.cumsum(first) - 1
    span = plays["ms_played"].to_numpy(float) + rng.uniform(500, 4000, n)
    ends = np.cumsum(span)
    offset = ends - span - (ends - span)[np.flatnonzero(first)][group]
    start_ms = rng.uniform(6, 14, int(first.sum())) * 3_600_000
    day0_ms = pd.Timestamp(day, tz="UTC").value // 1_000_000
    ts_ms = np.minimum(day0_ms + start_ms[group] + offset, day0_ms + _DAY_MS - 60_000).astype(np.int64)
    plays["ts"] = pd.to_datetime(ts_ms, unit="ms", utc=True)
    events = to_events(plays)
    events.insert(0, "event_id", [f"{world.tag}-d{day:%Y%m%d}-{i + 1:07d}" for i in range(len(events))])

    liked = heard["liked"].to_numpy(bool)
    p_like = expected_like(heard["fit"].to_numpy()) if len(heard) else np.zeros(0)
    outliers = set(items.loc[personal, "listener_id"])
    of_outliers = items["listener_id"].isin(outliers).to_numpy(bool)
    measures = {
        "listeners_around": len(here),
        "listeners_active": len(active),
        "joined": int((pop.listeners["join_night"] == night).sum()),
        "left": int((pop.listeners["leave_night"] == night).sum()),
        "playlist_plays": len(heard),
        "outside_plays": len(own),
        "like_rate": _rate(liked),
        "like_prob": _rate(p_like),
        "baseline_like_rate": _rate(base_like),
        "baseline_like_prob": _rate(base_expected),
        "fit": _rate(heard["fit"].to_numpy()) if len(heard) else None,
        "outliers_heard": len(outliers),
        "outlier_personal_plays": int(personal.sum()),
        "outlier_personal_like_rate": _rate(liked[personal]),
        "outlier_personal_like_prob": _rate(p_like[personal]),
        "outlier_cluster_plays": int((of_outliers & ~personal).sum()),
        "outlier_cluster_like_rate": _rate(liked[of_outliers & ~personal]),
        "outlier_cluster_like_prob": _rate(p_like[of_outliers & ~personal]),
        # The same outliers hearing, instead of each track written for them, a track of that cluster (drawn,
        # never posted): the cluster's tracks alone, before the playlist picked the ones nearest them.
        "outlier_cluster_alone_like_prob": _rate(alone_expected),
    }
    return DayAnswer(events=events, measures=measures)


def post_day(ctx, world: AnsweringWorld, night: int, answer: DayAnswer) -> int:  # type: ignore[no-untyped-def]
    """Send the day's events through the app's ingest path; returns how many were new (a repeat adds none)."""
    from personalize.ingest import ingest_events_frame

    if answer.events.empty:
        return 0
    report = ingest_events_frame(ctx, answer.events, source=f"loop:{world.tag}:{world.date_of(night)}")
    return int(report.ingested)
