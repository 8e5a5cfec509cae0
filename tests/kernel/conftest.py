"""Fixtures for kernel tests that need a whole lab cluster (zonewall.lab.cluster).

Lab names come from tests/labtools.py (``t<pid>x<n>``); every lab is brought down in
a finalizer, and tests/conftest.py removes labs of test processes that no longer exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.labtools import unique_lab_name
from zonewall.compiler.node import compile_node
from zonewall.lab import netns
from zonewall.lab.cluster import LabState, lab_down, lab_prefix, lab_up
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

POLICIES = Path(__file__).parent / "policies"
def _kernel_check(config: pytest.Config) -> None:
    """Module-scoped labs are built before the per-test kernel guard of
    tests/conftest.py runs: apply the same rule first (fail when not root or in
    CI, skip on a dev machine), with that conftest's own probe."""
    probes = [p.kernel_problem for p in config.pluginmanager.get_plugins() if callable(getattr(p, "kernel_problem", None))]
    problem = probes[0]() if probes else (None if os.geteuid() == 0 else "kernel tests need root")
    if problem is None:
        return
    if os.geteuid() != 0 or os.environ.get("CI"):
        pytest.fail(f"kernel test cannot run: {problem}", pytrace=False)
    pytest.skip(f"kernel test skipped outside CI: {problem}")


class Lab:
    """A lab up from a policy fixture: namespaces, the policy, compiled NIC metadata."""

    def __init__(self, state: LabState, policy: Policy) -> None:
        self.state, self.policy = state, policy
        self.nics = {node: compile_node(policy, node).meta["nics"] for node in policy.doc.hosts}

    def node_ns(self, node: str) -> str:
        return self.state.nodes[node]

    def vm_ns(self, vm: str) -> str:
        return self.state.vms[vm]

    def nic(self, vm: str, index: int = 0):
        return self.policy.doc.vms[vm].nics[index]


@pytest.fixture(scope="module")
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Lab]]:
    """``lab_factory("guards.yaml")`` brings a lab up (policy from tests/kernel/policies);
    every lab it built is brought down when the module's tests are done."""
    made: list[str] = []

    def make(policy_file: str) -> Lab:
        _kernel_check(request.config)
        path = POLICIES / policy_file
        name = unique_lab_name()
        made.append(name)
        state = lab_up(str(path), name)
        return Lab(state, load_policy(str(path)))

    try:
        yield make
    finally:
        for name in made:
            lab_down(name)
            leftover = netns.list_netns(lab_prefix(name))
            assert not leftover, f"lab {name} left namespaces behind: {leftover}"
