"""The test hosts themselves: they reach each other, nothing outside, and a cut host
nothing until it is healed."""

from __future__ import annotations

import sys
import time

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
