"""Live migration, driven by the controller (docs/migration.md).

The sequence for `VM` from `SOURCE` to `TARGET` (each step waits for its node's answer):

1. validate the post-migration policy (the VM's `host:` set to TARGET) as a whole;
2. prepare: TARGET applies it; the VM's chains are there before the guest is;
3. export on SOURCE, import on TARGET (the pre-copy, while the guest still runs);
4. switch: the hypervisor moves the guest (the lab moves its veth);
5. export/import again (entries created since the pre-copy; existing ones stay);
6. commit the post-migration documents as a revision (kind `migrate`);
7. cleanup on SOURCE: apply them (the VM's chains go) and delete the VM's entries
   (except those shared with a guest staying there) — only now that TARGET confirmed.

A failure before the switch aborts: TARGET goes back to the current documents, the
guest stays on SOURCE with its rules untouched. A failure after the switch keeps the
guest filtered on TARGET (prepared there) and SOURCE keeps its rules until cleanup
succeeds (retried by re-running the migration's completion); nothing is ever removed
before the guest is filtered on the node it runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..policy.documents import Documents, load_documents
from ..policy.edits import ChangeError, Edited, set_host
from ..policy.scope import Scoper


class MigrationError(RuntimeError):
    def __init__(self, message: str, *, step: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.step, self.report = step, report


class Channel(Protocol):
    """How the orchestrator reaches a node's agent: run one step, get its answer."""

    def step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Plan:
    vm: str
    source: str
    target: str
    before: Documents
    after: Edited
    addresses: list[str]  # the VM's own addresses (its conntrack entries carry them)
    keep: list[str]  # addresses of guests staying on the source
    placement: dict[str, str] = field(default_factory=dict)  # VM -> node, before the move
    zone_of: dict[str, str | None] = field(default_factory=dict)  # VM -> its zone

    def node_documents(self, documents: Documents, node: str) -> Documents:
        """What `node` is sent of `before` or `after` (its own documents, policy/scope.py)."""
        moved = documents is not self.before
        placement = {**self.placement, self.vm: self.target} if moved else self.placement
        return Scoper(documents, placement, zone_of=self.zone_of).scoped(node)


def plan(documents: Documents, vm: str, target: str) -> Plan:
    policy = load_documents(documents)
    if vm not in policy.doc.vms:
        raise ChangeError(f"no VM named {vm!r} in the current policy")
    if target not in policy.doc.hosts:
        raise ChangeError(f"no host named {target!r} in the current policy")
    source = policy.doc.vms[vm].host
    edited = set_host(documents, vm, target)
    load_documents(edited.documents)  # the whole post-migration policy must be valid (PolicyError)
    addresses = sorted({ip for nic in policy.doc.vms[vm].nics for ip in nic.ips})
    keep = sorted({ip for other in policy.vms_on(source) if other != vm for nic in policy.doc.vms[other].nics for ip in nic.ips})
    return Plan(vm, source, target, documents, edited, addresses, keep, {name: spec.host for name, spec in policy.doc.vms.items()},
                {name: spec.zone for name, spec in policy.doc.vms.items()})


@dataclass
class Migration:
    plan: Plan
    channel: Channel
    switch: Callable[[], None]  # moves the guest (hypervisor, lab); may be a no-op
    commit: Callable[[Edited], int]  # records the post-migration documents as a revision
    transfer_state: bool = True
    report: dict[str, Any] = field(default_factory=dict)

    def _step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            answer = self.channel.step(node, step, args)
        except Exception as exc:
            raise MigrationError(f"{step} on {node}: {exc}", step=step, report=self.report) from exc
        answer = {k: v for k, v in answer.items() if k != "data"}
        answer["wall_seconds"] = time.monotonic() - started
        self.report.setdefault("steps", []).append({"node": node, "step": step, **answer})
        return answer

    def _transfer(self, label: str) -> None:
        if not self.transfer_state:
            return
        exported = self.channel.step(self.plan.source, "export", {"addresses": self.plan.addresses})
        self.report.setdefault("steps", []).append({"node": self.plan.source, "step": f"export ({label})", "entries": exported.get("entries"), "seconds": exported.get("seconds")})
        self._step(self.plan.target, "import", {"data": exported["data"]})

    def run(self) -> dict[str, Any]:
        p = self.plan
        self.report.update({"vm": p.vm, "from": p.source, "to": p.target, "transfer_state": self.transfer_state})
        started = time.monotonic()
        # before the switch: any failure aborts, the guest stays where it is
        try:
            self._step(p.target, "prepare", {"documents": p.node_documents(p.after.documents, p.target)})
            self._transfer("pre-copy")
        except MigrationError:
            self._abort()
            raise
        except Exception as exc:  # whatever failed, the guest stays where it is
            self._abort()
            raise MigrationError(str(exc), step="pre-copy", report=self.report) from exc
        switched = time.monotonic()
        try:
            self.switch()
        except Exception as exc:
            self._abort()
            raise MigrationError(f"switching the guest failed: {exc}", step="switch", report=self.report) from exc
        self.report["switch_seconds"] = time.monotonic() - switched
        # after the switch: the guest is filtered on the target; complete. A failed
        # post-copy costs only the connections opened since the pre-copy: the move is
        # still recorded (else the next revision would take the guest's rules away).
        try:
            self._transfer("after the switch")
        except Exception as exc:  # noqa: BLE001
            self.report["post_copy_error"] = str(exc)
        self.report["revision"] = self.commit(p.after)
        self._step(p.source, "cleanup", {"documents": p.node_documents(p.after.documents, p.source), "addresses": p.addresses, "keep": p.keep})
        self.report["seconds"] = time.monotonic() - started
        return self.report

    def _abort(self) -> None:
        try:
            self._step(self.plan.target, "abort", {"documents": self.plan.node_documents(self.plan.before, self.plan.target)})
            self.report["aborted"] = True
        except MigrationError as exc:  # the target keeps extra chains for a VM it does not run: harmless
            self.report["abort_error"] = str(exc)
