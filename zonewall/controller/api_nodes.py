"""/api/v1/nodes: the inventory, and the agents' side of the API.

An agent long-polls `GET /nodes/{node}/desired?after=N&wait=S`: the answer comes
as soon as the current revision differs from N (at once if it already does), or
after S seconds with `changed: false`. No fixed polling interval: a change reaches
every waiting agent within one network round trip of its commit.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from . import auth
from .schemas import DesiredOut, LogOut, LogsIn, NodeOut, RegisterIn, StatusIn
from .store.db import as_utc
from .store.nodes import Registration, Status
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["nodes"])
NODE = Path(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,30}$", description="the node (a host of the policy)")
MAX_WAIT = 120.0


def _policy_hosts(request: Request) -> tuple[int | None, set[str]]:
    revisions = request.app.state.ctl.revisions
    row = revisions.current()
    if row is None:
        return None, set()
    return row.number, set(revisions.policy_of(row).doc.hosts)


@router.get("/nodes", response_model=list[NodeOut], summary="Every registered agent and every host of the policy")
def list_nodes(request: Request, _: Principal = Depends(auth.reader)) -> list[NodeOut]:
    current, hosts = _policy_hosts(request)
    rows = {row.name: row for row in request.app.state.ctl.nodes.all()}
    return [NodeOut.of(name, rows.get(name), name in hosts, current) for name in sorted(set(rows) | hosts)]


@router.get("/nodes/{node}", response_model=NodeOut, summary="One node's inventory entry")
def show_node(request: Request, node: str = NODE, _: Principal = Depends(auth.node_reader)) -> NodeOut:
    current, hosts = _policy_hosts(request)
    row = request.app.state.ctl.nodes.get(node)
    if row is None and node not in hosts:
        raise HTTPException(status_code=404, detail=f"no node {node!r}")
    return NodeOut.of(node, row, node in hosts, current)


@router.post("/nodes/{node}/register", response_model=NodeOut, summary="An agent announces itself (agent token of the node)")
def register(body: RegisterIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> NodeOut:
    row = request.app.state.ctl.nodes.register(node, Registration(body.agent_version, body.hostname))
    current, hosts = _policy_hosts(request)
    return NodeOut.of(node, row, node in hosts, current)


@router.get("/nodes/{node}/desired", response_model=DesiredOut, summary="The node's desired state (long-poll with `after`)")
async def desired(
    request: Request,
    node: str = NODE,
    after: int | None = Query(None, description="the revision the caller has; wait until the current one differs"),
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT, description="seconds to wait for a change (with `after`)"),
    who: Principal = Depends(auth.node_reader),
) -> Response:
    ctl = request.app.state.ctl
    if who.role == "agent":
        await run_in_threadpool(ctl.nodes.touch, node)
    if after is not None and wait > 0:
        number = await ctl.watch.wait_for_change(after, wait)
        row = await run_in_threadpool(ctl.revisions.cached, number) if number else None
    else:
        row = await run_in_threadpool(ctl.revisions.current)
    number = row.number if row else 0
    if row is None or number == after:
        unchanged = DesiredOut(node=node, changed=False, revision=number, in_policy=row is not None)
        return Response(unchanged.model_dump_json(), media_type="application/json")
    policy = await run_in_threadpool(ctl.revisions.policy_of, row)
    # Every agent is woken by the same commit and asks for the same documents, which
    # the row already holds as JSON text: splice it in instead of decoding and
    # re-encoding it once per agent.
    head = DesiredOut(node=node, changed=True, revision=number, in_policy=node in policy.doc.hosts, content_hash=row.content_hash)
    body = head.model_dump_json(exclude={"documents"})[:-1] + ',"documents":' + row.documents + "}"
    return Response(body, media_type="application/json")


@router.put("/nodes/{node}/status", response_model=NodeOut, summary="What the agent has applied (agent token of the node)")
def report_status(body: StatusIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> NodeOut:
    status = Status(body.applied_revision, body.fingerprint, body.ruleset_hash, body.state, body.last_error, body.drift_repairs, body.taps, body.apply_seconds)
    row = request.app.state.ctl.nodes.report(node, status)
    if body.lines:
        request.app.state.ctl.nodes.add_logs(node, [(line.level, line.message) for line in body.lines])
    current, hosts = _policy_hosts(request)
    return NodeOut.of(node, row, node in hosts, current)


@router.post("/nodes/{node}/logs", status_code=204, summary="Append log lines (agent token of the node)")
def add_logs(body: LogsIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> Response:
    request.app.state.ctl.nodes.add_logs(node, [(line.level, line.message) for line in body.lines])
    return Response(status_code=204)


@router.get("/nodes/{node}/logs", response_model=list[LogOut], summary="The node's latest log lines")
def get_logs(request: Request, node: str = NODE, limit: int = Query(100, ge=1, le=1000), _: Principal = Depends(auth.node_reader)) -> list[LogOut]:
    rows = request.app.state.ctl.nodes.logs(node, limit)
    return [LogOut(time=as_utc(r.time), level=r.level, message=r.message) for r in rows]  # type: ignore[arg-type]
