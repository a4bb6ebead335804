"""The Redis run coordinator's settings: constructed with explicit values it reads no
environment; built from dagster.yaml, what the file leaves out comes from GOV_PIPELINE_*."""

from __future__ import annotations

import pytest

from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator


def test_explicit_values_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings() would refuse this: the constructor must not call it.
    monkeypatch.setenv("GOV_PIPELINE_CHAIN_DEPTH_LIMIT", "many")
    coordinator = RedisRunCoordinator(redis_url="redis://example:6390/3", key_prefix="mine")
    assert (coordinator.redis_url, coordinator.key_prefix) == ("redis://example:6390/3", "mine")
    assert coordinator.queue.keys.queued("policy") == "{mine}:rq:queued:policy"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, ("redis://env:6391/4", "envprefix")),
        ({"redis_url": "", "key_prefix": ""}, ("redis://env:6391/4", "envprefix")),
        (
            {"redis_url": "redis://yaml:6392/5", "key_prefix": "yaml"},
            ("redis://yaml:6392/5", "yaml"),
        ),
    ],
    ids=["left out", "empty", "given"],
)
def test_dagster_yaml_values_else_the_settings(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, str], expected: tuple[str, str]
) -> None:
    monkeypatch.setenv("GOV_PIPELINE_REDIS_URL", "redis://env:6391/4")
    monkeypatch.setenv("GOV_PIPELINE_REDIS_PREFIX", "envprefix")
    coordinator = RedisRunCoordinator.from_config_value(None, {"lease_seconds": 7, **config})  # type: ignore[arg-type]
    assert (coordinator.redis_url, coordinator.key_prefix) == expected
    assert coordinator.lease_seconds == 7 and coordinator.inst_data is None


def test_dagster_yaml_path_still_refuses_a_malformed_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gov_pipeline.domain.errors import ConfigurationError

    monkeypatch.setenv("GOV_PIPELINE_CHAIN_DEPTH_LIMIT", "many")
    with pytest.raises(ConfigurationError):
        RedisRunCoordinator.from_config_value(None, {"redis_url": "redis://x", "key_prefix": "x"})  # type: ignore[arg-type]


def test_unknown_and_malformed_keys_are_refused() -> None:
    """Keys that neither Dagster's queue nor this one knows, and limits below -1 in any of
    the three places, stop the coordinator with the key named."""
    with pytest.raises(TypeError, match="unknown run coordinator keys"):
        RedisRunCoordinator(redis_url="redis://x", key_prefix="p", dequeue_everything=True)
    for config, key in [
        ({"max_concurrent_runs": -2}, "max_concurrent_runs"),
        ({"lanes": {"audit": -5}}, r"lanes\.audit"),
        ({"tag_concurrency_limits": [{"key": "k", "limit": -3}]}, r"tag_concurrency_limits\[0\]"),
    ]:
        with pytest.raises(ValueError, match=key):
            RedisRunCoordinator(redis_url="redis://x", key_prefix="p", **config)
