"""Typed Dagster resources: the application database and Redis. No I/O until first use."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings, load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The application database; `url` defaults to GOV_PIPELINE_DATABASE_URL (or the
    embedded SQLite file)."""

    url: str | None = None
    _engine: Engine | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        settings = load_settings()
        if self.url:
            from dataclasses import replace

            from gov_pipeline.config import normalize_database_url

            settings = replace(settings, database_url=normalize_database_url(self.url))
        return settings

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings().database_url)
        return self._engine

    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class RedisResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Redis, for run coordination; `url` defaults to GOV_PIPELINE_REDIS_URL."""

    url: str | None = None
    prefix: str | None = None

    @cached_property
    def _settings(self) -> Settings:
        return load_settings()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url or self._settings.redis_url, decode_responses=True)

    def key_prefix(self) -> str:
        return self.prefix or self._settings.redis_prefix
