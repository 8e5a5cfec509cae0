"""A lint run split over processes (analysis/lint/shards.py, workers.py) finds what a
run in one process finds: the same JSON on synthetic and random policies, with zones
split between shards, security groups called from every level, and rules no chain
holds. A merge that drops what one shard saw is caught, and a shard that fails or
dies fails the run with a one-line error and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analysis.policygen import policies
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import _Linter, lint
from zonewall.analysis.lint.report import Finding, Related, merge_sorted
from zonewall.analysis.lint.shards import SharedStats, plan_shards
from zonewall.analysis.lint.workers import LintWorkerError
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="sharded lint forks")


def findings(text: str, jobs: int) -> str:
    return json.dumps(lint(Analyzer(load_policy_text(text)), jobs=jobs, per_shard=1).to_json(), sort_keys=True)


SECURITY_GROUPS = textwrap.dedent(
    """\
    version: 1
    settings: {default: {in: drop, out: accept}, management: [192.168.100.0/24]}
    hosts:
      node1: {address: [192.168.100.11], rules: [{security_group: admin}]}
    host_rules:
      - {security_group: admin}
      - {direction: in, action: drop, tcp: 22}
    networks:
      lan: {bridge: br0, subnets: [10.0.0.0/24]}
    security_groups:
      web: {rules: [{direction: in, action: accept, tcp: [80, 443]}, {direction: in, action: accept, tcp: "8442-8443"}, {direction: in, action: drop, tcp: 80}]}
      admin: {rules: [{direction: in, action: accept, tcp: 22, from: 192.168.100.0/24}, {direction: in, action: accept, tcp: 22}]}
    global_rules:
      - {security_group: admin}
      - {direction: in, action: accept, tcp: 8443}
      - {direction: in, action: drop, tcp: 9999, to: 10.9.9.9}
    zones:
      front: {rules: [{security_group: web}, {direction: in, action: drop, tcp: 443}, {direction: in, action: accept, tcp: 22}]}
      back: {rules: [{direction: in, action: accept, tcp: 5432}, {direction: in, action: reject, tcp: 5432}]}
      empty: {rules: [{direction: in, action: accept, tcp: 1}]}
    vms:
    """
)


def security_group_policy(vms: int) -> str:
    lines = [SECURITY_GROUPS]
    for i in range(vms):
        zone = ("front", "back", None)[i % 3]
        own = "{direction: in, action: accept, tcp: 80}, {direction: out, action: drop, udp: 53}" if i % 2 else "{direction: in, action: drop, tcp: 22}"
        rules = f'[{{security_group: web}}, {{direction: in, action: accept, tcp: "8442-8444"}}, {own}]'
        lines.append(f"  vm{i}: {{host: node1, {'zone: ' + zone + ', ' if zone else ''}nics: [{{network: lan, ips: [10.0.0.{10 + i}]}}], rules: {rules}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("vms", "zones", "seed"), [(60, 5, 1), (90, 3, 2), (40, 20, 3)])
def test_shards_find_what_one_process_finds_on_synthetic_policies(vms: int, zones: int, seed: int) -> None:
    text = synth.policy_text(vms, nodes=2, zones=zones, seed=seed)
    one = findings(text, 1)
    kinds = {f["kind"] for f in json.loads(one)["findings"]}
    assert {"shadowed", "redundant", "conflict"} <= kinds
    for jobs in (2, 3):
        assert findings(text, jobs) == one, jobs


def test_zones_are_split_only_when_no_edge_is_near() -> None:
    """Three zones of 30 VMs in two shards: no zone edge is near the middle, one zone
    is split and its rules are shared; 50 zones of 2: every zone kept whole."""
    policy = load_policy_text(synth.policy_text(90, nodes=2, zones=3, seed=2))
    shards = plan_shards(policy, 2, per_shard=1)
    assert len(shards) == 2 and len(shards[0].split_zones) == 1
    (split,) = shards[0].split_zones
    assert {policy.doc.vms[vm].zone for shard in shards for vm in shard.vms if policy.doc.vms[vm].zone == split} == {split}
    assert all(any(policy.doc.vms[vm].zone == split for vm in shard.vms) for shard in shards)
    many = plan_shards(load_policy_text(synth.policy_text(100, nodes=2, zones=50, seed=2)), 2, per_shard=1)
    assert not many[0].split_zones and sum(len(s.vms) for s in many) == 100
    assert set().union(*(s.vms for s in many)) == set(load_policy_text(synth.policy_text(100, nodes=2, zones=50, seed=2)).doc.vms)


def test_every_rule_is_one_shards_or_shared() -> None:
    policy = load_policy_text(security_group_policy(12))
    shards = plan_shards(policy, 3, per_shard=1)
    assert len(shards) == 3
    for ref in policy.rules:
        owners = [s.index for s in shards if s.owns(ref)]
        shared = {s.shared(ref) for s in shards}
        assert len(shared) == 1  # every shard agrees
        assert (owners == []) == shared.pop(), ref.id
        assert len(owners) <= 1
    assert plan_shards(policy, 3, per_shard=5) == plan_shards(policy, 2, per_shard=5)  # 12 VMs: two shards at most
    assert len(plan_shards(policy, 8, per_shard=500)) == 1


def test_shards_find_what_one_process_finds_with_security_groups(forked: list[int]) -> None:
    text = security_group_policy(12)
    one = findings(text, 1)
    found = json.loads(one)["findings"]
    # shared rules (global, security groups') and a zone without VMs have findings of their own
    assert any(f["level"] == "security_group" and f["kind"] in ("shadowed", "redundant", "conflict") for f in found)
    assert any(f["level"] == "global" for f in found)
    assert any(f["object"] == "zone:empty" for f in found)
    # The global rule accepting tcp 8443 and web's accepting 8442-8443 come second in
    # their lists (a tie in judging order): the one met first, the global one, is
    # judged first and can go (web's takes its packets); web's must then stay.
    redundant = {f["rule"] for f in found if f["kind"] == "redundant"}
    assert "policy:15" in redundant and not [r for r in redundant if r.startswith("policy:11:")]
    for jobs in (2, 3, 4):
        assert findings(text, jobs) == one, jobs
    _no_children_left(forked)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_shards_find_what_one_process_finds_on_random_policies(drawn: tuple[str, Any]) -> None:
    one = findings(drawn[0], 1)
    assert findings(drawn[0], 3) == one


_FINDING_PARTS = st.tuples(
    st.sampled_from(["a.yaml", "b.yaml", None, "built-in"]),
    st.integers(1, 6),
    st.sampled_from(["shadowed", "redundant", "conflict", "unused"]),
    st.sampled_from(["r1", "r2", None]),
    st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_FINDING_PARTS, st.booleans()), max_size=60))
def test_two_sorted_runs_merge_as_one_sort_of_both(drawn: list[tuple[tuple[Any, ...], bool]]) -> None:
    """Shard 0 merges its sorted findings with each child's (report.merge_sorted, by
    galloping): the same list, and the same order of ties, as sorting both at once."""
    made = []
    for index, ((file, line, kind, rule, related), second) in enumerate(drawn):
        where = None if file is None else file if file == "built-in" else f"{file}:{line}"
        related_entries = [Related(r, "a.yaml:1", "vm") for r in related]
        made.append((Finding(kind, "info", f"finding {index}", rule=rule, where=where, related=related_entries), second))
    first = sorted((f for f, second in made if not second), key=Finding.sort_key)
    other = sorted((f for f, second in made if second), key=Finding.sort_key)
    merged = merge_sorted(first, other)
    assert [f.message for f in merged] == [f.message for f in sorted(first + other, key=Finding.sort_key)]


def test_a_shared_conflict_is_told_as_met_in_its_first_chain() -> None:
    """A zone rule whose VMs are split between shards conflicts with a global rule: in
    an IPv4-only VM's chain the global drop lies inside the zone's IPv4 accept (an
    exception), in a dual-stack VM's it does not. The finding is the first chain's
    (vm0's), whichever shard saw it."""
    lines = [
        "version: 1",
        "settings: {default: {in: drop, out: accept}}",
        "hosts: {node1: {address: [192.168.100.11]}}",
        'networks: {lan: {bridge: br0, subnets: [10.0.0.0/24, "fd00::/64"]}}',
        "global_rules:",
        "  - {direction: in, action: drop, tcp: [22, 23]}",
        "zones:",
        "  web: {rules: [{direction: in, action: accept, tcp: [22, 23, 80], family: ipv4}]}",
        "vms:",
    ]
    for i in range(6):
        ips = f"[10.0.0.{10 + i}]" if i == 0 else f'[10.0.0.{10 + i}, "fd00::{10 + i:x}"]'
        lines.append(f"  vm{i}: {{host: node1, zone: web, nics: [{{network: lan, ips: {ips}}}]}}")
    text = "\n".join(lines) + "\n"
    assert plan_shards(load_policy_text(text), 2, per_shard=1)[0].split_zones == {"web"}
    one = findings(text, 1)
    assert findings(text, 2) == one
    (conflict,) = [f for f in json.loads(one)["findings"] if f["kind"] == "conflict"]
    assert conflict["details"] == {"exception": True, "overlap": "tcp 22-23"}  # as in vm0's chain
    assert len(conflict["chains"]) == 6


def test_a_merge_that_drops_a_shards_sightings_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    text = synth.policy_text(60, nodes=2, zones=5, seed=1)
    one = findings(text, 1)
    assert findings(text, 2) == one

    def add(self: SharedStats, other: SharedStats) -> None:
        self.chains += other.chains  # what the other shard saw shadowed or dead is lost
        self.live += other.live
        self.placed_in += other.placed_in

    monkeypatch.setattr(SharedStats, "add", add)
    assert findings(text, 2) != one


def test_a_failing_shard_fails_the_run_in_one_line(monkeypatch: pytest.MonkeyPatch, forked: list[int]) -> None:
    survey = _Linter.survey

    def failing(self: _Linter) -> dict[str, SharedStats]:
        if self.shard.index == 1:
            raise ValueError("no such chain")
        return survey(self)

    monkeypatch.setattr(_Linter, "survey", failing)
    with pytest.raises(LintWorkerError) as failed:
        findings(synth.policy_text(30, nodes=2, zones=3, seed=1), 2)
    assert str(failed.value) == "lint shard 1 failed: ValueError: no such chain"
    assert "in failing" in failed.value.__notes__[0]  # the shard's traceback, for a bug report
    _no_children_left(forked)


def test_a_shard_that_dies_fails_the_run(monkeypatch: pytest.MonkeyPatch, forked: list[int]) -> None:
    survey = _Linter.survey

    def dying(self: _Linter) -> dict[str, SharedStats]:
        if self.shard.index == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return survey(self)

    monkeypatch.setattr(_Linter, "survey", dying)
    with pytest.raises(LintWorkerError) as failed:
        findings(synth.policy_text(30, nodes=2, zones=3, seed=1), 3)
    assert str(failed.value).startswith("lint shard 2 stopped without an answer")
    _no_children_left(forked)


def _no_children_left(pids: list[int]) -> None:
    """Every shard's process was reaped (none left running or as a zombie): at once
    after a failed run, within seconds after one that answered (a thread reaps it as
    it exits). Looked at without reaping it here."""
    assert pids
    deadline = time.monotonic() + 10
    for pid in pids:
        while True:
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            assert time.monotonic() < deadline, f"shard process {pid} not reaped"
            time.sleep(0.01)


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the shards' processes the test forks."""
    from zonewall.analysis.lint import workers

    pids: list[int] = []
    fork = workers._fork

    def recording(*args: Any) -> Any:
        child = fork(*args)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(workers, "_fork", recording)
    return pids


def test_the_cli_lints_a_thousand_vms_in_two_processes_with_the_same_findings(tmp_path: Path, forked: list[int]) -> None:
    from typer.testing import CliRunner

    from zonewall.cli import app

    policy = tmp_path / "policy.yaml"
    policy.write_text(synth.policy_text(1000, nodes=2, zones=20, seed=4))
    alone = CliRunner().invoke(app, ["lint", str(policy), "--json", "--jobs", "1"])
    assert not forked
    shared = CliRunner().invoke(app, ["lint", str(policy), "--json", "--jobs", "2"])
    assert len(forked) == 1  # 1,000 VMs: two shards
    assert alone.exit_code == shared.exit_code == 1  # warnings
    assert json.loads(alone.stdout)["counts"]["shadowed"] > 0
    assert shared.stdout == alone.stdout
    wrong = CliRunner().invoke(app, ["lint", str(policy), "--jobs", "0"])
    assert wrong.exit_code == 2 and "--jobs" in wrong.output


def test_a_shard_leaves_when_the_process_that_forked_it_is_gone() -> None:
    """A shard waiting for the judging order sees its pipe closed (the lint's process
    ended, however) and leaves, with its siblings' pipes not holding it."""

    from zonewall.analysis.lint import workers

    analyzer = Analyzer(load_policy_text(synth.policy_text(30, nodes=2, zones=3, seed=1)))
    shards = plan_shards(analyzer.policy, 3, per_shard=1)
    first = workers._fork(analyzer, shards[1], True, [])
    second = workers._fork(analyzer, shards[2], True, [first])
    for child in (first, second):
        child.receive("seen")  # both now wait for the judging order
    first.conn.close()  # as when this process ends: only it held that end open
    deadline = time.monotonic() + 20
    pid = 0
    while pid == 0 and time.monotonic() < deadline:
        pid, status = os.waitpid(first.pid, os.WNOHANG)
        time.sleep(0.05)
    second.end(kill=True)
    if pid == 0:
        first.end(kill=True)
        pytest.fail("the shard did not leave")
    assert os.waitstatus_to_exitcode(status) == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_what_a_lint_leaves_is_not_walked_by_the_next_young_collection(jobs: int) -> None:
    """The findings (and the analyzer's memos) outlive the lint: left in the young
    generations, the first collection after it would walk all of them (1.2-2 s after
    `zonewall lint` at 10,000 VMs); they are moved to the oldest one."""
    import gc

    analyzer = Analyzer(load_policy_text(synth.policy_text(40, nodes=2, zones=4, seed=2)))
    assert gc.isenabled()
    report = lint(analyzer, jobs=jobs, per_shard=1)
    assert report.findings and gc.isenabled()
    young = [o for generation in (0, 1) for o in gc.get_objects(generation=generation)]
    assert not any(o is report.findings or o is report.findings[0].related for o in young)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_lint_leaves_no_cycle_for_the_collector(jobs: int) -> None:
    """The analysis goes with the lint, freed as it ends: none of it waits for a full
    collection (moved to the oldest generation, it would have held ~400 MB at 10,000
    VMs until one)."""
    import gc

    analyzer = Analyzer(load_policy_text(synth.policy_text(40, nodes=2, zones=4, seed=2)))
    gc.collect()
    report = lint(analyzer, jobs=jobs, per_shard=1)
    assert report.findings
    assert gc.collect() == 0
