"""The agent's part in live migrations (docs/migration.md).

Two ways in:

* **the controller's steps** (`StepWorker`, a thread): long-poll
  `GET /nodes/{node}/migration-steps?wait=S`, run each step with
  `NodeSteps.run` (zonewall/agent/migration.py: prepare, export, import, cleanup,
  abort) and post the answer (an export's carries the VM's conntrack entries);
* **the libvirt hook** (`HookRequests`, called by the notify listener for a hook that
  waits for an answer): `migrate`/`prepare` on the target install the VM's rules here
  before the guest arrives (the hook fails the incoming migration if that fails);
  `started` tells the controller the guest arrived (a migration waiting for it goes
  on: post-copy, revision, source cleanup); `release` on the source deletes the VM's
  conntrack entries once the policy no longer places it here.

Every nftables change goes through the daemon's main loop (`call`), the only thread
touching the enforcer: a migration step's apply becomes the enforcer's applied state,
so drift repair and refreshes keep it instead of undoing it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..dataplane.conntrack import ConntrackSocket
from ..policy.documents import Documents, content_hash
from ..policy.edits import ChangeError, set_host
from ..policy.scope import is_scoped
from .backoff import Backoff
from .client import ControllerClient, ControllerRefused, ControllerUnavailable
from .enforcer import Desired, Enforcer
from .migration import NodeSteps

log = logging.getLogger("zonewall.agent.migration")
Call = Callable[[Callable[[], Any]], Any]  # runs a function on the main loop, returns its result


def main_loop_caller(put: Callable[[tuple[str, Any]], None], timeout: float = 120.0) -> Call:
    """`call(fn)`: queue fn for the daemon's main loop and wait for its result."""

    def call(fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

        put(("call", run))
        return future.result(timeout)

    return call


def enforcer_apply(enforcer: Enforcer, call: Call, published: Callable[[], None]) -> Callable[[Documents], Any]:
    """Documents -> applied through the enforcer (on the main loop), under the applied
    revision's number: the revision recording the move arrives later with the same
    documents and finds nothing to change."""

    def apply(documents: Documents) -> Any:
        def run() -> Any:
            revision = enforcer.state.revision if enforcer.state is not None else 0
            result = enforcer.enforce(Desired(revision, documents, content_hash(documents)))
            published()
            return result

        return call(run)

    return apply


class StepWorker:
    """Takes the controller's migration steps for this node and answers them."""

    def __init__(self, make_client: Callable[[], ControllerClient], steps: NodeSteps, stop: threading.Event, *, wait: float = 25.0,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self._make_client, self._steps, self._stop, self._wait, self._ready = make_client, steps, stop, wait, ready

    def start(self) -> StepWorker:
        threading.Thread(target=self._run, name="zonewall-migration", daemon=True).start()
        return self

    def _run(self) -> None:
        # Like the watcher: no connection before the node's first apply. Conntrack
        # starts with it, and the answer to a long-poll opened earlier would be a
        # packet of an unknown connection (dropped with nf_conntrack_tcp_loose=0).
        while not self._ready() and not self._stop.wait(0.1):
            pass
        client = self._make_client()
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    body = client._call("GET", "/migration-steps", params={"wait": self._wait}, timeout=self._wait + 10).json()
                    backoff.reset()
                    for task in body.get("steps", []):
                        self._answer(client, task)
                except ControllerUnavailable:
                    self._stop.wait(backoff.next())
                except (ControllerRefused, AttributeError, ValueError, KeyError) as exc:  # an old controller, a bad answer
                    log.error("migration steps: %s", exc)
                    self._stop.wait(30.0)
        finally:
            client.close()

    def _answer(self, client: ControllerClient, task: dict[str, Any]) -> None:
        log.info("migration step %s (%d)", task["step"], task["id"])
        try:
            answer, error = self._steps.run(task["step"], task.get("args", {})), None
        except Exception as exc:  # noqa: BLE001 - the controller decides what a failure means
            log.error("migration step %s failed: %s", task["step"], exc)
            answer, error = None, f"{type(exc).__name__}: {exc}"
        for attempt in range(3):  # a lost answer would stall the migration until its timeout
            try:
                client._call("POST", f"/migration-steps/{task['id']}", json={"answer": answer, "error": error}, timeout=60)
                return
            except ControllerUnavailable:
                self._stop.wait(0.2 * (attempt + 1))
            except ControllerRefused as exc:  # the controller gave up on it
                log.warning("answer to step %d refused: %s", task["id"], exc)
                return


class HookRequests:
    """Answers the libvirt hook's requests (`qemu VM OP SUB`): 'ok ...' or 'error ...'."""

    def __init__(self, node: str, enforcer: Enforcer, apply: Callable[[Documents], Any], rediscover: Callable[[str], None],
                 make_client: Callable[[], ControllerClient], netns: str | None = None) -> None:
        self.node, self.enforcer, self.apply, self.rediscover = node, enforcer, apply, rediscover
        self._make_client, self.netns = make_client, netns

    def __call__(self, text: str) -> str:
        parts = text.split()
        if len(parts) < 3 or parts[0] != "qemu":
            return "error not a hook request"
        vm, op = parts[1], parts[2]
        try:
            if op in ("migrate", "prepare"):
                return self.prepare(vm)
            self.rediscover(text)
            if op == "started":
                return self.started(vm)
            if op == "release":
                return self.release(vm)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - the hook shows it to libvirt
            log.error("hook %s: %s", text, exc)
            return f"error {type(exc).__name__}: {exc}"

    def _documents(self) -> Documents:
        if self.enforcer.state is None:
            raise RuntimeError("no policy applied on this node yet")
        return self.enforcer.state.documents

    def prepare(self, vm: str) -> str:
        """The guest is about to arrive: its rules go in first."""
        documents = self._documents()
        policy = self.enforcer.policy_of(documents)
        if vm not in policy.doc.vms:
            return f"ok {vm} is not managed by zonewall"
        if policy.doc.vms[vm].host == self.node:
            return f"ok {vm}'s rules are in place"
        if is_scoped(documents):  # this node was not sent the rules of other nodes' VMs
            documents = self._arriving(vm)
        try:
            edited = set_host(documents, vm, self.node)
        except ChangeError as exc:
            raise RuntimeError(str(exc)) from None
        self.apply(edited.documents)
        return f"ok {vm}'s rules installed on {self.node}"

    def _arriving(self, vm: str) -> Documents:
        """This node's documents with `vm`'s rules in them, from the controller; without
        them the guest would arrive without its own rules, so no answer fails the hook."""
        client = self._make_client()
        try:
            body = client.arrival(vm)
        except (ControllerUnavailable, ControllerRefused) as exc:
            raise RuntimeError(f"{vm}'s own rules are not on this node and the controller did not send them ({exc})") from None
        finally:
            client.close()
        documents = body.get("documents")
        if not isinstance(documents, dict) or content_hash(documents) != body.get("content_hash"):
            raise RuntimeError(f"the controller's documents for {vm}'s arrival do not match their hash")
        return documents

    def started(self, vm: str) -> str:
        """The guest runs here: a migration waiting for it goes on (post-copy, revision, cleanup)."""
        client = self._make_client()
        try:
            waiting = client._call("POST", f"/migrations/{vm}/arrived", timeout=5).json().get("migration")
        except (ControllerUnavailable, ControllerRefused) as exc:
            return f"ok (controller not told: {exc})"
        finally:
            client.close()
        return f"ok {'migration continues' if waiting else 'no migration waited'}"

    def release(self, vm: str) -> str:
        """The guest left: once the policy places it elsewhere its entries go (not those
        of connections with a guest staying here, which still cross this bridge)."""
        policy = self.enforcer.policy_of(self._documents())
        if vm not in policy.doc.vms or policy.doc.vms[vm].host == self.node:
            return "ok nothing to clean (the policy still places it here)"
        addresses = sorted({ip for nic in policy.doc.vms[vm].nics for ip in nic.ips})
        keep = {ip for other in policy.vms_on(self.node) for nic in policy.doc.vms[other].nics for ip in nic.ips}
        with ConntrackSocket(self.netns) as sock:
            doomed = [e for e in sock.export(addresses) if keep.isdisjoint(e.addresses())]
            result = sock.delete(doomed)
        return f"ok {result.created} entries deleted"


def start(agent: Any) -> HookRequests:
    """Wire the migration parts into a running `Agent` (zonewall/agent/daemon.py):
    starts the step worker, returns the hook request handler."""
    call = main_loop_caller(agent._work.put)
    apply = enforcer_apply(agent.enforcer, call, agent._publish)
    StepWorker(agent._make_client, NodeSteps(apply, agent.config.netns), agent._stop, ready=lambda: agent.enforcer.state is not None).start()
    return HookRequests(agent.config.node, agent.enforcer, apply, lambda text: agent._work.put(("rediscover", text)),
                        agent._make_client, agent.config.netns)
