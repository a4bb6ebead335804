"""A worker host cut off from the others mid-run, kept away past its lease, and healed.

Hosts on a private switch: `db` (the test's own namespace: a private PostgreSQL cluster
holding the app database and Dagster's storage, a private Redis, the daemon and the
webserver; the test observes them on 127.0.0.1), two worker hosts, `w1` and `w2`, each
running `gov-pipeline worker --mode execute` against db's address, and `hooks`, a webhook
receiver every update's webhook goes to. While w1 executes a run, its
link goes down: w2 adopts the run when the lease expires, fences it, fails it, and runs
its retry; when w1 comes back, Redis refuses its lease and the database its run's late
steps. The checker then finds nothing lost and nothing done twice.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, select, text

from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import RunFence, Workflow, WorkflowExecution
from gov_pipeline.embedded.instance import ROOT, WORKSPACE
from gov_pipeline.embedded.processes import bin_path, running_process, stop_process_group
from gov_pipeline.embedded.ui_tour import webserver_up
from gov_pipeline_tests.conftest import RUN_ID, RedisServer
from gov_pipeline_tests.hosts.netns import Network, host_network
from gov_pipeline_tests.integration.coordinator_support import instance_yaml
from gov_pipeline_tests.reliability.support import (
    CHANGE_NOTICE,
    RUN_RETRIES,
    PrivatePostgres,
    Stack,
    assert_clean,
    private_postgres,
    record,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

# `make soak-hosts` (GOV_HOSTS_SOAK=1) runs these tests longer: more changes, longer cuts.
SOAK = os.environ.get("GOV_HOSTS_SOAK") == "1"


def scaled(short: int, long: int) -> int:
    """`short` in `make test`, `long` in `make soak-hosts`."""
    return long if SOAK else short


def named(test: str) -> str:
    """The name a test's figures are kept under (test-artifacts/reliability/)."""
    return f"soak-{test}" if SOAK else test


LEASE_S = 3  # the test instance's lease (coordinator_support.instance_yaml)
HOOK_PORT, WEB_PORT = 8080, 3070
# Every update's webhook, to the receiver on `hooks` (signed with the stack's secret).
CHANGE_HOOK = """
name: change hook
tenant_id: acme
type: notification
trigger: on_update
owner_id: wanda
actions: [{type: webhook, url: "URL", max_attempts: 5}]
"""
DELIVERED = re.compile(r"-> 200: change hook, execution (\d+),")
AWAY_S = float(scaled(20, 60))  # how long the cut host stays away: past its lease and fence


@dataclass
class Hosts:
    """The test hosts with the stack on `db`, and what the worker hosts connect to."""

    net: Network
    stack: Stack
    pg: PrivatePostgres
    db: str  # db's address on the switch
    env: dict[str, str]  # a worker host's environment
    logs: Path
    web: str | None = None  # the webserver's URL, as the other hosts reach it

    def deliveries(self) -> list[int]:
        """The execution id of every webhook the `hooks` host accepted, in order."""
        log = self.logs / "receiver.log"
        return [int(m) for m in DELIVERED.findall(log.read_text())] if log.exists() else []

    def graphql_from(self, host: str, query: str) -> dict[str, Any]:
        """`query` asked of the webserver on db from `host`, as an operator's browser there
        would."""
        assert self.web is not None
        ask = (
            "import json, sys, urllib.request; r = urllib.request.Request(sys.argv[1], "
            "json.dumps({'query': sys.argv[2]}).encode(), {'Content-Type': 'application/json'}); "
            "print(urllib.request.urlopen(r, timeout=30).read().decode())"
        )
        done = self.net.run(host, [sys.executable, "-c", ask, f"{self.web}/graphql", query])
        assert done.returncode == 0, done.stderr[-2000:]
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def start_worker(self, host: str, processes: ExitStack) -> subprocess.Popen[bytes]:
        argv = [bin_path("gov-pipeline"), "worker", "--mode", "execute", "-w", str(WORKSPACE),
                "--worker-id", host]  # fmt: skip
        log = (self.logs / f"worker-{host}.log").open("ab")
        processes.callback(log.close)
        process = self.net.popen(
            host, argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        processes.callback(stop_process_group, process)
        return process


@contextmanager
def hosts_with_a_stack(
    tmp_path: Path, prefix: str, redis_host: str | None = None, batch_size: int = 15,
    wired: bool = False, lease_s: int = LEASE_S, env: dict[str, str] | None = None,
    hooks: bool = False, webserver: bool = False,
) -> Iterator[Hosts]:  # fmt: skip
    """The hosts, with Redis on db or, given `redis_host`, on a host of its own; `wired`:
    the worker hosts' links can be impaired (`Network.impair`). The worker hosts' leases
    last `lease_s`; `env` adds to every process's environment. `hooks`: the `hooks` host
    receives a webhook for every update; `webserver`: the webserver runs on db."""
    tag = RUN_ID[:4]
    net_number = 1 + int(tag, 16) % 200  # a subnet of its own (the root namespace routes it)
    names = ["w1", "w2", *([redis_host] if redis_host else []), *(["hooks"] if hooks else [])]
    workers = ["w1", "w2"] if wired else []
    with host_network(tag, names, net=net_number, wired=workers, control=tmp_path) as net:
        db = net.attach_root()
        # PostgreSQL ends a session idle in a transaction after 10 s: a cut-off host's
        # transaction lets go of its locks then (as docs/operations.md recommends).
        with (
            private_postgres(
                also_on=db, trusting=net.cidr,
                settings=["idle_in_transaction_session_timeout=10s"],
            ) as pg,
            _redis(tmp_path, db, net, redis_host) as redis_url,
        ):  # fmt: skip
            admin = create_engine(pg.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text('CREATE DATABASE "app"'))
                conn.execute(text('CREATE DATABASE "dagster"'))
            admin.dispose()
            upgrade(pg.url("app"))
            extra, workflows = dict(env or {}), [CHANGE_NOTICE]
            if hooks:
                hook = f"{net.address('hooks')}:{HOOK_PORT}"
                workflows.append(CHANGE_HOOK.replace("URL", f"http://{hook}/"))
                extra["GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS"] = f"127.0.0.1,{hook}"
            with running_stack(
                tmp_path, pg.url("app"), pg.url("dagster"), redis_url, prefix,
                workers=0, workflows=tuple(workflows),
                env={"GOV_PIPELINE_BATCH_SIZE": str(batch_size), **extra},
            ) as stack, ExitStack() as servers:  # fmt: skip
                if hooks:
                    servers.enter_context(_receiver(net, stack))
                web = None
                if webserver:
                    web = f"http://{db}:{WEB_PORT}"
                    servers.enter_context(_webserver(stack, db, web))
                far = {"127.0.0.1": db}
                home = tmp_path / "host_home"
                home.mkdir()
                yaml = instance_yaml(
                    _at(pg.url("dagster"), far), _at(redis_url, far), prefix,
                    lease_seconds=lease_s,
                )  # fmt: skip
                (home / "dagster.yaml").write_text(yaml + RUN_RETRIES)
                env = {
                    **stack.env, "DAGSTER_HOME": str(home),
                    "GOV_PIPELINE_DATABASE_URL": _at(pg.url("app"), far),
                    "GOV_PIPELINE_REDIS_URL": _at(redis_url, far),
                }  # fmt: skip
                yield Hosts(net, stack, pg, db, env, stack.logs, web)


@contextmanager
def _receiver(net: Network, stack: Stack) -> Iterator[None]:
    """The webhook receiver on `hooks`, checking signatures with the stack's secret."""
    argv = [sys.executable, "-m", "gov_pipeline.embedded.webhook_receiver",
            "--host", net.address("hooks"), "--port", str(HOOK_PORT)]  # fmt: skip
    log_path = stack.logs / "receiver.log"
    with log_path.open("ab") as log:
        process = net.popen(
            "hooks", argv, env=stack.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "listening on" in log_path.read_text(), 60, "the webhook receiver")
        yield
    finally:
        stop_process_group(process)


@contextmanager
def _webserver(stack: Stack, db: str, web: str) -> Iterator[None]:
    """dagster-webserver on db's address (the stack's instance)."""
    argv = [bin_path("dagster-webserver"), "-w", str(WORKSPACE), "-h", db, "-p", str(WEB_PORT)]
    with running_process(argv, stack.env, stack.logs / "webserver.log"):
        wait_for(lambda: webserver_up(web), 120, "the webserver on db")
        yield


def _at(url: str, far: dict[str, str]) -> str:
    for near, address in far.items():
        url = url.replace(f"@{near}:", f"@{address}:").replace(f"//{near}:", f"//{address}:")
    return url


@contextmanager
def _redis(tmp_path: Path, db: str, net: Network, host: str | None) -> Iterator[str]:
    """A private Redis on db (also on 127.0.0.1), or on `host` only; its URL as db sees it."""
    if host is None:
        server = RedisServer(tmp_path, also_on=db)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    address, port = net.address(host), 6379
    process = net.popen(
        host,
        ["redis-server", "--bind", address, "--port", str(port), "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://{address}:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        wait_for(lambda: bool(client.ping()), 20, f"Redis on {host}", every=0.1)
        client.close()
        yield url
    finally:
        stop_process_group(process)


def test_a_worker_host_cut_off_mid_run_is_recovered_by_the_other_and_fenced(
    tmp_path: Path, redis_prefix: str
) -> None:
    with (
        hosts_with_a_stack(tmp_path, redis_prefix, hooks=True, webserver=True) as h,
        ExitStack() as processes,
    ):
        s = h.stack
        for host in ("w1", "w2"):
            h.start_worker(host, processes)
        queue = s.c.instance.run_coordinator.queue
        s.write_updates(scaled(60, 400))
        held: list[str] = []

        def w1_executes_a_run() -> bool:
            held[:] = [
                r.run_id
                for r in s.c.instance.get_runs()
                if r.status.value == "STARTED"
                and r.job_name == "process_changes"
                and queue.record(r.run_id).get("worker") == "w1"
            ]
            return bool(held)

        wait_for(w1_executes_a_run, 180, "w1 to execute a processing run", every=0.05)
        cut_run = held[0]
        h.net.cut("w1")
        cut_at, cut_wall = time.monotonic(), time.time()
        wait_for(
            lambda: s.c.instance.get_run_by_id(cut_run).status.value == "FAILURE",  # type: ignore[union-attr]
            120, "w2 to end the cut-off host's run",
        )  # fmt: skip
        ended_after = time.monotonic() - cut_at
        settled_at = None  # while w1 is away: w2 alone processes every change
        while time.monotonic() - cut_at < AWAY_S:
            if settled_at is None and s.settled():
                settled_at = time.monotonic()
            time.sleep(0.5)
        h.net.heal("w1")
        s.wait_settled(300)
        recovery = (settled_at or time.monotonic()) - cut_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        hooks = _webhooks_once(h)
        with s.sessions.begin() as session:
            fence = session.get(RunFence, cut_run)
            assert fence is not None and fence.token.startswith("w2#"), s.log_tail()
            assert "worker w1 died while executing this run" in fence.reason
        # Back, w1 finds its lease gone and ends its part without freeing w2's slot; its run's
        # process, still executing, is refused at its next step by the fence.
        w1_log = h.logs / "worker-w1.log"
        wait_for(
            lambda: f"run {cut_run} ended: SKIPPED:lease-lost" in w1_log.read_text(), 120,
            "w1 to give the cut run up",
        )  # fmt: skip
        # Its renewal may find the lease gone first (logged once), or the run's end may,
        # when its process stops before the next renewal: the release is refused.
        assert w1_log.read_text().count(f"lost the lease of run {cut_run}") <= 1
        # Back, the run's process did nothing more: either its next step was refused by the
        # fence, or its worker stopped it first (the run had ended); no step succeeded late.
        events = [e for e in s.c.instance.all_logs(cut_run) if e.dagster_event is not None]
        late = [
            e.dagster_event.step_key
            for e in events
            if e.dagster_event.event_type_value == "STEP_FAILURE"  # type: ignore[union-attr]
            and "was ended by another worker" in str(e.dagster_event.event_specific_data)  # type: ignore[union-attr]
        ]
        stopped = any("interrupted" in (e.message or "") for e in events)
        assert not [
            e
            for e in events
            if e.dagster_event.event_type_value == "STEP_SUCCESS" and e.timestamp > cut_wall  # type: ignore[union-attr]
        ], s.log_tail()
        record(
            "worker host cut off mid-run (network namespaces)",
            named("test_a_worker_host_cut_off_mid_run_is_recovered_by_the_other_and_fenced"),
            s, report, recovery,
            away_s=AWAY_S, lease_s=LEASE_S, run_ended_by_other_host_after_s=round(ended_after, 1),
            late_steps_refused=late, late_process_stopped_by_its_worker=stopped,
            settled_while_away=settled_at is not None, **hooks,
        )  # fmt: skip
        assert late or stopped, "what did the cut run's process do? " + s.log_tail()
        assert s.c.instance.get_run_by_id(cut_run).status.value == "FAILURE"  # type: ignore[union-attr]
        assert s.check().ok
        # The operator on another host sees it in the webserver on db: the cut run failed,
        # its retry (run on w2) succeeded.
        seen = h.graphql_from("w2", _RUN_AND_RETRIES.replace("RUN", cut_run))["data"]
        assert seen["runOrError"]["status"] == "FAILURE", seen
        assert [r["status"] for r in seen["runsOrError"]["results"]] == ["SUCCESS"], seen


_RUN_AND_RETRIES = """{
  runOrError(runId: "RUN") { ... on Run { status } }
  runsOrError(filter: {tags: [{key: "dagster/parent_run_id", value: "RUN"}]}) {
    ... on Runs { results { runId status } }
  }
}"""


def _webhooks_once(h: Hosts) -> dict[str, int]:
    """Every update's webhook reached `hooks` (a resend carries the same delivery id, which
    the receiver drops); the figures of what arrived."""
    with h.stack.sessions.begin() as session:
        completed = set(
            session.scalars(
                select(WorkflowExecution.id)
                .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
                .where(Workflow.name == "change hook", WorkflowExecution.status == "completed")
            )
        )
    delivered = h.deliveries()
    assert len(completed) == h.stack.updates, (len(completed), h.stack.updates)
    assert set(delivered) == completed, sorted(set(delivered) ^ completed)[:20]
    return {"webhooks_delivered": len(set(delivered)),
            "webhooks_resent": len(delivered) - len(set(delivered))}  # fmt: skip


REDIS_AWAY_S = float(scaled(30, 90))


def test_the_redis_host_cut_off_for_30s_during_a_burst(tmp_path: Path, redis_prefix: str) -> None:
    """Redis on a host of its own, cut off from every other host for 30 s while changes keep
    coming: connections hang instead of being refused. The daemon's submits time out and
    launch their runs directly (fallback `launch`), the workers wait; healed, Redis still
    holds its data, the workers count the directly launched runs and re-queue what is
    QUEUED in Dagster only. Nothing is lost or done twice."""
    with (
        hosts_with_a_stack(tmp_path, redis_prefix, redis_host="rd", batch_size=8, hooks=True) as h,
        ExitStack() as processes,
    ):
        s = h.stack
        for host in ("w1", "w2"):
            h.start_worker(host, processes)
        s.write_updates(scaled(40, 300))
        wait_for(lambda: s.run_statuses().get("SUCCESS", 0) > 0, 180, "a run done", 0.1)
        h.net.cut("rd")
        cut_at = time.monotonic()
        s.write_updates(scaled(12, 100))  # the burst goes on during the partition
        wait_for(lambda: _directly_launched(s) > 0, REDIS_AWAY_S * 3, "a run launched directly")
        time.sleep(max(0.0, REDIS_AWAY_S - (time.monotonic() - cut_at)))
        h.net.heal("rd")
        healed_at = time.monotonic()
        s.wait_settled(300)
        recovery = time.monotonic() - healed_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        hooks = _webhooks_once(h)
        direct = _directly_launched(s)
        assert direct > 0
        record(
            "Redis host cut off from every host for 30 s (network namespaces)",
            named("test_the_redis_host_cut_off_for_30s_during_a_burst"), s, report, recovery,
            away_s=REDIS_AWAY_S, runs_launched_directly=direct, **hooks,
        )  # fmt: skip


def _directly_launched(s: Stack) -> int:
    return sum(
        1
        for run in s.c.instance.get_runs()
        if any(
            "launching this run directly" in (e.message or "")
            for e in s.c.instance.all_logs(run.run_id)
        )
    )
