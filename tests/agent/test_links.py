"""Which link events make the agent re-discover guest ports (agent/links.py)."""

from __future__ import annotations

import queue
import subprocess

import pytest

from zonewall.agent.links import LinkWatch, Port, change
from zonewall.lab import netns


def test_changes_that_matter_and_those_that_do_not() -> None:
    known: dict[int, Port] = {}
    tap = Port("vnet0", "fe:54:00:00:00:01", None)
    assert change(known, "RTM_NEWLINK", 7, tap) == "vnet0 appeared"
    assert change(known, "RTM_NEWLINK", 7, tap) is None  # carrier, flags, statistics: nothing for us
    assert change(known, "RTM_NEWLINK", 7, Port("vnet0", "fe:54:00:00:00:01", 3)) == "vnet0 joined a bridge"
    assert change(known, "RTM_NEWLINK", 7, Port("vnet0", "fe:54:00:00:00:02", 3)) == "vnet0 changed its MAC"
    assert change(known, "RTM_NEWLINK", 7, Port("tap100i0", "fe:54:00:00:00:02", 3)) == "vnet0 renamed tap100i0"
    assert change(known, "RTM_DELLINK", 7, Port("tap100i0", "fe:54:00:00:00:02", 3)) == "tap100i0 left its bridge"
    assert known[7].master is None
    assert change(known, "RTM_DELLINK", 7, Port("tap100i0", "fe:54:00:00:00:02", None)) == "tap100i0 gone"
    assert 7 not in known


@pytest.mark.kernel
def test_link_events_in_a_namespace() -> None:
    name = f"zwt-{__import__('os').getpid()}-links"
    netns.create_netns(name)
    events: queue.Queue[str] = queue.Queue()
    watch = None
    try:
        netns.add_bridge(name, "br0")
        netns.add_veth(name, "before", name, "before-p")  # exists before the watch: no event for it
        watch = LinkWatch(events.put, netns=name).start()
        netns.add_veth(name, "vnet3", name, "vnet3-p", mac_a="fe:54:00:00:00:03", up=False)
        netns.set_master(name, "vnet3", "br0")
        subprocess.run(["ip", "-n", name, "link", "set", "before", "up"], check=True)  # a flag change only
        netns.delete_link(name, "vnet3")
        seen = []
        while not any("vnet3 gone" in e for e in seen):
            seen.append(events.get(timeout=5))
        text = " | ".join(seen)
        assert "vnet3 appeared" in text and "vnet3 joined a bridge" in text and "before" not in text, text
    finally:
        if watch is not None:
            watch.stop()
        netns.delete_netns(name)
