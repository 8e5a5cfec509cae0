"""Read a real /etc/pve tree: the firewall files where Proxmox keeps them, and the
inventory from the guests' own configs (no inventory.yaml to write by hand).

Layout (Proxmox VE's cluster file system, pmxcfs):

    corosync.conf                        the nodes and their cluster links
    .members                             optional: JSON, each node's address
    firewall/cluster.fw                  datacenter rules, groups, IP sets, aliases
    firewall/<vmid>.fw                   a guest's rules and options
    nodes/<node>/host.fw                 a node's rules and options
    nodes/<node>/qemu-server/<vmid>.conf a VM: name, netN (model=MAC, bridge, firewall), ipconfigN
    nodes/<node>/lxc/<vmid>.conf         a container: hostname, netN (hwaddr, bridge, ip, ip6, firewall)

The symbolic links pmxcfs adds (`local`, `qemu-server`, `lxc`, `openvz`) point into
`nodes/` and are not read twice. A guest runs on the node whose directory holds its
config; its NICs come from its netN lines, a VM's addresses from cloud-init's
ipconfigN and a container's from ip=/ip6= (dhcp/auto/manual: none). Sections after
the first `[...]` line (snapshots, pending changes) are not the running config.

Anything in the tree this reader does not know how to read is refused, not skipped:
a .fw file outside those places, a guest config it cannot parse, a guest with no NIC
line, a node without an address. What was found is a note per guest in the import
report (its node, type, NICs with bridge, MAC, addresses and firewall flag).
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from ..report import ImportFailure, Report, Where
from .corosync import Corosync
from .inventory import MAC, Bridge, Guest, Inventory, Nic, Node

GUEST_KINDS = ("qemu-server", "lxc")
NET_KEY = re.compile(r"^net(\d+)$")
IPCONFIG_KEY = re.compile(r"^ipconfig(\d+)$")
QEMU_MODELS = {"virtio", "e1000", "e1000e", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "i82551", "i82557b", "i82559er", "ne2k_isa",
               "ne2k_pci", "pcnet", "rtl8139", "vmxnet3"}


def is_pve_tree(directory: Path) -> bool:
    """True for a directory laid out as /etc/pve (firewall/ or nodes/NODE/{qemu-server,lxc})."""
    if (directory / "firewall").is_dir():
        return True
    nodes = directory / "nodes"
    return nodes.is_dir() and any((node / kind).is_dir() for node in nodes.iterdir() for kind in GUEST_KINDS)


def firewall_files(directory: Path) -> dict[str, Path]:
    """rel path as the translator knows it ("cluster.fw", "100.fw", "nodes/N/host.fw") -> file.

    Every .fw file of the tree must be one of those; anything else is refused."""
    found: dict[str, Path] = {}
    unknown: list[str] = []
    for path in sorted(directory.rglob("*.fw")):
        rel = path.relative_to(directory).as_posix()
        if rel.split("/")[0] in ("local", "qemu-server", "lxc", "openvz"):
            continue  # pmxcfs's links into nodes/
        if rel == "firewall/cluster.fw":
            found["cluster.fw"] = path
        elif re.fullmatch(r"firewall/\d+\.fw", rel):
            found[rel.removeprefix("firewall/")] = path
        elif re.fullmatch(r"nodes/[^/]+/host\.fw", rel):
            found[rel] = path
        else:
            unknown.append(rel)
    if unknown:
        raise ImportFailure([f"{rel}: a .fw file where Proxmox VE keeps none (firewall/cluster.fw, firewall/VMID.fw, nodes/NODE/host.fw); "
                             "refusing to translate a tree laid out differently" for rel in unknown])
    return found


def _config_lines(path: Path, shown: str) -> list[tuple[int, str, str]]:
    """(line, key, value) of a guest config's running section."""
    out: list[tuple[int, str, str]] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            break  # a snapshot or pending section: not what runs
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", key.strip()):
            problems.append(f"{shown}:{number}: not a `key: value` line of a Proxmox guest config")
            continue
        out.append((number, key.strip(), value.strip()))
    if problems:
        raise ImportFailure(problems)
    return out


def _options(value: str) -> dict[str, str]:
    """`virtio=AA:..,bridge=vmbr0,firewall=1` -> {"virtio": "AA:..", "bridge": ..., ...}."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, _, val = item.partition("=")
        out[key.strip()] = val.strip()
    return out


def _interface(value: str | None, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if value is None or value.lower() in ("dhcp", "auto", "manual", ""):
        return None
    interface = ipaddress.ip_interface(value)
    if interface.version != version:
        raise ValueError(f"{value!r} is not an IPv{version} address")
    return interface


def _address(value: str | None, version: int) -> str | None:
    interface = _interface(value, version)
    return str(interface.ip) if interface is not None else None


def note_bridge(bridges: dict[str, Bridge], name: str, where: Where, options: dict[str, str]) -> None:
    """A guest's configured address (ip=A/P, ip6=) and gateway (gw=, gw6=) say its bridge's subnet."""
    bridge = bridges.setdefault(name, Bridge(name, where))
    for key, gateway, version in (("ip", "gw", 4), ("ip6", "gw6", 6)):
        try:
            interface = _interface(options.get(key), version)
        except ValueError:
            continue
        if interface is not None and interface.network.prefixlen < interface.max_prefixlen and str(interface.network) not in bridge.subnets:
            bridge.subnets.append(str(interface.network))
        if options.get(gateway) and options[gateway] not in bridge.gateway:
            bridge.gateway.append(options[gateway])


def read_guest(path: Path, shown: str, node: str, kind: str, problems: list[str], bridges: dict[str, Bridge]) -> Guest | None:
    vmid = int(path.stem)
    lines = _config_lines(path, shown)
    values = {key: (value, number) for number, key, value in lines}
    name_key = "hostname" if kind == "lxc" else "name"
    guest = Guest(vmid, node, Where(shown, 1), values[name_key][0] if name_key in values else None, None, kind=kind)
    addresses: dict[int, list[str]] = {}
    ipconfig: dict[int, dict[str, str]] = {}
    for number, key, value in lines:
        found = IPCONFIG_KEY.match(key)
        if found and kind == "qemu":
            options = ipconfig[int(found.group(1))] = _options(value)
            try:
                addresses[int(found.group(1))] = [a for a in (_address(options.get("ip"), 4), _address(options.get("ip6"), 6)) if a]
            except ValueError as exc:
                problems.append(f"{shown}:{number}: {key}: {exc}")
    for number, key, value in lines:
        found = NET_KEY.match(key)
        if not found:
            continue
        index, options = int(found.group(1)), _options(value)
        where = Where(shown, number)
        bridge = options.get("bridge")
        if not bridge:
            problems.append(f"{where}: {key} has no bridge (zonewall filters bridged NICs)")
            continue
        if kind == "lxc":
            mac = options.get("hwaddr")
        else:
            mac = options.get("macaddr") or next((v for k, v in options.items() if k in QEMU_MODELS and v), None)
            if not any(k in QEMU_MODELS for k in options) and "model" not in options:
                problems.append(f"{where}: {key}: no NIC model (virtio=MAC, e1000=MAC, ...)")
                continue
        if mac is not None and not MAC.match(mac):
            problems.append(f"{where}: {key}: {mac!r} is not a MAC address")
            continue
        configured: list[str] = []
        if kind == "lxc":
            try:
                configured = [a for a in (_address(options.get("ip"), 4), _address(options.get("ip6"), 6)) if a]
            except ValueError as exc:
                problems.append(f"{where}: {key}: {exc}")
                continue
        ips = configured if kind == "lxc" else addresses.get(index, [])
        firewall = options.get("firewall", "0") == "1"  # Proxmox's default for a NIC line without it: off
        note_bridge(bridges, bridge, where, options if kind == "lxc" else ipconfig.get(index, {}))
        guest.nics.append(Nic(key, index, bridge, where, mac.lower() if mac else None, ips, firewall, configured))
    if not guest.nics:
        problems.append(f"{shown}: guest {vmid} has no netN line (nothing to filter)")
        return None
    guest.nics.sort(key=lambda n: n.index)
    return guest


def _members(directory: Path) -> dict[str, str]:
    path = directory / ".members"
    if not path.is_file():
        return {}
    try:
        data: Any = json.loads(path.read_text())
        return {str(name): str(body["ip"]) for name, body in (data.get("nodelist") or {}).items() if body.get("ip")}
    except (ValueError, AttributeError, KeyError, TypeError):
        raise ImportFailure([".members: not the JSON pmxcfs writes (nodelist: {NODE: {ip: ...}})"]) from None


def read_inventory(directory: Path, corosync: Corosync | None, report: Report) -> Inventory:
    """Nodes (corosync.conf's nodelist, .members), guests (nodes/*/qemu-server, lxc)."""
    inventory = Inventory("(from the /etc/pve tree)")
    problems: list[str] = []
    members = _members(directory)
    names = sorted(set(corosync.nodes if corosync else ()) | set(members) |
                   {p.name for p in (directory / "nodes").iterdir() if p.is_dir()} if (directory / "nodes").is_dir() else set(members))
    for name in names:
        addresses: list[str] = []
        if corosync is not None and name in corosync.nodes:
            addresses += [a for a in corosync.nodes[name].rings.values() if a not in addresses]
        if name in members and members[name] not in addresses:
            addresses.append(members[name])
        valid = []
        for address in addresses:
            try:
                valid.append(str(ipaddress.ip_address(address)))
            except ValueError:
                report.skipped(Where("corosync.conf"), f"node {name}: ring address {address!r} is a host name, not an address; not used")
        if not valid:
            problems.append(f"nodes/{name}: no address for node {name} (corosync.conf's nodelist or .members)")
            continue
        inventory.nodes[name] = Node(name, valid, Where("corosync.conf" if corosync and name in corosync.nodes else ".members"))
    for kind in GUEST_KINDS:
        for path in sorted((directory / "nodes").glob(f"*/{kind}/*.conf")) if (directory / "nodes").is_dir() else []:
            node = path.parent.parent.name
            shown = path.relative_to(directory).as_posix()
            if not path.stem.isdigit():
                problems.append(f"{shown}: not a guest config (VMID.conf)")
                continue
            if int(path.stem) in inventory.guests:
                problems.append(f"{shown}: guest {path.stem} is configured on two nodes ({inventory.guests[int(path.stem)].node} and {node})")
                continue
            if node not in inventory.nodes:
                problems.append(f"{shown}: node {node} is not in corosync.conf or .members")
                continue
            guest = read_guest(path, shown, node, "lxc" if kind == "lxc" else "qemu", problems, inventory.bridges)
            if guest is not None:
                inventory.guests[guest.vmid] = guest
                nics = "; ".join(f"{n.key} on {n.bridge} mac {n.mac or '-'} ips {','.join(n.ips) or '-'} firewall={int(n.firewall)}" for n in guest.nics)
                report.note(guest.where, f"guest {guest.vmid} ({guest.name or 'no name'}, {guest.kind}) on {node}: {nics}")
    for name in [name for name, bridge in inventory.bridges.items() if not bridge.subnets]:
        del inventory.bridges[name]  # nothing said: the translator infers it from the guests' addresses
    if problems:
        raise ImportFailure(problems)
    return inventory
