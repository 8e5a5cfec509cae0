"""The guest inventory a Proxmox import needs (the .fw files do not say where guests run).

Format (YAML, `inventory.yaml` in the import directory unless `--inventory` names one):

    local_network: 192.168.100.0/24         # optional: the cluster network (see below)
    nodes:                                  # the Proxmox nodes (names as in corosync.conf)
      pve1: {address: [192.168.100.11], uplink: eno1}
    bridges:                                # optional; subnets are inferred otherwise
      vmbr0: {subnets: [10.1.0.0/24, "fd00:1::/64"], gateway: [10.1.0.1]}
    guests:
      100:                                  # vmid, as in 100.fw
        name: web1                          # optional (default vm100)
        node: pve1
        zone: dmz                           # optional (default: the bridge of its first NIC)
        type: qemu                          # optional: qemu (a VM, port tapVMIDiN) or lxc (a container, vethVMIDiN)
        nics:
          net0: {bridge: vmbr0, mac: "BC:24:11:00:01:00", ips: [10.1.0.10, "fd00:1::10"], firewall: true}
      200:
        nics:
          net0: {bridge: vmbr0, ip: 10.1.0.20/24, ip6: "fd00:1::20/64"}   # a container's netN

`firewall` mirrors the `firewall=1` flag of the VM's netN line (default true). A
`mac` is needed for the MAC filter (Proxmox's `macfilter`, on by default). `ips` are
the addresses the guest uses. `ip`/`ip6` are a container's configured addresses (its
netN line's `ip=`/`ip6=`; `dhcp`, `auto` and `manual` mean none): Proxmox adds them to
the NIC's ipfilter set, and they are the NIC's `ips` when `ips` is not given.
`local_network` is Proxmox's: its management IP set always holds it, and a node may
always reach it on the GUI/SSH/VNC/SPICE ports; the `local_network` alias of
cluster.fw, when present, wins (as in Proxmox). Without either the importer writes
neither (closed) and says so.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report import ImportFailure, Where
from ..yamlsrc import LDict, load

MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass
class Nic:
    key: str  # net0
    index: int
    bridge: str
    where: Where
    mac: str | None = None
    ips: list[str] = field(default_factory=list)
    firewall: bool = True
    configured: list[str] = field(default_factory=list)  # a container's ip=/ip6= (its ipfilter entries)


@dataclass
class Guest:
    vmid: int
    node: str
    where: Where
    name: str | None = None
    zone: str | None = None
    nics: list[Nic] = field(default_factory=list)
    kind: str = "qemu"  # qemu (a VM: ports tap<VMID>i<N>) or lxc (a container: veth<VMID>i<N>)

    @property
    def port_prefix(self) -> str:
        return "veth" if self.kind == "lxc" else "tap"

    def nic(self, key: str) -> Nic | None:
        return next((n for n in self.nics if n.key == key), None)


@dataclass
class Node:
    name: str
    address: list[str]
    where: Where
    uplink: str | None = None


@dataclass
class Bridge:
    name: str
    where: Where
    subnets: list[str] = field(default_factory=list)
    gateway: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    shown: str
    local_network: str | None = None
    local_network_where: Where | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    bridges: dict[str, Bridge] = field(default_factory=dict)
    guests: dict[int, Guest] = field(default_factory=dict)


class _Problems:
    def __init__(self, shown: str) -> None:
        self.shown, self.items = shown, []  # type: ignore[var-annotated]

    def add(self, line: int, message: str) -> None:
        self.items.append(f"{self.shown}:{line}: {message}")


def _line(mapping: Any, key: Any) -> int:
    if isinstance(mapping, LDict):
        return mapping.key_lines.get(key, mapping.line)
    return 0


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _ips(values: Any, line: int, what: str, problems: _Problems, *, networks: bool = False) -> list[str]:
    out = []
    for item in _list(values):
        try:
            out.append(str(ipaddress.ip_network(str(item), strict=True) if networks else ipaddress.ip_address(str(item))))
        except ValueError:
            problems.add(line, f"{what}: {item!r} is not {'a CIDR subnet' if networks else 'an IP address'}")
    return out


def _mapping(value: Any, line: int, what: str, problems: _Problems) -> LDict:
    if value is None:
        return LDict()
    if not isinstance(value, dict):
        problems.add(line, f"{what} must be a mapping")
        return LDict()
    return value  # type: ignore[return-value]


def _known(body: LDict, keys: tuple[str, ...], what: str, problems: _Problems) -> None:
    for key in body:
        if key not in keys:
            problems.add(_line(body, key), f"{what}: unknown key {key!r} (expected {', '.join(keys)})")


def _configured(nic: LDict, line: int, what: str, problems: _Problems) -> list[str]:
    """A container's `ip`/`ip6` (address or address/prefix, as in its netN line)."""
    out = []
    for key in ("ip", "ip6"):
        value = nic.get(key)
        if value is None or str(value).lower() in ("dhcp", "auto", "manual"):
            continue
        try:
            interface = ipaddress.ip_interface(str(value))
        except ValueError:
            problems.add(line, f"{what} {key}: {value!r} is not an address (or dhcp, auto, manual)")
            continue
        if interface.version != (4 if key == "ip" else 6):
            problems.add(line, f"{what} {key}: {value!r} is not an IPv{4 if key == 'ip' else 6} address")
            continue
        out.append(str(interface.ip))
    return out


def load_inventory(path: Path, shown: str) -> Inventory:
    data = load(path, shown)
    problems = _Problems(shown)
    inv = Inventory(shown)
    root = _mapping(data, 1, "the inventory", problems)
    _known(root, ("local_network", "nodes", "bridges", "guests"), "inventory", problems)
    if root.get("local_network") is not None:
        found = _ips(root["local_network"], _line(root, "local_network"), "local_network", problems, networks=True)
        if len(found) == 1:
            inv.local_network, inv.local_network_where = found[0], Where(shown, _line(root, "local_network"))
        elif found:
            problems.add(_line(root, "local_network"), "local_network: one CIDR (Proxmox's cluster network), not a list")
    for name, body in _mapping(root.get("nodes"), _line(root, "nodes"), "nodes", problems).items():
        line = _line(root["nodes"], name)
        body = _mapping(body, line, f"node {name}", problems)
        _known(body, ("address", "uplink"), f"node {name}", problems)
        address = _ips(body.get("address"), line, f"node {name} address", problems)
        if not address:
            problems.add(line, f"node {name} needs an address")
        inv.nodes[str(name)] = Node(str(name), address, Where(shown, line), body.get("uplink"))
    for name, body in _mapping(root.get("bridges"), _line(root, "bridges"), "bridges", problems).items():
        line = _line(root["bridges"], name)
        body = _mapping(body, line, f"bridge {name}", problems)
        _known(body, ("subnets", "gateway"), f"bridge {name}", problems)
        inv.bridges[str(name)] = Bridge(
            str(name), Where(shown, line),
            _ips(body.get("subnets"), line, f"bridge {name} subnets", problems, networks=True),
            _ips(body.get("gateway"), line, f"bridge {name} gateway", problems),
        )
    guests = _mapping(root.get("guests"), _line(root, "guests"), "guests", problems)
    for vmid, body in guests.items():
        line = _line(guests, vmid)
        if isinstance(vmid, bool) or not str(vmid).isdigit():
            problems.add(line, f"guest key {vmid!r} is not a vmid (a number such as 100)")
            continue
        body = _mapping(body, line, f"guest {vmid}", problems)
        _known(body, ("name", "node", "zone", "nics", "type"), f"guest {vmid}", problems)
        kind = str(body.get("type", "qemu"))
        if kind not in ("qemu", "lxc"):
            problems.add(_line(body, "type"), f"guest {vmid}: type {kind!r} is not qemu or lxc")
        node = body.get("node")
        if node is None:
            problems.add(line, f"guest {vmid} needs a node")
        elif str(node) not in inv.nodes:
            problems.add(_line(body, "node"), f"guest {vmid}: node {node} is not under nodes")
        guest = Guest(int(vmid), str(node), Where(shown, line), body.get("name"), body.get("zone"), kind=kind)
        nics = _mapping(body.get("nics"), _line(body, "nics"), f"guest {vmid} nics", problems)
        for key, nic in nics.items():
            nline = _line(nics, key)
            found = re.fullmatch(r"net(\d+)", str(key))
            if not found:
                problems.add(nline, f"guest {vmid}: NIC key {key!r} is not netN (as in the VM's config)")
                continue
            nic = _mapping(nic, nline, f"guest {vmid} {key}", problems)
            _known(nic, ("bridge", "mac", "ips", "firewall", "ip", "ip6"), f"guest {vmid} {key}", problems)
            if not nic.get("bridge"):
                problems.add(nline, f"guest {vmid} {key} needs a bridge")
                continue
            mac = nic.get("mac")
            if mac is not None and not MAC.match(str(mac)):
                problems.add(nline, f"guest {vmid} {key}: {mac!r} is not a MAC address")
                mac = None
            firewall = nic.get("firewall", True)
            if not isinstance(firewall, bool):
                firewall = str(firewall) in ("1", "yes", "true")
            configured = _configured(nic, nline, f"guest {vmid} {key}", problems)
            ips = _ips(nic.get("ips"), nline, f"guest {vmid} {key} ips", problems) if "ips" in nic else list(configured)
            guest.nics.append(Nic(str(key), int(found.group(1)), str(nic["bridge"]), Where(shown, nline),
                                  str(mac).lower() if mac else None, ips, firewall, configured))
        guest.nics.sort(key=lambda n: n.index)
        if not guest.nics:
            problems.add(line, f"guest {vmid} needs at least one NIC under nics")
        inv.guests[int(vmid)] = guest
    if problems.items:
        raise ImportFailure(problems.items)
    return inv
