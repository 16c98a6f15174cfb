"""Playlist ranking: closest tracks first, varied keys and tempi rather than near-duplicates, never a track
the listener already received, and a reason a listener can read."""

from __future__ import annotations

import numpy as np

from personalize.publish.rank import (
    ListenerFacts,
    TrackFacts,
    instrument_name,
    mmr_select,
    pairwise_distance,
    reason,
    similarity,
)


def _candidates():
    """Four near-identical D minor tracks close to the listener, two other keys a little further away."""
    tracks = np.array([[0.0, 0.0], [0.02, 0.0], [0.0, 0.02], [0.02, 0.02], [0.5, 0.0], [0.0, 0.5]])
    keys = np.array([14, 14, 14, 14, 19, 9])  # 12 + pc for minor: D minor x4, G minor, A major
    listener = np.array([[0.0, 0.0]])
    rel = similarity(pairwise_distance(listener, tracks))
    sim = similarity(pairwise_distance(tracks, tracks))
    return rel, sim, keys[:, None] == keys[None, :]


def test_without_diversity_the_closest_tracks_win_and_with_it_keys_vary():
    rel, sim, same_key = _candidates()
    allowed = np.ones_like(rel, dtype=bool)
    closest = mmr_select(rel, sim, allowed, 3, diversity=0.0)[0]
    assert set(closest) <= {0, 1, 2, 3} and closest[0] == 0
    varied = mmr_select(rel, sim, allowed, 3, diversity=0.3, same_key=same_key)[0]
    assert varied[0] == 0  # the best match still leads
    assert {4, 5} & set(varied), "a varied playlist reaches beyond four copies of one key"


def test_received_tracks_are_never_offered_and_a_short_pool_leaves_gaps():
    rel, sim, same_key = _candidates()
    allowed = np.ones_like(rel, dtype=bool)
    allowed[0, [0, 1]] = False
    picks = mmr_select(rel, sim, allowed, 3, 0.3, same_key)[0]
    assert not {0, 1} & set(picks)
    allowed[0, :] = False
    allowed[0, 5] = True
    assert list(mmr_select(rel, sim, allowed, 3, 0.3, same_key)[0]) == [5, -1, -1]


def test_many_listeners_rank_at_once():
    rng = np.random.default_rng(0)
    tracks, listeners = rng.normal(size=(40, 5)), rng.normal(size=(3000, 5))
    rel = similarity(pairwise_distance(listeners, tracks))
    picks = mmr_select(
        rel, similarity(pairwise_distance(tracks, tracks)), np.ones_like(rel, dtype=bool), 5, 0.3
    )
    assert picks.shape == (3000, 5) and (picks >= 0).all()
    assert all(len(set(row)) == 5 for row in picks)
    assert (picks[:, 0] == rel.argmax(axis=1)).all()


def test_reason_speaks_of_tempo_key_and_instruments():
    me = ListenerFacts(tempo_bpm=90.0, key_pc=2, mode="minor", major_share=0.2,
                       top_families=("strings", "piano"), from_cluster=False)  # fmt: skip
    text = reason(TrackFacts(92.4, 2, "minor", "42;0"), me)
    assert text == (
        "92 BPM, the pace you usually play (90 BPM); D minor, the key you play most; "
        "cello and piano (strings and piano: among your favourite sounds)"
    )
    faster = reason(TrackFacts(120.0, 7, "major", "56;drums"), me)
    assert faster.startswith("120 BPM, a little livelier than the usual 90 BPM; G major;")
    assert "trumpet and drums" in faster
    cold = ListenerFacts(100.0, 0, "major", 1.0, ("brass",), from_cluster=True)
    assert "listeners like you" in reason(TrackFacts(101.0, 7, "major", "56"), cold)
    assert instrument_name(89) == "warm pad" and instrument_name("drums") == "drums"


def test_tracks_written_for_one_listener_fill_no_clusters_pool():
    """A cluster with no fresh tracks of its own borrows its neighbours'; tracks written for one listener
    are placed for their owner alone, so they must not count towards the borrowed pool (counted in, a
    whole cluster's pool held only tracks none of its listeners could be given, and they got no playlist)."""
    import datetime as dt

    from personalize.profile.vector import TasteSpace
    from personalize.publish.stage import _candidate_pools

    night = dt.date(2026, 3, 2)
    tracks = [
        {"run_date": night, "cluster_id": 1},  # 0-3: written for listeners of cluster 1 (personal)
        {"run_date": night, "cluster_id": 1},
        {"run_date": night, "cluster_id": 1},
        {"run_date": night, "cluster_id": 1},
        {"run_date": night, "cluster_id": 1},  # 4-5: cluster 1's own
        {"run_date": night, "cluster_id": 1},
        {"run_date": night - dt.timedelta(days=1), "cluster_id": 0},  # 6: last night's
    ]
    centroids = {0: np.array([0.0, 0.0]), 1: np.array([1.0, 0.0])}
    space = TasteSpace(mean=np.zeros(2), scale=np.ones(2), weights=np.ones(2))
    pools = _candidate_pools(centroids, tracks, night, 4, space, personal={0, 1, 2, 3})
    assert set(pools[0]) == {4, 5, 6} and set(pools[1]) == {4, 5, 6}
    old = set(_candidate_pools(centroids, tracks, night, 4, space)[0])  # personal tracks counted in
    assert {0, 1, 2, 3} <= old and 6 not in old
