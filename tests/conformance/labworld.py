"""Worlds for real packets: many of Proxmox's expectations in one lab.

fwtester.py builds one world per expectation, which suits trace. A lab costs seconds,
so the kernel sample (tests/kernel/test_pve_fwtester_lab.py) puts many expectations
into one world: each end needs its addresses to itself, and the lab's routing needs
every guest to have an address in its bridge's first subnet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .fwtester import DEFAULT_DEST, DEFAULT_SOURCE, GUESTS, HOST_ADDRESS, End, Expectation, end_of, impossible, world

LAB_BRIDGES = {"vmbr0": 0, "vmbr1": 1, "vmbr2": 2}


@dataclass
class LabWorld:
    """One world for many expectations, for real packets (see LabWorldBuilder)."""

    inventory: dict[str, Any]
    packets: dict[Expectation, tuple[str, str]]


def _bridge(end: End) -> str:
    return next(b for key, b, _ in GUESTS[end.vmid][1] if key == end.nic)  # type: ignore[index]


def _net24(address: str) -> str:
    return str(ipaddress.ip_network(f"{address}/24", strict=False))


def lab_runnable(expectation: Expectation) -> str | None:
    """Why the expectation cannot be sent as a real packet here, or None."""
    if expectation.proto == "icmpv6":
        return "IPv6 is not in the simulator's world"
    if expectation.proto == "icmp" and expectation.dport not in (None, "echo-request", "8"):
        return "only ICMP echo-request opens a connection (other types are not new)"
    src, dst = expectation.packet()
    if impossible(expectation) or ipaddress.ip_address(dst).is_multicast:
        return "multicast"
    if ipaddress.ip_address(src).is_loopback or ipaddress.ip_address(dst).is_loopback:
        return "a loopback address never crosses a firewall between hosts"
    ends = end_of(expectation.src_zone), end_of(expectation.dst_zone)
    if ends[0].kind == ends[1].kind == "nic" and ends[0].vmid == ends[1].vmid:
        return "a guest's packet to its own other NIC is delivered inside the guest"
    return None


class LabWorldBuilder:
    """Expectations that fit one lab together. Every NIC gets an address of its own,
    the first of its bridge's first subnet (the lab routes guests through a router
    there): a source an ACCEPT expectation sends from (so that under an ipfilter the
    guest's own ARP passes, as a real guest's would), else .N of that subnet (10.99.B.0/24
    by default). An expectation naming no address uses its ends' own; a named guest
    address goes into a /24 of its bridge so that replies find their way back. An
    address belongs to one end per world: expectations that need it elsewhere wait
    for another world."""

    def __init__(self) -> None:
        self.owners: dict[str, End] = {}
        self.nets: dict[str, str] = {}  # /24 of named guest addresses -> bridge
        self.own: dict[End, str] = {}
        self.items: list[tuple[Expectation, tuple[str | None, str | None]]] = []

    def add(self, expectation: Expectation) -> bool:
        ends = (end_of(expectation.src_zone), end_of(expectation.dst_zone))
        named = (expectation.source, expectation.dest)
        for end, address in zip(ends, named):
            if address is None:
                continue
            if self.owners.get(address, end) != end:
                return False
            if end.kind == "nic" and self.nets.get(_net24(address), _bridge(end)) != _bridge(end):
                return False
        for end, address in zip(ends, named):
            if address is not None:
                self.owners[address] = end
                if end.kind == "nic":
                    self.nets[_net24(address)] = _bridge(end)
        src, source = ends[0], named[0]
        if expectation.action == "ACCEPT" and source and src.kind == "nic" and src not in self.own:
            firsts = [a for e, a in self.own.items() if _bridge(e) == _bridge(src)]
            if not firsts or _net24(firsts[0]) == _net24(source):
                self.own[src] = source
        self.items.append((expectation, named))
        return True

    def build(self) -> LabWorld:
        first_net: dict[str, str] = {}
        for end, address in self.own.items():
            first_net.setdefault(_bridge(end), _net24(address))
        flows: list[tuple[End, str]] = []
        own: dict[End, str] = {}
        for vmid, (_, nics, _) in GUESTS.items():
            for key, bridge, _ in nics:
                end = End("nic", vmid, key)
                net = ipaddress.ip_network(first_net.setdefault(bridge, f"10.99.{LAB_BRIDGES[bridge]}.0/24"))
                own[end] = self.own.get(end) or str(net.network_address + (99 if vmid == 999 else vmid % 256))
                flows.append((end, own[end]))
        packets: dict[Expectation, tuple[str, str]] = {}
        for expectation, named in self.items:
            chosen = []
            for end, address, role in zip((end_of(expectation.src_zone), end_of(expectation.dst_zone)), named, ("src", "dst")):
                default = own.get(end) or (HOST_ADDRESS if end.kind == "host" else DEFAULT_SOURCE if role == "src" else DEFAULT_DEST)
                chosen.append(address or default)
                if end.kind != "outside" and (end, chosen[-1]) not in flows:
                    flows.append((end, chosen[-1]))
            packets[expectation] = (chosen[0], chosen[1])
        inventory = world(flows)
        for bridge, first in first_net.items():
            nets = {n for n, b in self.nets.items() if b == bridge}
            for guest in inventory["guests"].values():  # a container's configured address is on its bridge too
                nets |= {_net24(ip) for nic in guest["nics"].values() if nic["bridge"] == bridge for ip in nic["ips"]}
            inventory["bridges"][bridge] = {"subnets": [first] + sorted(nets - {first})}
        return LabWorld(inventory, packets)


def lab_worlds(expectations: Iterable[Expectation], most: int) -> tuple[list[LabWorld], list[tuple[Expectation, str]]]:
    """The expectations that can be real packets, spread over at most `most` worlds
    (each a lab); what is left out, and why."""
    builders: list[LabWorldBuilder] = []
    left_out: list[tuple[Expectation, str]] = []
    for expectation in expectations:
        why = lab_runnable(expectation)
        if why:
            left_out.append((expectation, why))
            continue
        for builder in builders:
            if builder.add(expectation):
                break
        else:
            if len(builders) < most:
                builders.append(LabWorldBuilder())
                builders[-1].add(expectation)
            else:
                left_out.append((expectation, f"its addresses are other ends' in all {most} worlds"))
    return [b.build() for b in builders], left_out
