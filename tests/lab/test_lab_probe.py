"""Kernel tests for zonewall.lab.probe over A --- bridge --- B."""

from __future__ import annotations

import json
import socket
import time

import pytest

from zonewall.lab import netns
from zonewall.lab.probe import (
    Listener,
    ListenerPool,
    ProbeSpec,
    probe_icmp,
    probe_tcp,
    probe_udp,
    run_probes,
)

pytestmark = pytest.mark.kernel

FAMILIES = ["v4", "v6"]


def addrs(topo, fam: str) -> tuple[str, str]:
    return (topo.a4, topo.b4) if fam == "v4" else (topo.a6, topo.b6)


@pytest.mark.parametrize("fam", FAMILIES)
def test_open_network_delivers(topo, fam: str) -> None:
    src, dst = addrs(topo, fam)
    tcp = probe_tcp(topo.a, topo.b, dst, 8080, src_addr=src)
    udp = probe_udp(topo.a, topo.b, dst, 5353)
    icmp = probe_icmp(topo.a, topo.b, dst)
    for r in (tcp, udp, icmp):
        assert r.verdict == "delivered", r
        assert r.elapsed_ms < 500, r  # delivered probes are fast
    assert tcp.seen_src == src and udp.seen_src == src
    assert udp.reply is True and icmp.reply is True
    decoded = json.loads(tcp.to_json())
    assert decoded["verdict"] == "delivered" and decoded["proto"] == "tcp"


@pytest.mark.parametrize("fam", FAMILIES)
def test_drop_rule_blocks(topo, load_nft, fam: str) -> None:
    _, dst = addrs(topo, fam)
    load_nft(topo.b, """
table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8080 drop
    udp dport 5353 drop
    icmp type echo-request drop
    icmpv6 type echo-request drop
  }
}
""")
    for r in (probe_tcp(topo.a, topo.b, dst, 8080, timeout=0.5),
              probe_udp(topo.a, topo.b, dst, 5353, timeout=0.5),
              probe_icmp(topo.a, topo.b, dst, timeout=0.5)):
        assert r.verdict == "blocked", r
        assert 450 <= r.elapsed_ms < 1500, r
    # Other ports are untouched: the rule, not the network, did it.
    assert probe_tcp(topo.a, topo.b, dst, 8081).verdict == "delivered"


@pytest.mark.parametrize("fam", FAMILIES)
def test_reject_rules_refuse(topo, load_nft, fam: str) -> None:
    _, dst = addrs(topo, fam)
    load_nft(topo.b, """
table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8080 reject with tcp reset
    udp dport 5353 reject
    icmp type echo-request reject
    icmpv6 type echo-request reject
  }
}
""")
    # Repeat: ICMP errors are rate limited by default; create_netns turns that off.
    for _ in range(10):
        for r in (probe_tcp(topo.a, topo.b, dst, 8080),
                  probe_udp(topo.a, topo.b, dst, 5353),
                  probe_icmp(topo.a, topo.b, dst)):
            assert r.verdict == "refused", r
            assert r.elapsed_ms < 500, r


def test_bridge_netfilter_forward_drop(topo, load_nft) -> None:
    """Filtering in the bridge namespace's inet forward hook needs br_netfilter."""
    netns.enable_bridge_netfilter(topo.br)
    load_nft(topo.br, """
table inet t {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    tcp dport 22 drop
  }
}
""")
    for dst in (topo.b4, topo.b6):
        assert probe_tcp(topo.a, topo.b, dst, 22, timeout=0.5).verdict == "blocked"
        assert probe_tcp(topo.a, topo.b, dst, 80).verdict == "delivered"


def test_udp_reply_path_reported_separately(topo, load_nft) -> None:
    load_nft(topo.b, """
table inet t {
  chain output {
    type filter hook output priority 0; policy accept;
    udp sport 5353 drop
  }
}
""")
    r = probe_udp(topo.a, topo.b, topo.b4, 5353, timeout=0.5)
    assert r.verdict == "delivered" and r.reply is False, r


def test_tcp_handshake_by_someone_else_is_not_delivery(topo, load_nft) -> None:
    """B redirects :8080 to a plain socket on :9000: the connect succeeds, the
    probe's own listener never gets the token, so it must not count."""
    load_nft(topo.b, """
table ip nat {
  chain prerouting {
    type nat hook prerouting priority -100;
    tcp dport 8080 redirect to :9000
  }
}
""")
    other = netns.netns_socket(topo.b, socket.AF_INET, socket.SOCK_STREAM)
    with other:
        other.bind(("0.0.0.0", 9000))
        other.listen(8)  # the kernel completes handshakes without accept()
        r = probe_tcp(topo.a, topo.b, topo.b4, 8080, timeout=0.5)
    assert r.verdict == "blocked" and "handshake completed" in r.detail, r


def test_listener_falls_back_to_wildcard_for_foreign_address(topo) -> None:
    # 192.0.2.10 is not configured in B (think: a DNAT'ed service address).
    with Listener(topo.b, "tcp", 7000, "192.0.2.10") as lst:
        assert lst.bound_addr == "0.0.0.0"


def test_refused_without_listener_on_closed_port_is_error_free(topo) -> None:
    """A source address that does not exist is a probe error, not a verdict."""
    r = probe_tcp(topo.a, topo.b, topo.b4, 8080, src_addr="10.77.0.99")
    assert r.verdict == "error" and "setup" in r.detail


def test_many_probes_concurrently(topo, load_nft) -> None:
    load_nft(topo.b, """
table inet t {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 6000-6009 drop
  }
}
""")
    specs = []
    for port in range(6000, 6020):
        for dst in (topo.b4, topo.b6):
            specs.append(ProbeSpec("tcp", topo.a, topo.b, dst, port, timeout=0.5))
            specs.append(ProbeSpec("udp", topo.a, topo.b, dst, port, timeout=0.5))
    for dst in (topo.b4, topo.b6):
        specs += [ProbeSpec("icmp", topo.a, topo.b, dst, timeout=0.5)] * 10
    # The same listener serves repeated probes: duplicate every tcp spec.
    specs += [s for s in specs if s.proto == "tcp"]
    t0 = time.perf_counter()
    results = run_probes(specs)
    wall = time.perf_counter() - t0
    assert len(results) == len(specs)
    for spec, r in zip(specs, results):
        assert (r.proto, r.dst_addr, r.port) == (spec.proto, spec.dst_addr, spec.port)
        blocked = spec.proto == "tcp" and spec.port is not None and spec.port < 6010
        assert r.verdict == ("blocked" if blocked else "delivered"), r
    assert wall < 3.0, wall  # ~200 probes, all blocked ones in parallel


def test_pool_reuses_listeners(topo) -> None:
    with ListenerPool() as pool:
        first = pool.get(topo.b, "tcp", 8443, topo.b4)
        for _ in range(3):
            assert probe_tcp(topo.a, topo.b, topo.b4, 8443, pool=pool).delivered
            assert probe_udp(topo.a, topo.b, topo.b6, 8443, pool=pool).delivered
        assert pool.get(topo.b, "tcp", 8443, topo.b4) is first


def test_local_failures_are_not_network_verdicts(topo, load_nft) -> None:
    # No route in A for 10.99.0.0/16: a lab mistake, reported as an error.
    assert probe_udp(topo.a, topo.b, "10.99.0.5", 53).verdict == "error"
    assert probe_icmp(topo.a, topo.b, "10.99.0.5").verdict == "error"
    # A drop in A's own output hook fails send() with EPERM at once: blocked.
    load_nft(topo.a, """
table inet t {
  chain output {
    type filter hook output priority 0; policy accept;
    udp dport 53 drop
  }
}
""")
    r = probe_udp(topo.a, topo.b, topo.b4, 53)
    assert r.verdict == "blocked" and "EPERM" in r.detail and r.elapsed_ms < 100, r
