"""`GET /metrics`: Prometheus text exposition (version 0.0.4), reader token required.

Prometheus sends it with `authorization: {credentials_file: viewer.token}` in the
scrape config. Everything is computed from the database at scrape time.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from . import auth
from .store.db import as_utc
from .store.tokens import Principal

router = APIRouter(tags=["metrics"])
AGENT_UP_SECONDS = 60.0  # an agent long-polls every 25 s at most: silent for longer is down


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float | int]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(ctl: Any, now: float | None = None) -> str:
    moment = time.time() if now is None else now
    out = Exposition()
    totals = ctl.counters.totals()
    key = lambda t: {"level": t["level"], "scope": t["scope"], "direction": t["direction"], "rule": t["rule"]}  # noqa: E731
    out.family("zonewall_rule_packets_total", "counter", "Packets matched by a rule, summed across nodes",
               [(key(t), t["packets"]) for t in totals])
    out.family("zonewall_rule_bytes_total", "counter", "Bytes matched by a rule, summed across nodes",
               [(key(t), t["bytes"]) for t in totals])
    drops: dict[str, int] = {}
    for t in totals:
        if t["level"] in ("vm", "default") and t["verdict"] in ("drop", "reject") and ":" not in t["scope"] and t["scope"] not in ("host", "global"):
            drops[t["scope"]] = drops.get(t["scope"], 0) + t["packets"]
    out.family("zonewall_vm_dropped_packets_total", "counter", "Packets dropped or rejected by a VM's own rules and default",
               [({"vm": vm}, n) for vm, n in sorted(drops.items())])
    nodes = ctl.nodes.all()
    current = ctl.revisions.current_number()
    up, applied, seconds = [], [], []
    for row in nodes:
        contact = as_utc(row.last_contact)
        alive = contact is not None and moment - contact.timestamp() <= AGENT_UP_SECONDS
        up.append(({"node": row.name}, 1 if alive else 0))
        if row.applied_revision is not None:
            applied.append(({"node": row.name}, row.applied_revision))
        if row.apply_seconds is not None:
            seconds.append(({"node": row.name}, round(row.apply_seconds, 6)))
    out.family("zonewall_agent_up", "gauge", f"1 when the node's agent was heard from within {AGENT_UP_SECONDS:g} s", up)
    out.family("zonewall_apply_seconds", "gauge", "Wall time of the node's last apply (compile, transaction, readback)", seconds)
    out.family("zonewall_applied_revision", "gauge", "Revision the node last applied", applied)
    out.family("zonewall_current_revision", "gauge", "The controller's current revision", [({}, current or 0)])
    stats = ctl.logs.stats()
    out.family("zonewall_log_records_total", "counter", "Packet log records received", [({"node": n}, s["received"]) for n, s in sorted(stats.items())])
    out.family("zonewall_log_records_suppressed_total", "counter", "Packet log records suppressed by the log rate (settings.log)",
               [({"node": n}, s["suppressed"]) for n, s in sorted(stats.items())])
    out.family("zonewall_log_records_dropped_total", "counter", "Packet log records dropped from a full agent buffer",
               [({"node": n}, s["dropped"]) for n, s in sorted(stats.items())])
    return out.text()


@router.get("/metrics", summary="Prometheus metrics (rule hits, drops per VM, apply latency, agents up, log records)")
def metrics(request: Request, _: Principal = Depends(auth.reader)) -> Response:
    return Response(render_metrics(request.app.state.ctl), media_type="text/plain; version=0.0.4; charset=utf-8")
