"""Fixtures of the coordinator and worker tests: a Dagster instance with the Redis run
coordinator, made fresh per call (coordinator_support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gov_pipeline_tests.conftest import REDIS_URL, _truncate_all
from gov_pipeline_tests.integration.coordinator_support import Coordinated, coordinated_instance


@pytest.fixture
def make_coordinated(
    tmp_path: Path, postgres_url: str, dagster_storage_url: str, redis_prefix: str
) -> Iterator[Callable[..., Coordinated]]:
    """`make(redis_url=..., **coordinator_config)`: an instance on PostgreSQL storage with
    the Redis coordinator configured so (and an app database holding one tenant, one manual
    workflow and one policy); closed after the test."""
    stack: list[Any] = []

    def make(redis_url: str = REDIS_URL, **coordinator: Any) -> Coordinated:
        _truncate_all(postgres_url)
        cm = coordinated_instance(
            tmp_path, postgres_url, dagster_storage_url, redis_url, redis_prefix, **coordinator
        )
        stack.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
