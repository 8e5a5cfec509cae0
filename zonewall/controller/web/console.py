"""The dashboard's working pages: nodes, the zone picture, and the rule editor.

Included by routes.install; the session helpers come from pages.py. The editor changes a VM's or a
zone's rules or a group's members: the admin edits the list as YAML, sees the
semantic diff (and the document's text diff) of exactly that change, and commits it
as a revision through the same API call a script would make (PUT .../rules with the
previewed base revision: if someone committed meanwhile, the commit is refused and
the preview shown again). A viewer sees the pages but gets no editor and no POST.
"""

from __future__ import annotations

import difflib
import time
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ...policy import edits
from ...policy.documents import problems_json
from ...policy.errors import PolicyError
from ...policy.yamlpatch import parse, render_block
from .. import preview
from ..api_gitops import follower_status
from ..api_metrics import AGENT_UP_SECONDS
from ..deps import controller
from ..schemas import NodeOut
from ..store.db import as_utc
from ..store.rollup import Rollup
from . import charts
from .pages import admin_form, current, page
from .paging import Page

SECTIONS = {"vms": ("VM", "rules"), "zones": ("zone", "rules"), "groups": ("group", "members")}


def flow_rows(diff: dict[str, Any] | None) -> list[dict[str, str]]:
    """A diff's flows as table rows (change, from, to, services, deciding rule)."""
    rows = []
    for flow in (diff or {}).get("flows", []):
        side = flow.get("new") or flow.get("old") or {}
        decided = (side.get("decided_by") or {}) if isinstance(side, dict) else {}
        rows.append({"change": flow.get("change"), "from": ", ".join(flow.get("from", [])), "to": ", ".join(flow.get("to", [])),
                     "services": ", ".join(flow.get("services", [])), "rule": decided.get("rule", "")})
    return rows


def denied_traffic(ctl: Any, hours: float, now: float | None = None, *, node: str | None = None) -> dict[str, Any]:
    """The overview's and a node page's graphs: denied packets over time and top lists."""
    until = time.time() if now is None else now
    since = until - hours * 3600
    rollup = Rollup(ctl.sessions)
    points = rollup.series(since, until, node=node, buckets=60)
    minutes = max(1, round(hours * 60 / 60))
    out: dict[str, Any] = {"hours": hours, "total": sum(n for _, n in points),
                           "series": charts.time_bars(points, f"denied packets over the last {hours:g} h, {minutes} min per bar (UTC)")}
    if node is None:
        for dimension, title, link in (("src", "sources", "/ui/logs?address=%s"), ("dst", "destinations", "/ui/logs?address=%s"),
                                       ("port", "ports", None), ("vm", "VMs", "/ui/vms/%s")):
            out[dimension] = charts.top_bars(rollup.top(dimension, since, until, 10), f"top blocked {title}, last {hours:g} h", link=link)
    return out


router = APIRouter(include_in_schema=False)


def node_rows(ctl: Any) -> list[dict[str, Any]]:
    number = ctl.revisions.current_number()
    row = ctl.revisions.current()
    hosts = set(ctl.revisions.policy_of(row).doc.hosts) if row else set()
    rows = {r.name: r for r in ctl.nodes.all()}
    now = time.time()
    out = []
    for name in sorted(set(rows) | hosts):
        node = NodeOut.of(name, rows.get(name), name in hosts, number).model_dump()
        contact = as_utc(rows[name].last_contact) if name in rows else None
        node["up"] = contact is not None and now - contact.timestamp() <= AGENT_UP_SECONDS
        out.append(node)
    return out


@router.get("/ui/nodes")
def nodes(request: Request, page_number: int = 1, q: str = "") -> HTMLResponse:
    found = [n for n in node_rows(controller(request)) if q.lower() in n["name"]]
    return page(request, "nodes.html", "Nodes", listing=Page.of(found, page_number, {"q": q}), q=q)


@router.get("/ui/nodes/{node}")
def node_page(request: Request, node: str, page_number: int = 1) -> HTMLResponse:
    ctl = controller(request)
    found = next((n for n in node_rows(ctl) if n["name"] == node), None)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no node {node!r}")
    row = ctl.revisions.current()
    policy = ctl.revisions.policy_of(row) if row else None
    guests = [{"name": vm, "zone": policy.doc.vms[vm].zone} for vm in policy.vms_on(node)] if policy and node in policy.doc.hosts else []
    log_lines = [{"time": as_utc(r.time), "level": r.level, "message": r.message} for r in ctl.nodes.logs(node, 50)]
    drops = sorted(((r.scope, r.packets) for r in ctl.counters.per_node() if r.node == node and r.verdict in ("drop", "reject") and r.packets),
                   key=lambda item: -item[1])
    per_scope: dict[str, int] = {}
    for scope, packets in drops:
        per_scope[scope] = per_scope.get(scope, 0) + packets
    return page(request, "node.html", f"Node {node}", node=found, guests=Page.of(guests, page_number), log_lines=log_lines,
                traffic=denied_traffic(ctl, 24, node=node),
                drops=charts.top_bars(sorted(per_scope.items(), key=lambda i: -i[1])[:10], f"drops counted on {node} by scope"))


@router.get("/ui/zones")
def zones(request: Request, page_number: int = 1) -> HTMLResponse:
    from .routes import MatrixPending, natural, zone_matrix

    ctl = controller(request)
    row = ctl.revisions.current()
    if row is None:
        return page(request, "zones.html", "Zones", graph=None, zones=[], groups=Page.of([], 1), error=None)
    policy = ctl.revisions.policy_of(row)
    members: dict[str, int] = {}
    for vm in policy.doc.vms.values():
        if vm.zone:
            members[vm.zone] = members.get(vm.zone, 0) + 1
    error, cells, names = None, {}, sorted(policy.doc.zones)
    try:
        names, cells = zone_matrix(ctl, row)
    except MatrixPending as exc:
        error = f"{exc} (this page refreshes itself)"
    except Exception as exc:  # noqa: BLE001 - the page says what the analyzer said
        error = f"the analyzer failed: {exc}"
    listed = [{"name": z, "vms": members.get(z, 0), "rules": len(policy.doc.zones[z].rules) if z in policy.doc.zones else 0,
               "reaches": sorted(b for (a, b) in cells if a == z and b != z)} for z in sorted(set(names) | set(policy.doc.zones))]
    groups = [{"name": g, "members": len(spec.members)} for g, spec in sorted(policy.doc.groups.items())]
    ordered = sorted(set(names) | set(policy.doc.zones), key=natural)
    listed.sort(key=lambda z: natural(z["name"]))
    return page(request, "zones.html", "Zones", graph=charts.zone_graph(ordered, cells, members=members),
                zones=listed, groups=Page.of(groups, page_number), error=error, current=row.number, refresh=error is not None and "computing" in error)


# -- the editor -------------------------------------------------------------------------
def editable(request: Request, section: str, name: str) -> tuple[int, dict[str, str], Any]:
    if section not in SECTIONS:
        raise HTTPException(status_code=404, detail=f"nothing to edit under {section!r}")
    revisions = controller(request).revisions
    row = revisions.current()
    if row is None:
        raise HTTPException(status_code=404, detail="there is no policy yet")
    documents = revisions.documents_of(row)
    try:
        _, data = edits.owner(documents, section, name)
    except edits.ChangeError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    value = edits.group_members(data, name) if section == "groups" else (data[section][name] or {}).get("rules") or []
    return row.number, documents, value


def as_text(value: list[Any]) -> str:
    return "\n".join(render_block(value)) + "\n" if value else ""


def editor(request: Request, section: str, name: str, *, text: str, message: str, base: int, result: dict[str, Any] | None = None,
           problems: list[str] | None = None, notice: str | None = None, status: int = 200) -> HTMLResponse:
    who, _ = current(request)
    kind, key = SECTIONS[section]
    response = page(request, "edit.html", f"Edit {kind} {name}: {key}", area=section, name=name, kind=kind, key=key, text=text,
                    message=message, base=base, result=result, problems=problems or [], notice=notice, can_edit=who.role == "admin",
                    gitops=follower_status(controller(request)))
    response.status_code = status
    return response


@router.get("/ui/edit/{section}/{name}")
def edit_form(request: Request, section: str, name: str) -> HTMLResponse:
    current(request)
    base, _, value = editable(request, section, name)
    return editor(request, section, name, text=as_text(value), message="", base=base)


@router.post("/ui/edit/{section}/{name}")
async def edit_submit(request: Request, section: str, name: str) -> Response:
    who, fields = await admin_form(request)
    text, message = fields.get("text", ""), fields.get("message", "")
    base_field = fields.get("base_revision", "")
    number, documents, _ = editable(request, section, name)
    base = int(base_field) if base_field.isdigit() else number
    again = lambda **more: editor(request, section, name, text=text, message=message, base=base, **more)
    try:
        value = parse(text) if text.strip() else []
    except yaml.YAMLError as exc:
        return again(problems=[f"not YAML: {' '.join(str(exc).split())}"], status=422)
    if not isinstance(value, list):
        return again(problems=[f"expected a YAML list of {SECTIONS[section][1]} (lines starting with `- `)"], status=422)
    try:
        edited = (edits.replace_members(documents, name, value) if section == "groups" else edits.replace_rules(documents, section, name, value))
    except edits.ChangeError as exc:
        return again(problems=[str(exc)], status=422)
    if fields.get("action") != "commit":
        try:
            answer = await run_in_threadpool(preview.preview, controller(request), edited.documents, edited.summary)
        except PolicyError as exc:
            return again(problems=[p["text"] for p in problems_json(exc)], status=422)
        before, after = documents[edited.document], edited.documents[edited.document]
        text_diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{edited.document}", f"b/{edited.document}"))
        result = {"flows": flow_rows(answer["diff"]), "endpoints": answer["diff"]["endpoints"], "identical": answer["identical"],
                  "text_diff": text_diff, "base": answer["base_revision"]}
        return editor(request, section, name, text=text, message=message, base=answer["base_revision"], result=result)
    from .. import api_edits

    call = {"vms": api_edits.set_vm_rules, "zones": api_edits.set_zone_rules, "groups": api_edits.set_group_members}[section]
    try:
        body = (api_edits.MembersIn(members=value, message=message, base_revision=base) if section == "groups"
                else api_edits.RulesIn(rules=value, message=message, base_revision=base))
    except ValidationError as exc:
        return again(problems=[f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()], status=422)
    try:
        out = await run_in_threadpool(call, body, request, Response(), name, who)
    except HTTPException as exc:
        if exc.status_code == 409:
            return again(notice=f"The policy changed since your preview (revision {number} now): preview again.", status=409)
        detail = exc.detail
        problems = [p["text"] for p in detail.get("problems", [])] if isinstance(detail, dict) else [str(detail)]
        return again(problems=problems, status=exc.status_code)
    return RedirectResponse(f"/ui/revisions/{out.revision.number}", status_code=303)
