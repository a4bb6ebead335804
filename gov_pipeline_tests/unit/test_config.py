"""Settings come from the environment, in one place, with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gov_pipeline.config import load_settings, normalize_database_url
from gov_pipeline.domain.errors import ConfigurationError


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = load_settings({"GOV_PIPELINE_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'gov_pipeline.db'}"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.chain_depth_limit == 5


def test_postgres_urls_get_an_explicit_driver() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    settings = load_settings({"GOV_PIPELINE_DATABASE_URL": "postgresql://u@h/db"})
    assert settings.database_url.startswith("postgresql+psycopg2://")


def test_bad_numbers_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="GOV_PIPELINE_CHAIN_DEPTH_LIMIT"):
        load_settings({"GOV_PIPELINE_CHAIN_DEPTH_LIMIT": "many"})
    with pytest.raises(ConfigurationError, match=">= 1"):
        load_settings({"GOV_PIPELINE_CHAIN_DEPTH_LIMIT": "0"})


def test_secrets_do_not_show_in_repr() -> None:
    settings = load_settings({"GOV_PIPELINE_WEBHOOK_SECRET": "s3cr3t-value"})
    assert settings.webhook_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)


def test_sensor_intervals_land_on_the_daemon_loop() -> None:
    """The sensor daemon wakes every 5 s; an interval of exactly 5 would tick every 10 s."""
    from gov_pipeline.orchestration.common import daemon_interval
    from gov_pipeline.orchestration.sensors import change_sensor, run_failure_sensor
    from gov_pipeline.orchestration.sweeper import sweeper_sensor

    _SETTINGS = load_settings(
        {"GOV_PIPELINE_SENSOR_INTERVAL": "7", "GOV_PIPELINE_SWEEP_INTERVAL": "30"}
    )
    entity_change_sensor = change_sensor(_SETTINGS)
    processing_failure_sensor = run_failure_sensor(_SETTINGS)
    unprocessed_change_sweeper = sweeper_sensor(_SETTINGS)

    assert [daemon_interval(s) for s in (1, 2, 5, 60)] == [1, 1, 4, 59]
    assert entity_change_sensor.minimum_interval_seconds == _SETTINGS.sensor_interval_s - 1
    assert processing_failure_sensor.minimum_interval_seconds == _SETTINGS.sensor_interval_s - 1
    assert unprocessed_change_sweeper.minimum_interval_seconds == _SETTINGS.sweep_interval_s - 1


def test_webhook_allowed_hosts_take_a_host_or_a_host_and_port() -> None:
    settings = load_settings(
        {
            "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": (
                " Hooks.Example.com, api.example.com:8443 ,[::1]:8080,[FE80::1], 2001:db8::0001,,"
            )
        }
    )
    assert settings.webhook_allowed_hosts == (
        "hooks.example.com",
        "api.example.com:8443",
        "[::1]:8080",
        "[fe80::1]",
        "[2001:db8::1]",
    )
    assert load_settings({}).webhook_allowed_hosts == ()


@pytest.mark.parametrize(
    "entry",
    [
        *("hooks.example.com:abc", "hooks.example.com:0", "hooks.example.com:65536"),
        *("hooks.example.com:", ":8080", "hooks.example.com:80:81", "hooks.example.com:+80"),
        *("hooks.example.com:\u0668\u0660", "[::1", "[::1]x", "[::1]:", "[::1]:99999"),
        *("[not-an-address]:80", "[hooks.example.com]", "https://hooks.example.com"),
        *("hooks example.com", "user@hooks.example.com", "hooks.example.com/path"),
    ],
)
def test_a_malformed_allowed_host_is_refused_by_name(entry: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": f"ok.example.com,{entry}"})
    message = str(caught.value)
    assert message.startswith("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS: ")
    assert repr(entry.strip()) in message
    assert "host, host:port, [ipv6] or [ipv6]:port" in message
