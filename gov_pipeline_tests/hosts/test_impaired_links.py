"""A burst while the worker hosts' links delay and drop what they carry, as

    tc qdisc add dev <link> root netem delay 100ms 50ms loss 5%

would on each end of the link between a worker host and db (PostgreSQL, Redis, the
daemon): the runs the workers execute talk to both through it. The same burst goes
through plain links first, so that the slowdown is measured in one run: 2,000 changes in
`make soak-hosts` (100 with `pytest -m soak gov_pipeline_tests/hosts/test_impaired_links.py`). Nothing may be
lost or done twice: a dropped frame is only a resent segment to TCP, but a stalled one
can outlast a client's timeout (a Redis command, a lease), and every such path must
still end in one effect per change.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from gov_pipeline_tests.hosts.test_partitions import hosts_with_a_stack, named, scaled
from gov_pipeline_tests.reliability.support import assert_clean, record, wait_for

# Minutes even at 100 changes (a run's events cost seconds each on these links), and it
# loads the machine for all of them: `make soak-hosts` runs it, `make test` does not.
pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.soak]

BURST = scaled(100, 2000)  # a run costs minutes on these links (see docs/reliability.md)
DELAY_MS, JITTER_MS, LOSS = 100, 50, 0.05
# Each update also makes the notice workflow's task: two changes an update; the
# 2,000 updates of a soak run took 54 minutes over these links.
TIMEOUT_S = scaled(1800, 7200)
BATCH = scaled(100, 250)  # changes per run: a run's fixed cost is what these links slow most
WORKERS = ("w1", "w2")
# A lease must outlast the longest stall the link causes: TCP resends a lost segment after
# its retransmission timeout (200 ms at least, doubling when the resend is lost too), so a
# 3 s lease (the other tests') expires under live workers again and again here.
LEASE_S = 15
# The governance refresh (every 30 s by default) takes minutes on these links: its runs
# would hold the workers' slots without end, and nothing would ever be settled.
QUIET = {"GOV_PIPELINE_GOVERNANCE_REFRESH": "3600"}


def test_a_burst_over_links_with_netem_delay_and_loss(tmp_path: Path, redis_prefix: str) -> None:
    with (
        hosts_with_a_stack(
            tmp_path, redis_prefix, batch_size=BATCH, wired=True, lease_s=LEASE_S, env=QUIET
        ) as h,
        ExitStack() as processes,
    ):
        s = h.stack
        for host in WORKERS:
            h.start_worker(host, processes)

        def burst(what: str) -> float:
            """Seconds until every change of the burst is processed."""
            started = time.monotonic()
            s.write_updates(BURST, per_transaction=50)
            shown = [time.monotonic()]

            def processed() -> bool:
                changes, done = s.counts()
                if time.monotonic() - shown[0] >= 60:  # progress, a line a minute
                    shown[0] = time.monotonic()
                    print(f"  {what}: {done} of {changes} changes processed", flush=True)
                return done == changes

            wait_for(processed, TIMEOUT_S, f"the burst over {what} links", 0.5)
            took = time.monotonic() - started
            print(f"{BURST} changes over {what} links: {took:.1f} s", flush=True)
            return took

        plain_s = burst("plain")
        s.wait_settled(300)
        before = {host: h.net.wire_stats(host) for host in WORKERS}
        for host in WORKERS:
            h.net.impair(host, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss=LOSS)
        impaired_s = burst("impaired")
        time.sleep(1.2)  # the wires' counts are a second old at most
        after = {host: h.net.wire_stats(host) for host in WORKERS}
        # Every change is processed; the runs still going (the scheduled jobs', which take
        # minutes on these links) end on plain links, and then the checker looks at all.
        for host in WORKERS:
            h.net.impair(host)
        s.wait_settled(600)
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        passed = dropped = 0
        for host in WORKERS:
            for way in ("out", "in"):
                passed += after[host][way]["passed"] - before[host][way]["passed"]
                dropped += after[host][way]["dropped"] - before[host][way]["dropped"]
        assert dropped > 0, (passed, dropped)  # the impairment was there
        record(
            "links delayed 100 ± 50 ms and lossy 5 % both ways (user-space netem)",
            named("test_a_burst_over_links_with_netem_delay_and_loss"), s, report,
            None,
            burst=BURST, plain_s=round(plain_s, 1), impaired_s=round(impaired_s, 1),
            slowdown=round(impaired_s / plain_s, 2), frames_passed=passed,
            frames_dropped=dropped, loss_measured=round(dropped / (passed + dropped), 4),
            runs=sum(s.run_statuses().values()), lease_s=LEASE_S,
        )  # fmt: skip
