"""The embedded Dagster instance (SQLite storage, no server): what `make demo` and a new
user get. The production instance is the top-level dagster.yaml."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from gov_pipeline.config import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "workspace.yaml"

EMBEDDED_INSTANCE_YAML = """\
# Embedded instance: SQLite storage under this directory, no server needed.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: gov/policy_id
        value: {applyLimitPerUniqueValue: true}
        limit: 1
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
sensors:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
"""


REDIS_INSTANCE_YAML = """\
# Embedded instance with the Redis run coordinator (SQLite storage; Redis from the env).
run_coordinator:
  module: gov_pipeline.coordinator.run_coordinator
  class: RedisRunCoordinator
  config:
    key_prefix: {prefix}
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
sensors:
  use_threads: true
  num_workers: 2
telemetry:
  enabled: false
"""


def embedded_dagster_home(settings: Settings, redis_prefix: str | None = None) -> Path:
    """`<home>/dagster`, with its dagster.yaml written if missing (Dagster's own queue, or
    the Redis run coordinator under `redis_prefix` when one is given)."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if redis_prefix is not None:
        config.write_text(REDIS_INSTANCE_YAML.format(prefix=redis_prefix))
    elif not config.exists():
        config.write_text(EMBEDDED_INSTANCE_YAML)
    return home


def prepare_instance(dagster_home: Path) -> None:
    """Create the instance's storage now, in this process.

    Two Dagster processes starting on a fresh SQLite home (the daemon and a
    `dagster job launch`, say) would both create the tables and one would fail.
    """
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()


def dagster_env(
    settings: Settings, dagster_home: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for Dagster processes serving this project's data."""
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            "GOV_PIPELINE_DATABASE_URL": settings.database_url,
            "GOV_PIPELINE_HOME": str(settings.home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(dict(extra or {}))
    return env


def bin_path(name: str) -> str:
    """A console script of this virtualenv."""
    return str(Path(sys.executable).with_name(name))


@contextmanager
def _running(
    args: list[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process group of its own, logging to `log_path`, stopped (SIGTERM, then SIGKILL)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            stop_process_group(process)


@contextmanager
def running_daemon(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-daemon run` for the workspace, stopped on exit."""
    prepare_instance(Path(env["DAGSTER_HOME"]))
    with _running([bin_path("dagster-daemon"), "run", "-w", str(WORKSPACE)], env, log_path) as p:
        yield p


@contextmanager
def running_worker(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`gov-pipeline worker --mode execute` for the Redis coordinator, stopped on exit."""
    args = [bin_path("gov-pipeline"), "worker", "--mode", "execute", "-w", str(WORKSPACE)]
    with _running(args, env, log_path) as p:
        yield p


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process and its children; SIGKILL what is left after `grace_s`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
