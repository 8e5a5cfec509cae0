"""Kernel tests for zonewall.lab.netns."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from zonewall.lab import netns

pytestmark = pytest.mark.kernel


def test_create_is_visible_to_ip_netns_and_deleted(ns_prefix: str) -> None:
    name = ns_prefix + "x"
    netns.create_netns(name)
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns.list_netns(ns_prefix) == [name]
    # lo is up, nothing else exists, and `ip netns exec` lands in the same place.
    out = netns.exec_in_netns(name, ["ip", "-o", "link"]).stdout
    assert "lo:" in out and "UP" in out and len(out.strip().splitlines()) == 1
    with pytest.raises(netns.NetnsError):
        netns.create_netns(name)  # stale namespaces are never silently reused
    netns.delete_netns(name)
    netns.delete_netns(name)  # idempotent
    assert not netns.netns_exists(name)


def test_run_in_netns_moves_only_the_helper_thread(ns_prefix: str) -> None:
    name = ns_prefix + "x"
    netns.create_netns(name)
    netns.add_veth(name, "v-in", name, "v-in-peer")
    names = netns.run_in_netns(name, lambda: sorted(n for _, n in socket.if_nameindex()))
    assert names == ["lo", "v-in", "v-in-peer"]
    assert "v-in" not in [n for _, n in socket.if_nameindex()]  # caller stayed put
    with pytest.raises(ZeroDivisionError):
        netns.run_in_netns(name, lambda: 1 / 0)
    # A socket made in the namespace stays there when used from this thread.
    s = netns.netns_socket(name, socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        with pytest.raises(OSError):
            s.bind(("10.99.0.1", 0))  # address does not exist in the namespace
        netns.add_address(name, "v-in", "10.99.0.1/24")
        s.bind(("10.99.0.1", 0))


def test_sysctls_are_per_namespace(ns_prefix: str) -> None:
    a, b = ns_prefix + "a", ns_prefix + "b"
    netns.create_netns(a)
    netns.create_netns(b)
    netns.enable_forwarding(a)
    netns.add_bridge(a, "br0")
    netns.enable_bridge_netfilter(a)
    netns.set_sysctl(a, "net.netfilter.nf_conntrack_tcp_loose", 0)
    assert netns.get_sysctl(a, "net.ipv4.ip_forward") == "1"
    assert netns.get_sysctl(a, "net.ipv6.conf.all.forwarding") == "1"
    assert netns.get_sysctl(a, "net.bridge.bridge-nf-call-iptables") == "1"
    assert netns.get_sysctl(a, "net.netfilter.nf_conntrack_tcp_loose") == "0"
    assert netns.get_sysctl(b, "net.ipv4.ip_forward") == "0"
    assert netns.get_sysctl(b, "net.ipv6.conf.default.accept_dad") == "0"  # lab tuning
    with pytest.raises(FileNotFoundError):
        netns.set_sysctl(a, "net.ipv4.no_such_knob", 1)


def test_links_addresses_routes(ns_prefix: str) -> None:
    a, r = ns_prefix + "a", ns_prefix + "r"
    netns.create_netns(a)
    netns.create_netns(r)
    netns.add_veth(a, "eth0", r, "to-a")
    netns.set_mac(a, "eth0", "02:aa:00:00:00:01")
    assert netns.get_mac(a, "eth0") == "02:aa:00:00:00:01"
    netns.add_address(a, "eth0", "10.1.0.2/24")
    netns.add_address(a, "eth0", "fd01::2/64")
    netns.add_address(r, "to-a", "10.1.0.1/24")
    netns.add_address(r, "to-a", "fd01::1/64")
    netns.add_default_route(a, "10.1.0.1")
    netns.add_default_route(a, "fd01::1")
    netns.add_route(a, "192.0.2.0/24", dev="eth0")
    v4 = netns.ip("-4", "route", "show", ns=a)
    v6 = netns.ip("-6", "route", "show", ns=a)
    assert "default via 10.1.0.1" in v4 and "192.0.2.0/24 dev eth0" in v4
    assert "default via fd01::1" in v6
    # nodad: the v6 address is not tentative, so it can be bound right away.
    assert "tentative" not in netns.ip("-6", "addr", "show", "dev", "eth0", ns=a)
    with pytest.raises(ValueError):
        netns.add_veth(a, "x" * 16, r, "y")


def _wait_gone(ns: str, ifname: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ifname not in netns.ip("-o", "link", ns=ns):
            return True
        time.sleep(0.02)
    return False


def test_delete_removes_veth_peers_in_other_namespaces(ns_prefix: str) -> None:
    a, b = ns_prefix + "a", ns_prefix + "b"
    netns.create_netns(a)
    netns.create_netns(b)
    netns.add_veth(a, "eth0", b, "peer0")
    netns.add_veth(a, "eth1", b, "peer1")
    netns.delete_netns(a)  # the kernel destroys `a` (and the peers) asynchronously
    assert _wait_gone(b, "peer0")


def test_flush_links_survives_a_leaked_reference(ns_prefix: str) -> None:
    a, b = ns_prefix + "a", ns_prefix + "b"
    netns.create_netns(a)
    netns.create_netns(b)
    netns.add_veth(a, "eth0", b, "peer0")
    # Hold a socket in `a`: the namespace outlives its unmount, yet its links go.
    keep = netns.netns_socket(a, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        netns.delete_netns(a, flush_links=True)
        assert not netns.netns_exists(a)
        assert "peer0" not in netns.ip("-o", "link", ns=b)
    finally:
        keep.close()


def test_delete_all_only_touches_the_prefix(ns_prefix: str) -> None:
    doomed = [ns_prefix + "gone-" + str(i) for i in range(3)]
    survivor = ns_prefix[:-1] + "X-keep"  # shares no full prefix with `doomed`
    try:
        for name in doomed + [survivor]:
            netns.create_netns(name)
        netns.add_veth(doomed[0], "eth0", doomed[1], "eth0")
        netns.add_bridge(doomed[2], "br0")
        assert netns.delete_all(ns_prefix + "gone-") == sorted(doomed)
        assert netns.list_netns(ns_prefix + "gone-") == []
        assert netns.netns_exists(survivor)
        with pytest.raises(ValueError):
            netns.delete_all("")
    finally:
        netns.delete_netns(survivor)


def test_netns_group_cleans_up_on_error(ns_prefix: str) -> None:
    with pytest.raises(RuntimeError), netns.NetnsGroup() as g:
        g.create(ns_prefix + "1")
        g.create(ns_prefix + "2")
        raise RuntimeError("boom")
    assert netns.list_netns(ns_prefix) == []
