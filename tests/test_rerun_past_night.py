"""Any past night reruns to the same result: after nights D-2, D-1 and D have run, running D-2 again from
scratch (every stage, as clearing it in Airflow does) leaves every table and every stored file as it was,
byte for byte, on SQLite and PostgreSQL. Only the run log (``pipeline_runs``: who ran what, when) grows;
rows a stage writes afresh get new surrogate ``id`` numbers and ``created_at`` stamps (the tables' natural
keys, such as a cluster's run date and cluster id, are what other tables and the views join on)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from nightly_world import WORLD_END, build_world_files, fresh_database, world_context
from sqlalchemy import MetaData, select

from personalize import pipeline

NIGHTS = [WORLD_END - dt.timedelta(days=2), WORLD_END - dt.timedelta(days=1), WORLD_END]
RUN_LOG = {"pipeline_runs", "alembic_version"}  # what ran when, and the schema version
WRITTEN = {"id", "created_at"}  # a row's surrogate number and when it was written

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world_files(tmp_path_factory.mktemp("world"))


def _tables(ctx) -> dict[str, list[tuple]]:
    meta = MetaData()
    meta.reflect(ctx.engine)
    out = {}
    with ctx.engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            if name in RUN_LOG:
                continue
            columns = [c for c in table.columns if not (c.name in WRITTEN and not c.foreign_keys)]
            rows = conn.execute(select(*columns)).all()
            out[name] = sorted(tuple(str(v) for v in row) for row in rows)
    return out


def _files(ctx) -> dict[str, str]:
    root = Path(ctx.settings.resolved_storage_url)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_past_night_reruns_to_the_same_tables_and_files(engine, world_files, tmp_path):
    with fresh_database(engine, tmp_path) as url:
        ctx = world_context(url, tmp_path / "data", world_files)
        try:
            for night in NIGHTS:
                pipeline.run(ctx, night)
            tables, files = _tables(ctx), _files(ctx)
            assert tables["playlists"] and tables["tracks"] and files  # the nights published something
            pipeline.run(ctx, NIGHTS[0])
            again_tables, again_files = _tables(ctx), _files(ctx)
            changed = {t for t in tables if tables[t] != again_tables.get(t)}
            assert not changed, {t: sorted(set(tables[t]) ^ set(again_tables[t]))[:4] for t in changed}
            assert again_files == files
        finally:
            ctx.engine.dispose()
