"""Listening events pulled from another database (the app's own), incrementally: each source is described in a
small TOML file and read from where its watermark says it stopped, through the same validation and quarantine
as files. Pulling again with nothing new reads nothing; pulling rows twice stores them once.

A source file (``PERSONALIZE_SOURCES_FILE``, default ``<data_dir>/sources.toml``)::

    [sources.app]
    url = "postgresql+psycopg://reader@app-db/app"   # or url_env = "APP_DATABASE_URL"
    table = "public.plays"                           # or query = "SELECT ... FROM ... JOIN ..."
    watermark = "id"          # grows as rows are added: a serial id or an insert time set by the server
    batch_rows = 50000

    [sources.app.columns]     # event column = the source's column
    event_id = "id"
    listener_id = "user_id"
    track_id = "song_id"
    ts = "played_at"
    ms_played = "ms_played"

    [sources.app.kind]        # the event kind: one column's values mapped, or one value for every row
    column = "action"
    map = { finished = "complete", skipped = "skip", started = "play" }
    default = "play"          # for values not in map; without it they are quarantined (unknown_kind)

The watermark must be given out in commit order (a serial id, or an insert time the database sets): a row
that arrives late, played days ago, still gets a new watermark and is pulled the next night. A play time
(``played_at``) is not a watermark, as exactly those late rows would fall behind it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from personalize.context import Context
from personalize.db.models import EVENT_KINDS, IngestWatermark
from personalize.ingest.events import EVENT_COLUMNS, EventIngest
from personalize.ingest.read import Chunk
from personalize.ingest.report import IngestFileError, IngestReport


class KindRule(BaseModel):
    """How a row's event kind is derived: ``value`` for every row, or ``column``'s values through ``map``."""

    model_config = ConfigDict(extra="forbid")
    column: str | None = None
    value: str | None = None
    map: dict[str, str] = Field(default_factory=dict)
    default: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> KindRule:
        if (self.column is None) == (self.value is None):
            raise ValueError("give either kind.column (with an optional map) or kind.value")
        for name in [self.value, self.default, *self.map.values()]:
            if name is not None and name not in EVENT_KINDS:
                raise ValueError(f"kind {name!r} is not one of {', '.join(EVENT_KINDS)}")
        return self


class Source(BaseModel):
    """One database source of listening events (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    url: str | None = None
    url_env: str | None = None
    table: str | None = None
    query: str | None = None
    watermark: str
    columns: dict[str, str]
    kind: KindRule
    batch_rows: int = Field(default=50_000, ge=1, le=5_000_000)

    @model_validator(mode="after")
    def _complete(self) -> Source:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give either url or url_env")
        if (self.table is None) == (self.query is None):
            raise ValueError("give either table or query")
        wanted = [c for c in EVENT_COLUMNS if c != "kind"]
        missing = [c for c in wanted if c not in self.columns]
        if missing:
            raise ValueError(
                f"columns lacks {', '.join(missing)} (each maps an event column to a source column)"
            )
        return self

    def database_url(self) -> str:
        if self.url is not None:
            return self.url
        url = os.environ.get(str(self.url_env))
        if not url:
            raise IngestFileError(f"source {self.name}: the environment variable {self.url_env} is not set.")
        return url


def sources_file(ctx: Context) -> Path:
    configured = os.environ.get("PERSONALIZE_SOURCES_FILE")
    return Path(configured) if configured else Path(ctx.settings.data_dir) / "sources.toml"


def load_sources(path: Path) -> list[Source]:
    """The sources described in ``path``; raises :class:`IngestFileError` naming the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestFileError(f"{path}: no such sources file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise IngestFileError(f"{path}: not valid TOML ({exc}).") from None
    sources = []
    for name, body in (data.get("sources") or {}).items():
        try:
            sources.append(Source(name=name, **body))
        except (ValidationError, TypeError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"])
            raise IngestFileError(
                f"{path}: source {name!r}{' ' + where if where else ''}: {first['msg']}. See `personalize ingest pull --help`."
            ) from None
    if not sources:
        raise IngestFileError(f"{path}: no [sources.NAME] section; see `personalize ingest pull --help`.")
    return sources


# A watermark is kept as text with its type, so the next pull compares it as the source stores it.
def _dump_watermark(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        raise TypeError("a boolean cannot be a watermark")
    if isinstance(value, int | np.integer):
        return f"int:{int(value)}"
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return f"ts:{value.isoformat()}"
    return f"str:{value}"


def _load_watermark(text: str | None) -> object:
    if text is None:
        return None
    kind, _, value = text.partition(":")
    if kind == "int":
        return int(value)
    if kind == "ts":
        return dt.datetime.fromisoformat(value)
    return value


def _statement(source: Source, last: object) -> sa.Select:
    wanted = {*source.columns.values(), source.watermark}
    if source.kind.column:
        wanted.add(source.kind.column)
    if source.table is not None:
        schema, _, name = source.table.rpartition(".")
        frm = sa.table(name, *(sa.column(c) for c in sorted(wanted)), schema=schema or None)
    else:
        frm = sa.text(source.query).columns(*(sa.column(c) for c in sorted(wanted))).subquery("src")  # type: ignore[arg-type]
    cols = {c: frm.c[c] for c in sorted(wanted)}
    # A row without a watermark cannot be placed in the order: it is left for when it has one.
    stmt = (
        sa.select(*cols.values()).where(cols[source.watermark].is_not(None)).order_by(cols[source.watermark])
    )
    if last is not None:
        stmt = stmt.where(cols[source.watermark] > sa.bindparam("last", last))
    return stmt


def _events_frame(source: Source, rows: list[sa.Row], keys: list[str]) -> pd.DataFrame:
    raw = pd.DataFrame.from_records(rows, columns=keys)
    frame = pd.DataFrame({event: raw[column] for event, column in source.columns.items() if event != "kind"})
    rule = source.kind
    if rule.value is not None:
        frame["kind"] = rule.value
    else:
        values = raw[str(rule.column)].astype(object)
        mapped = values.map(
            lambda v: rule.map.get(str(v), rule.default if rule.default else v) if v is not None else None
        )
        frame["kind"] = mapped
    return frame


def pull(ctx: Context, source: Source, *, progress: bool = False) -> IngestReport:
    """Pull the rows of ``source`` added since its watermark into listening_events (quarantining bad rows
    as files do) and move the watermark on after each batch is stored. Safe to rerun at any point."""
    started = time.perf_counter()
    name = f"db:{source.name}"
    with ctx.engine.connect() as conn:
        mark = conn.execute(
            sa.select(IngestWatermark.watermark, IngestWatermark.rows_read).where(
                IngestWatermark.source == name
            )
        ).first()
    last = _load_watermark(mark[0]) if mark else None
    rows_read = int(mark[1]) if mark else 0
    job = EventIngest(ctx, name)
    engine = sa.create_engine(source.database_url(), pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=source.batch_rows).execute(
                _statement(source, last)
            )
            keys = list(result.keys())
            at = keys.index(source.watermark)
            for rows in result.partitions(source.batch_rows):
                frame = _events_frame(source, rows, keys)
                numbers = np.arange(rows_read + 1, rows_read + 1 + len(frame), dtype=np.int64)
                job.store(
                    job.prepare(
                        Chunk(frame=frame, row_numbers=numbers, bad_encoding=np.zeros(len(frame), dtype=bool))
                    )
                )
                rows_read += len(frame)
                _save_watermark(ctx, name, _dump_watermark(rows[-1][at]), rows_read)
    except sa.exc.SQLAlchemyError as exc:
        job.writer.close(commit=True)
        raise IngestFileError(
            f"source {source.name}: reading failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "the batches before were kept and the next pull goes on from there."
        ) from exc
    finally:
        engine.dispose()
    report = job.finish(started)
    if report.rows_read == 0:
        _save_watermark(ctx, name, _dump_watermark(last) if last is not None else None, rows_read)
    report.notes.append(f"watermark {source.watermark} now {_load_watermark(_current(ctx, name))!s}")
    return report


def _current(ctx: Context, name: str) -> str | None:
    with ctx.engine.connect() as conn:
        return conn.execute(
            sa.select(IngestWatermark.watermark).where(IngestWatermark.source == name)
        ).scalar()


def _save_watermark(ctx: Context, name: str, watermark: str | None, rows_read: int) -> None:
    if ctx.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    values: dict[str, Any] = {
        "source": name, "watermark": watermark, "rows_read": rows_read, "pulled_at": dt.datetime.now(dt.UTC)
    }  # fmt: skip
    stmt = insert(IngestWatermark).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["source"], set_={k: v for k, v in values.items() if k != "source"}
    )
    with ctx.engine.begin() as conn:
        conn.execute(stmt)


def pull_all(ctx: Context, path: Path | None = None) -> dict[str, Any]:
    """Pull every source of the sources file (the nightly ingest stage's first step); nothing when there is
    no file. A source that fails is reported and the others still go."""
    path = Path(path) if path is not None else sources_file(ctx)
    summary: dict[str, Any] = {"sources": 0, "pulled_rows": 0, "pulled_ingested": 0, "pulled_quarantined": 0}
    if not path.exists():
        return summary
    failed = []
    for source in load_sources(path):
        try:
            report = pull(ctx, source)
        except IngestFileError as exc:
            failed.append(f"{source.name}: {exc}")
            continue
        summary["sources"] += 1
        summary["pulled_rows"] += report.rows_read
        summary["pulled_ingested"] += report.ingested
        summary["pulled_quarantined"] += report.quarantined_total
    summary["sources_failed"] = len(failed)
    summary["pull_failures"] = failed
    return summary
