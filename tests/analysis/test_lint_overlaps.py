"""The lint's shared overlap memo (issue 13: lint at 10,000 VMs) changes no finding:
whether two steps overlap is remembered per pair of regions, for every step with
the same region (ChainViews.overlap_memo), not per step. The whole lint gives the
same JSON with and without the shortcuts on random policies whose VMs carry the same
rules (so that steps of different VMs share their regions), and a memo shared by
too much (by the protocol-and-port signature instead of the region) is caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings

from tests.analysis.policygen import policies
from tests.analysis.test_lint_shortcuts import lint_both_ways
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import lint
from zonewall.analysis.lint.chains import ChainViews
from zonewall.analysis.lint.state import _Step
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth


def _rules_shared(text: str) -> str:
    """The policy with every VM carrying, after its own rules, the first VM's (without
    ids and NIC scopes): the same rules in the chains of VMs with other addresses, as
    templates make them, so that steps of different VMs share their regions and the
    shared overlap memo has something to share."""
    doc = yaml.safe_load(text)
    vms = doc.get("vms") or {}
    first = next(iter(vms.values()), {}).get("rules") or []
    template = [{k: v for k, v in rule.items() if k not in ("id", "nic")} for rule in first]
    for spec in vms.values():
        spec["rules"] = (spec.get("rules") or []) + [dict(rule) for rule in template]
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_the_shared_overlap_memo_gives_the_same_findings_on_random_policies(drawn: tuple[str, Any]) -> None:
    text = _rules_shared(drawn[0])
    try:
        load_policy_text(text)
    except PolicyError:
        assume(False)  # a copied rule that its new VM cannot have
    fast, plain = lint_both_ways(text)
    assert fast == plain


def test_a_memo_shared_by_too_much_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a memo shared by every step with the same protocols
    and ports (the signature) answers for regions it never tested, and the findings
    differ; shared by region, they do not."""
    text = synth.policy_text(40, nodes=2, zones=4, seed=2)
    good, plain = lint_both_ways(text)
    assert good == plain

    def by_signature(self: ChainViews, step: _Step) -> dict[int, bool]:
        return self._meets_of.setdefault(step.mask, step.meets)

    monkeypatch.setattr(ChainViews, "overlap_memo", by_signature)
    broken = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    assert broken != good
