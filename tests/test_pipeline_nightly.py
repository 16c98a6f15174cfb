"""The nightly run end to end on SQLite and PostgreSQL: a small simulated world, the shipped generator,
real FluidSynth. Per engine, real Airflow runs the first night (``airflow dags test`` through
``personalize run --airflow``'s own function); the same night rerun in-process (``personalize run``)
then changes nothing, a second night crashes while publishing and is retried, two runs race to publish,
and the views are checked."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from nightly_world import (
    NIGHT_SETTINGS,
    WORLD_END,
    build_world_files,
    fresh_database,
    playlists_of,
    storage_files,
    table_counts,
    visible_playlist_dates,
    with_settings,
    world_context,
)
from sqlalchemy import select, text

from personalize import pipeline, runs
from personalize.cli.run import run_with_airflow
from personalize.db.models import PipelineRun, Playlist, TasteProfile, Track, TrackPlan
from personalize.music.keys import key_name
from personalize.publish.stage import PublishCrash
from personalize.report.summary import night_summary

NIGHT_1 = WORLD_END
NIGHT_2 = WORLD_END + dt.timedelta(days=1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def night(request: pytest.FixtureRequest, world_files: Path, tmp_path_factory: pytest.TempPathFactory):
    """A world on one engine after the first night ran in-process."""
    data_dir = tmp_path_factory.mktemp(f"night-{request.param}")
    with fresh_database(request.param, data_dir) as url:
        yield from _first_night(url, data_dir, world_files)


def _first_night(url: str, data_dir: Path, world_files: Path):  # type: ignore[no-untyped-def]
    """The world loaded at ``url`` and its first night run through real Airflow: yields (ctx, log)."""
    ctx = world_context(url, data_dir / "data", world_files)
    # The DAG's tasks build their Context from the environment: hand them this world's settings, and give
    # Airflow a metadata database of its own.
    env = {f"PERSONALIZE_{k.upper()}": str(v) for k, v in NIGHT_SETTINGS.items()}
    env["AIRFLOW_HOME"] = str(data_dir / "airflow")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        log = data_dir / "airflow.log"
        if run_with_airflow(ctx, NIGHT_1, log) != 0:
            pytest.fail("airflow dags test nightly failed:\n" + log.read_text()[-6000:])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield ctx, log
    ctx.engine.dispose()


def test_airflow_night_gives_every_listener_a_fresh_varied_playlist_with_reasons(night):
    ctx, log = night
    assert "DagRun Finished" in log.read_text()
    made = night_summary(ctx, NIGHT_1)
    playlists = playlists_of(ctx, NIGHT_1)
    with ctx.sessions() as s:
        listeners = set(
            s.execute(select(TasteProfile.listener_id).where(TasteProfile.run_date == NIGHT_1)).scalars()
        )
        fresh = {t.track_id: t for t in s.execute(select(Track).where(Track.run_date == NIGHT_1)).scalars()}
    assert set(playlists) == listeners and made["playlists_published"] == len(listeners)
    rendered = {tid for tid, t in fresh.items() if t.audio_uri}
    assert rendered, "no generated track was rendered"
    size = ctx.settings.playlist_size
    for lid, items in playlists.items():
        ids = [tid for tid, _, _ in items]
        assert len(ids) == min(size, len(rendered)) and len(set(ids)) == len(ids), lid
        assert set(ids) <= rendered  # only tonight's rendered tracks
        assert all(0.0 < score <= 1.0 for _, score, _ in items)
        # Best match first, after a track written for the listener's own taste (it leads their playlist).
        ranked = [item for item in items if not item[2].startswith("written for your own taste")]
        assert len(items) - len(ranked) <= 1 and (len(ranked) == len(items) or items[0] not in ranked)
        assert not ranked or ranked[0][1] == max(s for _, s, _ in ranked), items
        for tid, _, why in items:
            t = fresh[tid]
            assert f"{round(t.tempo_bpm)} BPM" in why and key_name(t.key_pc, t.mode) in why, why
    keys_per_playlist = [
        len({(fresh[t].key_pc, fresh[t].mode) for t, _, _ in items}) for items in playlists.values()
    ]
    distinct_keys = len({(t.key_pc, t.mode) for t in fresh.values() if t.audio_uri})
    if distinct_keys > 1:
        assert sum(k > 1 for k in keys_per_playlist) > 0.8 * len(keys_per_playlist)  # not all in one key
    with ctx.sessions() as s:
        runs = {
            r.stage: r
            for r in s.execute(select(PipelineRun).where(PipelineRun.run_date == NIGHT_1)).scalars()
        }
    assert {"profile", "cluster", "plan", "publish", "report"} <= set(runs)
    assert any(k.startswith("generate:c") for k in runs) and any(k.startswith("render:c") for k in runs)
    assert all(r.status == "ok" and r.duration_s is not None and r.counts for r in runs.values())
    page = Path(made["report"]).read_text()
    for needle in ("Taste map", "Control fidelity", "Quality metrics vs corpus", "Stage timings", "<audio"):
        assert needle in page, needle


def test_rerun_of_a_night_changes_nothing(night):
    ctx, _ = night
    before = (playlists_of(ctx, NIGHT_1), table_counts(ctx), storage_files(ctx))
    pipeline.run(ctx, NIGHT_1)
    after = (playlists_of(ctx, NIGHT_1), table_counts(ctx), storage_files(ctx))
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[2] == before[2]


def test_crash_while_publishing_keeps_yesterday_visible_and_the_retry_completes(night):
    ctx, _ = night
    pipeline.run(ctx, NIGHT_2, stages=("profile", "cluster", "plan", "generate", "render"))
    crashing = with_settings(ctx, publish_crash_after=7)
    with pytest.raises(PublishCrash):
        pipeline.run_stage(crashing, "publish", NIGHT_2)
    with ctx.sessions() as s:
        statuses = list(s.execute(select(Playlist.status).where(Playlist.run_date == NIGHT_2)).scalars())
        run = s.execute(
            select(PipelineRun).where(PipelineRun.run_date == NIGHT_2, PipelineRun.stage == "publish")
        ).scalar_one()
    assert statuses and set(statuses) == {"building"} and len(statuses) <= 7
    assert run.status == "failed" and "fault injection" in run.detail
    assert set(visible_playlist_dates(ctx).values()) == {NIGHT_1}  # the app still shows last night's

    pipeline.run_stage(ctx, "publish", NIGHT_2)
    assert set(visible_playlist_dates(ctx).values()) == {NIGHT_2}
    second = playlists_of(ctx, NIGHT_2)
    first = playlists_of(ctx, NIGHT_1)
    assert set(second) == set(first)
    for lid, items in second.items():  # never a track the listener already received
        assert not {t for t, _, _ in items} & {t for t, _, _ in first[lid]}
    with ctx.sessions() as s:
        assert set(s.execute(select(Playlist.status).where(Playlist.run_date == NIGHT_2)).scalars()) == {
            "published"
        }


def test_two_runs_of_one_date_cannot_both_publish(night):
    ctx, _ = night
    with ctx.engine.begin() as conn:  # reopen the date's publishing so both runs have work to do
        conn.execute(text("DELETE FROM playlists WHERE run_date = :d"), {"d": NIGHT_2})
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def attempt() -> None:
        barrier.wait()
        try:
            pipeline.run_stage(ctx, "publish", NIGHT_2)
            outcomes.append("published")
        except runs.StageBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # Either one run is refused while the other publishes, or (if the first finished before the second
    # tried) the second finds everything published and adds nothing: never two sets of playlists.
    assert "published" in outcomes
    with ctx.engine.connect() as conn:
        n = conn.execute(
            text("SELECT COUNT(*) FROM playlists WHERE run_date = :d"), {"d": NIGHT_2}
        ).scalar_one()
        listeners = conn.execute(
            text("SELECT COUNT(*) FROM taste_profiles WHERE run_date = :d"), {"d": NIGHT_2}
        ).scalar_one()
    assert n == listeners
    held = runs.claim_stage(ctx, NIGHT_2, "publish")  # a run in progress elsewhere
    with pytest.raises(runs.StageBusy, match="already running"):
        pipeline.run_stage(ctx, "publish", NIGHT_2)
    assert held is not None


def test_views_report_generation_fidelity_coverage_and_engagement(night):
    ctx, _ = night
    with ctx.engine.connect() as conn:
        gen = (
            conn.execute(text("SELECT * FROM v_generation_daily WHERE run_date = :d"), {"d": NIGHT_1})
            .mappings()
            .one()
        )
        plans = conn.execute(select(TrackPlan).where(TrackPlan.run_date == NIGHT_1)).all()
        fid = (
            conn.execute(text("SELECT * FROM v_fidelity_by_cluster WHERE run_date = :d"), {"d": NIGHT_1})
            .mappings()
            .all()
        )
        cov = (
            conn.execute(text("SELECT * FROM v_playlist_coverage WHERE run_date = :d"), {"d": NIGHT_1})
            .mappings()
            .one()
        )
    assert gen["tracks_planned"] == len(plans)
    assert gen["tracks_generated"] + gen["tracks_failed"] == len(plans)
    assert gen["tracks_rendered"] >= 1 and gen["audio_minutes"] > 0
    generated = [p for p in plans if p.status == "generated"]
    assert sum(r["tracks"] for r in fid) == len(generated)
    for r in fid:  # every published track passed verification, so the view shows full fidelity
        assert r["key_accuracy"] == pytest.approx(1.0) and r["instruments_accuracy"] == pytest.approx(1.0)
        assert r["tempo_mae_bpm"] < 2.0
    # Every listener gets a playlist, filled with as many of the night's verified tracks as it holds (a track
    # that fails verification on every try is not published).
    assert cov["coverage"] == pytest.approx(1.0) and cov["mean_items"] == pytest.approx(
        min(ctx.settings.playlist_size, len(generated))
    )

    from personalize.evaluate.playlists import evaluate, feed_back

    result, plays = evaluate(ctx, NIGHT_1)
    assert result["arms"]["playlists"]["listens"] == sum(len(v) for v in playlists_of(ctx, NIGHT_1).values())
    assert result["arms"]["playlists"]["mean_fit"] > result["arms"]["random_cluster"]["mean_fit"]
    fed = feed_back(ctx, NIGHT_1, plays)
    assert fed >= len(plays) and feed_back(ctx, NIGHT_1, plays) == 0  # the same plays twice add nothing
    with ctx.engine.connect() as conn:
        eng = {
            r["source"]: r
            for r in conn.execute(
                text("SELECT * FROM v_engagement_by_source WHERE day = :d"),
                {"d": NIGHT_1 + dt.timedelta(days=1)},
            ).mappings()
        }
    assert eng["generated"]["plays"] + eng["generated"]["skips"] == len(plays)
    assert 0.0 <= eng["generated"]["mean_completion"] <= 1.0
