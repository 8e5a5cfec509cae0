"""docs/grafana-dashboard.json reads metrics the controller really exports, with the labels it uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.controller.live import Tokens

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def test_every_expression_names_exported_metrics_and_labels(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    counters = [{"level": "default", "scope": "db1", "direction": "in", "rule": "default-in", "verdict": "drop", "packets": 3, "bytes": 180}]
    assert client.put("/api/v1/nodes/node2/counters", json={"counters": counters}, headers=tokens.header("node2")).status_code == 204
    client.put("/api/v1/nodes/node2/status", json={"state": "ok", "applied_revision": 1, "apply_seconds": 0.1}, headers=tokens.header("node2"))
    client.post("/api/v1/nodes/node2/records", json={"batch_id": "x" * 16, "records": []}, headers=tokens.header("node2"))
    text = client.get("/metrics", headers=tokens.header("viewer")).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("zonewall_")}
    labels = {name: set(re.findall(r'(\w+)="', line)) for line in text.splitlines() if line.startswith("zonewall_") for name in [line.split("{")[0].split(" ")[0]]}
    document = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in document["panels"] for t in panel["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        for name in re.findall(r"zonewall_[a-z_]+", expression):
            assert name in exported, (name, expression)
        for name, selector in re.findall(r"(zonewall_[a-z_]+)\{([^}]*)\}", expression):
            used = set(re.findall(r"(\w+)\s*=~?", selector))
            assert used <= labels[name], (name, used, labels[name])
        for by in re.findall(r"by \(([^)]*)\)", expression):
            names = re.findall(r"zonewall_[a-z_]+", expression)
            assert set(map(str.strip, by.split(","))) <= set().union(*(labels[n] for n in names)), (by, expression)
