"""Typed Dagster resources: the application database and Redis. No I/O until first use."""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import cached_property
from typing import Any

import dagster as dg
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings, load_settings, normalize_database_url
from gov_pipeline.db.engine import engine_for, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS

_ENGINES: dict[tuple[str, str | None], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(settings: Settings) -> Engine:
    """One engine (one connection pool) per process, URL and role: sensor ticks and ops
    reuse it."""
    key = (settings.database_url, settings.db_role)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = engine_for(settings)
        return engine


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The application database; `url` defaults to GOV_PIPELINE_DATABASE_URL (or the
    embedded SQLite file)."""

    url: str | None = None

    def settings(self) -> Settings:
        settings = load_settings()
        if self.url:
            settings = replace(settings, database_url=normalize_database_url(self.url))
        return settings

    def engine(self) -> Engine:
        return shared_engine(self.settings())

    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine(), tenant=ALL_TENANTS)


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
