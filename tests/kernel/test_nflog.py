"""NFLOG records of the compiled rulesets, read over netlink (zonewall.dataplane.nflog).

Lab (policies/nflog.yaml): node1 hosts `client` (clean-traffic, a logged reject of
tcp/25 out) and `server` (accepts tcp/8080 unlogged, drops tcp/9000 logged, default
in drop); node2 hosts `remote` on the same network. settings.log: denied, group 5.

Guests also chat on their own (MLD reports hit default drops and are logged), so
every assertion picks the record of the probe's flow by protocol/port/addresses.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from zonewall.compiler.ir import NicMeta
from zonewall.compiler.logprefix import parse as parse_prefix
from zonewall.compiler.naming import tap_name
from zonewall.compiler.nftexpr import DST_NIC_SHIFT
from zonewall.dataplane.nflog import (
    ETH_P_IP,
    ETH_P_IPV6,
    NFULA_MARK,
    NFULA_PACKET_HDR,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    LogRecord,
    NflogReader,
    decode_packet,
    decode_record,
    resolve_vm,
)
from zonewall.lab import raw
from zonewall.lab.probing import Service, probe

from .conftest import Lab

GROUP = 5  # settings.log.group of policies/nflog.yaml
BLOCKED_PORT = 7000  # no rule: server's default-in decides


def _addr(lab: Lab, vm: str, family: str) -> str:
    version = 4 if family == "ipv4" else 6
    return next(ip for ip in lab.nic(vm).ips if ipaddress.ip_address(ip).version == version)


def flow(proto: str, dport: int, src: str | None = None, dst: str | None = None) -> Callable[[LogRecord], bool]:
    def pred(r: LogRecord) -> bool:
        return (r.proto == proto and r.dport == dport
                and (src is None or r.src == src) and (dst is None or r.dst == dst))
    return pred


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[str], Lab]) -> Lab:
    return lab_factory("nflog.yaml")


@pytest.fixture
def node1_log(lab: Lab) -> Iterator[NflogReader]:
    with NflogReader(GROUP, netns=lab.node_ns("node1")) as reader:
        yield reader


# ----------------------------------------------------------------- kernel tests


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_default_drop_is_logged_with_vm_direction_and_addresses(lab: Lab, node1_log: NflogReader, family: str) -> None:
    client, server = _addr(lab, "client", family), _addr(lab, "server", family)
    t0 = time.time()
    result = probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", BLOCKED_PORT), family=family)
    assert result.verdict == "blocked", result
    record = node1_log.wait_for(flow("tcp", BLOCKED_PORT, client, server), timeout=2)
    assert record is not None, f"no NFLOG record for tcp/{BLOCKED_PORT}; saw {[r.prefix for r in node1_log.history]}"
    assert record.prefix == "zw|node1|server|in|default-in|drop|warning"  # settings.log.level's default (issue 18)
    assert record.log_level == "warning"
    assert (record.node, record.scope, record.direction, record.rule_id, record.verdict) == (
        "node1", "server", "in", "default-in", "drop")
    assert record.family == family and record.sport and record.sport > 1023
    nics = lab.nics["node1"]
    assert resolve_vm(record, nics) == "server"  # direction in: the receiving NIC
    assert resolve_vm(record, nics, side="src") == "client"
    assert (nics[record.src_nic]["vm"], nics[record.dst_nic]["vm"]) == ("client", "server")
    assert record.physindev == tap_name("client", 0) and record.physoutdev == tap_name("server", 0)
    assert record.indev == record.outdev == lab.policy.doc.networks["lan"].bridge  # br_netfilter: the bridge
    assert abs(record.time - t0) < 60
    assert record.icmp_type is None


@pytest.mark.kernel
def test_logged_rule_carries_its_own_id(lab: Lab, node1_log: NflogReader) -> None:
    client, server = _addr(lab, "client", "ipv4"), _addr(lab, "server", "ipv4")
    result = probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", 9000), family="ipv4")
    assert result.verdict == "blocked", result
    record = node1_log.wait_for(flow("tcp", 9000, client, server), timeout=2)
    assert record is not None, f"no record for tcp/9000; saw {[r.prefix for r in node1_log.history]}"
    assert (record.scope, record.direction, record.rule_id, record.verdict) == ("server", "in", "server-deny-9000", "drop")
    assert resolve_vm(record, lab.nics["node1"]) == "server"


@pytest.mark.kernel
def test_logged_out_rule_names_the_sending_vm(lab: Lab, node1_log: NflogReader) -> None:
    client, server = _addr(lab, "client", "ipv4"), _addr(lab, "server", "ipv4")
    result = probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", 25), family="ipv4")
    assert result.verdict == "refused", result  # reject: a TCP reset
    record = node1_log.wait_for(flow("tcp", 25, client, server), timeout=2)
    assert record is not None, f"no record for tcp/25; saw {[r.prefix for r in node1_log.history]}"
    assert (record.scope, record.direction, record.rule_id, record.verdict) == ("client", "out", "client-no-smtp", "reject")
    assert resolve_vm(record, lab.nics["node1"]) == "client"  # direction out: the sending NIC


@pytest.mark.kernel
def test_allowed_unlogged_rule_produces_no_record(lab: Lab, node1_log: NflogReader) -> None:
    result = probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", 8080), family="ipv4")
    assert result.delivered, result
    records = node1_log.read(timeout=1.0) + node1_log.read(timeout=0.3)
    about_8080 = [r for r in records if r.proto == "tcp" and 8080 in (r.sport, r.dport)]
    assert about_8080 == [], about_8080
    # the reader was listening all along: a blocked probe right after is seen
    probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", BLOCKED_PORT), family="ipv4", timeout=0.5)
    assert node1_log.wait_for(flow("tcp", BLOCKED_PORT), timeout=2) is not None


@pytest.mark.kernel
def test_traffic_from_another_node_is_logged_where_it_is_dropped(lab: Lab, node1_log: NflogReader) -> None:
    """remote (node2) -> server (node1): node2 lets it out (default out accept, not
    logged); node1 logs server's default-in with no source NIC in the mark (the
    packet came in over the trunk, not from a local guest)."""
    remote, server = _addr(lab, "remote", "ipv4"), _addr(lab, "server", "ipv4")
    with NflogReader(GROUP, netns=lab.node_ns("node2")) as node2_log:
        result = probe(lab.state, lab.policy, "vm:remote", "vm:server", Service("tcp", BLOCKED_PORT), family="ipv4")
        assert result.verdict == "blocked", result
        record = node1_log.wait_for(flow("tcp", BLOCKED_PORT, remote, server), timeout=2)
        assert record is not None, f"no record on node1; saw {[r.prefix for r in node1_log.history]}"
        assert (record.node, record.rule_id, record.direction) == ("node1", "default-in", "in")
        assert record.src_nic == 0 and resolve_vm(record, lab.nics["node1"]) == "server"
        assert resolve_vm(record, lab.nics["node1"], side="src") is None
        assert record.physoutdev == tap_name("server", 0)
        on_node2 = [r for r in node2_log.read(timeout=0.5) if flow("tcp", BLOCKED_PORT, remote, server)(r)]
        assert on_node2 == [], on_node2


@pytest.mark.kernel
def test_guard_drop_is_logged_from_the_bridge_table(lab: Lab, node1_log: NflogReader) -> None:
    """A spoofed datagram from client (clean-traffic) is logged by the guard, with
    the forged source and the client's NIC in the mark (set by the bridge table)."""
    nic = lab.nic("client")
    server = lab.nic("server")
    assert nic.mac and server.mac
    forged = "10.78.1.99"
    frame = raw.ipv4_udp_frame(src_mac=nic.mac, dst_mac=server.mac, src_ip=forged,
                               dst_ip=_addr(lab, "server", "ipv4"), sport=4444, dport=9999, payload=b"zw-nflog-guard")
    raw.send_frame(lab.vm_ns("client"), "eth0", frame)
    record = node1_log.wait_for(flow("udp", 9999, src=forged), timeout=2)
    assert record is not None, f"no guard record; saw {[r.prefix for r in node1_log.history]}"
    assert (record.scope, record.direction, record.rule_id, record.verdict) == (
        "guard:no-ip-spoofing", "out", "no-ip-spoofing", "drop")
    assert resolve_vm(record, lab.nics["node1"]) == "client"
    assert record.physindev == tap_name("client", 0) and record.src_mac == nic.mac
    assert record.dst_nic == 0  # dropped at bridge prerouting, before any output port


@pytest.mark.kernel
def test_records_go_only_to_the_configured_group(lab: Lab, node1_log: NflogReader) -> None:
    with NflogReader(GROUP + 1, netns=lab.node_ns("node1")) as other:
        probe(lab.state, lab.policy, "vm:client", "vm:server", Service("tcp", BLOCKED_PORT), family="ipv4", timeout=0.5)
        assert node1_log.wait_for(flow("tcp", BLOCKED_PORT), timeout=2) is not None
        assert other.read(timeout=0.3) == []


@pytest.mark.kernel
def test_a_group_has_one_reader_per_namespace(lab: Lab, node1_log: NflogReader) -> None:
    with pytest.raises(OSError):
        NflogReader(GROUP, netns=lab.node_ns("node1"))
    # ... but the same group in another namespace is independent
    with NflogReader(GROUP, netns=lab.node_ns("node2")):
        pass


# ------------------------------------------------------------ decoding (no kernel)


def test_parse_prefix() -> None:
    assert parse_prefix("zw|n1|zone:web|out|r-1|reject|info") == ("n1", "zone:web", "out", "r-1", "reject", "info")
    assert parse_prefix("zw|n1|zone:web|out|r-1|reject") == ("n1", "zone:web", "out", "r-1", "reject", None)  # compiled before log levels
    assert parse_prefix("zw|n1|web1|in|default-in") == ("n1", "web1", "in", "default-in", None, None)  # cut at 127 bytes
    assert parse_prefix("something else") == (None, None, None, None, None, None)


def test_decode_record_ipv4_tcp_and_mark() -> None:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     ipaddress.IPv4Address("10.0.0.1").packed, ipaddress.IPv4Address("10.0.0.2").packed)
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 0, 0, 0x50, 0x02, 0, 0, 0)
    attrs = {
        NFULA_PACKET_HDR: struct.pack("!HBx", ETH_P_IP, 2),
        NFULA_MARK: struct.pack("!I", (7 << DST_NIC_SHIFT) | 3 | 0x40000000),
        NFULA_PREFIX: b"zw|n1|web1|in|default-in|drop\0",
        NFULA_PAYLOAD: ip + tcp,
    }
    r = decode_record(attrs, now=123.0)
    assert (r.time, r.node, r.scope, r.rule_id, r.verdict) == (123.0, "n1", "web1", "default-in", "drop")
    assert (r.src_nic, r.dst_nic) == (3, 7)
    assert (r.family, r.src, r.dst, r.proto, r.sport, r.dport, r.icmp_type) == ("ipv4", "10.0.0.1", "10.0.0.2", "tcp", 40000, 443, None)
    meta: dict[int, NicMeta] = {  # the compiler's Ruleset.meta["nics"]: int keys (issue 20)
        3: {"vm": "app1", "nic": 0, "tap": "app1i0", "network": "back", "mac": None},
        7: {"vm": "web1", "nic": 0, "tap": "web1i0", "network": "front", "mac": None},
    }
    assert resolve_vm(r, meta) == "web1" and resolve_vm(r, meta, side="src") == "app1"


def test_decode_ipv6_icmp_behind_extension_header() -> None:
    src, dst = ipaddress.IPv6Address("fd00::1").packed, ipaddress.IPv6Address("ff02::16").packed
    hop_by_hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])  # next: ICMPv6; router alert
    icmp = bytes([143, 0, 0, 0, 0, 0, 0, 0])
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(hop_by_hop + icmp), 0, 1, src, dst)
    out = decode_packet(ETH_P_IPV6, ip6 + hop_by_hop + icmp)
    assert (out.family, out.src, out.dst, out.proto, out.icmp_type, out.sport) == ("ipv6", "fd00::1", "ff02::16", "icmpv6", 143, None)
    truncated = decode_packet(ETH_P_IPV6, (ip6 + hop_by_hop + icmp)[:30])
    assert truncated.family is None  # too short to be an IPv6 header: nothing guessed
