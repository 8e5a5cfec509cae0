"""Typed rule statements: each encodes to the libnftables object the kernel takes, a
listing's counters and verdicts decode back, and the ruleset's NIC facts keep int keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonewall.compiler import nftexpr as x
from zonewall.compiler import stmt as s
from zonewall.compiler.encode import ENCODERS, decode_statement, statement_json
from zonewall.compiler.node import compile_node
from zonewall.dataplane.nflog import LogRecord, resolve_vm
from zonewall.policy.loader import load_policy

THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
PORT = x.payload("tcp", "dport")

CASES = [
    (x.match(PORT, 22), {"match": {"op": "==", "left": PORT, "right": 22}}),
    (x.counter(), {"counter": None}),
    (x.accept(), {"accept": None}),
    (x.jump("vm-a-in"), {"jump": {"target": "vm-a-in"}}),
    (x.set_mark(5), {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 5}}),
    (x.reject_tcp_reset(), {"reject": {"type": "tcp reset"}}),
    (x.reject_icmpx("admin-prohibited"), {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
    (x.log_group(2, "zw|n|a|in|r|drop"), {"log": {"group": 2, "prefix": "zw|n|a|in|r|drop"}}),
    (x.limit_rate(10, "second", 5, over=True), {"limit": {"rate": 10, "per": "second", "burst": 5, "unit": "packets", "inv": True}}),
    (x.limit_ref("log_cap"), {"limit": "log_cap"}),
    (x.meter_update("m", PORT, 3, "minute", 0),
     {"set": {"op": "update", "elem": PORT, "set": "@m", "stmt": [{"limit": {"rate": 3, "per": "minute", "burst": 0, "unit": "packets"}}]}}),
    (x.set_add("learn4", PORT), {"set": {"op": "add", "elem": PORT, "set": "@learn4"}}),
    (x.vmap(x.meta("iifname"), "ports"), {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ports"}}),
    (x.ct_helper_set("helper-ftp"), {"ct helper": "helper-ftp"}),
    (x.ct_timeout_set("t-1"), {"ct timeout": "t-1"}),
    (x.nat("dnat", "ip", "10.0.0.5", 8080), {"dnat": {"family": "ip", "addr": "10.0.0.5", "port": 8080}}),
    (x.masquerade(), {"masquerade": None}),
]


@pytest.mark.parametrize("statement, expected", CASES, ids=lambda v: type(v).__name__ if isinstance(v, s.STATEMENT_TYPES) else "")
def test_each_statement_encodes_to_its_libnftables_object(statement: s.Statement, expected: dict) -> None:
    assert statement_json(statement) == expected


def test_every_statement_type_has_an_encoder_and_a_case() -> None:
    assert set(ENCODERS) == set(s.STATEMENT_TYPES) == {type(st) for st, _ in CASES}
    with pytest.raises(KeyError):  # an expression is not a statement
        statement_json(PORT)  # type: ignore[arg-type]


def test_statements_compare_by_type_and_fields() -> None:
    assert x.ct_helper_set("a") == s.CtHelperSet("a") and x.ct_helper_set("a") != x.ct_timeout_set("a")
    assert x.jump("a") != x.goto("a") and x.match(PORT, 22) != x.match(PORT, 22, "!=")


def test_listing_counters_and_verdicts_decode_and_other_statements_do_not() -> None:
    assert decode_statement({"counter": {"packets": 3, "bytes": 180}}) == s.Counter(3, 180)
    assert decode_statement({"goto": {"target": "log-x"}}) == s.Verdict("goto", "log-x")
    assert decode_statement({"drop": None}) == s.DROP
    assert decode_statement({"counter": "named"}) is None  # a named counter object is not the rule's own
    assert decode_statement({"match": {"op": "==", "left": PORT, "right": 22}}) is None


def test_nic_facts_are_keyed_by_the_mark_index_as_an_int() -> None:
    nics = compile_node(load_policy(THREE_TIER), "node2").meta["nics"]
    assert nics and all(isinstance(index, int) for index in nics)
    index, entry = next(iter(nics.items()))
    record = LogRecord(time=1.0, prefix="", node=None, scope=None, direction="in", rule_id=None, verdict=None, mark=0,
                       src_nic=0, dst_nic=index, indev=None, outdev=None, physindev=None, physoutdev=None, family=None,
                       src=None, dst=None, proto=None, sport=None, dport=None, icmp_type=None)
    assert resolve_vm(record, nics) == entry["vm"]
    assert resolve_vm(record, {str(k): v for k, v in nics.items()}) is None  # type: ignore[misc]  # string keys are not read
