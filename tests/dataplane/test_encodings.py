"""The encodings an apply keeps: byte-identical to encoding the ruleset whole, for
every example and scenario; reused for unchanged chains and sets only."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from bench.synth import policy_text
from tests.test_golden import cases, compiled
from zonewall.compiler import ir
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.encodings import encode_ruleset, encode_table
from zonewall.dataplane.fake import FakeBackend
from zonewall.policy.loader import load_policy_text

from .samples import node_ruleset

CASES = cases()


@pytest.mark.parametrize("policy, host", [(policy, host) for policy, _, host in CASES], ids=[f"{p.parent.name if p.name == 'policy' else p.name}-{h}" for p, _, h in CASES])
def test_encodings_are_the_whole_encoding(policy, host) -> None:  # type: ignore[no-untyped-def]
    ruleset = compiled(policy, host)
    encodings = encode_ruleset(ruleset)
    for table in ruleset.tables:
        assert ",".join(encodings.bodies[(table.family, table.name)]) == ir.encoded_items(ir.table_body_commands(table))
    assert ir.fingerprint(ruleset, encodings.bodies) == ir.fingerprint(ruleset)


def synth_rulesets() -> tuple[ir.Ruleset, ir.Ruleset]:
    text = policy_text(30, nodes=1, dataplane_extras=True)
    edited = text.replace("action: reject, tcp: 25}", "action: reject, tcp: 26}", 1)
    assert edited != text
    return compile_node(load_policy_text(text), "node1", timezone="UTC"), compile_node(load_policy_text(edited), "node1", timezone="UTC")


def test_reused_encodings_are_those_of_the_new_ruleset_and_only_unchanged_pieces_are_reused() -> None:
    before, after = synth_rulesets()
    old = encode_ruleset(before)
    new = encode_ruleset(after, old)
    assert new.bodies == encode_ruleset(after).bodies != old.bodies  # the changed rule is encoded anew
    assert ir.fingerprint(after, new.bodies) == ir.fingerprint(after) != ir.fingerprint(before)
    reused = changed = 0
    for key, pieces in new.pieces.items():
        for name, (obj, text) in pieces.items():
            previous = old.pieces[key].get(name)
            if previous is not None and previous[0] == obj:
                assert text is previous[1]  # the same text object: not encoded again
                reused += 1
            else:
                assert previous is None or text != previous[1]
                changed += 1
    assert reused > 100 and changed >= 1


def test_a_piece_with_the_same_name_but_other_content_is_not_reused() -> None:
    before, _ = synth_rulesets()
    table = before.tables[0]
    chain = next(c for c in table.chains if len(c.rules) > 1)
    shorter = replace(before, tables=(replace(table, chains=tuple(replace(c, rules=c.rules[1:]) if c is chain else c for c in table.chains)),
                                      *before.tables[1:]))
    assert encode_ruleset(shorter, encode_ruleset(before)).bodies == encode_ruleset(shorter).bodies


def test_the_agents_chain_of_applies_reports_the_whole_fingerprint() -> None:
    before, after = synth_rulesets()
    backend = FakeBackend()
    first = apply_ruleset(backend, before)
    assert first.fingerprint == ir.fingerprint(before) and first.encodings is not None
    second = apply_ruleset(backend, after, previous=before, seen=first.view, encodings=first.encodings)
    assert second.mode == "incremental" and second.fingerprint == ir.fingerprint(after)
    third = apply_ruleset(backend, before, previous=after, seen=second.view, encodings=second.encodings)
    assert third.fingerprint == ir.fingerprint(before)


@pytest.mark.parametrize("policy, host", [(policy, host) for policy, _, host in CASES][:6])
def test_encoding_the_commands_a_full_apply_built_gives_the_same_text(policy, host) -> None:  # type: ignore[no-untyped-def]
    ruleset = compiled(policy, host)
    for table in ruleset.tables:
        commands = ir.table_body_commands(table)
        assert ",".join(encode_table(table, {}, commands)[0]) == ir.encoded_items(commands)
        with pytest.raises(ValueError):  # commands that are not the table's body are refused, not half used
            encode_table(table, {}, commands + commands[:1])


def test_the_fingerprint_is_the_hash_of_the_whole_document() -> None:
    """Hashed piece by piece (no joined copy of the ruleset's encoding), it is still
    sha256 of the document `dumps(to_json(...))` writes, as the agents report it."""
    synthetic = synth_rulesets()[0]  # a body longer than the slices it is hashed in
    assert max(len(ir.encoded_items(ir.table_body_commands(t))) for t in synthetic.tables) > 2 * ir._HASHED_SLICE
    for ruleset in (node_ruleset(), node_ruleset({f"tap{n}": 2000 + n for n in range(30)}, bridge_table=False), synthetic):
        whole = hashlib.sha256(ir.dumps(ir.to_json(ruleset)).encode()).hexdigest()
        assert ir.fingerprint(ruleset) == whole
        assert ir.fingerprint(ruleset, encode_ruleset(ruleset).bodies) == whole  # from the bodies' parts
