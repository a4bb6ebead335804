"""A transient database error (the server restarting, a cut connection) in any step of
`process_changes` is retried with backoff, as the op retry policy promises; a run
must not end in FAILURE for a blip once its work is done."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.orchestration import processing
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import batch
from gov_pipeline_tests.integration.engine_support import apply_yaml, make_settings, new_policy
from gov_pipeline_tests.reliability.support import CHANGE_NOTICE


def test_a_connection_cut_in_record_outcome_is_retried(
    db_url: str,
    sessions: sessionmaker[Session],
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_settings(db_url)
    apply_yaml(sessions, CHANGE_NOTICE)
    new_policy(sessions)
    real = batch.deliver_pending
    calls: list[int] = []

    def cut_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "deliver_pending", cut_once)
    result = processing.process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [1]}}}},
        resources={"database": DatabaseResource(url=db_url)},
        raise_on_error=False,
    )
    assert result.success, "one blip in record_outcome failed the run"
    assert len(calls) == 2
