"""A small demo world for the nightly-run tests: built once per test session with the simulator, loaded
into each test database through ingest, with settings that keep a whole night to a few short tracks."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from personalize.context import Context, make_context
from personalize.db.models import Playlist, PlaylistItem
from personalize.db.session import upgrade

WORLD_END = dt.date(2026, 11, 10)
# Four short tracks a night (a track costs seconds of CPU to write and verify): only the largest clusters
# get one (minimum 0), so most listeners are served from their nearest clusters, and the second night also
# reaches back to the first night's tracks (which a listener already received must not get again). Four,
# not two: a track that fails verification on every try is not published, and the night must still fill
# every playlist.
NIGHT_SETTINGS = {
    "tracks_total": 4,
    "tracks_per_cluster_min": 0,
    "tracks_per_cluster_max": 1,
    # The shortest songs the forms make (one pass through their sections): keeps the night quick.
    "track_seconds_min": 10.0,
    "track_seconds_max": 15.0,
    "playlist_size": 2,
    "render_workers": 1,
    # About two tracks for outlier listeners (before a night has measured the cost, a track of these
    # lengths is estimated at about 2 s), so the nights exercise them without tripling their tracks.
    "personal_tracks_cpu_s": 4.0,
}


@contextmanager
def fresh_database(engine: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in ``folder``, or a new PostgreSQL database dropped
    afterwards. Without a PostgreSQL server the test skips (fails where PostgreSQL is required)."""
    from conftest import PG_ADMIN_URL, REQUIRE_PG, _drop_pg_database, _fresh_pg_database, _pg_reachable

    if engine == "sqlite":
        yield f"sqlite:///{folder / 'personalize.db'}"
        return
    problem = _pg_reachable()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {problem}")
    name, url = _fresh_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(name)


def build_world_files(root: Path) -> Path:
    """Simulator files (catalog, MIDI, events, truth) of a 90-listener world ending on WORLD_END."""
    from personalize.simulate.world import WorldConfig, build_world

    sim = root / "sim"
    build_world(sim, WorldConfig(listeners=90, days=21, seed=11, catalog_size=40, end_date=WORLD_END))
    return sim


def world_context(url: str, data_dir: Path, sim_files: Path, **overrides: object) -> Context:
    """A migrated database at ``url`` holding the world, and a Context with the small-night settings."""
    from personalize.simulate.world import load_world

    upgrade(url)
    shutil.copytree(sim_files, data_dir / "sim", dirs_exist_ok=True)
    ctx = make_context(data_dir=data_dir, database_url=url, **(NIGHT_SETTINGS | overrides))
    load_world(ctx, data_dir / "sim")
    return ctx


def with_settings(ctx: Context, **changes: object) -> Context:
    """The same database and storage with some settings changed (e.g. fault injection)."""
    return Context(settings=ctx.settings.model_copy(update=changes), engine=ctx.engine)


def table_counts(ctx: Context) -> dict[str, int]:
    names = (
        "tracks",
        "track_plans",
        "playlists",
        "playlist_items",
        "pipeline_runs",
        "taste_profiles",
        "clusters",
    )
    with ctx.engine.connect() as conn:
        return {n: int(conn.execute(text(f"SELECT COUNT(*) FROM {n}")).scalar_one()) for n in names}


def storage_files(ctx: Context) -> list[str]:
    root = Path(ctx.settings.resolved_storage_url)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def playlists_of(ctx: Context, run_date: dt.date) -> dict[str, list[tuple[str, float, str]]]:
    """Published playlists of a date: listener -> [(track, score, reason)] in order."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(Playlist.listener_id, PlaylistItem.track_id, PlaylistItem.score, PlaylistItem.reason)
            .join(PlaylistItem, PlaylistItem.playlist_id == Playlist.id)
            .where(Playlist.run_date == run_date, Playlist.status == "published")
            .order_by(Playlist.listener_id, PlaylistItem.position)
        ).all()
    out: dict[str, list[tuple[str, float, str]]] = {}
    for lid, tid, score, why in rows:
        out.setdefault(lid, []).append((tid, round(score, 9), why))
    return out


def visible_playlist_dates(ctx: Context) -> dict[str, dt.date]:
    """What the app shows each listener: the date of their latest published playlist."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(Playlist.listener_id, func.max(Playlist.run_date))
            .where(Playlist.status == "published")
            .group_by(Playlist.listener_id)
        ).all()
    return {lid: d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for lid, d in rows}
