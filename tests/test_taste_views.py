"""The analyst views on both engines return what their names say: cluster summary per date, listener taste
per date, listeners moving between clusters, flows between clusters; and the example queries run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from synthetic_taste import make_world, write_world

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
from personalize.db.models import Cluster, Listener, TasteProfile, TasteRun

D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
QUERIES = Path(__file__).resolve().parent.parent / "sql" / "queries"


def _rows(ctx, sql: str, **params) -> list[dict]:
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def test_summary_and_listener_views_match_the_stage_output(ctx):
    world, tracks, events = make_world(120, 20, D1, n_segments=3, seed=2)
    write_world(ctx, tracks, events, world.listener_ids)
    profile.run(ctx, D1)
    summary = cluster.run(ctx, D1)
    rows = _rows(ctx, "SELECT * FROM v_cluster_summary WHERE run_date = :d ORDER BY cluster_id", d=D1)
    assert [r["cluster_id"] for r in rows] == sorted(summary["cluster_ids"])
    assert sum(r["size"] for r in rows) == 120 and sum(
        r["share_of_listeners"] for r in rows
    ) == pytest.approx(1.0)
    assert all(r["k"] == 3 and r["k_criterion"] == "silhouette" and r["tempo_bpm"] > 40 for r in rows)
    taste = _rows(ctx, "SELECT * FROM v_listener_taste WHERE run_date = :d", d=D1)
    assert len(taste) == 120
    by_cluster = {r["cluster_id"]: r for r in rows}
    for r in taste:
        assert r["cluster_tempo_bpm"] == pytest.approx(by_cluster[r["cluster_id"]]["tempo_bpm"])
        assert abs(r["tempo_bpm"] - r["cluster_tempo_bpm"]) / r["cluster_tempo_bpm"] < 0.15


def _two_nights(ctx) -> None:
    """Hand-made profiles: a and b stay in cluster 1, c moves 1 -> 2, d moves 2 -> 1, e appears on night 2."""
    assignments = {D1: {"a": 1, "b": 1, "c": 1, "d": 2}, D2: {"a": 1, "b": 1, "c": 2, "d": 1, "e": 2}}
    with ctx.engine.begin() as conn:
        conn.execute(insert(Listener), [{"listener_id": x} for x in "abcde"])
        for day, members in assignments.items():
            conn.execute(insert(TasteRun), [{
                "run_date": day, "feature_names": [], "scaler_mean": [], "scaler_scale": [], "feature_weights": [],
                "k": 2, "k_criterion": "silhouette", "k_scores": {}, "n_listeners": len(members),
                "n_profiled": len(members), "n_thin": 0, "n_cold": 0, "n_new_clusters": 0,
            }])  # fmt: skip
            for cid in (1, 2):
                conn.execute(insert(Cluster), [{
                    "run_date": day, "cluster_id": cid, "size": list(members.values()).count(cid), "n_profiled": 0,
                    "tempo_bpm": 60.0 * cid, "key_pc": 0, "mode": "major", "key_name": "C major",
                    "top_families": "piano", "density": 4.0, "is_new": False, "centroid": [],
                }])  # fmt: skip
            conn.execute(insert(TasteProfile), [
                {"listener_id": lid, "run_date": day, "status": "profiled", "n_events": 9, "weight_total": 5.0,
                 "tempo_bpm": 60.0 * cid, "cluster_id": cid}
                for lid, cid in members.items()
            ])  # fmt: skip


def test_moves_and_flows_between_two_nights(ctx):
    _two_nights(ctx)
    moves = _rows(ctx, "SELECT * FROM v_cluster_moves ORDER BY listener_id")
    assert [(m["listener_id"], m["from_cluster_id"], m["to_cluster_id"]) for m in moves] == [
        ("c", 1, 2),
        ("d", 2, 1),
    ]
    assert all(
        str(m["from_date"])[:10] == "2026-03-01" and str(m["to_date"])[:10] == "2026-03-02" for m in moves
    )
    flows = _rows(ctx, "SELECT * FROM v_cluster_flows ORDER BY from_cluster_id, to_cluster_id")
    assert [(f["from_cluster_id"], f["to_cluster_id"], f["n_listeners"]) for f in flows] == [
        (1, 1, 2),
        (1, 2, 1),
        (2, 1, 1),
    ]


@pytest.mark.parametrize("query", sorted(p.name for p in QUERIES.glob("*.sql")))
def test_example_queries_run_and_say_what_they_answer(ctx, query):
    _two_nights(ctx)
    sql = (QUERIES / query).read_text()
    assert sql.lstrip().startswith("-- Question:"), f"{query} must open with the question it answers"
    rows = _rows(ctx, sql, from_date=D1, to_date=D2, run_date=D2, cluster_id=1)
    assert rows, f"{query} returned nothing on two hand-made nights"
