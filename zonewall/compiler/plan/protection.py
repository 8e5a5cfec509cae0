"""Protection: drops before any rule, for packets without a connection.

Proxmox's host options and the SYN check, as plan steps of the PROTECTION stage
(plan/hooks.py: right after the established accept, so established packets never
meet them, and before `settings.conntrack.invalid`, which cannot exempt a packet
from them - as Proxmox's nf_conntrack_allow_invalid does not):

* `tcpflags`: TCP with an impossible flag combination - FIN+PSH+URG alone (xmas),
  none at all, SYN+RST, SYN+FIN - and a SYN from source port 0 (Proxmox's list);
* `nosmurfs`: packets from a broadcast or multicast source: 255.255.255.255,
  224.0.0.0/4, the directed broadcast of every IPv4 subnet of the policy's
  networks, and ff00::/8 (never a source in IPv6); 0.0.0.0 (DHCP) is not one;
* `settings.conntrack.new_tcp: syn`: a TCP packet that starts a connection (`ct
  state new`) must be a SYN (conntrack would pick a stream up from any mid-stream
  packet);
* `synflood`: SYNs per source and second over the rate (and burst) are dropped;
  one budget per source on the node, shared by its input and its guests.

The node's input gets its host's `protection` (else `settings.protection`); its
guests' new connections (forward, routed in) get it with `guests: true`. The SYN
check applies to both. No step: the stage is not rendered at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from ...policy.addresses import AddressSet
from ...policy.dataplane_keys import Protection
from ...policy.resolve import Policy
from .vocabulary import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
    Addresses,
    Match,
    NewConnection,
    RateLimit,
    Step,
    TcpFlags,
)

ALL_FLAGS = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG
STATE_FLAGS = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK  # what tells a SYN from the rest
SMURF_SET = ("settings", "protection-smurfs")  # rendered as a named set per family


@dataclass(frozen=True)
class ProtectionChecks:
    """A node's protection steps: for its input, and for its guests' connections."""

    node: str
    host: tuple[Step, ...]
    guests: tuple[Step, ...]


def node_protection(policy: Policy, node: str) -> Protection:
    """The host's own `protection`, else `settings.protection`."""
    own = policy.doc.hosts[node].protection
    return own if own is not None else policy.doc.settings.protection


def protection_checks(policy: Policy, node: str) -> ProtectionChecks:
    protection = node_protection(policy, node)
    syn_check = policy.doc.settings.conntrack.new_tcp == "syn"
    host = _steps(policy, protection, syn_check)
    return ProtectionChecks(node, host, host if protection.guests else _steps(policy, Protection(), syn_check))


def _steps(policy: Policy, protection: Protection, syn_check: bool) -> tuple[Step, ...]:
    """tcpflags, nosmurfs, the SYN check, synflood: as they are enabled."""
    out: list[Step] = []
    if protection.tcpflags:
        out.append(_tcpflags())
    if protection.nosmurfs:
        out.append(_smurfs(tuple(sorted({s for n in policy.doc.networks.values() for s in n.subnets}))))
    if syn_check:
        out.append(_syn_check())
    if protection.synflood is not None:
        limit = RateLimit(protection.synflood.rate, "second", protection.synflood.burst, per_source=True, over=True)
        out.append(Step((Match(None, l4=TcpFlags(STATE_FLAGS, TCP_SYN)),), "drop", "protection:synflood", limit=limit))
    return tuple(out)


@lru_cache(maxsize=1)
def _tcpflags() -> Step:
    bad = (
        TcpFlags(ALL_FLAGS, TCP_FIN | TCP_PSH | TCP_URG),  # xmas
        TcpFlags(ALL_FLAGS, 0),  # no flag at all
        TcpFlags(TCP_SYN | TCP_RST, TCP_SYN | TCP_RST),
        TcpFlags(TCP_FIN | TCP_SYN, TCP_FIN | TCP_SYN),
        TcpFlags(STATE_FLAGS, TCP_SYN, sport=((0, 0),)),  # a SYN from port 0
    )
    return Step(tuple(Match(None, l4=flags) for flags in bad), "drop", "protection:tcpflags")


@lru_cache(maxsize=16)
def _smurfs(subnets: tuple[str, ...]) -> Step:
    v4 = [(0xFFFFFFFF, 0xFFFFFFFF), (0xE0000000, 0xEFFFFFFF)]  # limited broadcast, multicast
    for text in subnets:
        net = ipaddress.ip_network(text)
        if net.version == 4 and net.prefixlen <= 30:  # /31 and /32 have no broadcast address
            value = int(net.broadcast_address)
            v4.append((value, value))
    v6 = [(int(ipaddress.IPv6Address("ff00::")), int(ipaddress.IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")))]
    sources = AddressSet.of(v4, v6)
    matches = (Match("ipv4", src=Addresses(sources.v4, SMURF_SET)), Match("ipv6", src=Addresses(sources.v6, SMURF_SET)))
    return Step(matches, "drop", "protection:nosmurfs")


@lru_cache(maxsize=1)
def _syn_check() -> Step:
    return Step((Match(None, l4=TcpFlags(STATE_FLAGS, TCP_SYN, negate=True)),), "drop", "new-tcp-not-syn", condition=NewConnection())


