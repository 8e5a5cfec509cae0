"""The lint's shortcuts (references judged once per `from`/`to`, conflict services
memoised by protocol and ports) change no finding: the optimised path and the
straightforward one (`lint(..., shortcuts=False)`) give the same JSON on random
policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.analysis.policygen import policies
from zonewall.analysis import space as s
from zonewall.analysis.describe import services_of
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import lint
from zonewall.analysis.lint.smells import Smells
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth


def lint_both_ways(text: str) -> tuple[str, str]:
    """The lint JSON with the shortcuts and without them (the straightforward path)."""
    fast = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    plain = json.dumps(lint(Analyzer(load_policy_text(text)), shortcuts=False).to_json(), sort_keys=True)
    return fast, plain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_shortcuts_give_the_same_findings_on_random_policies(drawn: tuple[str, Any]) -> None:
    fast, plain = lint_both_ways(drawn[0])
    assert fast == plain


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shortcuts_give_the_same_findings_on_synthetic_policies(seed: int) -> None:
    fast, plain = lint_both_ways(synth.policy_text(60, nodes=2, zones=5, seed=seed))
    assert fast == plain
    kinds = {f["kind"] for f in json.loads(fast)["findings"]}
    assert {"shadowed", "redundant", "conflict"} <= kinds  # the shortcuts had work to do


def test_a_wrong_shortcut_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a services memo keyed by too little (the protocol
    alone) names the wrong ports in conflicts, and the reports differ."""
    text = synth.policy_text(30, nodes=2, zones=3, seed=1)
    good, plain = lint_both_ways(text)
    assert plain == good
    wrong: dict[object, str] = {}

    def services_text(self: Smells, overlap: s.Region) -> str:
        key = tuple(b[s.PROTO] for b in overlap)
        if key not in wrong:
            wrong[key] = ", ".join(services_of(overlap)) or "some packets"
        return wrong[key]

    monkeypatch.setattr(Smells, "services_text", services_text)
    broken = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    assert broken != good


def test_rules_with_the_same_references_get_the_same_empty_ref_finding() -> None:
    """References judged once per `from`/`to`: every rule naming an empty zone is
    reported, each with its own id and line; a rule naming a populated one is not."""
    text = synth.policy_text(20, nodes=1, zones=2, seed=1).replace("zones:\n", "zones:\n  lonely: {}\n", 1)
    text = text.replace("from: group:admins, tcp: 22}", "from: zone:lonely, tcp: 22}", 3)
    report = lint(Analyzer(load_policy_text(text)))
    empty = [f for f in report.findings if f.kind == "empty-ref" and f.details.get("refs") == ["zone:lonely"]]
    assert len(empty) == 3 and len({f.rule for f in empty}) == 3 and len({f.where for f in empty}) == 3
    assert all(f.details["empty"] == ["from"] for f in empty)
    assert not [f for f in report.findings if f.kind == "empty-ref" and "admins" in f.message]
