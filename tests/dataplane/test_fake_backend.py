"""FakeBackend behaves like the kernel where ordering bugs would show."""

from __future__ import annotations

import io

import pytest

from zonewall.compiler.ir import replace_commands
from zonewall.dataplane.backend import Backend, NftError
from zonewall.dataplane.fake import FakeBackend

from .samples import node_ruleset

T = {"family": "inet", "table": "t"}


def test_is_a_backend_and_records_transactions() -> None:
    fake = FakeBackend()
    assert isinstance(fake, Backend)
    commands = replace_commands(node_ruleset())
    fake.run(commands)
    assert fake.transactions == [commands]
    assert sorted(fake.list_tables()) == [("bridge", "zonewall_br"), ("inet", "zonewall")]
    objects = fake.list_table("inet", "zonewall")
    assert objects is not None
    kinds = [next(iter(o)) for o in objects]
    assert kinds[0] == "table" and "map" in kinds and "limit" in kinds
    # The kernel's listing order: stateful objects, sets, chains, then rules.
    assert kinds.index("limit") < kinds.index("set") < kinds.index("chain") < kinds.index("rule")
    assert fake.list_table("inet", "absent") is None


def test_failed_transaction_changes_nothing() -> None:
    fake = FakeBackend()
    fake.run([{"add": {"table": {"family": "inet", "name": "t"}}}])
    before = fake.list_table("inet", "t")
    with pytest.raises(NftError, match="No such file"):
        fake.run([{"add": {"chain": {**T, "name": "c"}}}, {"delete": {"chain": {**T, "name": "missing"}}}])
    assert fake.list_table("inet", "t") == before
    assert len(fake.transactions) == 1 and len(fake.failed) == 1


def test_fail_next() -> None:
    fake = FakeBackend()
    fake.fail_next("Error: boom")
    with pytest.raises(NftError, match="boom"):
        fake.run([{"add": {"table": {"family": "inet", "name": "t"}}}])
    assert fake.list_tables() == []
    fake.run([{"add": {"table": {"family": "inet", "name": "t"}}}])  # only the next one fails
    assert fake.list_tables() == [("inet", "t")]


def test_kernel_reference_rules() -> None:
    fake = FakeBackend()
    fake.run(
        [
            {"add": {"table": {"family": "inet", "name": "t"}}},
            {"add": {"chain": {**T, "name": "c"}}},
            {"add": {"chain": {**T, "name": "d"}}},
            {"add": {"chain": {**T, "name": "e"}}},
            {"add": {"set": {**T, "name": "s", "type": "ipv4_addr"}}},
            {"add": {"limit": {**T, "name": "l", "rate": 1, "per": "second"}}},
            {"add": {"map": {**T, "name": "m", "type": "ifname", "map": "verdict",
                             "elem": [["tap1", {"jump": {"target": "c"}}]]}}},
            {"add": {"rule": {**T, "chain": "e", "expr": [{"jump": {"target": "d"}}]}}},
            {"add": {"rule": {**T, "chain": "e", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@s"}},
                {"limit": "l"}, {"accept": None}]}}},
        ]
    )
    busy = [
        {"delete": {"chain": {**T, "name": "c"}}},  # map element jumps to it
        {"delete": {"chain": {**T, "name": "d"}}},  # rule jumps to it
        {"delete": {"set": {**T, "name": "s"}}},
        {"delete": {"limit": {**T, "name": "l"}}},
    ]
    for command in busy:
        with pytest.raises(NftError, match="busy"):
            fake.run([command])
    # Deleting a chain with rules is fine and releases what they referenced.
    fake.run([{"delete": {"chain": {**T, "name": "e"}}}] + busy[1:])
    with pytest.raises(NftError, match="File exists"):
        fake.run([{"add": {"element": {**T, "name": "m", "elem": [["tap1", {"drop": None}]]}}}])
    with pytest.raises(NftError, match="not supported"):
        fake.run([{"add": {"chain": {**T, "name": "b", "type": "filter", "hook": "input", "prio": 0}}},
                  {"add": {"chain": {**T, "name": "b", "type": "filter", "hook": "input", "prio": 5}}}])
    with pytest.raises(NftError, match="No such file"):
        fake.run([{"add": {"rule": {**T, "chain": "c", "expr": [{"jump": {"target": "nowhere"}}]}}}])


def test_changed_limit_is_a_silent_noop_like_the_kernel() -> None:
    fake = FakeBackend()
    fake.run([{"add": {"table": {"family": "inet", "name": "t"}}},
              {"add": {"limit": {**T, "name": "l", "rate": 1, "per": "second"}}}])
    fake.run([{"add": {"limit": {**T, "name": "l", "rate": 99, "per": "second"}}}])
    (limit,) = [o["limit"] for o in fake.list_table("inet", "t") or [] if "limit" in o]
    assert limit["rate"] == 1


def test_describe() -> None:
    fake = FakeBackend()
    fake.run(replace_commands(node_ruleset()))
    out = io.StringIO()
    text = fake.describe(out)
    assert out.getvalue() == text
    assert "# transaction 1:" in text
    assert "add chain inet zonewall forward { type filter hook forward priority 0; policy drop; }" in text
    assert "add map inet zonewall guest_in (2 elements)" in text
    assert 'comment "dispatch"' in text
