"""Packet-rate limits (`packet_limit`) with real pings: a one-process ping flood is
one connection, so a rule's `limit` (new connections) lets all of it through; a
`packet_limit` counts every packet of the connection and cuts the flood to its
budget, while a normal ping keeps passing and the connection is not dropped.

Lab (policies/packet-limit.yaml): `server` (packet_limit 10/second burst 5, one
budget), `persource` (the same per source), `counted` (limit 1/second: the
control that shows the hole) and `open` (no limit: the control of the flood itself).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

import pytest

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace

from .conftest import Lab

pytestmark = pytest.mark.kernel

FLOOD, INTERVAL = 200, 0.002  # 200 echo requests in about 0.4 s, one ping process
RATE, BURST = 10, 5
ADDRESS = {"server": "10.83.1.20", "persource": "10.83.1.21", "counted": "10.83.1.22", "open": "10.83.1.23"}


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[str], Lab]) -> Lab:
    return lab_factory("packet-limit.yaml")


def ping(lab: Lab, source: str, target: str, count: int, interval: float) -> tuple[int, float]:
    """(echo replies received, seconds) of one ping process from `source` to `target`."""
    command = ["ip", "netns", "exec", lab.vm_ns(source), "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", ADDRESS[target]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    received = re.search(r"(\d+) (?:packets )?received", done.stdout)
    took = re.search(r"time (\d+)ms", done.stdout)
    assert received and took, done.stdout + done.stderr
    return int(received.group(1)), int(took.group(1)) / 1000


def budget(seconds: float) -> float:
    return BURST + RATE * (seconds + 1.0) + 2  # + the last reply's wait, + slack


def test_a_ping_flood_is_cut_to_the_packet_rate_while_a_normal_ping_passes(lab: Lab) -> None:
    got, took = ping(lab, "client", "server", FLOOD, INTERVAL)
    assert BURST <= got <= budget(took), f"{got} of {FLOOD} echo requests passed in {took:.2f}s through {RATE}/second burst {BURST}"
    time.sleep(1.0)  # the bucket refills (the flood emptied it)
    assert ping(lab, "client", "server", 4, 0.3)[0] == 4, "a normal ping (about 3/second) after the flood"
    # the controls: a connection-rate limit lets the whole flood through (one connection), no limit too
    assert ping(lab, "client", "counted", FLOOD, INTERVAL)[0] >= FLOOD - 2, "limit counts connections, not packets"
    assert ping(lab, "client", "open", FLOOD, INTERVAL)[0] >= FLOOD - 2, "the flood itself is not lossy"
    # the analyzer judges the connection: a ping is accepted by ping-budget
    found = trace(Analyzer(lab.policy), "vm:client", "vm:server", FlowSpec(proto="icmp"))
    assert found.verdict == "accept", found.to_json()


def test_per_source_budgets_are_separate(lab: Lab) -> None:
    got, took = ping(lab, "client", "persource", FLOOD, INTERVAL)
    assert BURST <= got <= budget(took), f"{got} of {FLOOD} from the client"
    # right after, another source has its whole budget: a burst of pings all pass
    assert ping(lab, "other", "persource", BURST, 0.01)[0] == BURST, "another source's budget is its own"
