"""`zonewall demo`: central management end to end, on a lab cluster.

Start a controller (SQLite in a temporary data directory), build the lab from an
example policy with no rules applied, start one agent inside each node namespace,
upload the policy through the API and let the agents enforce it; measure
reachability with real packets (IPv4 and IPv6) beside the matrix the example
promises (expected-matrix.yaml). Then change one rule through the API, measure
again, and show what changed: in the packets and in the revision's semantic diff.
An example directory holds `policy/` (the policy files) and `expected-matrix.yaml`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from ..policy.documents import load_documents
from ..policy.loader import load_policy
from ..policy.resolve import Policy
from .cluster import LabState, lab_down, lab_up
from .managed import ManagedLab
from .probing import INTERNET, matrix_sources, policy_services, reachability_matrix
from .report import Matrix, differences, print_matrix

DEMO_LAB = "demo"
BUNDLED_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"  # in the package: `zonewall demo` runs anywhere
FAMILIES = ("ipv4", "ipv6")
CHANGE_ID = "demo-change"


def find_example(name_or_path: str) -> Path:
    """A directory given (absolute or relative) if it exists, else a bundled example by name."""
    given = Path(name_or_path)
    if given.is_dir():
        return given
    bundled = BUNDLED_EXAMPLES / name_or_path
    if bundled.is_dir():
        return bundled
    names = ", ".join(sorted(p.name for p in BUNDLED_EXAMPLES.iterdir() if (p / "policy").is_dir()))
    raise FileNotFoundError(f"--example {name_or_path}: no such directory, and no bundled example of that name (bundled: {names})")


def run_demo(console: Console, example: Path, keep: bool, lab_name: str = DEMO_LAB) -> int:
    policy_dir = example / "policy"
    policy = load_policy(policy_dir)
    expected_file = example / "expected-matrix.yaml"
    expected = yaml.safe_load(expected_file.read_text()) if expected_file.exists() else None
    lab_down(lab_name)  # a previous run that crashed leaves nothing behind
    console.rule(f"zonewall demo: {example}")
    state = lab_up(str(policy_dir), lab_name, apply=False)
    managed = ManagedLab(state, Path(tempfile.mkdtemp(prefix="zonewall-demo-")))
    failures = 0
    try:
        managed.start()
        assert managed.controller is not None
        console.print(f"controller {managed.controller.url} (inside the lab: {managed.controller.agent_url}), data in {managed.data_dir}")
        console.print(f"lab up: nodes {', '.join(sorted(state.nodes))}; VMs {', '.join(sorted(state.vms))}; one agent per node, no rules yet")

        revision = _upload(console, managed, policy_dir)
        before: dict[str, Matrix] = {}
        for family in FAMILIES:
            before[family] = _measure(console, state, policy, family, expected)
            if expected is not None:
                for line in differences(before[family], expected):
                    failures += 1
                    console.print(f"[red]MISMATCH[/red] {line}")
        verdict = "[green]measured = expected[/green]" if failures == 0 else f"[red]{failures} cell(s) differ[/red]"
        console.print(verdict if expected is not None else "no expected-matrix.yaml to compare with")

        failures += _change_one_rule(console, managed, policy, before, revision)
    finally:
        if keep:
            _leave_running(console, managed)
        else:
            managed.stop()
            lab_down(lab_name)
            console.print("controller and agents stopped, lab removed")
    return 0 if failures == 0 else 1


def _upload(console: Console, managed: ManagedLab, policy_dir: Path) -> int:
    started = time.monotonic()
    revision = managed.upload(policy_dir, "initial policy")["revision"]["number"]
    nodes = managed.wait_converged(revision)
    console.print(f"revision {revision} uploaded through the API; every agent applied it in {time.monotonic() - started:.2f}s")
    _print_nodes(console, nodes)
    return revision


def _print_nodes(console: Console, nodes: list[dict[str, Any]]) -> None:
    table = Table(title="node inventory (GET /api/v1/nodes)")
    for column in ("node", "applied revision", "state", "ruleset hash", "drift repairs"):
        table.add_column(column)
    for node in nodes:
        table.add_row(node["name"], str(node["applied_revision"]), node["state"], (node["ruleset_hash"] or "")[:12], str(node["drift_repairs"]))
    console.print(table)


def _measure(console: Console, state: LabState, policy: Policy, family: str, expected: Matrix | None, title: str = "measured with real packets (expected in brackets where different)") -> Matrix:
    outside = [f"{label} = {ref}" for label, ref in matrix_sources(policy, family) if not label.startswith("vm:")]  # type: ignore[arg-type]
    console.print(f"{family} sources outside the cluster: {'; '.join(outside)}; services probed: {' '.join(str(s) for s in policy_services(policy))}")
    measured = reachability_matrix(state, policy, family)  # type: ignore[arg-type]
    print_matrix(console, measured, f"{family}: {title}", expected)
    return measured


def choose_change(policy: Policy, measured: Matrix) -> tuple[str, int] | None:
    """A VM and a TCP port the internet cannot reach yet: the first VM (by name)
    with one, and its highest such port (three-tier: app1's 8080)."""
    ports = sorted((s.port for s in policy_services(policy) if s.proto == "tcp" and s.port is not None), reverse=True)
    internet = measured.get("internet", {})
    for vm in sorted(policy.doc.vms):
        reached = {service for target, services in internet.items() if target.split("@")[0] == f"vm:{vm}" for service in services}
        for port in ports:
            if f"tcp/{port}" not in reached:
                return vm, port
    return None


def _change_one_rule(console: Console, managed: ManagedLab, policy: Policy, before: dict[str, Matrix], revision: int) -> int:
    choice = choose_change(policy, before["ipv4"])
    if choice is None:
        console.print("no blocked internet -> VM service to open: no change to show")
        return 0
    vm, port = choice
    rule = {"id": CHANGE_ID, "direction": "in", "action": "accept", "from": [INTERNET["ipv4"], INTERNET["ipv6"]], "tcp": port,
            "comment": "opened by the zonewall demo"}
    console.rule(f"change through the API: POST /api/v1/vms/{vm}/rules")
    console.print(f"rule: {rule}")
    started = time.monotonic()
    response = managed.api("POST", f"/vms/{vm}/rules", json={"rule": rule, "message": f"demo: open tcp/{port} on {vm} to one internet address"})
    if response.status_code != 201:
        console.print(f"[red]refused[/red] ({response.status_code}): {response.text}")
        return 1
    changed = response.json()["revision"]
    nodes = managed.wait_converged(changed["number"])
    console.print(f"revision {changed['number']} (was {revision}) accepted and enforced on every node in {time.monotonic() - started:.2f}s")
    _print_nodes(console, nodes)

    new_policy = load_documents(managed.api("GET", "/policy").json()["documents"])
    failures = 0
    for family in FAMILIES:
        after = _measure(console, managed.lab, new_policy, family, before[family], "after the change, measured again (where it differs, the value before the change in brackets)")
        changes = differences(after, before[family])
        for line in changes:
            console.print(f"[yellow]changed[/yellow] {line.replace('expected', 'before')}")
        wanted = [f"internet -> vm:{vm}"]
        if not changes or not all(any(line.startswith(w) for w in wanted) for line in changes):
            failures += 1
            console.print(f"[red]{family}: the measured change is not exactly internet -> vm:{vm} tcp/{port}[/red]")
    _print_diff(console, changed)
    return failures


def _print_diff(console: Console, revision: dict[str, Any]) -> None:
    diff = revision.get("diff") or {}
    table = Table(title=f"revision {revision['number']}: semantic diff (GET /api/v1/revisions/{revision['number']})")
    for column in ("change", "from", "to", "services", "old", "new"):
        table.add_column(column, overflow="fold")
    for flow in diff.get("flows", []):
        def side(outcome: dict[str, Any] | None) -> str:
            if not outcome:
                return "-"
            decided = outcome.get("decided_by") or {}
            return f"{outcome['verdict']} by {decided.get('rule', '?')} ({decided.get('stage', '')})"

        table.add_row(flow["change"], ", ".join(flow["from"]), ", ".join(flow["to"]), ", ".join(flow["services"]), side(flow.get("old")), side(flow.get("new")))
    if not diff.get("flows"):
        table.add_row("(nothing)", "", "", "", "", "")
    console.print(table)


def _leave_running(console: Console, managed: ManagedLab) -> None:
    pids = [str(agent.process.pid) for agent in managed.agents.values()]
    if managed.controller is not None:
        pids.append(str(managed.controller.process.pid))
    (managed.data_dir / "pids").write_text(" ".join(pids) + "\n")
    (managed.data_dir / "admin.token").write_text(managed.admin_token + "\n")
    url = managed.controller.url if managed.controller else "?"
    console.print(f"lab, controller ({url}) and agents left running; admin token in {managed.data_dir / 'admin.token'}")
    console.print(f"  curl -H \"Authorization: Bearer $(cat {managed.data_dir / 'admin.token'})\" {url}/api/v1/nodes")
    console.print(f"  stop: kill $(cat {managed.data_dir / 'pids'}); zonewall lab down --name {managed.lab.name}")
