"""Test hosts in Linux network namespaces: each host a namespace with its own address on
one private switch (a bridge inside a namespace of its own), so that nothing they send
leaves them and loopback, and the root namespace has no route to them.

    with host_network("t1", ["db", "w1", "w2"]) as net:
        net.popen("db", ["redis-server", "--bind", net.address("db")])
        net.cut("w1")     # its link to the switch goes down: a partition
        net.heal("w1")

    with host_network("t1", ["db", "w1"], wired=["w1"], control=tmp_path) as net:
        net.impair("w1", delay_ms=100, jitter_ms=50, loss=0.05)   # as tc netem would

Needs root (`ip netns`, Debian's iproute2). Interface names are kept under Linux's 15
characters: the tag is short (a few letters of the test run's id).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBNET = "10.231.{net}"


class NetworkUnavailable(RuntimeError):
    """This machine cannot make test hosts (not root, or no iproute2)."""


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


def available() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (ip netns)"
    if shutil.which("ip") is None:
        return "test hosts need iproute2 (ip)"
    return None


@dataclass
class Network:
    """Hosts on one switch; `address(name)` is each one's address."""

    tag: str
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    _index: dict[str, int] = field(default_factory=dict)
    subnet: str = ""  # its first three octets
    _root_link: str | None = None
    control: Path | None = None  # where wired hosts' impairments are kept
    _wires: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def attach_root(self) -> str:
        """Put the test's own (root) namespace on the switch as one more host, at address
        .254, and return that address: servers the test process runs (PostgreSQL, Redis,
        the daemon) are then one host the others reach, and the test observes them on
        127.0.0.1. The other hosts still have no route beyond the switch."""
        root, port = f"gp{self.tag}r", f"gp{self.tag}pr"
        subprocess.run(["ip", "link", "del", root], capture_output=True)  # a leftover
        _ip("link", "add", root, "type", "veth", "peer", "name", port, "netns", self.switch)
        self._root_link = root
        _ip("link", "set", port, "master", "br0", namespace=self.switch)
        _ip("link", "set", port, "up", namespace=self.switch)
        address = f"{self.subnet}.254"
        _ip("addr", "add", f"{address}/24", "dev", root)
        _ip("link", "set", root, "up")
        return address

    @property
    def switch(self) -> str:
        return f"gp{self.tag}-sw"

    def namespace(self, host: str) -> str:
        return f"gp{self.tag}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def _port(self, host: str) -> str:
        """The switch's end of the host's link."""
        return f"gp{self.tag}p{self._index[host]}"

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` as run on `host`."""
        return self.command_in(self.namespace(host), argv)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `argv` on `host` (its own process group, so that it is stopped whole)."""
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def run(
        self, host: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.command(host, argv), text=True, **kwargs)

    def cut(self, host: str) -> None:
        """Partition `host` from every other host: its link to the switch goes down. Its
        connections stay open at both ends and see nothing until `heal`, as behind a
        failed switch port."""
        _ip("link", "set", self._port(host), "down", namespace=self.switch)

    def heal(self, host: str) -> None:
        _ip("link", "set", self._port(host), "up", namespace=self.switch)

    def impair(self, host: str, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0) -> None:
        """Delay and drop what crosses a wired host's link, both ways (`wire.py`); all
        zero makes it a plain link again. Applies within 50 ms, to frames sent from then."""
        path = self._control(host)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"delay_ms": delay_ms, "jitter_ms": jitter_ms,
                                         "loss": loss}))  # fmt: skip
        temporary.replace(path)

    def wire_stats(self, host: str) -> dict[str, dict[str, int]]:
        """Frames passed and dropped on a wired host's link: {"out": ..., "in": ...}."""
        path = self._control(host)
        stats: dict[str, dict[str, int]] = json.loads(
            path.with_name(path.name + ".stats").read_text()
        )
        return stats

    def _control(self, host: str) -> Path:
        assert self.control is not None, "a wired host needs host_network(control=...)"
        return self.control / f"wire-{self.tag}-{host}.json"

    def _wire(self, host: str, inner: str, port: str) -> None:
        """The host's link as two TAP devices joined by `wire.py`, in the switch's
        namespace; `inner` ends up in the host's."""
        control = self._control(host)
        control.unlink(missing_ok=True)
        stats = control.with_name(control.name + ".stats")
        stats.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "gov_pipeline_tests.hosts.wire", "--inner", inner,
                "--outer", port, "--netns", self.namespace(host), "--control", str(control)]  # fmt: skip
        process = subprocess.Popen(
            self.command_in(self.switch, argv), start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self._wires[host] = process
        deadline = time.monotonic() + 20
        while not stats.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the wire of {host} did not start ({process.returncode})")
            time.sleep(0.02)

    def command_in(self, namespace: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def _add_host(self, host: str, number: int, subnet: str, wired: bool) -> None:
        namespace, inner, port = self.namespace(host), f"gp{self.tag}h{number}", self._port(host)
        _ip("netns", "add", namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        if wired:
            self._wire(host, inner, port)
        else:
            _ip("link", "add", inner, "netns", namespace, "type", "veth", "peer", "name", port,
                "netns", self.switch)  # fmt: skip
        _ip("link", "set", port, "master", "br0", namespace=self.switch)
        _ip("link", "set", port, "up", namespace=self.switch)
        address = f"{subnet}.{number + 1}"
        _ip("addr", "add", f"{address}/24", "dev", inner, namespace=namespace)
        _ip("link", "set", inner, "up", namespace=namespace)
        self.hosts[host] = address

    def _remove(self) -> None:
        for wire in self._wires.values():
            wire.terminate()
            try:
                wire.wait(10)
            except subprocess.TimeoutExpired:
                wire.kill()
                wire.wait()
        if self._root_link is not None:
            subprocess.run(["ip", "link", "del", self._root_link], capture_output=True)
        for namespace in [self.switch, *(self.namespace(h) for h in self._index)]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def host_network(
    tag: str, hosts: Sequence[str], net: int = 0, wired: Sequence[str] = (),
    control: Path | None = None,
) -> Iterator[Network]:  # fmt: skip
    """Make `hosts` (names of a few letters) on a switch of their own, subnet
    10.231.`net`.0/24 (addresses .1, .2, ... in the order given); removed afterwards,
    processes started in them included (the caller stops those first). The `wired` hosts'
    links can be impaired (`Network.impair`); their settings are kept under `control`.

    Raises:
        NetworkUnavailable: see `available`.
    """
    reason = available()
    if reason is not None:
        raise NetworkUnavailable(reason)
    network = Network(tag, subnet=SUBNET.format(net=net), control=control)
    network._index = {host: i for i, host in enumerate(hosts)}
    subnet = network.subnet
    try:
        _ip("netns", "add", network.switch)
        _ip("link", "add", "br0", "type", "bridge", namespace=network.switch)
        _ip("link", "set", "br0", "up", namespace=network.switch)
        for number, host in enumerate(hosts):
            network._add_host(host, number, subnet, host in wired)
        yield network
    finally:
        network._remove()
