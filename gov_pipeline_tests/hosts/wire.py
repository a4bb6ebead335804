"""A host's link with delay, jitter and loss, in user space: the stand-in for

    tc qdisc add dev <link> root netem delay 100ms 50ms loss 5%

where the kernel has no netem (`CONFIG_NET_SCH_NETEM` unset, as on the machines these
tests run on). The link is two TAP devices joined by this process: `inner` is the host's
interface (moved into its namespace), `outer` the switch's port. Every Ethernet frame
either way is dropped with probability `loss`, or held for a delay drawn uniformly from
`delay ± jitter` (netem's default distribution; frames may overtake one another, as with
netem) and then passed on. TAP devices without offloads hand over whole, checksummed
frames, so what crosses is exactly what the hosts' TCP stacks sent.

    python -m gov_pipeline_tests.hosts.wire --inner IF --outer IF --netns NS --control FILE

runs in the switch's namespace. FILE holds the impairment as JSON
(`{"delay_ms": 100, "jitter_ms": 50, "loss": 0.05}`; none, or an empty object, for a
plain link); it is read again whenever it changes, and the counts of frames passed and
dropped each way are written beside it (FILE with `.stats` appended) every second.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
FRAME_MAX = 65536
REREAD_S = 0.05  # how soon a new impairment applies
STATS_S = 1.0


@dataclass
class Impairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    @classmethod
    def read(cls, path: Path) -> Impairment:
        try:
            data = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            return cls()
        return cls(
            float(data.get("delay_ms", 0)), float(data.get("jitter_ms", 0)),
            float(data.get("loss", 0)),
        )  # fmt: skip

    def hold_s(self, rng: random.Random) -> float:
        low = max(0.0, self.delay_ms - self.jitter_ms)
        return rng.uniform(low, self.delay_ms + self.jitter_ms) / 1000.0


@dataclass
class Direction:
    name: str
    source: int
    target: int
    passed: int = 0
    dropped: int = 0
    held: list[tuple[float, int, bytes]] = field(default_factory=list)


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Wire:
    def __init__(self, inner: int, outer: int, control: Path, seed: int | None) -> None:
        self.ways = [Direction("out", inner, outer), Direction("in", outer, inner)]
        self.control = control
        self.stats = control.with_name(control.name + ".stats")
        self.rng = random.Random(seed)
        self.impairment = Impairment()
        self._seen: float | None = None
        self._sequence = 0

    def _reread(self) -> None:
        try:
            mtime = self.control.stat().st_mtime
        except OSError:
            mtime = None
        if mtime != self._seen:
            self._seen = mtime
            self.impairment = Impairment.read(self.control)

    def _take(self, way: Direction, now: float) -> None:
        while True:
            try:
                frame = os.read(way.source, FRAME_MAX)
            except BlockingIOError:
                return
            except OSError:  # the device is down: nothing to read
                return
            if self.impairment.loss and self.rng.random() < self.impairment.loss:
                way.dropped += 1
                continue
            self._sequence += 1
            due = now + self.impairment.hold_s(self.rng)
            heapq.heappush(way.held, (due, self._sequence, frame))

    def _pass(self, way: Direction, now: float) -> None:
        while way.held and way.held[0][0] <= now:
            _, _, frame = heapq.heappop(way.held)
            try:
                os.write(way.target, frame)
                way.passed += 1
            except OSError:  # the far device is down (a cut link): lost, as on a wire
                way.dropped += 1

    def _write_stats(self) -> None:
        figures = {w.name: {"passed": w.passed, "dropped": w.dropped} for w in self.ways}
        temporary = self.stats.with_name(self.stats.name + ".tmp")
        temporary.write_text(json.dumps(figures))
        temporary.replace(self.stats)

    def run(self, stop: list[bool]) -> None:
        next_chores, next_stats = 0.0, 0.0
        sources = [w.source for w in self.ways]
        while not stop:
            now = time.monotonic()
            if now >= next_chores:
                self._reread()
                next_chores = now + REREAD_S
            if now >= next_stats:
                self._write_stats()
                next_stats = now + STATS_S
            dues = [w.held[0][0] for w in self.ways if w.held]
            timeout = max(0.0, min([*dues, next_chores]) - now)
            try:
                readable, _, _ = select.select(sources, [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for way in self.ways:
                if way.source in readable:
                    self._take(way, now)
                self._pass(way, now)
        self._write_stats()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", required=True, help="the host's interface")
    parser.add_argument("--outer", required=True, help="the switch's port")
    parser.add_argument("--netns", required=True, help="the host's namespace")
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    inner, outer = open_tap(args.inner), open_tap(args.outer)
    subprocess.run(["ip", "link", "set", args.inner, "netns", args.netns], check=True)
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    wire = Wire(inner, outer, args.control, args.seed)
    wire._write_stats()  # the caller waits for this file: the devices exist
    wire.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
