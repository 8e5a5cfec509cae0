"""Valid policies with hostile-looking strings: they load, and stay data.

The policy spec: "Nothing from a name, comment or string ever reaches the nftables
text unquoted: a comment like `"; flush ruleset` is data, not syntax."
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zonewall.compiler.ir import dumps, to_json
from zonewall.compiler.node import compile_node
from zonewall.policy.loader import load_policy

VALID = Path(__file__).parent / "valid"
INJECTION = VALID / "comment-injection.yaml"
COMMENTS = {
    '"; flush ruleset',
    'x" ; add rule inet filter input accept ; #',
    "} } ; flush ruleset $IP \\ 'quoted' \u00e9",
}
PAYLOADS = ("flush ruleset", "add rule inet filter", "'quoted'")


def strings_in(value: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every string in a JSON document with the key it is the value of."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield None, k
            yield from strings_in(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, key)


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")), ids=lambda p: p.name)
def test_valid_policies_load(path: Path) -> None:
    policy = load_policy(path)
    for host in policy.doc.hosts:
        compile_node(policy, host)


def test_comments_load_verbatim() -> None:
    policy = load_policy(INJECTION)
    assert {ref.rule.comment for ref in policy.rules} == COMMENTS


def test_comments_never_become_nft_syntax() -> None:
    policy = load_policy(INJECTION)
    document = json.loads(dumps(to_json(compile_node(policy, "node1"))))
    commands = document["nftables"]
    assert commands[0] == {"metainfo": {"json_schema_version": 1}}
    # only add/delete of zonewall's own objects: no flush, no foreign table
    tables = {table["name"] for table in (c["add"]["table"] for c in commands[1:] if "table" in c.get("add", {}))}
    for command in commands[1:]:
        assert set(command) <= {"add", "delete"}, command
        (body,) = command.values()
        (kind,) = body
        assert kind in ("table", "chain", "set", "map", "limit", "rule"), command
        assert body[kind].get("table", body[kind].get("name")) in tables, command
    # a comment's text may only appear whole, as the value of a "comment"
    for key, text in strings_in(document):
        if any(payload in text for payload in PAYLOADS):
            assert key == "comment" and any(text.endswith(": " + c) for c in COMMENTS), (key, text)


def test_comments_survive_into_the_compiled_json() -> None:
    """A rule's kernel comment is `id: comment`, the comment verbatim."""
    policy = load_policy(INJECTION)
    document = to_json(compile_node(policy, "node1"))
    found = {text for key, text in strings_in(document) if key == "comment"}
    for comment in COMMENTS:
        assert any(text.endswith(": " + comment) for text in found), comment
