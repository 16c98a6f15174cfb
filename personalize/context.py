"""The run context handed to every stage: settings, database engine, session factory and storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from personalize.config import Settings, get_settings
from personalize.db.session import make_engine
from personalize.storage import Storage


@dataclass
class Context:
    """What a stage needs. Build one with :func:`make_context`; stages never read globals."""

    settings: Settings
    engine: Engine = field(repr=False)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.resolved_storage_url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def make_context(settings: Settings | None = None, **overrides: object) -> Context:
    settings = settings or get_settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Context(settings=settings, engine=make_engine(settings.resolved_database_url))
