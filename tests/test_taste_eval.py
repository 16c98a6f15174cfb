"""`personalize eval taste` on a small demo world (both engines): profiles and clusters built from the
simulator's listening history recover its ground truth, and the command prints the JSON it promises."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

import personalize.cluster.stage as cluster
import personalize.profile.stage as profile
from personalize.evaluate.taste import evaluate
from personalize.simulate.world import WorldConfig, build_world, load_world

END = dt.date(2026, 3, 1)
SMALL = WorldConfig(listeners=400, days=21, seed=5, end_date=END, catalog_size=150, corpus_limit=6)


@pytest.mark.slow
def test_taste_recovers_the_demo_worlds_truth(ctx, monkeypatch):
    sim = ctx.settings.data_dir / "sim"
    build_world(sim, SMALL)
    load_world(ctx, sim)
    profile.run(ctx, END)
    cluster.run(ctx, END)
    result = evaluate(ctx, END)
    assert result["n_listeners"] >= 300 and result["n_segments"] == 6
    # A small world (400 listeners, 3 weeks): looser than the 2,000-listener targets, still far from chance.
    assert result["ari"] >= 0.8
    assert result["tempo_mae_bpm"] <= 8.0
    assert result["key_top1"] >= 0.7
    assert result["family_top3_recall"] >= 0.85

    from personalize.cli import app

    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(ctx.settings.data_dir))
    monkeypatch.setenv("PERSONALIZE_DATABASE_URL", ctx.settings.resolved_database_url)
    out = CliRunner().invoke(app, ["eval", "taste", "--date", END.isoformat(), "--json"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output)
    assert {"ari", "tempo_mae_bpm", "key_top1", "family_top3_recall", "n_listeners"} <= set(printed)
    assert printed["ari"] == result["ari"]
