"""/api/v1/nodes: the inventory, and the agents' side of the API.

An agent long-polls `GET /nodes/{node}/desired?after=N&wait=S`: the answer comes
as soon as there is a revision newer than N (at once if there already is), or
after S seconds with `changed: false`. No fixed polling interval: a change reaches
every waiting agent within one network round trip of its commit, through whichever
controller the agent is connected to. Never older: an agent that has applied a
revision this controller does not know yet (its database lost it, or has not told
it yet) waits for a newer one, and that number is never given to other documents.

Waiting costs no database access (the watch is in memory; contacts are written in
batches) and each revision is read and parsed once per controller (store/cache.py);
what the answer carries is built by `desired_answer` alone.

What a node is sent (agent protocol 2): never the cluster's documents, only its
own (policy/scope.py), each built once per revision and node. The agent says
which state it has (`have`, that state's content hash): when the new revision leaves
its documents as they were it gets the revision number alone (`same`), when the
change is small a delta against what it has, else its documents. An agent of
protocol 1 (it expects the whole policy) is refused with a clear 426.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ..policy.documents import content_hash
from . import auth
from .deps import controller
from .schemas import DesiredOut, LogOut, LogsIn, NodeOut, RegisterIn, StatusIn
from .store.cache import RevisionView
from .store.db import as_utc
from .store.nodes import NodeReport, Registration, Status
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["nodes"])
NODE = Path(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,30}$", description="the node (a host of the policy)")
MAX_WAIT = 120.0
PROTOCOL = 2  # 1: every node was sent the whole policy; 2: its own documents, `same`, deltas


def _policy_hosts(request: Request) -> tuple[int | None, frozenset[str]]:
    view = controller(request).current_view()
    if view is None:
        return None, frozenset()
    return view.number, view.hosts


@router.get("/nodes", response_model=list[NodeOut], summary="Every registered agent and every host of the policy")
def list_nodes(request: Request, _: Principal = Depends(auth.reader)) -> list[NodeOut]:
    current, hosts = _policy_hosts(request)
    rows = {row.name: row for row in controller(request).nodes.all()}
    return [NodeOut.of(name, rows.get(name), name in hosts, current) for name in sorted(set(rows) | hosts)]


@router.get("/nodes/{node}", response_model=NodeOut, summary="One node's inventory entry")
def show_node(request: Request, node: str = NODE, _: Principal = Depends(auth.node_reader)) -> NodeOut:
    current, hosts = _policy_hosts(request)
    row = controller(request).nodes.get(node)
    if row is None and node not in hosts:
        raise HTTPException(status_code=404, detail=f"no node {node!r}")
    return NodeOut.of(node, row, node in hosts, current)


@router.post("/nodes/{node}/register", response_model=NodeOut, summary="An agent announces itself (agent token of the node)")
def register(body: RegisterIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> NodeOut:
    row = controller(request).nodes.register(node, Registration(body.agent_version, body.hostname))
    current, hosts = _policy_hosts(request)
    return NodeOut.of(node, row, node in hosts, current)


@router.get("/nodes/{node}/desired", response_model=DesiredOut, summary="The node's desired state (long-poll with `after`)")
async def desired(
    request: Request,
    node: str = NODE,
    after: int | None = Query(None, ge=0, le=2**31 - 1, description="the revision the caller has; wait until there is a newer one"),
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT, description="seconds to wait for a newer revision (with `after`)"),
    have: str | None = Query(None, pattern=r"^[0-9a-f]{64}$", description="the content hash of the documents the caller has applied"),
    protocol: int | None = Query(None, ge=1, le=1000, description="the agent protocol the caller speaks (2)"),
    who: Principal = Depends(auth.node_reader),
) -> Response:
    ctl = controller(request)
    _check_protocol(protocol, request.headers.get("user-agent", ""))
    if who.role == "agent":
        ctl.nodes.touch(node)  # in memory; written with the others every few seconds
    if after is not None and after > ctl.watch.newest:
        await run_in_threadpool(ctl.revisions.raise_floor, after)
    if after is None or wait <= 0:
        return await _desired_now(request, node, after, have, ctl.watch.revision_for(node))
    async with ctl.watch.long_poll(after, wait, node) as number:  # woken: owed an answer until it is built
        if number > after and not await auth.still_valid(request):
            raise HTTPException(status_code=401, detail="the token was revoked while waiting", headers={"WWW-Authenticate": "Bearer"})
        return await _desired_now(request, node, after, have, number)


async def _desired_now(request: Request, node: str, after: int | None, have: str | None, number: int) -> Response:
    ctl = controller(request)
    view = (ctl.revisions.cache.peek(number) or await run_in_threadpool(ctl.revisions.view, number)) if number else None
    if view is None or (after is not None and view.number <= after):
        unchanged = DesiredOut(node=node, changed=False, revision=view.number if view else 0, in_policy=view is not None)
        return Response(unchanged.model_dump_json(), media_type="application/json")
    if _answered_by_number(node, view, have):  # nothing to build or encode: here, not through a thread
        return desired_answer(node, view, have)
    return await run_in_threadpool(desired_answer, node, view, have)


def _answered_by_number(node: str, view: RevisionView, have: str | None) -> bool:
    """The answer is the revision number alone, known without building anything: most
    nodes after a change that is not theirs (their state carried over, cache.py)."""
    if node not in view.hosts or view.states is None:
        return True
    state = view.states.ready(node)
    return state is not None and have == state.content_hash


def _check_protocol(protocol: int | None, user_agent: str) -> None:
    """Agents always name their protocol; one that does not is of protocol 1."""
    if protocol is None and not user_agent.startswith("zonewall-agent/"):
        return  # a person or a tool reading a node's desired state
    if protocol != PROTOCOL:
        spoken = protocol or 1
        raise HTTPException(status_code=426, detail=(
            f"this controller speaks agent protocol {PROTOCOL} (each node is sent only its own desired state); "
            f"the agent speaks protocol {spoken}: {'upgrade zonewall on the node' if spoken < PROTOCOL else 'upgrade the controller'}"))


def desired_answer(node: str, view: RevisionView, have: str | None = None) -> Response:
    """What a node is sent for a revision newer than the one it has: the revision
    number alone when its documents did not change, else a delta or its documents."""
    head = DesiredOut(node=node, changed=True, revision=view.number, in_policy=node in view.hosts, protocol=PROTOCOL)
    if not head.in_policy or view.states is None:
        return Response(head.model_dump_json(exclude={"documents", "delta"}), media_type="application/json")
    state = view.states.get(node)
    head.content_hash = state.content_hash
    if have == state.content_hash:
        head.same = True
        return Response(head.model_dump_json(exclude={"documents", "delta"}), media_type="application/json")
    delta = view.states.delta(node, have) if have else None
    if delta is not None:
        head.delta = {"base": have, **delta}
        return Response(head.model_dump_json(exclude={"documents"}), media_type="application/json")
    # Every agent of the node asks for the same documents, which the state holds as
    # encoded JSON: spliced in instead of re-encoded per answer.
    body = b"".join((head.model_dump_json(exclude={"documents", "delta"}).encode()[:-1], b',"documents":', state.documents_json, b"}"))
    return Response(body, media_type="application/json")


@router.get("/nodes/{node}/arrival/{vm}", summary="The node's documents with a VM migrating to it in full (agent token of the node)")
def arrival(request: Request, node: str = NODE, vm: str = Path(..., max_length=100), _: Principal = Depends(auth.node_agent)) -> Response:
    """For the libvirt hook of a migration the controller did not start: the node was
    not sent the rules of other nodes' VMs (nor of zones with no VM here), and the
    arriving one needs its own and its zone's."""
    view = request.app.state.ctl.current_view()
    if view is None or view.states is None or node not in view.hosts:
        raise HTTPException(status_code=404, detail=f"the current revision has no host {node!r}")
    if vm not in view.placement:
        raise HTTPException(status_code=404, detail=f"the current revision has no VM {vm!r}")
    documents = view.states.scoper.scoped(node, keep=[vm])
    return Response(json.dumps({"revision": view.number, "content_hash": content_hash(documents), "documents": documents}), media_type="application/json")


@router.put("/nodes/{node}/status", response_model=NodeOut, summary="What the agent has applied (agent token of the node)",
            responses={204: {"description": "stored; the caller asked for no body (`Prefer: return=minimal`)"}})
async def report_status(body: StatusIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> Response:
    """Stored with the other agents' reports of the moment (status_reports.py). An agent
    sends `Prefer: return=minimal` (RFC 7240): it reads nothing of the answer, and the
    node's row is then neither read back nor encoded."""
    status = Status(body.applied_revision, body.fingerprint, body.ruleset_hash, body.state, body.last_error, body.drift_repairs, body.taps,
                    body.apply_seconds, tuple(body.problems))
    ctl = controller(request)
    if body.applied_revision is not None and body.applied_revision > ctl.watch.newest:
        await run_in_threadpool(ctl.revisions.raise_floor, body.applied_revision)
    await request.app.state.status_reports.report(NodeReport(node, status, tuple((line.level, line.message) for line in body.lines)))
    if _minimal(request):
        return Response(status_code=204, headers={"Preference-Applied": "return=minimal"})
    row = await run_in_threadpool(ctl.nodes.get, node)
    current, hosts = _policy_hosts(request)
    return Response(NodeOut.of(node, row, node in hosts, current).model_dump_json(), media_type="application/json")


def _minimal(request: Request) -> bool:
    """The request carries the preference `return=minimal` (RFC 7240)."""
    return any(part.split(";")[0].strip().lower() == "return=minimal"
               for value in request.headers.getlist("prefer") for part in value.split(","))


@router.post("/nodes/{node}/logs", status_code=204, summary="Append log lines (agent token of the node)")
def add_logs(body: LogsIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> Response:
    controller(request).nodes.add_logs(node, [(line.level, line.message) for line in body.lines])
    return Response(status_code=204)


@router.get("/nodes/{node}/logs", response_model=list[LogOut], summary="The node's latest log lines")
def get_logs(request: Request, node: str = NODE, limit: int = Query(100, ge=1, le=1000), _: Principal = Depends(auth.node_reader)) -> list[LogOut]:
    rows = controller(request).nodes.logs(node, limit)
    return [LogOut(time=as_utc(r.time), level=r.level, message=r.message) for r in rows]
