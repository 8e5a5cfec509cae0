"""Synthetic zonewall policies for the benchmarks (deterministic for a given size/seed).

Shape of a generated policy with N VMs (all on host `node1` unless `nodes` > 1):

* 4 bridged networks (dual stack: a /16 and a /64 each); VM i sits on network i % 4
  with one NIC: MAC 52:54:00:XX:XX:XX, one IPv4 and one IPv6 address, guard
  filter `clean-traffic`.
* 20 zones (z0..z19; `zones` sets another count), VM i is in zone i % zones; every
  zone has 10 rules (service, ports, zone/group references) and some zones have
  their own default.
* 100 groups (g0..g99) of 3-6 members each: CIDR literals (v4 and v6), address
  ranges, vm: references and, for one group in five, another group (nesting).
* 4 global rules (ssh/icmp from admins, ...).
* 20 rules per VM, a mix of every kind of match (see `vm_rules`): single ports, port
  lists and ranges, built-in services and lists of them, from/to group:, zone:, vm:,
  network:, CIDR literals, lists of references, family-restricted rules, IPv6-only
  literals, icmp, proto, drop/reject/accept, one rate-limited rule and one logged
  rule per VM.

The text is YAML with one flow-style rule per line, exactly what an operator might
write, so `load_policy` does its usual work (positions, pydantic, cross-checks).
"""

from __future__ import annotations

import random

NETWORKS = 4
ZONES = 20
GROUPS = 100
RULES_PER_VM = 20


def vm_name(i: int) -> str:
    return f"vm{i}"


def vm_mac(i: int) -> str:
    return f"52:54:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def vm_ipv4(i: int) -> str:
    n = i % NETWORKS
    k = i // NETWORKS + 10  # host part inside 10.n.0.0/16, skips .0.0-.0.9
    return f"10.{n}.{k >> 8}.{k & 0xFF}"


def vm_ipv6(i: int) -> str:
    n = i % NETWORKS
    return f"fd00:{n}::{i // NETWORKS + 10:x}"


def vm_network(i: int) -> str:
    return f"net{i % NETWORKS}"


def vm_zone(i: int, zones: int = ZONES) -> str:
    return f"z{i % zones}"


def vm_rules(i: int, n_vms: int, rng: random.Random, zones: int = ZONES) -> list[str]:
    """RULES_PER_VM flow-style rules for VM i."""
    g = lambda: f"g{rng.randrange(GROUPS)}"
    z = lambda: f"z{rng.randrange(zones)}"
    other = lambda: vm_name(rng.randrange(n_vms))
    port = lambda: rng.randrange(1024, 60000)
    a, b = rng.randrange(256), rng.randrange(256)
    rules = [
        "{direction: in, action: accept, from: group:admins, tcp: 22}",
        "{direction: in, action: accept, service: https}",
        f"{{direction: in, action: accept, from: zone:{z()}, tcp: \"8000-8100\"}}",
        f"{{direction: in, action: accept, from: 172.{16 + a % 16}.{b}.0/24, udp: 53}}",
        f"{{direction: in, action: accept, from: vm:{other()}, tcp: {port()}}}",
        "{direction: in, action: accept, icmp: echo-request}",
        f"{{direction: in, action: drop, from: group:{g()}, log: true}}",
        "{direction: in, action: reject, tcp: 25}",
        f"{{direction: in, action: accept, from: [group:{g()}, 10.200.{a}.0/24], tcp: [3306, 5432, {port()}]}}",
        f"{{direction: in, action: accept, from: group:{g()}, proto: gre}}",
        f"{{direction: out, action: accept, to: zone:{z()}, service: postgres}}",
        f"{{direction: out, action: accept, to: group:{g()}, tcp: 443}}",
        f"{{direction: out, action: drop, to: 192.0.2.{a}}}",
        "{direction: out, action: accept, to: group:ntp, udp: 123}",
        f"{{direction: out, action: accept, to: vm:{other()}, service: http-alt}}",
        "{direction: in, action: accept, from: group:monitoring, tcp: 9100, limit: {rate: 100/second, burst: 50}}",
        f"{{direction: in, action: accept, family: ipv4, udp: \"5000-{5000 + a}\"}}",
        f"{{direction: in, action: accept, from: \"fd00:99:{a:x}::/48\", tcp: {port()}}}",
        f"{{direction: out, action: reject, to: group:{g()}, tcp: 23}}",
        f"{{direction: in, action: accept, from: network:{vm_network(rng.randrange(NETWORKS))}, service: [ssh, http]}}",
    ]
    assert len(rules) == RULES_PER_VM
    return rules


def zone_rules(k: int, rng: random.Random, zones: int = ZONES) -> list[str]:
    g = lambda: f"g{rng.randrange(GROUPS)}"
    return [
        "{direction: in, action: accept, service: https}",
        f"{{direction: in, action: accept, from: zone:z{(k + 1) % zones}, service: http-alt}}",
        f"{{direction: in, action: accept, from: group:{g()}, tcp: [{1000 + k}, {2000 + k}]}}",
        f"{{direction: in, action: drop, from: group:{g()}}}",
        "{direction: in, action: accept, from: group:admins, service: [ssh, rdp]}",
        f"{{direction: out, action: accept, to: zone:z{(k + 2) % zones}, service: postgres}}",
        "{direction: out, action: accept, service: dns}",
        f"{{direction: out, action: accept, to: group:{g()}, tcp: \"{3000 + k}-{3100 + k}\"}}",
        "{direction: out, action: reject, tcp: 25}",
        "{direction: in, action: accept, icmpv6: [echo-request]}",
    ]


def group_members(k: int, n_vms: int, rng: random.Random, nested: bool = False) -> list[str]:
    out = []
    for _ in range(rng.randrange(3, 7)):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(f"198.{18 + k % 2}.{rng.randrange(256)}.0/24")
        elif kind == 1:
            out.append(f"\"2001:db8:{k:x}:{rng.randrange(65536):x}::/64\"")
        elif kind == 2:
            base = rng.randrange(250)
            out.append(f"100.64.{k}.{base}-100.64.{k}.{base + 5}")
        else:
            out.append(f"vm:{vm_name(rng.randrange(n_vms))}")
    if nested and k % 5 == 0 and k > 0:
        out.append(f"group:g{k - 1}")
    return out


def policy_text(
    n_vms: int,
    *,
    nodes: int = 1,
    seed: int = 1,
    filters: bool = True,
    nested_groups: bool = True,
    overrides: dict[int, dict[int, str]] | None = None,
    zones: int = ZONES,
    dataplane_extras: bool = False,
) -> str:
    """The YAML of a synthetic policy with n_vms VMs x RULES_PER_VM rules.

    `overrides` maps a VM index to {rule position: flow-style rule} replacing some
    of its generated rules (the dispatch benchmark uses it to allow its flow).
    `zones` is the number of zones (default 20; the analysis benchmark uses 50).
    `dataplane_extras` adds what issue 5 put in the dataplane: schedules (one
    scheduled rule per zone), conntrack helpers (ftp, tftp), nat (masquerade, snat and
    a dnat port forward per 100 VMs to a VM on node1); rate limits are always there.
    """
    rng = random.Random(seed)
    lines = [
        "version: 1",
        "settings:",
        "  default: {in: drop, out: accept}",
        "  host_default: {in: drop}",
        "  management: [192.168.100.0/24]",
        "  log: {denied: false, rate: 10/second, burst: 50}",
    ]
    if dataplane_extras:
        lines.append("  conntrack: {helpers: [ftp, tftp]}")
        lines.append("schedules:")
        lines.append("  business: {days: [mon, tue, wed, thu, fri], time: \"08:00-18:00\", timezone: Europe/Berlin}")
        lines.append("  night: {days: [sat, sun], time: \"22:00-06:00\"}")
    lines.append("hosts:")
    for h in range(max(1, nodes)):
        lines.append(f"  node{h + 1}: {{address: [192.168.100.{11 + h}], uplink: eth0}}")
    lines.append("networks:")
    for n in range(NETWORKS):
        lines.append(f"  net{n}: {{bridge: vmbr{n}, subnets: [10.{n}.0.0/16, \"fd00:{n}::/64\"], gateway: [10.{n}.0.1, \"fd00:{n}::1\"]}}")
    lines.append("groups:")
    lines.append("  admins: [192.168.100.0/24, \"fd00:100::/64\"]")
    lines.append("  ntp: [192.0.2.123, 192.0.2.124, \"2001:db8::123\"]")
    lines.append("  monitoring: [10.250.0.0/24, \"fd00:250::/64\"]")
    for k in range(GROUPS):
        lines.append(f"  g{k}: [{', '.join(group_members(k, n_vms, rng, nested_groups))}]")
    lines.append("zones:")
    for k in range(zones):
        lines.append(f"  z{k}:")
        if k % 4 == 1:
            lines.append("    default: {in: drop, out: drop}")
        lines.append("    rules:")
        lines += [f"      - {r}" for r in zone_rules(k, rng, zones)]
        if dataplane_extras:
            lines.append(f"      - {{direction: in, action: accept, service: rdp, schedule: {'business' if k % 2 else 'night'}}}")
    lines.append("global_rules:")
    lines += [
        "  - {direction: in, action: accept, from: group:admins, service: ssh}",
        "  - {direction: in, action: accept, from: group:monitoring, service: prometheus-node}",
        "  - {direction: out, action: drop, to: 203.0.113.0/24}",
        "  - {direction: in, action: accept, icmp: [echo-request, destination-unreachable]}",
    ]
    lines.append("vms:")
    for i in range(n_vms):
        host = f"node{i % max(1, nodes) + 1}"
        nic = f"{{network: {vm_network(i)}, mac: \"{vm_mac(i)}\", ips: [{vm_ipv4(i)}, \"{vm_ipv6(i)}\"]}}"
        lines.append(f"  {vm_name(i)}:")
        lines.append(f"    host: {host}")
        lines.append(f"    zone: {vm_zone(i, zones)}")
        lines.append(f"    nics: [{nic}]")
        if filters:
            lines.append("    filters: [clean-traffic]")
        lines.append("    rules:")
        rules = vm_rules(i, n_vms, rng, zones)
        for position, rule in (overrides or {}).get(i, {}).items():
            rules[position] = rule
        lines += [f"      - {r}" for r in rules]
    if dataplane_extras:
        lines.append("nat:")
        lines.append("  - {type: masquerade, network: net1}")
        lines.append("  - {type: snat, from: 10.2.0.0/16, to: 192.168.100.11}")
        for i in range(0, n_vms, max(1, nodes) * 100):
            lines.append(f"  - {{type: dnat, host: node1, listen: {{tcp: {10000 + i}}}, to: {{vm: {vm_name(i)}, port: 443}}}}")
    return "\n".join(lines) + "\n"
