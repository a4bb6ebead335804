"""Local Dagster processes (daemon, worker) in process groups of their own, for the demo,
`make dev` and the tests."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from gov_pipeline.embedded.instance import ROOT, WORKSPACE, prepare_instance

log = logging.getLogger(__name__)


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


def launch_job(env: Mapping[str, str], job: str) -> str:
    """`dagster job launch` of `job` (through the instance's run coordinator, as the
    launchpad's runs go); what it printed."""
    done = subprocess.run(
        [bin_path("dagster"), "job", "launch", "-w", str(WORKSPACE), "-j", job],
        cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"dagster job launch -j {job} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


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


def running_process(
    args: list[str], env: Mapping[str, str], log_path: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """Any command as `running_daemon` runs the daemon: in a process group of its own,
    logging to `log_path`, stopped on exit (SIGTERM, then SIGKILL)."""
    return _running(args, env, log_path)
