"""Redis Cluster readiness of the queue: every key a Lua script touches is one of its KEYS
(parsed from the scripts), and every key of a queue carries the same hash tag, so all the
keys of any script call hash to one slot."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from gov_pipeline.coordinator import scripts
from gov_pipeline.coordinator.keys import Keys
from gov_pipeline.coordinator.queue import RunQueue

CALL = re.compile(r"redis\.call\('(\w+)'(?:,\s*([^,)]+))?")
FUNCTION = re.compile(r"local function (\w+)\(([^)]*)\)")
KEY = re.compile(r"KEYS\[[^\]]+\]$")
KEYLESS = {"TIME"}


def key_arguments(source: str) -> list[tuple[str, str]]:
    """(command, first argument) of every `redis.call` of a script."""
    return [(cmd, (arg or "").strip()) for cmd, arg in CALL.findall(source)]


def passes_keys(source: str, function: str, position: int) -> bool:
    """Whether every call of a local function passes a KEYS entry at `position`."""
    calls = re.findall(rf"(?<!function ){function}\(([^)]*)\)", source)
    return bool(calls) and all(KEY.match(call.split(",")[position].strip()) for call in calls)


@pytest.mark.parametrize("name", RunQueue.SCRIPTS)
def test_every_key_a_script_touches_is_one_of_its_keys(name: str) -> None:
    source = getattr(scripts, name)
    params = {
        param.strip(): (function, i)
        for function, params in FUNCTION.findall(source)
        for i, param in enumerate(params.split(","))
        if param.strip()
    }
    assert "string.format(layout" not in source and "ARGV[1]).." not in source
    for command, arg in key_arguments(source):
        if command in KEYLESS:
            continue
        if KEY.match(arg):
            continue
        assert arg in params, f"{name}: {command} on {arg!r}, not a KEYS entry"
        function, position = params[arg]
        assert passes_keys(source, function, position), (
            f"{name}: {command} on {arg!r}, which {function}() is not always given from KEYS"
        )


def test_the_parser_finds_an_undeclared_key() -> None:
    """The check above can fail: a key built inside a script is caught."""
    bad = "local k = 'q:' .. ARGV[1]\nredis.call('SADD', k, ARGV[2])"
    assert key_arguments(bad) == [("SADD", "k")]
    assert not KEY.match("k")


@pytest.mark.parametrize("prefix", ["gov", "test:run:1", "odd%s{x"])
def test_every_key_of_a_queue_hashes_to_one_slot(prefix: str) -> None:
    keys = Keys(prefix)
    names = [
        keys.seq, keys.queued("policy"), keys.queued("(untagged)"), keys.run("r-1"),
        keys.order("42"), keys.heads, keys.meta, keys.active, keys.lane_active("audit"),
        keys.outside, keys.leases, keys.holders, keys.pooled, keys.lanes, keys.paused,
        keys.sync, keys.workers, keys.worker_alive("host:1"),
    ]  # fmt: skip
    assert all(name.startswith(keys.head) for name in names)
    assert len({key_slot(name.encode()) for name in names}) == 1


@pytest.mark.parametrize("prefix", ["", "a}b"])
def test_a_prefix_that_cannot_be_a_hash_tag_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        Keys(prefix)
