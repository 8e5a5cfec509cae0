"""Links read over rtnetlink (agent/rtlinks.py) are what `ip link` shows."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from zonewall.agent.discovery import local_links
from zonewall.agent.rtlinks import RTM_NEWLINK, dump_links, links_in
from zonewall.dataplane.netlink import HEADER, attr, string_attr
from zonewall.lab import netns
from zonewall.netns import run_in_netns


def message(index: int, *attributes: bytes, kind: int = RTM_NEWLINK) -> bytes:
    body = bytes(16)[:4] + index.to_bytes(4, "little", signed=True) + bytes(8) + b"".join(attributes)
    return HEADER.pack(HEADER.size + len(body), kind, 0, 0, 0) + body


def test_messages_are_read_and_garbage_is_skipped() -> None:
    good = message(7, string_attr(3, "vnet0"), attr(1, bytes.fromhex("fe5400000001")), attr(10, (3).to_bytes(4, "little")))
    (link,) = links_in(good)
    assert (link.event, link.index, link.name, link.mac, link.master) == ("RTM_NEWLINK", 7, "vnet0", "fe:54:00:00:00:01", 3)
    (bare,) = links_in(message(8, kind=17))
    assert (bare.event, bare.name, bare.mac, bare.master) == ("RTM_DELLINK", "", None, None)
    assert list(links_in(good[:-3])) == []  # truncated: nothing, no exception
    assert list(links_in(b"\xff" * 40)) == []
    assert list(links_in(message(9, kind=20))) == []  # not a link message


@pytest.mark.kernel
def test_the_dump_is_what_ip_link_shows() -> None:
    name = f"zwt-{os.getpid()}-rtl"
    netns.create_netns(name)
    try:
        netns.add_bridge(name, "br0")
        netns.add_veth(name, "vnet5", name, "vnet5-p", mac_a="fe:54:00:00:00:05")
        netns.set_master(name, "vnet5", "br0")
        shown = json.loads(subprocess.run(["ip", "-n", name, "-j", "link", "show"], capture_output=True, text=True, check=True).stdout)
        dumped = {link.name: link for link in run_in_netns(name, dump_links)}
        assert set(dumped) == {entry["ifname"] for entry in shown}
        for entry in shown:
            link = dumped[entry["ifname"]]
            assert link.index == entry["ifindex"] and link.mac == entry.get("address")
        assert dumped["vnet5"].master == dumped["br0"].index and dumped["br0"].master is None
        assert local_links(name)["fe:54:00:00:00:05"] == "vnet5"
        assert "fe:54:00:00:00:05" not in local_links()  # the caller's namespace has no such link
    finally:
        netns.delete_netns(name)
