"""The world that answers back, on a small demo world: its listeners hear what was published to them and
answer through the app's ingest path, the same day answered twice gives the same events (stored once),
listeners join and leave, drifting tastes keep drifting, and the loop keeps its nights in the database so
a second run continues where the first stopped."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from personalize.db.models import ListeningEvent, LoopNight, TasteProfile
from personalize.pipeline import run_stage
from personalize.simulate.answer import AnsweringWorld, answer_day, post_day
from personalize.simulate.loop import run_loop
from personalize.simulate.loop_report import write_report
from personalize.simulate.truth import load_truth
from tests.loop_tracks import hand_tracks
from tests.nightly_world import WORLD_END, build_world_files, playlists_of, world_context


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("world"))


@pytest.fixture
def ctx(db_url: str, tmp_path: Path, world_files: Path):  # type: ignore[no-untyped-def]
    context = world_context(db_url, tmp_path / "data", world_files, playlist_size=3)
    yield context
    context.engine.dispose()


def _world(ctx) -> AnsweringWorld:  # type: ignore[no-untyped-def]
    truth = load_truth(Path(ctx.settings.data_dir) / "sim")
    # Busier than the demo's defaults, so a 90-listener world shows joins and leaves within a night.
    return AnsweringWorld(
        truth=truth, seed=11, tag=str(truth.world["tag"]), join_per_night=0.1, leave_per_night=0.1
    )


def hand_night(ctx, day: dt.date) -> None:  # type: ignore[no-untyped-def]
    """A night with the real taste, publish and gc stages, its tracks made by hand (no generator)."""
    for stage in ("ingest", "profile", "cluster"):
        run_stage(ctx, stage, day)
    hand_tracks(ctx, day)
    run_stage(ctx, "publish", day)
    run_stage(ctx, "gc", day)


def test_listeners_hear_their_playlists_and_answer_through_ingest(ctx) -> None:  # type: ignore[no-untyped-def]
    world = _world(ctx)
    hand_night(ctx, WORLD_END)
    published = playlists_of(ctx, WORLD_END)
    answer = answer_day(ctx, world, 1)
    again = answer_day(ctx, world, 1)
    assert answer.events.equals(again.events) and answer.measures == again.measures

    events = answer.events
    day = WORLD_END + dt.timedelta(days=1)
    assert (events["ts"].dt.date == day).all()
    around = set(world.population(1).around(1)["listener_id"])
    assert set(events["listener_id"]) <= around
    left = world.population(1).listeners.query("leave_night == 1")["listener_id"]
    joined = world.population(1).listeners.query("join_night == 1")["listener_id"]
    assert len(left) > 0 and len(joined) > 0
    assert not set(left) & set(events["listener_id"])
    assert set(joined) & set(events["listener_id"])  # newcomers listen to music of their own

    # What each listener played of the product's tracks is what was published to them, nothing else.
    generated = events[events["track_id"].str.startswith("gen-")]
    assert len(generated) > 0
    for lid, tracks in generated.groupby("listener_id")["track_id"]:
        assert set(tracks) <= {t for t, _, _ in published[lid]}
    m = answer.measures
    assert m["playlist_plays"] > 0 and m["outside_plays"] > 0
    assert 0.0 <= m["like_rate"] <= 1.0 and m["baseline_like_rate"] is not None

    assert post_day(ctx, world, 1, answer) == len(events)
    assert post_day(ctx, world, 1, answer) == 0  # the same day again adds nothing
    with ctx.engine.connect() as conn:
        stored = conn.execute(
            select(func.count())
            .select_from(ListeningEvent)
            .where(ListeningEvent.event_id.like(f"{world.tag}-d%"))
        ).scalar_one()
    assert stored == len(events)

    # The next night knows the newcomers; drifting listeners' true tempo keeps moving.
    hand_night(ctx, day)
    with ctx.engine.connect() as conn:
        profiled = set(
            conn.execute(select(TasteProfile.listener_id).where(TasteProfile.run_date == day)).scalars()
        )
    assert set(joined) & set(events["listener_id"]) <= profiled
    pop = world.population(7).listeners
    drifting = pop[pop["drift_bpm_per_week"] != 0].head(5)
    moved = (
        world.taste_on(7, drifting)["tempo_bpm"].to_numpy()
        - world.taste_on(0, drifting)["tempo_bpm"].to_numpy()
    )
    assert np.allclose(moved, drifting["drift_bpm_per_week"].to_numpy(), atol=1e-6)


def test_the_loop_keeps_its_nights_and_continues_where_it_stopped(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world = _world(ctx)
    ran: list[dt.date] = []

    def night(c, day: dt.date) -> None:  # type: ignore[no-untyped-def]
        ran.append(day)
        hand_night(c, day)

    first = run_loop(ctx, 2, run_night=night, say=lambda line: None, world=world)
    assert sorted(first) == [0, 1] and ran == [WORLD_END, WORLD_END + dt.timedelta(days=1)]
    more = run_loop(ctx, 3, run_night=night, say=lambda line: None, world=world)
    assert ran[2:] == [WORLD_END + dt.timedelta(days=2)]  # nights 0 and 1 were not run again
    assert more[0] == first[0] and more[1] == first[1]
    with ctx.sessions() as session:
        assert (
            session.scalar(select(func.count()).select_from(LoopNight).where(LoopNight.status == "done")) == 3
        )
    m = more[2]
    for key in ("like_rate", "baseline_like_rate", "cluster_kept", "new_share", "stored_mb", "database_mb"):
        assert m[key] is not None, key
    assert m["new_share"] < 1.0  # playlists change gradually
    page = write_report(tmp_path / "loop", more, {"nights": 3})
    assert page.is_file() and (tmp_path / "loop" / "loop.png").stat().st_size > 10_000
    assert '"like_rate"' in (tmp_path / "loop" / "loop.json").read_text()
