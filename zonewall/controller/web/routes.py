"""The dashboard: server-rendered pages under /ui (Jinja2), nothing loaded from elsewhere.

Login takes an API token (admin or viewer); the session cookie (HttpOnly,
SameSite=Strict) names a server-side session that holds the token, which is
authenticated again at every request, so revoking the token ends the session. A
viewer sees every page; only an admin gets the rollback form, and the POST itself
checks the role and a per-session CSRF token.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..api_logs import build_query
from ..api_metrics import AGENT_UP_SECONDS
from ..deps import controller
from ..schemas import NodeOut, RevisionOut, RevisionSummary, RollbackIn
from ..store.db import as_utc
from ..store.tokens import authenticate
from .pages import (
    COOKIE,
    LOGIN_COOKIE,
    LoginRequired,
    Sessions,
    admin_form,
    current,
    env,
    form,
    page,
    render,
    same_origin,
    sessions_of,
    to_login,
    when,
)
from .paging import SIZE as PAGE_SIZE
from .paging import Page

LOG_FIELDS = [("vm", "VM"), ("zone", "zone"), ("node", "node"), ("address", "address/CIDR"), ("port", "port"), ("proto", "protocol"),
              ("rule", "rule"), ("since", "since"), ("until", "until"), ("q", "text")]


router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """The dashboard on `app`: its session store, the redirect to the login page, its pages."""
    from . import console  # nodes, zones, the editor

    app.state.web_sessions = Sessions()
    app.add_exception_handler(LoginRequired, to_login)
    app.include_router(router)
    app.include_router(console.router)


@router.get("/ui")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


def login_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    """The form, with a fresh login CSRF token in it and in a cookie (double submit):
    a page elsewhere cannot read the cookie, so it cannot post a valid form."""
    token = secrets.token_urlsafe(16)
    response = render("login.html", title="Log in", who=None, csrf=token, error=error)
    response.status_code = status
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/ui")
    return response


@router.get("/ui/login")
def login_form(request: Request) -> HTMLResponse:
    return login_page(request)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not same_origin(request) or not expected or not secrets.compare_digest(fields.get("csrf", ""), expected):
        return login_page(request, "This form is stale or came from another site: log in again.", 403)
    token = fields.get("token", "").strip()
    who = await run_in_threadpool(authenticate, controller(request).sessions, token) if token else None
    if who is None or who.role not in ("admin", "viewer"):
        return login_page(request, "Unknown, revoked or agent token.", 401)
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(COOKIE, sessions_of(request).create(token), httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/ui")
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    sid = request.cookies.get(COOKIE)
    found = sessions_of(request).get(sid)
    fields = await form(request)
    if not same_origin(request) or (found is not None and not secrets.compare_digest(fields.get("csrf", ""), found[1])):
        raise HTTPException(status_code=403, detail="stale form or another site (CSRF)")
    sessions_of(request).drop(sid)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/ui/")
def overview(request: Request, page_number: int = 1) -> HTMLResponse:
    ctl = controller(request)
    current_number = ctl.revisions.current_number()
    row = ctl.revisions.current()
    hosts = set(ctl.revisions.policy_of(row).doc.hosts) if row else set()
    rows = {r.name: r for r in ctl.nodes.all()}
    stats = ctl.logs.stats()
    now = time.time()
    nodes = []
    for name in sorted(set(rows) | hosts):
        out = NodeOut.of(name, rows.get(name), name in hosts, current_number)
        contact = as_utc(rows[name].last_contact) if name in rows else None
        nodes.append({**out.model_dump(), "up": contact is not None and now - contact.timestamp() <= AGENT_UP_SECONDS,
                      "last_contact": contact.strftime("%Y-%m-%d %H:%M:%S") if contact else None,
                      "logs": stats.get(name, {"received": 0, "suppressed": 0, "dropped": 0})})
    from ..api_gitops import follower_status
    from .console import denied_traffic

    return page(request, "overview.html", "Overview", current=current_number, nodes=nodes, listing=Page.of(nodes, page_number),
                log_count=ctl.logs.count(), unused=ctl.counters.unused(3600)[:50], traffic=denied_traffic(ctl, 24),
                gitops=follower_status(ctl))


@router.get("/ui/matrix")
def matrix(request: Request, source: str = "", target: str = "") -> HTMLResponse:
    ctl = controller(request)
    row = ctl.revisions.current()
    zones: list[str] = []
    cells: dict[tuple[str, str], list[str]] = {}
    error = None
    pending = None
    if row is not None:
        try:
            zones, cells = zone_matrix(ctl, row)
        except MatrixPending as exc:
            pending = exc
        except Exception as exc:  # noqa: BLE001 - the page says what the analyzer said
            error = f"the analyzer failed: {exc}"
    sources = zones + (["outside"] if any(a == "outside" for a, _ in cells) else [])
    peak = max((len(s) for s in cells.values()), default=1) or 1
    chosen = {"source": source, "target": target, "services": cells.get((source, target), [])} if source and target else None
    return page(request, "matrix.html", "Zone matrix", current=row.number if row else None, zones=zones, sources=sources,
                matrix=cells, error=error, peak=peak, chosen=chosen, compact=len(zones) > 8, pending=pending, refresh=pending is not None)


@router.get("/ui/vms")
def vms(request: Request, q: str = "", zone: str = "", node: str = "", page_number: int = 1) -> HTMLResponse:
    row = controller(request).revisions.current()
    listed = []
    if row is not None:
        text = q.strip().lower()
        for name, vm in sorted(controller(request).revisions.policy_of(row).doc.vms.items()):
            if (zone and vm.zone != zone) or (node and vm.host != node):
                continue
            ips = [str(ip) for nic in vm.nics for ip in nic.ips]
            if text and text not in name and not any(ip.startswith(text) for ip in ips):
                continue
            listed.append({"name": name, "zone": vm.zone, "host": vm.host, "ips": ips})
    params = {"q": q, "zone": zone, "node": node}
    return page(request, "vms.html", "VMs", listing=Page.of(listed, page_number, params), params=params)


@router.get("/ui/vms/{vm}")
def vm_page(request: Request, vm: str) -> HTMLResponse:
    ctl = controller(request)
    row = ctl.revisions.current()
    policy = ctl.revisions.policy_of(row) if row else None
    if policy is None or vm not in policy.doc.vms:
        raise HTTPException(status_code=404, detail=f"no VM {vm!r}")
    who, _ = current(request)
    return page(request, "vm.html", f"VM {vm}", name=vm, zone=policy.doc.vms[vm].zone, host=policy.doc.vms[vm].host, spec=policy.doc.vms[vm],
                tables=effective_rules(policy, vm, ctl.counters.totals()), can_edit=who.role == "admin")


@router.get("/ui/logs")
def logs(request: Request) -> HTMLResponse:
    current(request)
    params = {k: v for k, v in request.query_params.items() if v != ""}
    error = None
    try:
        port = int(params["port"]) if "port" in params else None
        query = build_query(vm=params.get("vm"), zone=params.get("zone"), node=params.get("node"), address=params.get("address"),
                            port=port, proto=params.get("proto"), verdict=params.get("verdict"), rule=params.get("rule"),
                            since=params.get("since"), until=params.get("until"), q=params.get("q"), limit=100,
                            cursor=params.get("cursor"))
        found, cursor = controller(request).logs.search(query)
    except (HTTPException, ValueError) as exc:
        error = exc.detail if isinstance(exc, HTTPException) else f"port: {exc}"
        found, cursor = [], None
    records = [{**r, "when": when(r["time"])} for r in found]
    if params.get("fragment"):
        return HTMLResponse(env.get_template("logs_rows.html").render(records=records))
    next_link = "/ui/logs?" + urlencode({**{k: v for k, v in params.items() if k != "cursor"}, "cursor": cursor}) if cursor else None
    return page(request, "logs.html", "Denied packets", records=records, params=params, fields=LOG_FIELDS, next=next_link,
                paged="cursor" in params, error=error)


@router.get("/ui/revisions")
def revisions(request: Request, before: int | None = None) -> HTMLResponse:
    rows = controller(request).revisions.history(PAGE_SIZE + 1, before)
    older = rows[PAGE_SIZE - 1].number if len(rows) > PAGE_SIZE else None
    return page(request, "revisions.html", "Revisions", revisions=[RevisionSummary.of(r) for r in rows[:PAGE_SIZE]], older=older,
                paged=before is not None)


def revision_page(request: Request, number: int, done: str | None = None) -> HTMLResponse:
    who, _ = current(request)
    row = controller(request).revisions.get(number)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no revision {number}")
    from .console import flow_rows

    ctl = controller(request)
    rev = RevisionOut.full(row)
    endpoints = (rev.diff or {}).get("endpoints", [])
    opened = None
    if rev.kind != "rollback" and number == 1:  # the first revision opens everything it allows: its zone matrix
        try:
            opened = [{"from": a, "to": b, "services": ", ".join(s)} for (a, b), s in sorted(zone_matrix(ctl, row)[1].items())]
        except Exception:  # noqa: BLE001 - the page still shows the endpoints (MatrixPending: not yet)
            opened = None
    return page(request, "revision.html", f"Revision {number}", rev=rev, flows=flow_rows(rev.diff), endpoints=Page.of(endpoints, 1, size=500),
                opened=opened, can_edit=who.role == "admin", done=done, is_current=number == ctl.revisions.current_number())


@router.get("/ui/revisions/{number}")
def revision(request: Request, number: int) -> HTMLResponse:
    return revision_page(request, number)


@router.post("/ui/revisions/{number}/rollback")
async def rollback(request: Request, number: int) -> Response:
    who, fields = await admin_form(request)
    from ..api_policy import rollback as api_rollback

    out = await run_in_threadpool(api_rollback, number, RollbackIn(message=fields.get("message", "")), request, Response(), who)
    return RedirectResponse(f"/ui/revisions/{out.revision.number}", status_code=303)


@router.get("/ui/trace")
def trace_page(request: Request) -> HTMLResponse:
    current(request)
    params = dict(request.query_params)
    result, cases, error = None, [], None
    if params.get("from") and params.get("to"):
        try:
            result = run_trace(controller(request), params)
            for case in result["cases"]:
                decisions = [f"{d.get('stage', '')}: {d.get('rule', '')} → {d.get('action', '')}" for d in case.get("stages", [])]
                cases.append({"verdict": case["verdict"], "decisions": decisions or ["-"]})
        except ValueError as exc:
            error = str(exc)
    return page(request, "trace.html", "Would this get through?", params=params, result=result, cases=cases, error=error)


def run_trace(ctl: Any, params: dict[str, str]) -> dict[str, Any]:
    from ...analysis.engine import Analyzer
    from ...analysis.trace import FlowSpec, trace

    row = ctl.revisions.current()
    if row is None:
        raise ValueError("no policy yet")
    proto = params.get("proto", "tcp")
    value = params.get("port", "").strip()
    if proto in ("tcp", "udp", "sctp"):
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ValueError(f"{proto} needs a port (1-65535)")
        flow = FlowSpec(proto=proto, port=int(value))
    elif proto == "icmp":
        flow = FlowSpec(proto="icmp", icmp_type=value or None)
    else:
        raise ValueError(f"unknown protocol {proto!r}")
    return trace(Analyzer(ctl.revisions.policy_of(row)), params["from"].strip(), params["to"].strip(), flow).to_json()


SYNC_MATRIX_VMS = 200  # up to this many VMs the matrix is computed while the page waits (seconds)


class MatrixPending(Exception):
    """The zone matrix of a large revision is being computed in the background."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"computing the zone matrix: {done} of {total} VMs")
        self.done, self.total = done, total


class _MatrixJob:
    def __init__(self, ctl: Any, row: Any) -> None:
        self.done, self.total = 0, 0
        self.result: tuple[list[str], dict[tuple[str, str], list[str]]] | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(ctl, row), name=f"zone-matrix-{row.number}", daemon=True)

    def _run(self, ctl: Any, row: Any) -> None:
        try:
            self.result = zone_matrix_of(ctl, row, self._progress)
        except Exception as exc:  # noqa: BLE001 - shown by the pages
            self.error = exc

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


_matrix_lock = threading.Lock()
_matrix_jobs: dict[tuple[int, int], _MatrixJob] = {}


def zone_matrix(ctl: Any, row: Any) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """zone_matrix_of a revision, computed once per revision (several pages show it).
    A small policy's is computed at once; a large one's (reach of every VM: minutes at
    thousands of VMs) in a background thread, one at a time, while the pages say how
    far it got (MatrixPending)."""
    key = (id(ctl), row.number)
    with _matrix_lock:
        job = _matrix_jobs.get(key)
        if job is None:
            while len(_matrix_jobs) >= 4:  # the current revision's and a few older ones
                del _matrix_jobs[next(iter(_matrix_jobs))]
            job = _matrix_jobs[key] = _MatrixJob(ctl, row)
            if len(ctl.revisions.policy_of(row).doc.vms) <= SYNC_MATRIX_VMS:
                job._run(ctl, row)
            else:
                job.thread.start()
    if job.error is not None:
        raise job.error
    if job.result is None:
        raise MatrixPending(job.done, job.total)
    return job.result


def natural(name: str) -> list[Any]:
    """z2 before z10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def zone_matrix_of(ctl: Any, row: Any, progress: Any = None) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """(zones, {(from zone or 'outside', to zone): services}) from reach of every VM."""
    from ...analysis.engine import Analyzer
    from ...analysis.reach import reach

    policy = ctl.revisions.policy_of(row)
    analyzer = Analyzer(policy)
    zone_of = {name: vm.zone for name, vm in policy.doc.vms.items()}
    zones = sorted({z for z in zone_of.values() if z}, key=natural)
    cells: dict[tuple[str, str], set[str]] = {}
    members = sorted((name, zone) for name, zone in zone_of.items() if zone)
    for done, (name, zone) in enumerate(members):
        if progress is not None:
            progress(done, len(members))
        # one policy, a reach per zone VM: the index of the peers' own rules pays for itself
        for result in reach(analyzer, f"vm:{name}", "to", indexed=True):
            for r in result.rows:
                peers = {zone_of.get(p) for p in r.vms} - {None}
                if r.outside:
                    peers.add("outside")
                for peer in peers:
                    cells.setdefault((str(peer), zone), set()).update(r.services)
    return zones, {key: sorted(services) for key, services in cells.items()}


def effective_rules(policy: Any, vm: str, totals: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per direction, the VM's rules in evaluation order (global, its own, its zone's,
    the default) with their counters summed across nodes."""
    from ...analysis.describe import rule_text

    hits = {(t["scope"], t["direction"], t["rule"]): t for t in totals}
    zone = policy.doc.vms[vm].zone
    out = []
    for direction in ("in", "out"):
        rows = []
        levels = [("global", "", "global"), ("vm", vm, vm)] + ([("zone", zone, f"zone:{zone}")] if zone else [])
        for level, owner, scope in levels:
            for ref in policy.rules_of(level, owner):
                if ref.rule.security_group is not None:  # issue 18: the group's rules in its place
                    group = ref.rule.security_group
                    members = policy.rules_of("security_group", group) if ref.rule.enabled else []
                    scoped = [(f"{level} · group {group}", f"sg:{group}", member) for member in members]
                else:
                    scoped = [(level, scope, ref)]
                for shown, counted, member in scoped:
                    if member.rule.direction not in (direction, None):
                        continue
                    t = hits.get((counted, direction, member.id), {})
                    rows.append({"level": shown, "id": member.id, "action": member.rule.action, "text": rule_text(member.rule),
                                 "packets": t.get("packets", "-"), "bytes": t.get("bytes", "-")})
        action = policy.default_action(vm, direction)
        t = hits.get((vm, direction, f"default-{direction}"), {})
        rows.append({"level": "default", "id": f"default-{direction}", "action": action, "text": "anything else",
                     "packets": t.get("packets", "-"), "bytes": t.get("bytes", "-")})
        out.append((direction, rows))
    return out


__all__ = ["install"]
