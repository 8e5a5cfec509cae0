"""Find and read the files of a Proxmox VE firewall configuration directory.

Layout (as under /etc/pve): `cluster.fw`; `<vmid>.fw` per guest; `host.fw` (applies
to every node) and/or `nodes/<node>/host.fw` (one node); `inventory.yaml` (see
inventory.py) and `corosync.conf` unless given elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..report import ImportFailure, Report, Where
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


def read_source(directory: Path, inventory_path: Path | None, report: Report, corosync_path: Path | None = None) -> Source:
    if not directory.is_dir():
        raise ImportFailure([f"{directory}: not a directory"])
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
    for path in sorted(directory.rglob("*.fw")):
        rel = path.relative_to(directory).as_posix()
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
