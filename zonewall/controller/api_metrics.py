"""`GET /metrics`: Prometheus exposition through prometheus_client, reader token required.

Prometheus sends it with `authorization: {credentials_file: viewer.token}` in the
scrape config. Everything is read from the database at scrape time by one collector
(no process-wide registry: several controller apps in one process stay apart).

Counters carry a `node` label and never go backwards: a rule's count on a node
accumulates kernel readings per kernel rule (a rule re-created by an apply counts on
from where it was). A rule's series ends when the rule leaves the node (its counts
move to the scope's removed rules in the store: store/counters.py), so the series
are those of the rules that exist; a VM's sum of drops keeps the removed rules' and
only grows. Sum over `node` in PromQL for the cluster:
`sum by (vm) (rate(zonewall_vm_dropped_packets_total[5m]))`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import auth
from .deps import controller
from .store.db import as_utc
from .store.tokens import Principal

router = APIRouter(tags=["metrics"])
AGENT_UP_SECONDS = 60.0  # an agent long-polls every 25 s at most: silent for longer is down
RULE_LABELS = ["node", "level", "scope", "direction", "rule"]


def is_vm_drop(row: Any) -> bool:
    """A drop or reject decided by a VM's own rules or its default (shared zone and
    global chains serve many VMs: their drops cannot be told apart by counters)."""
    return row.level in ("vm", "default") and row.verdict in ("drop", "reject") and ":" not in row.scope and row.scope not in ("host", "global")


class ControllerCollector(Collector):
    def __init__(self, ctl: Any, now: float | None = None) -> None:
        self.ctl = ctl
        self.now = now

    def collect(self) -> Iterator[Metric]:
        ctl = self.ctl
        packets = CounterMetricFamily("zonewall_rule_packets", "Packets matched by a rule on a node", labels=RULE_LABELS)
        octets = CounterMetricFamily("zonewall_rule_bytes", "Bytes matched by a rule on a node", labels=RULE_LABELS)
        drops = CounterMetricFamily("zonewall_vm_dropped_packets", "Packets dropped or rejected by a VM's own rules and default, per node",
                                    labels=["node", "vm"])
        per_vm: dict[tuple[str, str], int] = {}
        for row in ctl.counters.per_node():
            if row.present:  # a rule on the node (not its scope's removed rules)
                labels = [row.node, row.level, row.scope, row.direction, row.rule]
                packets.add_metric(labels, row.packets)
                octets.add_metric(labels, row.bytes)
            if is_vm_drop(row):
                per_vm[(row.node, row.scope)] = per_vm.get((row.node, row.scope), 0) + row.packets
        for (node, vm), value in sorted(per_vm.items()):
            drops.add_metric([node, vm], value)
        yield from (packets, octets, drops)

        moment = time.time() if self.now is None else self.now
        up = GaugeMetricFamily("zonewall_agent_up", f"1 when the node's agent was heard from within {AGENT_UP_SECONDS:g} s", labels=["node"])
        seconds = GaugeMetricFamily("zonewall_apply_seconds", "Wall time of the node's last apply (compile, transaction, readback)", labels=["node"])
        applied = GaugeMetricFamily("zonewall_applied_revision", "Revision the node last applied", labels=["node"])
        states = GaugeMetricFamily("zonewall_node_state", "1 for the state the node's agent last reported (ok, degraded, error, registered)",
                                   labels=["node", "state"])
        problems = GaugeMetricFamily("zonewall_node_problems", "Faults of the node's agent itself (a stopped packet log, a full buffer...)",
                                     labels=["node"])
        for row in ctl.nodes.all():
            states.add_metric([row.name, row.state], 1)
            problems.add_metric([row.name], len(json.loads(row.problems or "[]")))
            contact = as_utc(row.last_contact)
            up.add_metric([row.name], 1 if contact is not None and moment - contact.timestamp() <= AGENT_UP_SECONDS else 0)
            if row.apply_seconds is not None:
                seconds.add_metric([row.name], round(row.apply_seconds, 6))
            if row.applied_revision is not None:
                applied.add_metric([row.name], row.applied_revision)
        current = GaugeMetricFamily("zonewall_current_revision", "The controller's current revision", value=ctl.revisions.current_number() or 0)
        yield from (up, seconds, applied, states, problems, current)

        stats = sorted(ctl.logs.stats().items())
        for name, key, text in (("zonewall_log_records", "received", "Packet log records received"),
                                ("zonewall_log_records_suppressed", "suppressed", "Packet log records suppressed by the log rate (settings.log)"),
                                ("zonewall_log_records_dropped", "dropped", "Packet log records dropped from a full agent buffer")):
            family = CounterMetricFamily(name, text, labels=["node"])
            for node, values in stats:
                family.add_metric([node], values[key])
            yield family


def render_metrics(ctl: Any, now: float | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControllerCollector(ctl, now))
    return generate_latest(registry).decode("utf-8")


@router.get("/metrics", summary="Prometheus metrics (rule hits and drops per VM per node, apply latency, agents up, log records)")
def metrics(request: Request, _: Principal = Depends(auth.reader)) -> Response:
    return Response(render_metrics(controller(request)), media_type=CONTENT_TYPE_LATEST)
