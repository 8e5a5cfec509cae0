"""/api/v1/vms/{vm}/migrate and the agents' migration steps (docs/migration.md).

`POST /vms/{vm}/migrate` (admin) runs the orchestrator (zonewall/controller/migrate.py)
in the request's worker thread, with the node agents as its channel
(zonewall/controller/migrate_channel.py): the target prepares, the source exports
the VM's conntrack entries and the target imports them, then the controller waits
for the guest to arrive on the target (the hypervisor moves it; the target's agent
reports it, told by the libvirt hook's `started`), copies again, records the move as
a revision (kind `migrate`) and has the source clean up. The answer is the
orchestrator's report (200), or the failed step and what was undone (502).

Agents take their steps with `GET /nodes/{node}/migration-steps?wait=S` (long-poll)
and answer with `POST /nodes/{node}/migration-steps/{id}`; `POST
/nodes/{node}/migrations/{vm}/arrived` is the guest's arrival. Only the node's own
agent token may do any of the three for its node.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ..policy.documents import problems_json
from ..policy.edits import ChangeError, Edited, set_host
from ..policy.errors import PolicyError
from . import auth
from .deps import controller
from .migrate import Migration, MigrationError, plan
from .migrate_channel import MigrationHub, Running
from .store.revisions import Conflict, Proposal
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["migration"])
NAME = r"^[a-z0-9][a-z0-9_-]{0,30}$"
NODE = Path(..., pattern=NAME, description="the node (a host of the policy)")
MAX_WAIT = 120.0


class MigrateIn(BaseModel):
    to: str = Field(..., pattern=NAME, description="the target node")
    state: bool = Field(True, description="copy the VM's conntrack entries (false: its established connections break)")
    message: str = Field("", max_length=4000, description="recorded in the revision")
    switch_timeout: float = Field(300.0, gt=0, le=3600, description="seconds to wait for the hypervisor to move the guest")


class StepAnswerIn(BaseModel):
    answer: dict[str, Any] | None = None
    error: str | None = Field(None, max_length=8000)


def hub(request: Request) -> MigrationHub:
    return controller(request).migrations


class _PhaseChannel:
    """The agents' channel, recording the migration's phase for GET /migrations."""

    def __init__(self, hub: MigrationHub, running: Running) -> None:
        self.hub, self.running = hub, running

    def step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]:
        if step in ("prepare", "cleanup", "abort"):
            self.hub.set_phase(self.running, step)
        elif step == "export":
            self.hub.set_phase(self.running, "post-copy" if self.running.arrived.is_set() else "pre-copy")
        return self.hub.step(node, step, args, self.running)


@router.post("/vms/{vm}/migrate", summary="Live-migrate a VM's rules and connections to another node (admin)")
def migrate(body: MigrateIn, request: Request, vm: str = Path(..., pattern=NAME), who: Principal = Depends(auth.admin)) -> dict[str, Any]:
    ctl, migrations = controller(request), hub(request)
    row = ctl.revisions.current()
    if row is None:
        raise HTTPException(status_code=409, detail="there is no policy yet")
    try:
        the_plan = plan(ctl.revisions.documents_of(row), vm, body.to)
    except ChangeError as exc:
        raise HTTPException(status_code=exc.status, detail=str(exc)) from None
    except PolicyError as exc:
        raise HTTPException(status_code=422, detail={"error": "the post-migration policy is invalid", "problems": problems_json(exc)}) from None
    running = Running(vm, the_plan.source, body.to, who.name)
    if not migrations.begin(running):
        raise HTTPException(status_code=409, detail=f"VM {vm!r} is already migrating")
    message = body.message or f"migrate {vm} from {the_plan.source} to {body.to}"

    def switch() -> None:  # the hypervisor moves the guest; the target's agent tells us (through any controller)
        migrations.set_phase(running, "switch")
        if not migrations.wait_arrived(running, body.switch_timeout):
            raise TimeoutError(f"the guest did not arrive on {body.to} within {body.switch_timeout:g}s")
        migrations.set_phase(running, "post-copy")

    def commit(edited: Edited) -> int:
        migrations.set_phase(running, "commit")
        proposal = Proposal(edited.documents, who.name, message, "migrate", edited.summary, base_revision=row.number)
        try:
            committed = ctl.revisions.commit(proposal)
        except Conflict:  # another change landed meanwhile: make the move on the newest documents
            newest = ctl.revisions.current()
            assert newest is not None  # a conflict means a newer revision exists
            again = set_host(ctl.revisions.documents_of(newest), vm, body.to)
            committed = ctl.revisions.commit(Proposal(again.documents, who.name, message, "migrate", again.summary, base_revision=newest.number))
        ctl.revisions.attach_diff(committed)
        return int(committed.row.number)

    migration = Migration(the_plan, _PhaseChannel(migrations, running), switch, commit, body.state)
    try:
        report = migration.run()
    except Exception as exc:  # noqa: BLE001 - every failure is answered with the report
        running.phase, running.error = "failed", str(exc)
        step = exc.step if isinstance(exc, MigrationError) else running.phase
        raise HTTPException(status_code=502, detail={
            "error": f"migration of {vm} failed: {exc}", "step": step, "report": migration.report,
            "aborted": bool(migration.report.get("aborted")),
            "where": body.to if running.arrived.is_set() else the_plan.source,  # the node filtering the guest now
        }) from None
    else:
        running.phase = "done"
    finally:
        migrations.end(running)
    return report


@router.get("/migrations", summary="Migrations in progress and the last ones finished")
def list_migrations(request: Request, _: Principal = Depends(auth.reader)) -> dict[str, Any]:
    return hub(request).listing()


@router.get("/nodes/{node}/migration-steps", summary="The node's next migration steps (long-poll; agent token of the node)")
async def next_steps(request: Request, node: str = NODE, wait: float = Query(0.0, ge=0.0, le=MAX_WAIT),
                     _: Principal = Depends(auth.node_agent)) -> dict[str, Any]:
    return {"steps": await hub(request).next_steps(node, wait, request.is_disconnected)}


@router.post("/nodes/{node}/migration-steps/{task_id}", status_code=204, summary="A step's answer (agent token of the node)")
def answer_step(task_id: int, body: StepAnswerIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> Response:
    if not hub(request).answer(node, task_id, body.answer, body.error):
        raise HTTPException(status_code=404, detail=f"no step {task_id} waits for an answer from {node}")
    return Response(status_code=204)


@router.post("/nodes/{node}/migrations/{vm}/arrived", summary="The hypervisor says the guest runs here now (agent token of the node)")
def arrived(request: Request, node: str = NODE, vm: str = Path(..., pattern=NAME), _: Principal = Depends(auth.node_agent)) -> dict[str, Any]:
    return {"vm": vm, "node": node, "migration": hub(request).arrived(vm, node)}
