"""Property tests: whatever an operator (or an attacker, through the API) feeds the
loader, the answer is a Policy or a PolicyError with positions -- never a traceback.

(a) random YAML documents built from the real key vocabulary and junk, and random
    mutations of a valid example policy;
(b) random but plausible policies (hosts, networks, zones, VMs, groups, rules, nat)
    that are valid or broken in the ways operators break them;
(c) random text and bytes (including invalid UTF-8 and control characters).
"""

from __future__ import annotations

import copy
import math
import os
import traceback
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy, load_policy_text
from zonewall.policy.model import PolicyDocument

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy" / "policy.yaml"
# 200 examples keep the suite fast; ZONEWALL_PROPERTY_EXAMPLES=5000 for a deep run
PROPERTY = settings(
    max_examples=int(os.environ.get("ZONEWALL_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _model_keys(model: Any, seen: set[Any]) -> set[str]:
    """Every key the policy model knows, found by walking the pydantic models."""
    if model in seen:
        return set()
    seen.add(model)
    keys: set[str] = set()
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, field in model.model_fields.items():
            keys.add(field.alias or name)
            keys |= _model_keys(field.annotation, seen)
        return keys
    for arg in typing.get_args(model):
        keys |= _model_keys(arg, seen)
    return keys


KEYS = sorted(_model_keys(PolicyDocument, set()))
NAMES = ["web1", "app1", "db1", "node1", "node2", "front", "back", "dmz", "app", "db", "admins", "ops", "ssh", "https", "clean-traffic", "business-hours"]
WORDS = [
    "any", "in", "out", "inout", "accept", "drop", "reject", "return", "ipv4", "ipv6", "source", "rule",
    "masquerade", "snat", "dnat", "bridged", "nat", "routed", "isolated", "echo-request", "esp", "mon", "sat",
    "08:00-18:00", "24:00-00:00", "Europe/Berlin", "5/minute", "0/second", "10.0.1.0/24", "10.0.1.5/24",
    "10.0.0.300", "10.0.1.10-10.0.1.20", "10.0.1.20-10.0.1.10", "fd00:1::/64", "fd00:1::10", "10.0.1.1-fd00::1",
    "!10.0.9.0/24", "!group:admins", "vm:web1", "zone:dmz", "group:admins", "network:front", "host:node1",
    "group:", "vm:", "52:54:00:00:01:01", "01:00:5e:00:00:01", "8000-8100", "90-80", "0", "65536", "$IP", "$MAC",
    '"; flush ruleset', "", " ", "\t", "~", "null", "yes", "no", "on",
]
PORTISH = st.one_of(st.integers(-5, 70000), st.sampled_from(["22", "8000-8100", "90-80", "0-1", "1-65535", "a-b", " 22 "]))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS + NAMES + KEYS),
    PORTISH,
    st.text(max_size=12),
)
KEY = st.one_of(st.sampled_from(KEYS + NAMES), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEY, children, max_size=5),
    ),
    max_leaves=25,
)
TOP_KEYS = st.one_of(st.sampled_from(list(PolicyDocument.model_fields)), KEY)


def dump(document: Any, flow: bool | None = None) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=1 << 16)


def check_outcome(load, *args) -> None:  # type: ignore[no-untyped-def]
    """Loading succeeds, or raises PolicyError whose problems all carry a position."""
    try:
        load(*args)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError without problems"
        for problem in exc.problems:
            assert problem.loc is not None, problem
            assert problem.loc.line >= 1 and problem.loc.col >= 1, problem
            assert problem.message, problem
            str(problem), problem.to_json()
    except Exception:
        pytest.fail(f"the loader crashed:\n{traceback.format_exc()}")


# -- (a) random documents --------------------------------------------------------------


@PROPERTY
@given(st.dictionaries(TOP_KEYS, VALUES, max_size=8), st.sampled_from([None, True, False]), st.booleans())
def test_random_documents_never_crash_the_loader(document: dict[Any, Any], flow: bool | None, versioned: bool) -> None:
    if versioned:
        document = {"version": 1, **{k: v for k, v in document.items() if k != "version"}}
    check_outcome(load_policy_text, dump(document, flow))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, path + (index,))
    return out


BASE_DOCUMENT = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
BASE_PATHS = _paths(BASE_DOCUMENT)[1:]
MUTATION = st.tuples(
    st.sampled_from(BASE_PATHS),
    st.sampled_from(["replace", "delete", "add", "duplicate"]),
    KEY,
    VALUES,
)


def mutate(document: Any, path: tuple[Any, ...], kind: str, key: Any, value: Any) -> None:
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if kind == "replace":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif kind == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    elif kind == "duplicate" and isinstance(parent, dict) and isinstance(value, str):
        parent[value[:31] or "x"] = copy.deepcopy(parent[last])
    elif kind == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    else:
        parent[last] = value


@PROPERTY
@given(st.lists(MUTATION, min_size=1, max_size=4), st.sampled_from([None, True, False]))
def test_mutated_example_policies_never_crash_the_loader(mutations: list[Any], flow: bool | None) -> None:
    document = copy.deepcopy(BASE_DOCUMENT)
    for path, kind, key, value in mutations:
        try:
            mutate(document, path, kind, key, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    check_outcome(load_policy_text, dump(document, flow))


# -- (b) plausible policies ----------------------------------------------------------
#
# A policy is drawn "clean" (every choice valid: it must load) or "noisy" (each choice
# is, now and then, one of the mistakes operators make: a dangling reference, a port
# out of range, an address outside its network, a cycle, a duplicate, ...).

SUBNETS = {f"n{i}": [f"10.0.{i}.0/24", f"fd00:{i}::/64"] for i in range(3)}
GOOD_PORTS = st.one_of(st.integers(1, 65535), st.sampled_from(["22", "8000-8100", "1-65535", "443"]))
BAD_PORTS = [0, 70000, -5, "90-80", "a-b", "22,23"]


class Chooser:
    """Draws a valid value, or (in a noisy policy, one time in `noise`) an invalid one."""

    def __init__(self, draw: st.DrawFn, noise: int):
        self.draw, self.noise = draw, noise

    def bad(self) -> bool:
        return self.noise > 0 and self.draw(st.integers(0, self.noise - 1)) == 0

    def __call__(self, valid: Any, invalid: list[Any] | None = None) -> Any:
        if invalid and self.bad():
            return self.draw(st.sampled_from(invalid))
        return self.draw(valid if isinstance(valid, st.SearchStrategy) else st.sampled_from(valid))

    def maybe(self, odds: int) -> bool:
        """True one time in `odds`."""
        return self.draw(st.integers(0, odds - 1)) == 0


def address_ref(pick: Chooser, names: dict[str, list[str]], groups: list[str]) -> str:
    kinds = ["any", "literal", "literal6", "vm", "zone", "network", "host"] + (["group"] if groups else [])
    kind = pick(kinds)
    negate = "!" if pick.maybe(6) else ""
    if kind == "any":
        return negate + "any"
    if kind == "literal":
        return negate + pick(["10.0.0.0/8", "10.0.1.0/24", "10.0.1.5", "192.168.100.0/24", "10.0.0.5-10.0.0.9"], ["10.0.1.5/24", "10.0.0.300", "10.0.0.9-10.0.0.5"])
    if kind == "literal6":
        return negate + pick(["fd00::/16", "fd00:1::10", "::/0", "fd00:1::1-fd00:1::9"], ["fd00::1/16", "10.0.0.1-fd00::1"])
    pool = groups if kind == "group" else names[kind]
    if not pool:
        return negate + "any"
    return f"{negate}{kind}:{pick(pool, ['missing'])}"


def refs(pick: Chooser, names: dict[str, list[str]], groups: list[str]) -> Any:
    items = [address_ref(pick, names, groups) for _ in range(pick(st.integers(1, 3)))]
    return items[0] if len(items) == 1 and pick.maybe(2) else items


def rule(pick: Chooser, names: dict[str, list[str]], network: bool = False) -> dict[str, Any]:
    groups = names["group"]
    out: dict[str, Any] = {}
    if network:
        if pick.bad():
            out["direction"] = "in"
    elif not pick.bad():
        out["direction"] = pick(["in", "out"])
    out["action"] = pick(["accept", "accept", "drop", "reject"])
    if pick.maybe(2):
        out["from"] = refs(pick, names, groups)
    if pick.maybe(3):
        out["to"] = refs(pick, names, groups)
    match = pick(["none", "service", "tcp", "udp", "icmp", "proto"], ["mixed", "sport-only"])
    if match == "service":
        out["service"] = pick(["ssh", "https", "dns", "ping", "nfs", ["ssh", "http"], "custom"], ["nope", "SSH"])
    elif match in ("tcp", "udp"):
        out[match] = pick(st.one_of(GOOD_PORTS, st.lists(GOOD_PORTS, min_size=1, max_size=3)), BAD_PORTS + [[]])
        if pick.maybe(4):
            out["sport"] = pick(GOOD_PORTS, BAD_PORTS)
    elif match == "icmp":
        out["icmp"] = pick(["echo-request", "any", 8, ["echo-request", "echo-reply"]], ["timestamp-request", "echo-requets", 300])
    elif match == "proto":
        out["proto"] = pick(["esp", "gre", 47], ["espp", 256])
    elif match == "mixed":
        out["service"], out["tcp"] = "ssh", 22
    elif match == "sport-only":
        out["sport"] = 53
    # a family that contradicts the peers is a mistake; with no peers it is fine
    if pick.maybe(4) and (("from" not in out and "to" not in out) or pick.bad()):
        out["family"] = pick(["ipv4", "ipv6"])
        if out["family"] == "ipv6" and out.get("icmp") in (8, "echo-request", "any") and not pick.bad():
            out["icmpv6"] = out.pop("icmp")
    if pick.maybe(5) and (out["action"] == "accept" or pick.bad()):
        out["limit"] = {"rate": pick(["5/minute", "1/second", "100/hour"], ["0/hour", "5/fortnight", 5]), "per": pick(["rule", "source"], ["destination"])}
    if pick.maybe(5):
        out["log"] = True
    if pick.maybe(6):
        out["schedule"] = pick(names["schedule"], ["missing"])
    if pick.maybe(6):
        out["id"] = pick(["r1", "r2", "ssh-admins"])  # made unique below unless noisy
    if pick.maybe(6):
        out["comment"] = pick(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf")), max_size=20))
    if pick.maybe(10):
        out["enabled"] = False
    return out


@st.composite
def policies(draw: st.DrawFn, noises: tuple[int, ...] = (0, 0, 10)) -> dict[str, Any]:
    noise = draw(st.sampled_from(noises))
    pick = Chooser(draw, noise)
    host_names = draw(st.lists(st.sampled_from(["node1", "node2", "node3"]), min_size=1, max_size=3, unique=True))
    net_names = draw(st.lists(st.sampled_from(list(SUBNETS)), min_size=1, max_size=3, unique=True))
    zone_names = draw(st.lists(st.sampled_from(["dmz", "app", "db"]), max_size=3, unique=True))
    group_names = draw(st.lists(st.sampled_from(["admins", "ops", "office", "all"]), max_size=4, unique=True))
    vm_names = draw(st.lists(st.sampled_from([f"vm{i}" for i in range(6)]), max_size=6, unique=True))
    names = {"vm": vm_names, "zone": zone_names, "group": group_names, "network": net_names, "host": host_names, "schedule": ["night"]}
    doc: dict[str, Any] = {"version": pick([1], [2, "1"])}
    doc["settings"] = {"default": {"in": pick(["drop", "reject", "accept"], ["deny"])}, "management": ["192.168.100.0/24"]}
    doc["hosts"] = {h: {"address": [f"192.168.100.{11 + i}"], "uplink": "eth0"} for i, h in enumerate(host_names)}
    doc["networks"] = {}
    for i, n in enumerate(net_names):
        net: dict[str, Any] = {"bridge": f"vmbr{i + 1}", "subnets": SUBNETS[n]}
        if pick.maybe(2):
            net["gateway"] = [pick([SUBNETS[n][0].replace(".0/24", ".1")], ["10.9.9.1"])]
        if pick.maybe(4):
            net["isolated"] = True
            net["rules"] = [rule(pick, names, network=True) for _ in range(pick(st.integers(0, 2)))]
        doc["networks"][n] = net
    doc["services"] = {"custom": {"tcp": [pick(GOOD_PORTS, BAD_PORTS)]}}
    doc["schedules"] = {"night": {"days": ["sat"], "time": pick(["02:00-04:00", "22:00-02:00"], ["02:00-02:00", "25:00-26:00"])}}
    # user filters: each includes built-ins or earlier filters (a DAG) unless noisy
    filter_names = draw(st.lists(st.sampled_from(["no-smtp", "web-guard", "strict"]), max_size=3, unique=True))
    doc["filters"] = {}
    for index, f in enumerate(filter_names):
        pool = ["allow-arp", "allow-dhcp", "no-ip-spoofing"] + (filter_names if pick.bad() else filter_names[:index])
        flt: dict[str, Any] = {"include": [pick(pool, ["missing"]) for _ in range(pick(st.integers(0, 2)))]}
        if pick.maybe(2):
            flt["rules"] = [{"direction": pick(["in", "out", "inout"]), "action": pick(["drop", "accept", "return"]), "tcp": pick(GOOD_PORTS, BAD_PORTS), "priority": pick(st.integers(-1000, 1000), [2000])}]
        doc["filters"][f] = flt
    doc["groups"] = {}
    for index, g in enumerate(group_names):
        # a group names only earlier groups (no cycle) unless the policy is noisy
        earlier = group_names[:index] if not pick.bad() else group_names
        members = [address_ref(pick, names, earlier) for _ in range(pick(st.integers(1, 3)))]
        doc["groups"][g] = {"members": members} if pick.maybe(2) else members
    doc["zones"] = {z: {"rules": [rule(pick, names) for _ in range(pick(st.integers(0, 3)))]} for z in zone_names}
    for z in zone_names:
        if pick.maybe(2):
            doc["zones"][z]["default"] = {pick(["in", "out"]): pick(["drop", "accept", "reject"])}
    doc["global_rules"] = [rule(pick, names) for _ in range(pick(st.integers(0, 2)))]
    doc["host_rules"] = [rule(pick, names) for _ in range(pick(st.integers(0, 2)))]
    doc["vms"] = {}
    for i, v in enumerate(vm_names):
        nics = []
        for j in range(pick(st.integers(1, 2))):
            n = pick(net_names, ["missing"])
            third = SUBNETS[n][0].split(".")[2] if n in SUBNETS else "7"
            nic: dict[str, Any] = {"network": n}
            if not pick.maybe(6):
                nic["mac"] = pick([f"52:54:00:00:{i:02x}:{j + 1:02x}"], ["52:54:00:00:00:01", "01:00:5e:00:00:01", "52-54-00-00-00-01"])
            host_part = pick([str(4 * i + j + 2)], ["2", "300"])
            nic["ips"] = [f"10.0.{pick([third], ['9'])}.{host_part}"]
            if pick.maybe(2):
                nic["ips"].append(f"fd00:{third}::{4 * i + j + 2:x}")
            if pick.maybe(4):
                # MAC-checking filters need the NIC's mac (a policy error otherwise)
                nic["filters"] = [pick(["clean-traffic", "no-mac-spoofing"] if "mac" in nic else ["allow-arp", "no-ip-spoofing", *filter_names], ["nope"])]
            nics.append(nic)
        vm: dict[str, Any] = {"host": pick(host_names, ["nodex"]), "nics": nics}
        if zone_names and not pick.maybe(5):
            vm["zone"] = pick(zone_names, ["missing"])
        if pick.maybe(4):
            vm["rules"] = [rule(pick, names) for _ in range(pick(st.integers(0, 3)))]
        if pick.maybe(4):
            vm["filters"] = ["clean-traffic"] if all("mac" in nic for nic in nics) else ["no-ip-spoofing"]
        if pick.maybe(5):
            vm["default"] = {"out": pick(["drop", "accept"])}
        doc["vms"][v] = vm
    nat = []
    if vm_names and pick.maybe(2):
        target = pick(vm_names)
        host = doc["vms"][target]["host"] if not pick.bad() else pick(host_names)
        nat.append({"type": "dnat", "host": host, "listen": {"address": "203.0.113.5", "tcp": 8443}, "to": {"vm": target, "port": 443}})
    if pick.maybe(2):
        nat.append({"type": "masquerade", "network": pick(net_names, ["missing"])})
    doc["nat"] = nat
    if noise == 0:
        _unique_rule_ids(doc)
    return doc


def _unique_rule_ids(doc: dict[str, Any]) -> None:
    counter = 0

    def walk(node: Any) -> None:
        nonlocal counter
        if isinstance(node, dict):
            if "action" in node and "id" in node:
                counter += 1
                node["id"] = f"{node['id']}-{counter}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


@PROPERTY
@given(policies(), st.sampled_from([None, True, False]))
def test_plausible_policies_load_or_fail_with_positions(document: dict[str, Any], flow: bool | None) -> None:
    text = dump(document, flow)
    try:
        policy = load_policy_text(text)
    except PolicyError as exc:
        lines = text.count("\n") + 1
        for problem in exc.problems:
            assert problem.loc is not None and problem.loc.file == "policy.yaml", problem
            assert 1 <= problem.loc.line <= lines and problem.loc.col >= 1, problem
        return
    except Exception:
        pytest.fail(f"the loader crashed:\n{traceback.format_exc()}\n{text}")
    # a loaded policy resolves: every reference, group and default has an answer
    for refs_list in [*(g.members for g in policy.doc.groups.values()), *(r.rule.from_ for r in policy.rules), *(r.rule.to for r in policy.rules)]:
        policy.address_set(refs_list)
    assert len({ref.id for ref in policy.rules}) == len(policy.rules)
    for vm in policy.doc.vms:
        assert policy.default_action(vm, "in") in ("accept", "drop", "reject")


@PROPERTY
@given(policies(noises=(0,)), st.sampled_from([None, True, False]))
def test_clean_policies_load(document: dict[str, Any], flow: bool | None) -> None:
    """A policy drawn without mistakes loads. This keeps the strategy honest: the runs
    above really exercise the loader on valid and near-valid input, not only on junk."""
    try:
        load_policy_text(dump(document, flow))
    except PolicyError as exc:
        pytest.fail(f"a valid policy was rejected:\n{exc}\n{dump(document)}")


@PROPERTY
@given(policies())
def test_loading_is_deterministic(document: dict[str, Any]) -> None:
    """The same text gives the same problems (or the same policy), in the same order."""
    text = dump(document)

    def outcome() -> Any:
        try:
            policy = load_policy_text(text)
        except PolicyError as exc:
            return [str(p) for p in exc.problems]
        return [(ref.id, ref.rule) for ref in policy.rules], policy.doc

    assert outcome() == outcome()


# -- (c) random text and bytes ---------------------------------------------------------


YAMLISH_TOKENS = st.sampled_from([
    "version", ":", " ", "  ", "\n", "\t", "-", "- ", "[", "]", "{", "}", ",", "&a", "*a", "&b ", "*b", "!!map", "!!str",
    "!!python/object:os.system", "<<", "?", "|", ">", "#", "'", '"', "%YAML 1.2\n", "---\n", "...\n", "1", "0x1F",
    "52:54:00:00:01:01", "vms", "web1", "rules", "from", "group:a", "\\", "\x00", "\x85", "\u2028", "\ufeff", "é",
])


@PROPERTY
@given(st.lists(YAMLISH_TOKENS, max_size=40).map("".join))
def test_yaml_shaped_text_never_crashes(text: str) -> None:
    check_outcome(load_policy_text, text)


@PROPERTY
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    check_outcome(load_policy_text, text)


@PROPERTY
@given(data=st.binary(max_size=200), prefix=st.sampled_from([b"", b"version: 1\n", b"version: 1\nhosts:\n  node1: {address: "]))
def test_random_bytes_in_a_file_never_crash(data: bytes, prefix: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("bytes") / "policy.yaml"
    path.write_bytes(prefix + data)
    check_outcome(load_policy, path)


def test_float_specials_and_huge_numbers_are_errors_not_crashes() -> None:
    """Regression seeds for the strategies above (cheap, always run)."""
    for value in (math.inf, -math.inf, math.nan, 2**80, -1, True, None, [], {}):
        for key in ("tcp", "icmp", "proto", "from", "limit", "log", "id", "family"):
            text = dump({"version": 1, "global_rules": [{"direction": "in", "action": "accept", key: value}]})
            check_outcome(load_policy_text, text)
