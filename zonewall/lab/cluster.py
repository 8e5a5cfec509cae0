"""A virtual cluster built from a policy: one namespace per node, per VM, and `outside`.

Topology (docs/lab.md draws it):
- `outside` plays the physical LAN and the internet: it routes between the guest
  networks (holding each network's gateway on a bridge per network) and towards the
  nodes' addresses, and takes any address a probe asks for (`outside:ADDR`).
- each node has one bridge per network it hosts guests of (named as the policy's
  `bridge`), a veth "trunk" from that bridge to the outside's bridge of the network
  (so guests of one network on different nodes share L2), and an uplink carrying
  the node's own addresses. br_netfilter is on, as on a Proxmox node. A network in
  mode nat, routed or isolated is the node's own, as in libvirt: its gateway is on
  the node's bridge, no trunk leads outside, the node forwards (for routed, the
  outside routes the subnets to the node's uplink address).
- each VM is a namespace whose NICs are veth pairs: `ethN` inside with the policy's
  MAC and addresses, and the node-side end named as the compiler expects the tap.
State lives in /run/zonewall/lab/NAME.json so separate CLI calls share the lab.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..compiler.modes import L3_MODES
from ..compiler.naming import tap_name
from ..compiler.node import compile_node
from ..compiler.schedule import local_timezone
from ..dataplane.apply import ApplyResult, apply_ruleset
from ..dataplane.backend import LibNftBackend
from ..policy.loader import load_policy
from ..policy.resolve import Policy
from . import netns

STATE_DIR = Path(os.environ.get("ZONEWALL_LAB_DIR", "/run/zonewall/lab"))
UPLINK_PEER_V4 = "169.254.0.1"  # the outside's end of every node uplink
UPLINK_PEER_V6 = "fe80::1"


class LabError(RuntimeError):
    pass


@dataclass
class LabState:
    name: str
    policy: str
    outside: str
    nodes: dict[str, str] = field(default_factory=dict)  # node -> namespace
    vms: dict[str, str] = field(default_factory=dict)  # vm -> namespace
    gateways: dict[str, list[str]] = field(default_factory=dict)  # network -> outside addresses
    outside_addresses: list[str] = field(default_factory=list)  # added for probes

    @property
    def prefix(self) -> str:
        return lab_prefix(self.name)

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = STATE_DIR / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(path)

    @staticmethod
    def load(name: str) -> LabState:
        path = STATE_DIR / f"{name}.json"
        if not path.exists():
            raise LabError(f"no lab named {name!r} is up (zonewall lab up POLICY --name {name})")
        return LabState(**json.loads(path.read_text()))


def lab_prefix(name: str) -> str:
    return f"zwl-{name}-"


def _check_lab_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,15}", name):
        raise LabError(f"lab name {name!r}: use up to 16 lowercase letters, digits, - and _")


def choose_gateways(policy: Policy) -> dict[str, list[str]]:
    """The router address of each network in the outside: `gateway`, else the
    first address of each subnet that no guest uses."""
    used = {ip for vm in policy.doc.vms.values() for nic in vm.nics for ip in nic.ips}
    out: dict[str, list[str]] = {}
    for name, network in sorted(policy.doc.networks.items()):
        chosen: list[str] = []
        for subnet_text in network.subnets:
            subnet = ipaddress.ip_network(subnet_text)
            given = [g for g in network.gateway if ipaddress.ip_address(g) in subnet]
            if given:
                chosen.append(f"{given[0]}/{subnet.prefixlen}")
                continue
            for host in subnet.hosts():
                if str(host) not in used:
                    chosen.append(f"{host}/{subnet.prefixlen}")
                    break
        out[name] = chosen
    return out


def lab_up(policy_path: str, name: str = "zw", *, apply: bool = True, progress: Callable[[int, int], None] | None = None,
           guests: bool = True) -> LabState:
    """Build the cluster and (by default) apply each node's compiled ruleset.
    `progress(done, total)`: after each guest and each node's apply.
    `guests=False`: nodes and the outside only; the VMs are real ones (lab/guests.py)."""
    _check_lab_name(name)
    policy = load_policy(policy_path)
    prefix = lab_prefix(name)
    if netns.list_netns(prefix) or (STATE_DIR / f"{name}.json").exists():
        raise LabError(f"a lab named {name!r} already exists: zonewall lab down --name {name}")
    state = LabState(name=name, policy=str(Path(policy_path).resolve()), outside=prefix + "out")
    try:
        steps = len(policy.doc.vms) + (len(policy.doc.hosts) if apply else 0)
        tick = (lambda done: progress(done, steps)) if progress is not None else None
        _build(policy, state, tick, guests)
        state.save()
        if apply:
            apply_policy(state, policy, (lambda done: tick(len(policy.doc.vms) + done)) if tick else None)
    except BaseException:
        lab_down(name)
        raise
    return state


def _build(policy: Policy, state: LabState, tick: Callable[[int], None] | None = None, guests: bool = True) -> None:
    # every guest may resolve every other and both outside ends (a matrix does): the
    # shared neighbour tables must hold them (netns.ensure_neighbour_capacity)
    endpoints = len(policy.doc.vms) + len(policy.doc.hosts) + 4
    netns.ensure_neighbour_capacity(2 * endpoints * endpoints)
    outside = state.outside
    netns.create_netns(outside)
    netns.set_sysctls(
        outside,
        {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0},
    )
    networks = sorted(policy.doc.networks)
    state.gateways = choose_gateways(policy)
    outside_cmds: list[str] = []
    for k, network in enumerate(networks):
        bridge = f"br.{k}"
        netns.add_bridge(outside, bridge)
        if policy.doc.networks[network].mode not in L3_MODES:  # else the node is the router
            for cidr in state.gateways[network]:
                netns.add_address(outside, bridge, cidr)
    for i, node in enumerate(sorted(policy.doc.hosts)):
        host = policy.doc.hosts[node]
        ns = f"{state.prefix}n-{node}"
        state.nodes[node] = ns
        netns.create_netns(ns)
        uplink = host.uplink or "eth0"
        peer = f"n{i}.up"
        netns.add_veth(ns, uplink, outside, peer)
        node_cmds = [f"route add {UPLINK_PEER_V4} dev {uplink} scope link"]
        outside_cmds.append(f"addr add {UPLINK_PEER_V4}/32 dev {peer}")
        outside_cmds.append(f"addr add {UPLINK_PEER_V6}/64 dev {peer} nodad")
        for address in host.address:
            v6 = ":" in address
            node_cmds.append(f"addr add {address}/{128 if v6 else 32} dev {uplink}" + (" nodad" if v6 else ""))
            outside_cmds.append(f"route add {address}/{128 if v6 else 32} dev {peer}")
        node_cmds.append(f"route add default via {UPLINK_PEER_V4} dev {uplink} onlink")
        node_cmds.append(f"route add default via {UPLINK_PEER_V6} dev {uplink}")
        hosted = sorted({nic.network for vm in policy.vms_on(node) for nic in policy.doc.vms[vm].nics})
        for network in hosted:
            k = networks.index(network)
            bridge = policy.doc.networks[network].bridge
            netns.add_bridge(ns, bridge)
            if policy.doc.networks[network].mode in L3_MODES:
                # libvirt's nat/routed/isolated networks: the gateway is on the node's
                # bridge, nothing bridges them to the outside
                for cidr in state.gateways[network]:
                    node_cmds.append(f"addr add {cidr} dev {bridge}" + (" nodad" if ":" in cidr else ""))
                if policy.doc.networks[network].mode == "routed":
                    via = {4: next((a for a in host.address if ":" not in a), None), 6: next((a for a in host.address if ":" in a), None)}
                    for subnet in policy.doc.networks[network].subnets:
                        gateway = via[ipaddress.ip_network(subnet).version]
                        if gateway is not None:
                            outside_cmds.append(f"route replace {subnet} via {gateway} dev {peer}")
                continue
            trunk = f"zw.t{k}"
            netns.add_veth(ns, trunk, outside, f"n{i}.t{k}")
            node_cmds.append(f"link set dev {trunk} master {bridge}")
            outside_cmds.append(f"link set dev n{i}.t{k} master br.{k}")
        netns.ip_batch(node_cmds, ns=ns)
        sysctls: dict[str, str | int] = {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0}
        # a bridged network gives the node no L3 presence on it (no link-local either)
        sysctls.update({f"net.ipv6.conf.{policy.doc.networks[n].bridge}.disable_ipv6": 1 for n in hosted if policy.doc.networks[n].mode not in L3_MODES})
        if any(policy.doc.networks[n].mode in L3_MODES for n in hosted):
            sysctls.update({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        netns.set_sysctls(ns, sysctls)
        if hosted:
            netns.enable_bridge_netfilter(ns)
    netns.ip_batch(outside_cmds, ns=outside)
    for done, vm_name in enumerate(sorted(policy.doc.vms) if guests else [], 1):
        _build_vm(policy, state, vm_name)
        if tick is not None:
            tick(done)


def _build_vm(policy: Policy, state: LabState, vm_name: str) -> None:
    vm = policy.doc.vms[vm_name]
    ns = f"{state.prefix}v-{vm_name}"
    node_ns = state.nodes[vm.host]
    state.vms[vm_name] = ns
    netns.create_netns(ns)
    netns.set_sysctls(ns, {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2, "net.ipv4.conf.all.rp_filter": 0})
    commands: list[str] = []
    routes: list[list[str]] = []  # after the links are up (a route needs its device up)
    default_set = {4: False, 6: False}
    for n, nic in enumerate(vm.nics):
        tap = tap_name(vm_name, n, nic)
        inside = f"eth{n}"
        netns.add_veth(ns, inside, node_ns, tap, mac_a=nic.mac, up=False)
        netns.ip("link", "set", "dev", tap, "master", policy.doc.networks[nic.network].bridge, "up", ns=node_ns)
        network = policy.doc.networks[nic.network]
        gateways = [] if network.mode == "isolated" else [ipaddress.ip_interface(g).ip for g in state.gateways.get(nic.network, [])]
        table = 100 + n
        for ip in nic.ips:
            address = ipaddress.ip_address(ip)
            subnet = next((s for s in network.subnets if address in ipaddress.ip_network(s)), None)
            length = ipaddress.ip_network(subnet).prefixlen if subnet else address.max_prefixlen
            commands.append(f"addr add {ip}/{length} dev {inside}" + (" nodad" if address.version == 6 else ""))
            # A multi-homed guest answers from the NIC that owns the address (source
            # routing), as a well-configured VM does; otherwise replies would leave
            # through another NIC with a foreign source and anti-spoofing drops them.
            if len(vm.nics) > 1:
                family = f"-{address.version}"
                routes.append([family, "rule", "add", "from", ip, "lookup", str(table)])
                if subnet:  # replace: a NIC with two addresses in one subnet needs the route once
                    routes.append([family, "route", "replace", subnet, "dev", inside, "table", str(table)])
                gateway = next((g for g in gateways if g.version == address.version), None)
                if gateway is not None:
                    routes.append([family, "route", "replace", "default", "via", str(gateway), "dev", inside, "table", str(table)])
        commands.append(f"link set dev {inside} up")
        for gateway in gateways:
            has_own = any(ipaddress.ip_address(i).version == gateway.version for i in nic.ips)
            if has_own and not default_set[gateway.version]:
                routes.append([f"-{gateway.version}", "route", "add", "default", "via", str(gateway), "dev", inside])
                default_set[gateway.version] = True
    netns.ip_batch(commands, ns=ns)
    for route in routes:  # `ip -batch` keeps the first line's family, so one by one
        netns.ip(*route, ns=ns)


def apply_policy(state: LabState, policy: Policy | None = None, tick: Callable[[int], None] | None = None) -> dict[str, ApplyResult]:
    """Compile and apply each node's ruleset inside its namespace."""
    policy = policy or load_policy(state.policy)
    results: dict[str, ApplyResult] = {}
    for done, (node, ns) in enumerate(sorted(state.nodes.items()), 1):
        with LibNftBackend(netns=ns) as backend:
            results[node] = apply_ruleset(backend, compile_node(policy, node, timezone=local_timezone()))
        if tick is not None:
            tick(done)
    return results


def lab_down(name: str = "zw") -> list[str]:
    """Remove every namespace of the lab (also after a crash) and its state file."""
    _check_lab_name(name)
    removed = netns.delete_all(lab_prefix(name))
    (STATE_DIR / f"{name}.json").unlink(missing_ok=True)
    return removed


def ensure_outside_address(state: LabState, address: str) -> None:
    """Give the outside namespace `address` (for probes from outside:ADDR)."""
    if address in state.outside_addresses:
        return
    ip = ipaddress.ip_address(address)
    netns.ip_batch([f"addr add {ip}/{ip.max_prefixlen} dev lo" + (" nodad" if ip.version == 6 else "")], ns=state.outside, force=True)
    state.outside_addresses.append(address)
    state.save()
