"""Shared fixtures: a fresh, migrated database on SQLite and on the local PostgreSQL, and a Context on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from personalize.context import Context, make_context
from personalize.db.session import upgrade

PG_ADMIN_URL = os.environ.get("PERSONALIZE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("PERSONALIZE_REQUIRE_POSTGRES") == "1"


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def pg_available() -> bool:
    problem = _pg_reachable()
    if problem is None:
        return True
    if REQUIRE_PG:
        pytest.fail(
            f"PostgreSQL required (PERSONALIZE_REQUIRE_POSTGRES=1) but unreachable at {PG_ADMIN_URL}: {problem}"
        )
    print(f"\n*** SKIPPING PostgreSQL tests: no server at {PG_ADMIN_URL} ({problem}) ***")
    return False


def _fresh_pg_database() -> tuple[str, str]:
    name = f"personalize_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'personalize.db'}"
        upgrade(url)
        yield url
        return
    if not request.getfixturevalue("pg_available"):
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}")
    name, url = _fresh_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Iterator[Context]:
    """A Context on a fresh database with its data dir under tmp_path."""
    context = make_context(data_dir=tmp_path / "data", database_url=db_url)
    yield context
    context.engine.dispose()
