"""Typed Dagster resources. The database resource owns its engine and session factory,
made on first use (or when Dagster sets the resource up) and disposed when it is torn down;
nothing connects at import."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings, load_settings, normalize_database_url
from gov_pipeline.db.engine import engine_for, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The application database; `url` defaults to GOV_PIPELINE_DATABASE_URL (or the
    embedded SQLite file). Its sessions work across tenants (the engine narrows each chunk to
    its tenant, see runners/batch.py)."""

    url: str | None = None

    _settings: Settings | None = PrivateAttr(default=None)
    _engine: Engine | None = PrivateAttr(default=None)
    _sessions: sessionmaker[Session] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.sessions()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = self._sessions = None

    def settings(self) -> Settings:
        if self._settings is None:
            settings = load_settings()
            if self.url:
                settings = replace(settings, database_url=normalize_database_url(self.url))
            self._settings = settings
        return self._settings

    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._engine = engine_for(self.settings())
            self._sessions = make_sessionmaker(
                self._engine, tenant=ALL_TENANTS, queue_emails=self.settings().smtp is not None
            )
        return self._sessions
