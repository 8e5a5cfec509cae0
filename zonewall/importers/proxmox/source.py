"""Find and read the files of a Proxmox VE firewall configuration directory.

Layout (as under /etc/pve): `cluster.fw`; `<vmid>.fw` per guest; `host.fw` (applies
to every node) and/or `nodes/<node>/host.fw` (one node); `inventory.yaml` (see
inventory.py) and `corosync.conf` unless given elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..report import ImportFailure, Report, Where
from . import pvetree
from .corosync import Corosync, read_corosync
from .inventory import Inventory, load_inventory
from .parse import FwFile, parse_file


@dataclass
class Source:
    inventory: Inventory
    cluster: FwFile | None = None
    hosts: dict[str, FwFile] = field(default_factory=dict)  # node -> host.fw ("*": every node)
    guests: dict[int, FwFile] = field(default_factory=dict)
    corosync: Corosync | None = None


def read_source(directory: Path, inventory_path: Path | None, report: Report, corosync_path: Path | None = None,
                local_network: str | None = None) -> Source:
    """`local_network` (--local-network): Proxmox's cluster network, which each node derives
    from its own address's route and no file under /etc/pve holds; it wins over the inventory's."""
    if not directory.is_dir():
        raise ImportFailure([f"{directory}: not a directory"])
    source = read_pve_tree(directory, inventory_path, report, corosync_path) if pvetree.is_pve_tree(directory) \
        else read_flat(directory, inventory_path, report, corosync_path)
    if local_network is not None:
        try:
            source.inventory.local_network = str(ipaddress.ip_network(local_network, strict=True))
        except ValueError:
            raise ImportFailure([f"--local-network {local_network}: not a CIDR subnet (e.g. 192.168.100.0/24)"]) from None
        source.inventory.local_network_where = Where("--local-network")
    return source


def read_flat(directory: Path, inventory_path: Path | None, report: Report, corosync_path: Path | None) -> Source:
    """The layout of an export: the .fw files at the top, inventory.yaml beside them."""
    inv_path = inventory_path or directory / "inventory.yaml"
    if not inv_path.exists():
        raise ImportFailure([f"{inv_path}: no inventory (which node runs each guest, and its NICs); see docs/migrating.md"])
    shown_inv = inv_path.name if inventory_path is None else str(inventory_path)
    source = Source(load_inventory(inv_path, shown_inv))
    corosync = corosync_path or directory / "corosync.conf"
    if corosync_path is not None and not corosync.is_file():
        raise ImportFailure([f"{corosync}: no such file (--corosync)"])
    if corosync.is_file():
        source.corosync = read_corosync(corosync, corosync.name if corosync_path is None else str(corosync), report)
    files = sorted(directory.rglob("*.fw"))
    if not files:
        raise ImportFailure([f"{directory}: no Proxmox VE firewall files (cluster.fw, host.fw, nodes/NODE/host.fw, VMID.fw; "
                             "or a tree laid out as /etc/pve); nothing to translate"])
    for path in files:
        rel = path.relative_to(directory).as_posix()
        if "/" in rel and not re.fullmatch(r"nodes/[^/]+/host\.fw", rel):
            raise ImportFailure([f"{rel}: a .fw file in a directory this layout does not have (cluster.fw, host.fw, nodes/NODE/host.fw, "
                                 "VMID.fw at the top; or a tree laid out as /etc/pve: firewall/, nodes/NODE/{qemu-server,lxc}/); nothing was written"])
        if rel == "cluster.fw":
            source.cluster = parse_file(path, rel, "cluster", report)
        elif rel == "host.fw":
            source.hosts["*"] = parse_file(path, rel, "host", report)
        elif re.fullmatch(r"nodes/[^/]+/host\.fw", rel):
            source.hosts[rel.split("/")[1]] = parse_file(path, rel, "host", report)
        elif re.fullmatch(r"\d+\.fw", rel):
            source.guests[int(rel[:-3])] = parse_file(path, rel, "vm", report)
        else:
            report.skipped(Where(rel), "not a Proxmox firewall file this importer knows (cluster.fw, host.fw, nodes/NODE/host.fw, VMID.fw)")
    return source


def read_pve_tree(directory: Path, inventory_path: Path | None, report: Report, corosync_path: Path | None) -> Source:
    """A tree laid out as /etc/pve (pvetree.py): the inventory comes from the guests'
    configs and corosync.conf; an inventory file would say it a second time."""
    if inventory_path is not None:
        raise ImportFailure([f"--inventory {inventory_path}: {directory} is laid out as /etc/pve, whose guest configs are the inventory"])
    corosync_file = corosync_path or directory / "corosync.conf"
    if corosync_path is not None and not corosync_file.is_file():
        raise ImportFailure([f"{corosync_file}: no such file (--corosync)"])
    corosync = read_corosync(corosync_file, "corosync.conf" if corosync_path is None else str(corosync_file), report) if corosync_file.is_file() else None
    files = pvetree.firewall_files(directory)
    source = Source(pvetree.read_inventory(directory, corosync, report), corosync=corosync)
    for rel, path in files.items():
        shown = path.relative_to(directory).as_posix()
        if rel == "cluster.fw":
            source.cluster = parse_file(path, shown, "cluster", report)
        elif rel.startswith("nodes/"):
            source.hosts[rel.split("/")[1]] = parse_file(path, shown, "host", report)
        else:
            source.guests[int(rel[:-3])] = parse_file(path, shown, "vm", report)
    if not source.inventory.guests and source.cluster is None:
        raise ImportFailure([f"{directory}: laid out as /etc/pve but holds no firewall/cluster.fw and no guest config; nothing to translate"])
    return source
