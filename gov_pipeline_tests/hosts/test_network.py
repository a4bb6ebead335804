"""The test hosts themselves: they reach each other, nothing outside, and a cut host
nothing until it is healed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gov_pipeline_tests.conftest import RUN_ID
from gov_pipeline_tests.hosts.netns import host_network

LISTEN = (
    "import socket, sys, time; s = socket.socket(); "
    "s.bind((sys.argv[1], 7777)); s.listen(); time.sleep(60)"
)
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
    "    print('connected')\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


def test_hosts_reach_each_other_nothing_outside_and_a_cut_host_nothing_until_healed() -> None:
    with host_network(RUN_ID[:4], ["db", "w1", "w2"]) as net:
        server = net.popen("db", [sys.executable, "-c", LISTEN, net.address("db")])
        try:

            def connect(host: str, address: str, port: int = 7777) -> str:
                argv = [sys.executable, "-c", CONNECT, address, str(port)]
                return net.run(host, argv, timeout=10).stdout.strip()

            deadline = time.monotonic() + 10
            while connect("w1", net.address("db")) != "connected":
                assert time.monotonic() < deadline, "the server on db never listened"
                time.sleep(0.2)
            assert connect("w2", net.address("db")) == "connected"
            # No route out of the test network: not even to the machine's own gateway.
            assert "unreachable" in connect("w1", "192.0.2.1", 80).lower()
            net.cut("w1")
            assert connect("w1", net.address("db")).startswith("TimeoutError")
            assert connect("w2", net.address("db")) == "connected"  # only w1 is cut off
            net.heal("w1")
            assert connect("w1", net.address("db")) == "connected"
        finally:
            server.kill()
            server.wait()


ECHO = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], 7778)); s.listen(); c, _ = s.accept()\n"
    "while (data := c.recv(64)):\n"
    "    c.sendall(data)\n"
)
PINGS = (
    "import socket, sys, time, json\n"
    "c = socket.create_connection((sys.argv[1], 7778), timeout=30)\n"
    "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "rtts = []\n"
    "for i in range(int(sys.argv[2])):\n"
    "    t = time.monotonic(); c.sendall(b'x' * 32); got = b''\n"
    "    while len(got) < 32:\n"
    "        got += c.recv(64)\n"
    "    rtts.append(time.monotonic() - t)\n"
    "print(json.dumps(rtts))\n"
)


def test_a_wired_hosts_link_delays_and_drops_as_netem_would(tmp_path: Path) -> None:
    """`impair` (netem's delay 100ms 50ms loss 5%, both ways): every round trip takes at
    least twice the shortest delay, about 5 % of the frames are dropped (TCP resends them:
    every echo comes back whole), and with the impairment lifted the link is plain."""
    with host_network(RUN_ID[:4], ["db", "w1"], wired=["w1"], control=tmp_path) as net:
        server = net.popen("db", [sys.executable, "-c", ECHO, net.address("db")])
        try:

            def pings(n: int) -> list[float]:
                argv = [sys.executable, "-c", PINGS, net.address("db"), str(n)]
                for _ in range(50):
                    done = net.run("w1", argv, timeout=120)
                    if done.returncode == 0:
                        rtts: list[float] = json.loads(done.stdout)
                        return rtts
                    time.sleep(0.2)  # the echo server is not listening yet
                raise AssertionError(done.stderr)

            plain = pings(20)
            assert max(plain) < 0.05, plain
            server.wait(10)  # one connection each
            server = net.popen("db", [sys.executable, "-c", ECHO, net.address("db")])
            before = net.wire_stats("w1")
            net.impair("w1", delay_ms=100, jitter_ms=50, loss=0.05)
            time.sleep(0.2)
            impaired = pings(80)
            assert min(impaired) >= 0.1, sorted(impaired)[:5]  # 50 ms each way at least
            time.sleep(1.2)  # the wire writes its counts every second
            after = net.wire_stats("w1")
            passed = sum(after[w]["passed"] - before[w]["passed"] for w in ("out", "in"))
            dropped = sum(after[w]["dropped"] - before[w]["dropped"] for w in ("out", "in"))
            assert passed > 250
            assert 0.01 < dropped / (passed + dropped) < 0.12, (passed, dropped)
        finally:
            server.kill()
            server.wait()
