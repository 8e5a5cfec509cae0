"""`zonewall demo`: the main job, end to end, on a lab cluster.

Build the lab from an example policy, apply each node's compiled ruleset inside
its namespace, measure reachability with real packets for IPv4 and IPv6, and show
it beside the matrix the example's README promises (expected-matrix.yaml).
An example directory holds `policy/` (the policy files) and `expected-matrix.yaml`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from rich.console import Console

from ..policy.loader import load_policy
from .cluster import lab_down, lab_up
from .probing import matrix_sources, policy_services, reachability_matrix
from .report import differences, print_matrix

DEMO_LAB = "demo"


def run_demo(console: Console, example: Path, keep: bool) -> int:
    policy_dir = example / "policy"
    policy = load_policy(policy_dir)
    expected_file = example / "expected-matrix.yaml"
    expected = yaml.safe_load(expected_file.read_text()) if expected_file.exists() else None
    lab_down(DEMO_LAB)  # a previous run that crashed leaves nothing behind
    console.rule(f"zonewall demo: {example}")
    state = lab_up(str(policy_dir), DEMO_LAB)
    failures = 0
    try:
        console.print(f"lab up: nodes {', '.join(sorted(state.nodes))}; VMs {', '.join(sorted(state.vms))}; rulesets applied")
        for family in ("ipv4", "ipv6"):
            outside = [f"{label} = {ref}" for label, ref in matrix_sources(policy, family) if not label.startswith("vm:")]  # type: ignore[arg-type]
            console.print(f"{family} sources outside the cluster: {'; '.join(outside)}; services probed: {' '.join(str(s) for s in policy_services(policy))}")
            measured = reachability_matrix(state, policy, family)  # type: ignore[arg-type]
            print_matrix(console, measured, f"{family}: measured with real packets (expected in brackets where different)", expected)
            if expected is not None:
                diff = differences(measured, expected)
                failures += len(diff)
                for line in diff:
                    console.print(f"[red]MISMATCH[/red] {line}")
        verdict = "[green]measured = expected[/green]" if failures == 0 else f"[red]{failures} cell(s) differ[/red]"
        console.print(verdict if expected is not None else "no expected-matrix.yaml to compare with")
    finally:
        if keep:
            console.print(f"lab left up (zonewall lab down --name {DEMO_LAB}); try: zonewall lab probe --name {DEMO_LAB} --from internet ...")
        else:
            lab_down(DEMO_LAB)
            console.print("lab removed")
    return 0 if failures == 0 else 1
