"""Work aside (zonewall/analysis/lint/aside.py): the lint's checks of definitions run in
a forked child while the chains are analysed, and the report is the one made without
a child: its empty-reference and unused findings, and the rules they cover (an
empty-sided rule is not reported dead again, a zone without VMs has its rules listed
once, not reported one by one)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import _Linter, lint
from zonewall.analysis.lint.aside import Aside
from zonewall.policy.loader import load_policy_text

POLICY = """\
version: 1
settings: {default: {in: drop, out: accept}}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
groups:
  nobody: [zone:empty]
  spare: [10.9.0.0/24]
zones:
  web: {}
  empty:
    rules:
      - {id: empty-in, direction: in, action: accept, tcp: 80}
vms:
  a:
    host: node1
    zone: web
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules:
      - {id: from-nobody, direction: in, action: accept, from: group:nobody, tcp: 22}
      - {id: from-empty-zone, direction: in, action: accept, from: [zone:empty, 10.8.0.0/24], tcp: 443}
      - {id: ssh, direction: in, action: accept, tcp: 22}
      - {id: ssh-again, direction: in, action: accept, tcp: 22}
"""


def _report(fork: bool) -> dict[str, object]:
    return lint(Analyzer(load_policy_text(POLICY)), fork=fork).to_json()  # type: ignore[no-any-return]


def test_a_child_checks_the_definitions_and_the_report_is_the_same() -> None:
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fork", counting_fork)
        aside = _report(fork=True)
    assert forks == [1]  # the definitions were checked in a child
    alone = _report(fork=False)
    assert json.dumps(aside, sort_keys=True) == json.dumps(alone, sort_keys=True)
    found = {(f["kind"], f["rule"] or f["object"]) for f in aside["findings"]}  # type: ignore[attr-defined]
    assert {("empty-ref", "from-nobody"), ("empty-ref", "from-empty-zone"), ("empty-ref", "group:nobody"), ("unused", "group:spare"), ("unused", "zone:empty"), ("shadowed", "ssh-again")} <= found
    # what the child decided reaches the chains' report: the empty-sided rule is not
    # dead again, the empty zone's rule is not dead one by one
    assert ("dead", "from-nobody") not in found and ("dead", "empty-in") not in found


def test_what_the_child_covers_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the rules and owners the child's checks cover, the chains' report would
    say more: the comparison above can fail."""

    def findings_only(self: _Linter) -> tuple[list[object], set[str], set[tuple[str, str]]]:
        found, _, _ = real(self)
        return found, set(), set()

    real = _Linter.definition_findings
    monkeypatch.setattr(_Linter, "definition_findings", findings_only)
    broken = {(f["kind"], f["rule"]) for f in _report(fork=True)["findings"]}  # type: ignore[attr-defined]
    assert ("dead", "from-nobody") in broken and ("dead", "empty-in") in broken


def test_aside_runs_in_a_child_and_falls_back_here() -> None:
    here = os.getpid()
    assert Aside(os.getpid).result() != here  # a child computed it
    assert Aside(os.getpid, fork=False).result() == here

    def fails_in_the_child() -> int:
        if os.getpid() != here:
            raise RuntimeError("lost in the child")
        return os.getpid()

    assert Aside(fails_in_the_child).result() == here  # the child failed: done here

    def fails_everywhere() -> int:
        raise ValueError("no result")

    with pytest.raises(ValueError, match="no result"):
        Aside(fails_everywhere).result()  # the work's own error, raised here


def test_aside_does_not_fork_beside_another_thread() -> None:
    """A lock another thread holds would stay held in a child for ever: with a second
    thread alive the work is done here."""
    here = os.getpid()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert Aside(os.getpid).result() == here
    finally:
        stop.set()
        other.join()
