"""The run launchers of docs/operations.md ("Runs in containers: Docker and Kubernetes run
launchers"), as written: each dagster.yaml block marked `<!-- tested: NAME -->` loads as the
instance, with the Redis coordinator and Dagster's Docker or Kubernetes run launcher, and a
launch-mode worker hands a run it claimed to that launcher.

The launch itself is the one stand-in: starting a container or a pod needs a Docker Engine or
a cluster. The launcher's `launch_run` is replaced, on the instance's launcher object, by a
recorder that notes the run, the launcher and what the launcher would give the container
(read with the launcher's own code), then ends the run as the run's process would. The
Kubernetes launcher gets a kubeconfig whose server does not exist: it builds its client
without calling it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRun
from dagster._core.utils import parse_env_var
from dagster._serdes import serialize_value
from dagster_docker import DockerRunLauncher
from dagster_k8s import K8sRunLauncher
from kubernetes.config import kube_config
from sqlalchemy.engine import make_url

from gov_pipeline.coordinator.instance import GovDagsterInstance
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.coordinator.worker import local_run_pid, run_process_pid
from gov_pipeline.dagster_internals import EngineEventData, LaunchRunContext
from gov_pipeline_tests.conftest import REDIS_URL
from gov_pipeline_tests.integration.coordinator_support import Coordinated, statuses

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
LAUNCHERS: dict[str, type] = {"docker-launcher": DockerRunLauncher, "k8s-launcher": K8sRunLauncher}
IMAGE = f"registry.example.com/gov-pipeline:test-{secrets.token_hex(4)}"
# A cluster that is not there: nothing in these tests may call it.
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: nobody, user: {token: not-a-token}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


def documented_block(marker: str) -> str:
    """The yaml block that follows `<!-- tested: MARKER -->` in the operations guide."""
    text = OPERATIONS.read_text()
    found = re.findall(rf"<!-- tested: {re.escape(marker)} -->\n```yaml\n(.*?)\n```", text, re.S)
    assert len(found) == 1, f"docs/operations.md: {len(found)} yaml blocks marked {marker}"
    return str(found[0])


def environment(tmp_path: Path, storage_url: str, app_url: str, prefix: str) -> dict[str, str]:
    """A value for every variable the blocks name: this test's databases, Redis and key
    prefix, a webhook setting and secret, the release's image, the kubeconfig file."""
    storage = make_url(storage_url)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    return {
        "DAGSTER_PG_USER": storage.username or "postgres",
        # Trust authentication here: any password does, and this one is easy to look for.
        "DAGSTER_PG_PASSWORD": storage.password or f"pw-{secrets.token_hex(12)}",
        "DAGSTER_PG_HOST": storage.host or "127.0.0.1",
        "DAGSTER_PG_DB": str(storage.database),
        "DAGSTER_PG_PORT": str(storage.port or 5432),
        "GOV_PIPELINE_DATABASE_URL": app_url,
        "GOV_PIPELINE_REDIS_URL": REDIS_URL,
        "GOV_PIPELINE_REDIS_PREFIX": prefix,
        "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com",
        "GOV_PIPELINE_WEBHOOK_SECRET": secrets.token_hex(16),
        "DAGSTER_CURRENT_IMAGE": IMAGE,
        "KUBECONFIG": str(kubeconfig),
    }


def named_variables(block: str) -> set[str]:
    """Every variable the block reads: its `{env: ...}` entries and the Docker `env_vars`."""
    named = set(re.findall(r"\{env: ([A-Z0-9_]+)\}", block))
    config = yaml.safe_load(block)["run_launcher"].get("config", {})
    return named | set(config.get("env_vars") or [])


@dataclass
class Documented:
    instance: DagsterInstance
    home: Path
    config: dict[str, Any]  # the block, parsed
    env: dict[str, str]  # what this test set


@contextmanager
def documented_instance(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, urls: tuple[str, str], prefix: str
) -> Iterator[Documented]:
    """DAGSTER_HOME/dagster.yaml is the block as written, its variables set in this process
    (and so in the code servers it starts); the instance on wiped storage."""
    block = documented_block(marker)
    env = environment(tmp_path, *urls, prefix)
    missing = named_variables(block) - set(env)
    assert not missing, f"the {marker} block names {sorted(missing)}: give them values here"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(block + "\n")
    for name, value in {**env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    # The Kubernetes client reads KUBECONFIG once, when it is imported (here, before this
    # test set it): as if it had been set when this process started.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", env["KUBECONFIG"])
    instance = DagsterInstance.from_config(str(home))
    instance.wipe()
    try:
        yield Documented(instance, home, yaml.safe_load(block), env)
    finally:
        instance.dispose()


@pytest.fixture(params=sorted(LAUNCHERS))
def documented(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    dagster_storage_url: str,
    redis_prefix: str,
) -> Iterator[tuple[str, Documented]]:
    """(marker, the instance of its block), for each marked block."""
    marker = str(request.param)
    urls = (dagster_storage_url, postgres_url)
    with documented_instance(marker, tmp_path, monkeypatch, urls, redis_prefix) as d:
        yield marker, d


def test_each_block_loads_with_the_redis_coordinator_and_that_launcher(
    documented: tuple[str, Documented],
) -> None:
    marker, d = documented
    instance = d.instance
    assert type(instance) is GovDagsterInstance
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, RedisRunCoordinator)
    assert (coordinator.redis_url, coordinator.key_prefix) == (
        REDIS_URL,
        d.env["GOV_PIPELINE_REDIS_PREFIX"],
    )
    launcher = instance.run_launcher
    assert type(launcher) is LAUNCHERS[marker]
    # The daemon's run monitoring checks these launchers' runs; none is resumed behind the queue.
    assert launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_resume_run_attempts == 0
    if marker == "k8s-launcher":  # the kubeconfig KUBECONFIG names, as the block says
        assert kubernetes.client.Configuration.get_default_copy().host == "https://127.0.0.1:1"
    # The instance the launch command carries to the run's process: variables by name, which
    # the container resolves itself.
    ref = instance.get_ref()
    storage = yaml.safe_load(ref.run_storage_data.config_yaml)["postgres_db"]
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert ref.run_coordinator_data is not None
    queue = yaml.safe_load(ref.run_coordinator_data.config_yaml)
    assert queue["redis_url"] == {"env": "GOV_PIPELINE_REDIS_URL"}
    if d.env["DAGSTER_PG_PASSWORD"].startswith("pw-"):  # this test's, not a real one
        assert d.env["DAGSTER_PG_PASSWORD"] not in serialize_value(ref)


@dataclass
class Launch:
    """What a launcher was asked to launch, and what it would give the container."""

    run_id: str
    launcher: type
    image: str | None  # recorded in the run by the code server of its submit
    container: dict[str, Any]


def container_settings(launcher: Any, run: DagsterRun) -> dict[str, Any]:
    """What the launcher would give the run's container, by the launcher's own code."""
    if isinstance(launcher, DockerRunLauncher):
        docker = launcher.get_container_context(run)
        return {
            "image": launcher.image,
            # As the launcher does at launch: each name's value from this process.
            "env": dict(parse_env_var(name) for name in docker.env_vars),
            "networks": list(docker.networks),
        }
    k8s = launcher.get_container_context_for_run(run)
    container = k8s.run_k8s_config.container_config
    return {
        "image": launcher.job_image,
        "namespace": k8s.namespace,
        "service_account_name": k8s.run_k8s_config.pod_spec_config.get("service_account_name"),
        "env_from": list(container.get("env_from", [])),
    }


def end_as_its_process_would(instance: DagsterInstance, run: DagsterRun) -> None:
    # As a container's run process reports itself: its pid is the container's own (1).
    started = EngineEventData.in_process(1)
    instance.report_engine_event("Started process for run (pid: 1).", run, started)
    for event_type in (DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS):
        event = DagsterEvent(event_type_value=event_type.value, job_name=run.job_name)
        instance.report_dagster_event(event, run_id=run.run_id)


def record_launches(instance: DagsterInstance, launches: list[Launch]) -> Callable[..., None]:
    """The stand-in for the launcher's `launch_run` (the part that needs an engine)."""
    launcher = instance.run_launcher

    def launch_run(context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = context.job_code_origin
        image = None if origin is None else origin.repository_origin.container_image
        settings = container_settings(launcher, run)
        launches.append(Launch(run.run_id, type(launcher), image, settings))
        end_as_its_process_would(instance, run)

    return launch_run


def expected_container(marker: str, d: Documented) -> dict[str, Any]:
    """What the block says the container gets, with this test's values."""
    config = d.config["run_launcher"]["config"]
    if marker == "docker-launcher":
        return {
            "image": IMAGE,
            "env": {name: d.env[name] for name in config["env_vars"]},
            "networks": [config["network"]],
        }
    return {
        "image": IMAGE,
        "namespace": config["job_namespace"],
        "service_account_name": config["service_account_name"],
        "env_from": [{"config_map_ref": {"name": n}} for n in config["env_config_maps"]]
        + [{"secret_ref": {"name": n}} for n in config["env_secrets"]],
    }


def test_a_launch_mode_worker_hands_the_claimed_run_to_that_launcher(
    documented: tuple[str, Documented], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker, d = documented
    instance = d.instance
    launches: list[Launch] = []
    monkeypatch.setattr(instance.run_launcher, "launch_run", record_launches(instance, launches))
    c = Coordinated(instance, d.home, dict(os.environ), policy_id=1)
    ids = c.submit([("execute_workflow", c.config(), {"gov/entity": "1"})])
    queue = instance.run_coordinator.queue
    assert statuses(c, ids) == ["QUEUED"] and queue.queued("policy") == ids
    stats = c.worker(mode="launch").run(install_signals=False)
    assert [launch.run_id for launch in launches] == ids
    (launch,) = launches
    assert launch.launcher is LAUNCHERS[marker]
    assert launch.image == IMAGE  # DAGSTER_CURRENT_IMAGE, through the submit's code server
    assert launch.container == expected_container(marker, d)
    if marker == "docker-launcher":  # what the run's process needs, from the worker's values
        for name in ("DAGSTER_PG_PASSWORD", "GOV_PIPELINE_DATABASE_URL", "GOV_PIPELINE_REDIS_URL"):
            assert launch.container["env"][name] == d.env[name]
    else:
        assert any("secret_ref" in source for source in launch.container["env_from"])
    assert stats.outcomes == {"SUCCESS": 1}
    assert statuses(c, ids) == ["SUCCESS"]
    # A container's pid names no process of the worker's host, though the worker recorded
    # its own host: nothing here signals it or concludes it died from it.
    assert run_process_pid(instance, ids[0]) == 1
    assert local_run_pid(instance, ids[0], {"host": socket.gethostname()}) is None
    assert queue.active() == set() and queue.record(ids[0])["outcome"] == "SUCCESS"
