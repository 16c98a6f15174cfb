"""Engine creation and Alembic upgrade, for SQLite (default) and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine with the pragmas the product relies on (SQLite: WAL, foreign keys, busy timeout)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest schema)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def database_problem(exc: BaseException) -> str | None:
    """What an error from the database driver says about the database itself: ``"unreachable"`` (it does
    not answer, refuses the connection or the file cannot be opened), ``"no_schema"`` (it answers but its
    tables are missing or older than this code: ``personalize db upgrade``), else None (a fault of the
    query or of the code, not of the database)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return "unreachable"  # no pooled connection came free in time / the server dropped it
    # The driver's own error, wrapped by SQLAlchemy or raised bare (the API's hot queries use the raw cursor).
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if not isinstance(exc, sa_exc.DBAPIError) and not type(orig).__module__.startswith(DRIVER_MODULES):
        return None
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig).lower()
    if sqlstate in ("42P01", "42703") or "no such table" in text or "no such column" in text:
        return "no_schema"
    if sqlstate == "57014":
        return "unreachable"  # a statement cancelled by its timeout: the database is too slow to answer
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "unreachable"
    if type(orig).__module__.startswith("sqlite3"):
        # SQLite raises OperationalError for faulty SQL too: only these mean the file itself is the trouble.
        return "unreachable" if any(p in text for p in _SQLITE_UNREACHABLE) else None
    if type(orig).__name__ in ("OperationalError", "InterfaceError") or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return "unreachable"
    return None


DRIVER_MODULES = ("sqlite3", "psycopg")


_SQLITE_UNREACHABLE = ("unable to open", "database is locked", "disk i/o error", "not a database")
