"""The node's side of a live migration (docs/migration.md): the steps an agent runs
when the controller (or the lab) drives a VM from one node to another.

- prepare (target): compile and apply the post-migration documents, in which the VM
  is on this node: its chains wait for the guest before it arrives (its tap does not
  exist yet; the dispatch maps name the tap, so no packet reaches them until it does);
- export (source): the VM's conntrack entries, by its addresses (NAT'd entries
  included: either tuple may carry the address), packed and compressed;
- import (target): create them (entries that already exist are left alone, so a
  second, post-switch pass only adds what appeared meanwhile);
- cleanup (source, after the target confirmed): apply the post-migration documents
  (the VM's chains go) and delete its entries, except those of connections with a
  guest staying on this node (they still cross this node's bridge).

Each step is one call with a JSON-able answer; a step that fails leaves the node as
it was (an apply is atomic, an import adds entries only).
"""

from __future__ import annotations

import base64
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..dataplane.conntrack import ConntrackSocket, Export

Apply = Callable[[dict[str, str]], Any]  # documents -> applies them on this node


def pack_export(export: Export) -> str:
    return base64.b64encode(zlib.compress(export.pack(), 1)).decode()


def unpack_export(text: str) -> Export:
    return Export(zlib.decompress(base64.b64decode(text)))


@dataclass
class NodeSteps:
    """Migration steps on one node: `apply` puts documents into effect (the agent's
    enforcer, or the lab's direct apply), conntrack work happens in `netns`."""

    apply: Apply
    netns: str | None = None

    def prepare(self, documents: dict[str, str]) -> dict[str, Any]:
        started = time.monotonic()
        self.apply(documents)
        return {"seconds": time.monotonic() - started}

    def export(self, addresses: list[str]) -> dict[str, Any]:
        started = time.monotonic()
        with ConntrackSocket(self.netns) as sock:
            export = sock.export_raw(addresses)
        return {"entries": len(export), "scanned": export.scanned, "data": pack_export(export), "seconds": time.monotonic() - started}

    def import_(self, data: str) -> dict[str, Any]:
        started = time.monotonic()
        with ConntrackSocket(self.netns) as sock:
            result = sock.create_raw(unpack_export(data))
        return {"created": result.created, "existed": result.existed, "failed": result.failed, "errors": result.errors,
                "seconds": time.monotonic() - started}

    def cleanup(self, documents: dict[str, str], addresses: list[str], keep: list[str]) -> dict[str, Any]:
        started = time.monotonic()
        self.apply(documents)
        kept = set(keep)
        with ConntrackSocket(self.netns) as sock:
            doomed = [e for e in sock.export(addresses) if kept.isdisjoint(e.addresses())]
            result = sock.delete(doomed)
        return {"deleted": result.created, "failed": result.failed, "seconds": time.monotonic() - started}

    def run(self, step: str, args: dict[str, Any]) -> dict[str, Any]:
        """Dispatch one step by name (what the controller sends)."""
        if step == "prepare":
            return self.prepare(args["documents"])
        if step == "export":
            return self.export(args["addresses"])
        if step == "import":
            return self.import_(args["data"])
        if step in ("cleanup", "abort"):  # abort: the target goes back to the current documents
            return self.cleanup(args["documents"], args.get("addresses", []), args.get("keep", [])) if step == "cleanup" else self.prepare(args["documents"])
        raise ValueError(f"unknown migration step {step!r}")
