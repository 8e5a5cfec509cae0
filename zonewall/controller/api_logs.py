"""Packet logs and rule counters: the agents' side (ingest) and the search.

`POST /nodes/{node}/records` takes one batch of NFLOG records from that node's agent
(idempotent by batch id); `PUT /nodes/{node}/counters` its latest per-rule kernel
counters; `GET /logs` searches the records; `GET /counters` sums the counters across
nodes and lists the rules without hits over a window.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from . import auth
from .api_nodes import NODE
from .deps import controller
from .schemas import CountersIn, RecordBatchIn, RecordBatchOut
from .store.logs import LogQuery
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["logs"])
# A record dated further ahead than this, or older than the retention, has a wrong
# clock behind it: it is stored at its arrival, with the agent's time kept beside it
# (a record a year ahead stayed at the top of the log; one a month behind was deleted
# by retention at once, though acknowledged).
FUTURE_SLACK = 300.0


def _about_a_vm(scope: str) -> bool:
    """A counter's scope names a VM (not a zone:, net:, guard:, host or global chain)."""
    return ":" not in scope and scope not in ("host", "global")


def checked_records(ctl: Any, node: str, records: list[dict[str, Any]], now: float) -> tuple[list[dict[str, Any]], int, int]:
    """(records to store, refused as about another node's VMs, clamped in time)."""
    view = ctl.current_view()
    placement = view.placement if view is not None else {}
    oldest = now - ctl.logs.retention.max_age_days * 86400
    kept, refused, clamped = [], 0, 0
    for record in records:
        vm = record.get("vm")
        if vm is not None and placement.get(vm, ("",))[0] != node:
            refused += 1  # an agent speaks for its own node's VMs only
            continue
        if not oldest <= record["time"] <= now + FUTURE_SLACK:
            record = {**record, "agent_time": record["time"], "time": now}
            clamped += 1
        if vm is not None and record.get("zone") is None:
            record = {**record, "zone": placement[vm][1]}
        kept.append(record)
    return kept, refused, clamped


@router.post("/nodes/{node}/records", response_model=RecordBatchOut, summary="A batch of packet log records (agent token of the node)")
def add_records(body: RecordBatchIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> RecordBatchOut:
    ctl = controller(request)
    records, refused, clamped = checked_records(ctl, node, [r.model_dump() for r in body.records], time.time())
    stored, duplicate = ctl.logs.ingest(node, body.batch_id, records, suppressed=body.suppressed, dropped=body.dropped)
    ctl.nodes.touch(node)
    if not duplicate and (refused or clamped):
        said = [f"{refused} records about VMs not on this node refused"] if refused else []
        said += [f"{clamped} records dated more than {FUTURE_SLACK:.0f} s ahead or past the retention: stored at their arrival (check the node's clock)"] if clamped else []
        ctl.nodes.add_logs(node, [("warning", "packet log: " + "; ".join(said))])
    return RecordBatchOut(stored=stored, duplicate=duplicate, refused=refused, clamped=clamped)


@router.put("/nodes/{node}/counters", status_code=204, summary="The node's per-rule kernel counters (agent token of the node)")
def put_counters(body: CountersIn, request: Request, node: str = NODE, _: Principal = Depends(auth.node_agent)) -> None:
    ctl = controller(request)
    view = ctl.current_view()
    placement = view.placement if view is not None else {}
    # A VM's own counters (scope: the VM's name) only from the node that runs it: they
    # make zonewall_vm_dropped_packets_total{vm}.
    counters = [c.model_dump() for c in body.counters if not _about_a_vm(c.scope) or placement.get(c.scope, ("",))[0] == node]
    ctl.counters.report(node, counters, complete=not body.partial)


def parse_time(text: str | None, name: str) -> float | None:
    """Epoch seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(status_code=422, detail=f"{name}: expected epoch seconds or an ISO 8601 time, not {text!r}") from None
    if moment.tzinfo is None:

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def build_query(vm: str | None = None, zone: str | None = None, node: str | None = None, address: str | None = None,
                src: str | None = None, dst: str | None = None, port: int | None = None, proto: str | None = None,
                verdict: str | None = None, rule: str | None = None, level: str | None = None, direction: str | None = None,
                since: str | None = None, until: str | None = None, q: str | None = None, limit: int = 100,
                cursor: str | None = None) -> LogQuery:
    """A LogQuery from request parameters; HTTPException 422 on a malformed one."""
    import ipaddress

    for name, value in (("address", address), ("src", src), ("dst", dst)):
        if value:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise HTTPException(status_code=422, detail=f"{name}: {value!r} is not an address or CIDR") from None
    if cursor:
        stamp, sep, ident = cursor.partition(":")
        try:
            float(stamp), int(ident)
        except ValueError:
            raise HTTPException(status_code=422, detail="cursor: use the `next` of the previous page") from None
        if not sep:
            raise HTTPException(status_code=422, detail="cursor: use the `next` of the previous page")
    empty = lambda v: v if v not in ("", None) else None
    return LogQuery(vm=empty(vm), zone=empty(zone), node=empty(node), address=empty(address), src=empty(src), dst=empty(dst),
                    port=port, proto=empty(proto), verdict=empty(verdict), rule=empty(rule), level=empty(level),
                    direction=empty(direction), since=parse_time(since, "since"), until=parse_time(until, "until"),
                    text=empty(q), limit=limit, cursor=empty(cursor))


@router.get("/logs", summary="Search packet log records, newest first")
def search_logs(
    request: Request,
    vm: str | None = Query(None, description="the VM the record is about"),
    zone: str | None = Query(None, description="the VM's zone (at the time the record arrived)"),
    node: str | None = Query(None),
    address: str | None = Query(None, description="source or destination within this address or CIDR"),
    src: str | None = Query(None, description="source within this address or CIDR"),
    dst: str | None = Query(None, description="destination within this address or CIDR"),
    port: int | None = Query(None, ge=0, le=65535, description="destination port"),
    proto: str | None = Query(None, description="tcp, udp, icmp, icmpv6, ..."),
    verdict: str | None = Query(None, description="drop, reject, accept"),
    rule: str | None = Query(None, description="the rule id"),
    level: str | None = Query(None, description="global, vm, zone, default, guard, host, network"),
    direction: str | None = Query(None, description="in, out, net"),
    since: str | None = Query(None, description="epoch seconds or ISO 8601"),
    until: str | None = Query(None, description="epoch seconds or ISO 8601 (exclusive)"),
    q: str | None = Query(None, description="free text: part of a VM, zone, node, rule, address, protocol or interface"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, description="the `next` of the previous page"),
    _: Principal = Depends(auth.reader),
) -> dict[str, Any]:
    query = build_query(vm, zone, node, address, src, dst, port, proto, verdict, rule, level, direction, since, until, q, limit, cursor)
    records, next_cursor = controller(request).logs.search(query)
    return {"records": records, "next": next_cursor}


@router.get("/logs/stats", summary="Per node: records received, suppressed by the log rate, dropped from a full agent buffer")
def log_stats(request: Request, _: Principal = Depends(auth.reader)) -> dict[str, dict[str, int]]:
    return controller(request).logs.stats()


@router.get("/counters", summary="Per-rule packet and byte counters summed across nodes; rules without hits over a window")
def get_counters(request: Request, window: float = Query(3600.0, gt=0, description="seconds: rules not hit within it are listed as unused"),
                 _: Principal = Depends(auth.reader)) -> dict[str, Any]:
    store = controller(request).counters
    return {"rules": store.totals(), "unused": store.unused(window), "window": window}
