"""Execute mode's run process: the warm worker forks itself for each run, and the child
executes it (Dagster's `execute_run`, with code already imported), so the worker can stop
a run (terminate, timeout) and keep serving.

A stop is SIGINT, Dagster's own cancel: the run's process raises at the next safe point,
records the end Dagster gives it (CANCELED when the run is CANCELING) and exits. SIGKILL
after a grace period ends one that does not. The child has a process group of its own, so a
Ctrl-C or SIGTERM meant for the worker (finish the current run) does not reach it, and on
Linux it dies with the worker (PR_SET_PDEATHSIG): a worker crash still ends its run, as the
recovery of a dead worker's runs expects.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
from typing import NoReturn

from dagster import DagsterInstance

from gov_pipeline.dagster_internals import ReconstructableRepository, execute_run

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def start(instance: DagsterInstance, repo: ReconstructableRepository, run_id: str) -> int:
    """Fork a process that executes the run; its pid. The caller waits for it (`wait`).

    The child goes on with the worker's `instance`: Dagster's storages (PostgreSQL, SQLite)
    open a connection per call and keep none between calls (NullPool), so the fork shares
    no connection (the worker forks only while its own threads are between calls), and the
    child saves making an instance (about 65 ms: one schema check per storage). Redis
    clients reconnect in a forked process by themselves.
    """
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(instance, repo, run_id, parent)
    return pid


def _child(
    instance: DagsterInstance, repo: ReconstructableRepository, run_id: str, parent: int
) -> NoReturn:
    code = 1
    try:
        os.setpgid(0, 0)
        _die_with(parent)
        # The worker's own handlers (stop after the current run) are not this process's.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise RuntimeError(f"run {run_id} is not in run storage")
        execute_run(repo.get_reconstructable_job(run.job_name), run, instance)
        code = 0
        # Ended: the worker, seeing the run's end before this process has exited, stops it
        # with SIGINT; that must not interrupt the exit below.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except BaseException:  # the run's own events say what happened; this is the process
        log.exception("run %s: its process (%s) failed", run_id, os.getpid())
    finally:
        # Never back into the worker's code: a KeyboardInterrupt raised anywhere here would
        # unwind into the forked copy of the worker's thread, which would then release the
        # run's slot as if it were the worker.
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # no atexit, no finalizers of the worker's copied state


def _die_with(parent: int) -> None:
    """Be killed when the worker that forked this process dies (Linux; elsewhere a dead
    worker's run process runs on until the recovery of its runs fails it)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def reap(pid: int) -> int | None:
    """The wait status of the run's process if it has exited (None: still running)."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return status if done else None


def wait(pid: int, timeout_s: float) -> int | None:
    """The wait status of the run's process once it exits, waiting at most `timeout_s`
    (None: still running). Wakes as the process exits where Linux gives a pidfd."""
    status = reap(pid)
    if status is not None:
        return status
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+
        time.sleep(timeout_s)
        return reap(pid)
    try:
        select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    return reap(pid)


def signal_process(pid: int, signum: int) -> None:
    """Send `signum` to the run's process; nothing if it is gone already (or is not this
    worker's to signal)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def describe_exit(status: int) -> str:
    """`exited with 1`, `killed by SIGKILL`: how the run's process ended."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"
