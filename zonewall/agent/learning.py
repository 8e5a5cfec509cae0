"""Guard learning mode, the agent's half: keep what the kernel learned across re-applies.

A NIC in learning mode (no address of a family, its anti-spoofing filter;
compiler/learning.py) is locked to the first address of the family it uses (or,
`learning: dhcp`, the one its DHCP server acked): the packet path adds it to the
port's size-1 dynamic set `learned4-PORT` / `learned6-PORT` in zonewall's bridge
table. A full re-apply recreates those sets from the compiled ruleset, so before
every compile the agent reads the learned addresses back and passes them to
`compile_node(learned=...)`, which makes them the sets' initial elements. They are
also saved in the state directory (`learned.json`, written atomically) so that a
reboot or a flushed ruleset does not unlock a guest.

What wins, per family: for a learning NIC whose set is in the kernel, the kernel
(an empty set there means "nothing learned yet", e.g. an operator released the lock
with `nft flush set bridge zonewall learned4-PORT`); otherwise what was saved.
Entries of NICs (and families) that no longer learn on this node are dropped.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from ..compiler.learning import learned_set, learning_mode, node_learners
from ..compiler.naming import TABLE
from ..dataplane.backend import Backend
from ..policy.resolve import Policy

LEARNED_FILE = "learned.json"
FORMAT = 1
Learned = dict[tuple[str, int], list[str]]


KEYS = {4: "ipv4", 6: "ipv6"}


def _addresses(elements: Any, family: int) -> list[str]:
    out: list[str] = []
    for element in elements or ():
        if isinstance(element, dict) and "elem" in element:  # {"elem": {"val": .., "expires": ..}}
            element = element["elem"].get("val")
        try:
            address = ipaddress.ip_address(element)
        except (ValueError, TypeError):
            continue
        if address.version == family:
            out.append(str(address))
    return out


def read_kernel(backend: Backend) -> dict[str, list[str]] | None:
    """learned4-*/learned6-* set name -> its addresses, from zonewall's bridge table
    (None: no table)."""
    objects = backend.list_table("bridge", TABLE)
    if objects is None:
        return None
    found: dict[str, list[str]] = {}
    for obj in objects:
        body = obj.get("set")
        name = str(body.get("name", "")) if body is not None else ""
        for family in (4, 6):
            if name.startswith(f"learned{family}-"):
                found[name] = _addresses(body.get("elem"), family)  # type: ignore[union-attr]
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
            out[(str(entry["vm"]), int(entry["nic"]))] = [a for family, key in KEYS.items() for a in _addresses(entry.get(key), family)]
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return {key: value for key, value in out.items() if value}


def save(directory: Path, node: str, learned: Learned) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LEARNED_FILE
    entries = []
    for (vm, nic), addresses in sorted(learned.items()):
        entry: dict[str, Any] = {"vm": vm, "nic": nic}
        for family, key in KEYS.items():
            found = [a for a in addresses if ipaddress.ip_address(a).version == family]
            if found:
                entry[key] = found
        if len(entry) > 2:
            entries.append(entry)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        json.dump({"format": FORMAT, "node": node, "learned": entries}, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def harvest(backend: Backend, directory: Path, node: str, policy: Policy) -> Learned:
    """The addresses to compile `policy` with (see the module docstring); saved as a side effect."""
    learners = node_learners(policy, node)
    saved = load(directory, node)
    kernel = read_kernel(backend) if learners else None
    learned: Learned = {}
    for nic in learners:
        key = (nic.vm, nic.nic_index)
        for family in (4, 6):
            if learning_mode(policy, nic, family) is None:
                continue
            in_kernel = None if kernel is None else kernel.get(learned_set(family, nic.tap))
            addresses = in_kernel if in_kernel is not None else [a for a in saved.get(key, []) if ipaddress.ip_address(a).version == family]
            if addresses:
                learned.setdefault(key, []).append(addresses[0])
    if learned != saved:
        save(directory, node, learned)
    return learned
