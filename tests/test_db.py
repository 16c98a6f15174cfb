"""The schema migrates up and down on both engines and holds what the product writes."""

from __future__ import annotations

from sqlalchemy import inspect

from personalize.db.session import downgrade, upgrade

FOUNDATION_TABLES = {"listeners", "tracks", "listening_events", "quarantined_rows", "pipeline_runs"}


def test_upgrade_creates_foundation_tables(ctx):
    names = set(inspect(ctx.engine).get_table_names())
    assert FOUNDATION_TABLES <= names


def test_downgrade_to_base_and_back(db_url):
    downgrade(db_url, "base")
    from personalize.db.session import make_engine

    engine = make_engine(db_url)
    assert not FOUNDATION_TABLES & set(inspect(engine).get_table_names())
    upgrade(db_url)
    assert FOUNDATION_TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
