"""Guard learning mode, the agent's half: keep what the kernel learned across re-applies.

A NIC in learning mode (no `ips`, an IPv4 anti-spoofing filter; compiler/guards.py)
is locked to the first IPv4 address it uses: the packet path adds it to the port's
size-1 dynamic set `learned4-PORT` in zonewall's bridge table. A full re-apply
recreates that set from the compiled ruleset, so before every compile the agent
reads the learned addresses back and passes them to `compile_node(learned=...)`,
which makes them the set's initial elements. They are also saved in the state
directory (`learned.json`, written atomically) so that a reboot or a flushed
ruleset does not unlock a guest.

What wins: for a learning NIC whose set is in the kernel, the kernel (an empty set
there means "nothing learned yet", e.g. an operator released the lock with
`nft flush set bridge zonewall learned4-PORT`); otherwise what was saved. Entries
of NICs that are no longer learning on this node are dropped.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from ..compiler.guards import is_learning
from ..compiler.naming import TABLE, port_object
from ..compiler.nics import local_nics
from ..dataplane.backend import Backend
from ..policy.resolve import Policy

LEARNED_FILE = "learned.json"
FORMAT = 1
Learned = dict[tuple[str, int], list[str]]


def set_name(tap: str) -> str:
    return port_object("learned4", tap)


def _addresses(elements: Any) -> list[str]:
    out: list[str] = []
    for element in elements or ():
        if isinstance(element, dict) and "elem" in element:  # {"elem": {"val": .., "expires": ..}}
            element = element["elem"].get("val")
        try:
            out.append(str(ipaddress.IPv4Address(element)))
        except (ipaddress.AddressValueError, ValueError, TypeError):
            continue
    return out


def read_kernel(backend: Backend) -> dict[str, list[str]] | None:
    """learned4-* set name -> its addresses, from zonewall's bridge table (None: no table)."""
    objects = backend.list_table("bridge", TABLE)
    if objects is None:
        return None
    found: dict[str, list[str]] = {}
    for obj in objects:
        body = obj.get("set")
        if body is not None and str(body.get("name", "")).startswith("learned4-"):
            found[body["name"]] = _addresses(body.get("elem"))
    return found


def load(directory: Path, node: str) -> Learned:
    try:
        document = json.loads((directory / LEARNED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("node") != node:
        return {}
    out: Learned = {}
    for entry in document.get("learned", []):
        try:
            out[(str(entry["vm"]), int(entry["nic"]))] = _addresses(entry["ipv4"])
        except (KeyError, TypeError, ValueError):
            continue
    return {key: value for key, value in out.items() if value}


def save(directory: Path, node: str, learned: Learned) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LEARNED_FILE
    entries = [{"vm": vm, "nic": nic, "ipv4": addresses} for (vm, nic), addresses in sorted(learned.items()) if addresses]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        json.dump({"format": FORMAT, "node": node, "learned": entries}, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def harvest(backend: Backend, directory: Path, node: str, policy: Policy) -> Learned:
    """The addresses to compile `policy` with (see the module docstring); saved as a side effect."""
    learners = [n for n in local_nics(policy, node) if is_learning(policy, n)] if node in policy.doc.hosts else []
    saved = load(directory, node)
    kernel = read_kernel(backend) if learners else None
    learned: Learned = {}
    for nic in learners:
        key = (nic.vm, nic.nic_index)
        in_kernel = None if kernel is None else kernel.get(set_name(nic.tap))
        addresses = in_kernel if in_kernel is not None else saved.get(key, [])
        if addresses:
            learned[key] = addresses[:1]
    if learned != saved:
        save(directory, node, learned)
    return learned
