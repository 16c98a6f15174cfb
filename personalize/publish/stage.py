"""The publish stage: one playlist per listener and run date from the night's fresh, rendered tracks.

Candidates for a listener are the fresh tracks of their own taste cluster, topped up with the nearest
clusters' tracks when their cluster has fewer than two playlists' worth, then (still thin) with the last
week's tracks. Tracks are ranked by the distance between each track's *measured* features
(``track_vector``) and the listener's own taste vector in the date's standardized taste space (a cold
listener uses their cluster's centroid); maximal marginal relevance keeps a playlist varied.

A playlist changes gradually, like a daily mix: ``playlist_new_share`` of it is new each night and the
rest carries over from the listener's previous playlist (its items closest to today's taste, leaving out
what they skipped early or disliked since, and anything older than a week); when new tracks run out, a
playlist is shorter rather than carrying more. A track that was in a
listener's playlist within ``playlist_history_days`` and left it is never offered to them again. A track
written for one listener (a plan row with ``listener_id``) goes to that listener only, at the top of
their playlist.

Idempotent and crash-safe: playlists are written as ``building`` in chunks, then flipped to
``published`` for the whole date in ONE transaction, so the app keeps serving yesterday's playlist until
today's are all complete. A rerun keeps the published ones untouched and rebuilds only a crashed run's
``building`` leftovers. The stage runs under the ``publish`` claim in ``pipeline_runs`` (see
:mod:`personalize.pipeline`), so two runs of one date cannot publish at the same time.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from personalize.context import Context
from personalize.db.models import (
    Cluster,
    ListeningEvent,
    Playlist,
    PlaylistItem,
    TasteProfile,
    Track,
    TrackPlan,
)
from personalize.profile.vector import TasteSpace, load_space, track_vector
from personalize.publish.rank import (
    ListenerFacts,
    TrackFacts,
    mmr_select,
    pairwise_distance,
    reason,
    similarity,
    top_families,
)

log = logging.getLogger(__name__)

RECENT_DAYS = 7  # earlier nights' unreceived tracks may fill a thin playlist; carried items are this recent
DROPPED_KINDS = ("skip", "dislike")  # an item the listener reacted to like this does not carry over
CHUNK_LISTENERS = 2000


class PublishCrash(RuntimeError):
    """Raised by the ``publish_crash_after`` fault-injection setting (tests and drills only)."""


def _load_tracks(ctx: Context, run_date: dt.date) -> list[dict[str, Any]]:
    """Rendered generated tracks of the date and, for thin clusters, of the previous week."""
    since = run_date - dt.timedelta(days=RECENT_DAYS)
    cols = (Track.track_id, Track.run_date, Track.cluster_id, Track.tempo_bpm, Track.key_pc, Track.mode,
            Track.programs, Track.density)  # fmt: skip
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(*cols)
            .where(
                Track.source == "generated",
                Track.run_date <= run_date,
                Track.run_date >= since,
                Track.audio_uri.is_not(None),
            )
            .order_by(Track.run_date.desc(), Track.track_id)
        ).all()
    return [dict(r._mapping) for r in rows]


def _track_vectors(tracks: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """Raw taste vectors of the tracks (from measured features); tracks that cannot be placed are reported."""
    vectors, kept, problems = [], [], []
    for t in tracks:
        try:
            vectors.append(track_vector(t["tempo_bpm"], t["key_pc"], t["mode"], t["programs"], t["density"]))
            kept.append(t)
        except (ValueError, TypeError) as exc:
            problems.append(f"track {t['track_id']}: {exc}")
    return (np.vstack(vectors) if vectors else np.zeros((0, 0))), kept, problems


def _history(ctx: Context, run_date: dt.date, track_ids: list[str]) -> set[tuple[str, str]]:
    """(listener, track) pairs already received on an earlier date, limited to the candidate tracks."""
    since = run_date - dt.timedelta(days=ctx.settings.playlist_history_days)
    pairs: set[tuple[str, str]] = set()
    with ctx.engine.connect() as conn:
        for start in range(0, len(track_ids), 500):
            part = track_ids[start : start + 500]
            rows = conn.execute(
                select(Playlist.listener_id, PlaylistItem.track_id)
                .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
                .where(
                    Playlist.run_date < run_date,
                    Playlist.run_date >= since,
                    Playlist.status == "published",
                    PlaylistItem.track_id.in_(part),
                )
            )
            pairs.update((r[0], r[1]) for r in rows)
    return pairs


def _why(track: TrackFacts, listener: ListenerFacts, personal: bool) -> str:
    text = reason(track, listener)
    return f"written for your own taste: {text}"[:300] if personal else text


def _personal_owners(ctx: Context, track_ids: list[str]) -> dict[str, str]:
    """Track -> the listener it was written for, among the given tracks."""
    owners: dict[str, str] = {}
    with ctx.engine.connect() as conn:
        for start in range(0, len(track_ids), 500):
            rows = conn.execute(
                select(TrackPlan.track_id, TrackPlan.listener_id).where(
                    TrackPlan.listener_id.is_not(None), TrackPlan.track_id.in_(track_ids[start : start + 500])
                )
            )
            owners.update({r[0]: r[1] for r in rows})
    return owners


def _previous_items(ctx: Context, run_date: dt.date) -> dict[str, list[str]]:
    """Each listener's previous published playlist (the newest before ``run_date``), without the items
    they skipped early or disliked since it was published."""
    newest = (
        select(Playlist.listener_id, func.max(Playlist.run_date).label("run_date"))
        .where(Playlist.status == "published", Playlist.run_date < run_date)
        .group_by(Playlist.listener_id)
        .subquery()
    )
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(Playlist.listener_id, Playlist.run_date, PlaylistItem.track_id)
            .join(
                newest,
                (Playlist.listener_id == newest.c.listener_id) & (Playlist.run_date == newest.c.run_date),
            )
            .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
            .where(Playlist.status == "published")
            .order_by(Playlist.listener_id, PlaylistItem.position)
        ).all()
        if not rows:
            return {}
        first_day = min(r[1] for r in rows)
        if isinstance(first_day, str):
            first_day = dt.date.fromisoformat(first_day[:10])
        since = dt.datetime.combine(first_day, dt.time(), tzinfo=dt.UTC)
        until = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        tracks = sorted({r[2] for r in rows})
        dropped: set[tuple[str, str]] = set()
        for start in range(0, len(tracks), 500):
            dropped.update(
                (e[0], e[1])
                for e in conn.execute(
                    select(ListeningEvent.listener_id, ListeningEvent.track_id).where(
                        ListeningEvent.track_id.in_(tracks[start : start + 500]),
                        ListeningEvent.kind.in_(DROPPED_KINDS),
                        ListeningEvent.ts >= since,
                        ListeningEvent.ts < until,
                    )
                )
            )
    out: dict[str, list[str]] = {}
    for listener_id, _, track_id in rows:
        if (listener_id, track_id) not in dropped:
            out.setdefault(listener_id, []).append(track_id)
    return out


def _candidate_pools(
    clusters: dict[int, np.ndarray],
    tracks: list[dict[str, Any]],
    run_date: dt.date,
    want: int,
    space: TasteSpace,
    personal: set[int] | frozenset[int] = frozenset(),
) -> dict[int, np.ndarray]:
    """Per cluster, indices of its candidate tracks: own fresh ones, nearest clusters' when thin, then recent.
    Tracks written for one listener (``personal``) are placed for their owner alone, so they fill no pool:
    counted in, they left whole clusters with a pool of tracks none of their listeners could be given."""
    fresh_by_cluster: dict[int, list[int]] = {}
    recent_by_cluster: dict[int, list[int]] = {}
    for i, t in enumerate(tracks):
        if i in personal:
            continue
        target = fresh_by_cluster if t["run_date"] == run_date else recent_by_cluster
        target.setdefault(int(t["cluster_id"]) if t["cluster_id"] is not None else -1, []).append(i)
    ids = sorted(clusters)
    if not ids:
        return {}
    centroids = space.transform(np.vstack([clusters[c] for c in ids]))
    cdist = pairwise_distance(centroids, centroids)
    pools: dict[int, np.ndarray] = {}
    for row, cid in enumerate(ids):
        chosen = list(fresh_by_cluster.get(cid, []))
        neighbours = [ids[j] for j in np.argsort(cdist[row], kind="stable") if ids[j] != cid]
        for other in neighbours:
            if len(chosen) >= want:
                break
            chosen.extend(fresh_by_cluster.get(other, []))
        if len(chosen) < want:
            chosen.extend(fresh_by_cluster.get(-1, []))
        for other in [cid, *neighbours]:
            if len(chosen) >= want:
                break
            chosen.extend(recent_by_cluster.get(other, []))
        pools[cid] = np.array(sorted(set(chosen)), dtype=np.int64)
    return pools


def build_playlists(ctx: Context, run_date: dt.date, listener_ids: set[str] | None = None) -> dict[str, Any]:
    """Rank and pick every listener's playlist for the date (nothing written). ``listener_ids`` limits it.

    Returns ``{"playlists": {listener_id: [(track_id, score, reason), ...]}, "counts": {...}}``.
    """
    settings = ctx.settings
    n_items = settings.playlist_size
    space = load_space(ctx, run_date)
    with ctx.sessions() as session:
        cluster_rows = session.execute(select(Cluster).where(Cluster.run_date == run_date)).scalars().all()
        profile_q = select(
            TasteProfile.listener_id, TasteProfile.status, TasteProfile.cluster_id, TasteProfile.vector,
            TasteProfile.tempo_bpm, TasteProfile.key_pc, TasteProfile.mode, TasteProfile.major_share,
            TasteProfile.top_families,
        ).where(TasteProfile.run_date == run_date).order_by(TasteProfile.listener_id)  # fmt: skip
        profiles = [dict(r._mapping) for r in session.execute(profile_q)]
    if not profiles:
        raise LookupError(f"no taste profiles for {run_date}: run the profile and cluster stages first")
    if listener_ids is not None:
        profiles = [p for p in profiles if p["listener_id"] in listener_ids]
    centroids = {int(c.cluster_id): np.asarray(c.centroid, dtype=float) for c in cluster_rows}
    cluster_facts = {
        int(c.cluster_id): ListenerFacts(
            c.tempo_bpm,
            c.key_pc,
            c.mode,
            1.0 if c.mode == "major" else 0.0,
            top_families(c.top_families),
            True,
        )
        for c in cluster_rows
    }

    tracks = _load_tracks(ctx, run_date)
    track_raw, tracks, track_problems = _track_vectors(tracks)
    counts: dict[str, Any] = {
        "listeners": len(profiles),
        "new_items": 0,
        "carried_items": 0,
        "personal_items": 0,
        "fresh_tracks": sum(1 for t in tracks if t["run_date"] == run_date),
        "recent_tracks": sum(1 for t in tracks if t["run_date"] != run_date),
        "tracks_unplaceable": len(track_problems),
        "unassigned_listeners": 0,
        "short_playlists": 0,
        "empty_playlists": 0,
    }
    for problem in track_problems:
        log.warning("left out of playlists: %s", problem)
    playlists: dict[str, list[tuple[str, float, str]]] = {}
    if not tracks:
        counts["empty_playlists"] = len(profiles)
        return {"playlists": playlists, "counts": counts}

    track_std = space.transform(track_raw)
    track_sim = similarity(pairwise_distance(track_std, track_std))
    key_code = np.array([t["key_pc"] + (12 if t["mode"] == "minor" else 0) for t in tracks])
    same_key = key_code[:, None] == key_code[None, :]
    track_facts = [TrackFacts(t["tempo_bpm"], t["key_pc"], t["mode"], t["programs"]) for t in tracks]
    track_ids = [t["track_id"] for t in tracks]
    received = _history(ctx, run_date, track_ids)
    owners = _personal_owners(ctx, track_ids)
    index_of = {tid: i for i, tid in enumerate(track_ids)}
    personal = {index_of[tid] for tid in owners if tid in index_of}
    pools = _candidate_pools(centroids, tracks, run_date, 2 * n_items, space, personal)
    previous = _previous_items(ctx, run_date)
    n_new = min(n_items, max(1, math.ceil(settings.playlist_new_share * n_items - 1e-9)))

    by_cluster: dict[int, list[dict[str, Any]]] = {}
    for p in profiles:
        if p["cluster_id"] is None or int(p["cluster_id"]) not in centroids:
            counts["unassigned_listeners"] += 1
            log.warning(
                "listener %s has no cluster on %s: rerun the cluster stage for that date",
                p["listener_id"],
                run_date,
            )
            continue
        by_cluster.setdefault(int(p["cluster_id"]), []).append(p)

    for cid, members in sorted(by_cluster.items()):
        pool = pools.get(cid, np.zeros(0, dtype=np.int64))
        if len(pool) == 0:
            counts["empty_playlists"] += len(members)
            continue
        raw = np.vstack([
            np.asarray(m["vector"], dtype=float) if m["vector"] is not None else centroids[cid] for m in members
        ])  # fmt: skip
        member_std = space.transform(raw)
        relevance = similarity(pairwise_distance(member_std, track_std[pool]))
        allowed = np.ones_like(relevance, dtype=bool)
        for li, m in enumerate(members):
            for tj, ti in enumerate(pool):
                # (Personal tracks are in no pool: they are placed by hand below, for their owner only.)
                if (m["listener_id"], track_ids[ti]) in received:
                    allowed[li, tj] = False
        picks = mmr_select(
            relevance, track_sim[np.ix_(pool, pool)], allowed, n_items, settings.playlist_diversity,
            same_key[np.ix_(pool, pool)],
        )  # fmt: skip
        for li, m in enumerate(members):
            lid = m["listener_id"]
            own = [
                index_of[tid] for tid in sorted(owners)
                if owners[tid] == lid and tid in index_of and tracks[index_of[tid]]["run_date"] == run_date
                and (lid, tid) not in received
            ]  # fmt: skip
            carry = [
                index_of[tid] for tid in previous.get(lid, [])
                if tid in index_of and owners.get(tid, lid) == lid
            ]  # fmt: skip
            if carry:
                carry_score = similarity(pairwise_distance(member_std[li : li + 1], track_std[carry]))[0]
                carry = [carry[k] for k in np.argsort(-carry_score, kind="stable")]
            fresh = own[:n_new] + [int(pool[j]) for j in picks[li] if j >= 0 and int(pool[j]) not in carry]
            new_part = fresh[:n_new]
            kept = carry[: n_items - n_new]  # never more than the carried share, even when new tracks run out
            chosen_tracks = new_part + kept + fresh[n_new : n_new + n_items - len(new_part) - len(kept)]
            if not chosen_tracks:
                counts["empty_playlists"] += 1
                continue
            if len(chosen_tracks) < n_items:
                counts["short_playlists"] += 1
            counts["carried_items"] += len(kept)
            counts["new_items"] += len(chosen_tracks) - len(kept)
            counts["personal_items"] += sum(1 for t in chosen_tracks if t in own)
            facts = (
                cluster_facts[cid]
                if m["vector"] is None
                else ListenerFacts(m["tempo_bpm"], m["key_pc"], m["mode"], m["major_share"],
                                   top_families(m["top_families"]), False)
            )  # fmt: skip
            scores = similarity(pairwise_distance(member_std[li : li + 1], track_std[chosen_tracks]))[0]
            playlists[lid] = [
                (track_ids[t], round(float(score), 6), _why(track_facts[t], facts, t in own))
                for t, score in zip(chosen_tracks, scores, strict=True)
            ]
    items = counts["new_items"] + counts["carried_items"]
    counts["new_share"] = round(counts["new_items"] / items, 4) if items else None
    return {"playlists": playlists, "counts": counts}


def run(ctx: Context, run_date: dt.date, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build and publish the date's playlists; keeps already-published ones (rerun-safe)."""
    say = progress or log.info
    t0 = time.perf_counter()
    with ctx.engine.begin() as conn:
        # A crashed run's half-built rows: rebuilt below from the same inputs, so they are simply redone.
        leftovers = conn.execute(
            select(func.count())
            .select_from(Playlist)
            .where(Playlist.run_date == run_date, Playlist.status == "building")
        ).scalar_one()
        if leftovers:
            conn.execute(delete(Playlist).where(Playlist.run_date == run_date, Playlist.status == "building"))
        published = set(
            conn.execute(
                select(Playlist.listener_id).where(
                    Playlist.run_date == run_date, Playlist.status == "published"
                )
            ).scalars()
        )
    with ctx.sessions() as session:
        all_ids = set(
            session.execute(
                select(TasteProfile.listener_id).where(TasteProfile.run_date == run_date)
            ).scalars()
        )
    todo = all_ids - published
    built = build_playlists(ctx, run_date, todo) if todo else {"playlists": {}, "counts": {}}
    t_rank = time.perf_counter() - t0
    say(f"ranked {len(built['playlists'])} playlists for {run_date} in {t_rank:.1f} s")

    crash_after = ctx.settings.publish_crash_after
    listeners = sorted(built["playlists"])
    n_items = 0
    written = 0
    for start in range(0, len(listeners), CHUNK_LISTENERS):
        chunk = listeners[start : start + CHUNK_LISTENERS]
        if crash_after is not None and written + len(chunk) > crash_after:
            chunk = chunk[: max(crash_after - written, 0)]
        with ctx.engine.begin() as conn:
            if chunk:
                ids = conn.execute(
                    insert(Playlist).returning(
                        Playlist.id, Playlist.listener_id, sort_by_parameter_order=True
                    ),
                    [{"listener_id": lid, "run_date": run_date, "status": "building"} for lid in chunk],
                ).all()
                items = [
                    {"playlist_id": pid, "position": pos, "track_id": tid, "score": score, "reason": why}
                    for pid, lid in ids
                    for pos, (tid, score, why) in enumerate(built["playlists"][lid], start=1)
                ]
                conn.execute(insert(PlaylistItem), items)
                n_items += len(items)
        written += len(chunk)
        if crash_after is not None and written >= crash_after:
            raise PublishCrash(
                f"fault injection: publishing {run_date} stopped after {written} listeners "
                "(PERSONALIZE_PUBLISH_CRASH_AFTER is set; unset it and rerun)"
            )

    now = dt.datetime.now(dt.UTC)
    with ctx.engine.begin() as conn:
        flipped = conn.execute(
            update(Playlist)
            .where(Playlist.run_date == run_date, Playlist.status == "building")
            .values(status="published", published_at=now)
        ).rowcount
    counts = built.get("counts", {})
    summary = {
        "stage": "publish",
        "run_date": run_date.isoformat(),
        "published": int(flipped),
        "already_published": len(published),
        "rebuilt_after_crash": int(leftovers),
        "items": n_items,
        **{k: v for k, v in counts.items() if k != "listeners"},
        "listeners": len(all_ids),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    say(f"published {flipped} playlists ({n_items} items); {len(published)} were already published")
    return summary
