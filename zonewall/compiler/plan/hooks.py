"""The order of the stages in each hook of a node: the one place it is written.

The compiler renders each hook as a chain with one or more rules per stage
(compiler/node.py, compiler/modes.py); the analyzer walks the same lists to know
which stages a flow passes and in which order (analysis/paths.py). A new stage is
one entry here plus one clause in each of the two.

The bridge family runs before these (guards of the sending NIC in prerouting, of
the receiving NIC in forward, for frames bridged to a guest's port).
"""

from __future__ import annotations

from enum import Enum


class Stage(Enum):
    LOOPBACK = "loopback"  # the node talking to itself: accepted
    PACKET_LIMITS = "packet-limits"  # established packets of packet-limited connections: over the rate dropped
    ESTABLISHED = "established"  # established/related packets: accepted; new connections go on
    ROUTED_FROM = "routed-from"  # routed out of a non-bridged guest network: its mode's checks
    ROUTED_TO = "routed-to"  # routed into a non-bridged guest network: ROUTED_IN, which ends the hook
    NOT_GUEST = "not-guest"  # neither end a guest NIC of this node: accepted
    INVALID = "invalid"  # ct state invalid: settings.conntrack.invalid
    ESSENTIALS = "essentials"  # ICMPv6 neighbour/router discovery, MLD: accepted
    PROTECTION = "protection"  # packets without a connection (new or invalid): tcpflags, nosmurfs, SYN check, synflood (plan/protection.py)
    CONNTRACK = "conntrack"  # helpers and timeouts for new connections (no verdict)
    MANAGEMENT = "management"  # settings.management to ssh and zonewall's ports: accepted
    SENDER = "sender"  # the sending guest's `out` chain
    NETWORK = "network"  # the check between two guests of one network
    RECEIVER = "receiver"  # the receiving guest's `in` chain (bridged to its port)
    BRIDGED_INSIDE = "bridged-inside"  # ROUTED_IN: bridged within the network, back to the hook
    MODE_CHECKS = "mode-checks"  # ROUTED_IN: the network mode's inbound checks
    RECEIVER_BY_ADDRESS = "receiver-by-address"  # ROUTED_IN: the receiving guest's `in` chain
    ACCEPT = "accept"  # ROUTED_IN: routed to the network
    HOST_SERVICES = "host-services"  # from a guest network: its host_services only
    HOST_RULES = "host-rules"  # host_rules, then the host's own rules
    HOST_DEFAULT = "host-default"  # settings.host_default


S = Stage

# inet forward: guest traffic through the node (bridged via br_netfilter, or routed)
FORWARD = (S.PACKET_LIMITS, S.ESTABLISHED, S.ROUTED_FROM, S.ROUTED_TO, S.NOT_GUEST, S.PROTECTION, S.INVALID, S.ESSENTIALS, S.CONNTRACK, S.SENDER, S.NETWORK, S.RECEIVER)
# l3in-NET: what ROUTED_TO runs for a packet routed into a non-bridged network
ROUTED_IN = (S.BRIDGED_INSIDE, S.PROTECTION, S.INVALID, S.MODE_CHECKS, S.CONNTRACK, S.SENDER, S.RECEIVER_BY_ADDRESS, S.ACCEPT)
# inet input: to the node itself
INPUT = (S.LOOPBACK, S.PACKET_LIMITS, S.ESTABLISHED, S.PROTECTION, S.INVALID, S.ESSENTIALS, S.MANAGEMENT, S.CONNTRACK, S.SENDER, S.HOST_SERVICES, S.HOST_RULES, S.HOST_DEFAULT)
# inet output: from the node itself (only when something is enforced there)
OUTPUT = (S.LOOPBACK, S.PACKET_LIMITS, S.ESTABLISHED, S.ESSENTIALS, S.HOST_RULES, S.HOST_DEFAULT)
