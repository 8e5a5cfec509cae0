"""render.py: the IR as nft text, checked against what the kernel lists.

Kernel tests load `ir.to_json(ruleset)` with libnftables in a throwaway namespace
(TZ=UTC, as the dataplane does), list each table with `nft list table`, and compare
normalised listings; `nft -c` must accept every rendered table.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from zonewall.compiler import ir
from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Hook, Limit, NamedSet, Rule, Ruleset, Table
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import normalize_listing, quote, render_nft, render_rule, render_table
from zonewall.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
_counter = itertools.count()

LOAD_JSON = (
    "import json, sys, nftables\n"
    "rc, _, err = nftables.Nftables().json_cmd(json.load(sys.stdin))\n"
    "sys.stderr.write(err)\n"
    "sys.exit(1 if rc else 0)\n"
)


def _policy_dir(example: Path) -> Path:
    return example / "policy" if (example / "policy").is_dir() else example


def example_rulesets(example: Path) -> Iterator[Ruleset]:
    policy = load_policy(_policy_dir(example))
    for host in sorted(policy.doc.hosts):
        yield compile_node(policy, host, now=NOW, timezone="UTC")


def _r(*statements: dict, comment: str | None = None) -> Rule:
    return Rule(tuple(statements), comment)


def vocabulary_ruleset() -> Ruleset:
    """Every statement/expression shape nftexpr builds, plus the listing quirks."""
    mark = x.meta("mark")
    inet_rules = (
        _r(x.has_bits(x.OUT_ACCEPT_BIT), x.ret(), comment="prefix mask lists as 0x80000000/1"),
        _r(x.has_bits(x.IN_ACCEPT_BIT), x.ret()),
        _r(x.match(x.masked(mark, 0xFFFF0000), 0x12340000, "!="), x.ret()),
        _r(x.match(x.masked(mark, x.NIC_BITS), 0), x.accept()),
        _r(x.match(mark, 5), x.ret()),
        _r(x.match(x.ct("state"), ["related", "established"], "in"), x.counter(), x.accept()),
        _r(x.match(x.ct("state"), "new", "in"), x.accept()),
        _r(x.match(x.ct("state"), "new"), x.accept()),
        _r(x.match(x.ct("state"), {"set": ["new", "established"]}), x.accept()),
        _r(x.match(x.meta("nfproto"), "ipv4"), x.match(x.payload("tcp", "dport"), 22), x.accept()),
        _r(x.match(x.meta("nfproto"), "ipv6"), x.match(x.payload("icmpv6", "type"), "echo-request"), x.accept()),
        _r(x.match(x.meta("nfproto"), "ipv4"), x.match(x.meta("l4proto"), "icmp"), x.accept()),
        _r(x.match(x.meta("nfproto"), "ipv6"), x.match(x.meta("l4proto"), {"set": ["gre", "esp"]}), x.accept()),
        _r(x.match(x.meta("l4proto"), "icmpv6"), x.accept()),
        _r(x.match(x.meta("l4proto"), {"set": ["gre", 50, "ah", "ospf", "vrrp", "icmpv6"]}), x.accept()),
        _r(x.match(x.meta("l4proto"), "tcp"), x.match(x.payload("tcp", "dport"), 22), x.accept()),
        _r(x.match(x.payload("ip", "saddr"), x.prefix("10.0.0.0", 8)), x.match(x.payload("icmp", "type"), {"set": [8, "destination-unreachable", 42]}), x.accept()),
        _r(x.match(x.payload("ip6", "saddr"), {"set": [x.prefix("fd00::", 64), x.value_range("fd01::1", "fd01::5"), "fd02::1"]}), x.accept()),
        _r(x.match(x.payload("ip", "daddr"), {"set": [x.value_range("10.0.0.0", "10.0.0.255"), "10.0.1.0", "10.0.1.1"]}), x.accept()),
        _r(x.match(x.payload("ip", "daddr"), {"set": [x.prefix("10.0.0.0", 9), x.prefix("10.128.0.0", 9)]}), x.accept()),
        _r(x.match(x.payload("tcp", "dport"), {"set": [22, 23, x.value_range(20, 21), 80]}), x.accept()),
        _r(x.match(x.payload("tcp", "dport"), {"set": [443]}), x.accept()),
        _r(x.match(x.payload("tcp", "dport"), x.value_range(6800, 7300)), x.match(x.payload("tcp", "sport"), x.value_range(1024, 65535)), x.accept()),
        _r(x.match(x.payload("udp", "dport"), {"set": [53, 67]}, "!="), x.drop()),
        _r(x.match(x.payload("sctp", "dport"), 9), x.accept()),
        _r(x.match(x.meta("day"), {"set": ["Monday", "Friday"]}), x.match(x.meta("hour"), x.value_range("08:00", "17:59:59")), x.accept()),
        _r(x.match(x.meta("day"), "Sunday"), x.match(x.meta("hour"), x.value_range("22:00:00", "23:59:59")), x.accept()),
        _r(x.match(x.meta("nfproto"), "ipv4"), x.match(x.ct("state"), "new", "in"), x.meter_update("rl-v4", x.payload("ip", "saddr"), 10, "minute", 5), x.counter(), x.ret()),
        _r(x.match(x.meta("nfproto"), "ipv6"), x.match(x.payload("tcp", "dport"), 22), x.meter_update("rl-v6", x.payload("ip6", "saddr"), 10, "second", 0), x.ret()),
        _r(x.match(x.ct("state"), "new", "in"), x.limit_rate(3, "minute", 0), x.accept()),
        _r(x.limit_rate(3, "hour", 7), x.accept()),
        _r(x.limit_ref("cap"), x.log_group(2, "zw|n|vm|in|r1|drop"), comment="logged"),
        _r(x.match(x.meta("l4proto"), "tcp"), x.reject_tcp_reset()),
        _r(x.reject_icmpx()),
        _r(x.reject_icmpx("admin-prohibited")),
        _r(x.set_mark(7)),
        _r(x.or_mark(0x4000)),
        _r(x.set_mark(x.map_lookup(x.meta("iifname"), "port-marks"))),
        _r(x.match(x.meta("iifname"), "eth0"), x.jump("target")),
        _r(x.match(x.meta("oifname"), {"set": ["eth0", "eth1"]}), x.goto("target")),
        _r(x.match(x.meta("iif"), "lo"), x.accept()),
        _r(x.vmap(x.masked(mark, x.SRC_NIC_MASK), "dispatch")),
        _r(x.match(x.payload("ip", "saddr"), x.set_ref("v4"), "!="), x.drop()),
        _r(x.counter(), x.drop(), comment="tail, with: punctuation {}; #"),
    )
    inet = Table(
        "inet", "zonewall",
        (
            Chain("forward", inet_rules, Hook("filter", "forward", 0)),
            Chain("target", ()),
            Chain("in5", (), Hook("filter", "input", 5)),
            Chain("out-200", (), Hook("filter", "output", -200)),
            Chain("pre-100", (), Hook("filter", "prerouting", -100)),
            Chain("post100", (), Hook("filter", "postrouting", 100)),
            Chain("fwd-160", (), Hook("filter", "forward", -160)),
            Chain("fwd11", (), Hook("filter", "forward", 11)),
        ),
        (
            NamedSet("rl-v4", "ipv4_addr", flags=("timeout",), timeout=90, size=65535),
            NamedSet("rl-v6", "ipv6_addr", flags=("timeout",), timeout=3600, size=65535),
            NamedSet("v4", "ipv4_addr", ("10.0.0.1", x.prefix("10.1.0.0", 16), x.value_range("10.2.0.1", "10.2.0.9"),
                                        x.value_range("10.3.0.0", "10.3.0.255"), "10.0.0.2", "10.0.0.3"), flags=("interval",)),
            NamedSet("v6", "ipv6_addr", (x.value_range("fd00::", "fd00::ffff"), x.prefix("fd01::", 128), "::ffff:1.2.3.4"), flags=("interval",)),
            NamedSet("ports", "inet_service", tuple(range(1, 14))),
            NamedSet("marks", "mark", tuple(range(1, 8))),
            NamedSet("protos", "inet_proto", ("tcp", 47, "icmpv6")),
            NamedSet("dispatch", "mark", tuple((i, x.jump_value("target")) for i in range(1, 8)), map="verdict"),
            NamedSet("verdicts", "ifname", (("eth0", {"accept": None}), ("eth1", {"drop": None}), ("eth2", x.goto_value("target")), ("eth3", {"return": None})), map="verdict"),
            NamedSet("port-marks", "ifname", (("eth0", 1), ("eth1", 2)), map="mark"),
            NamedSet("empty", "ipv4_addr"),
            NamedSet("const", "ipv4_addr", ("1.1.1.1",), flags=("constant", "interval")),
        ),
        (Limit("cap", 10, "second", 50), Limit("cap0", 10, "minute", 0)),
    )
    bridge_rules = (
        _r(x.match(x.payload("ether", "type"), "ip"), x.match(x.payload("udp", "sport"), 68), x.accept()),
        _r(x.match(x.payload("ether", "type"), "ip"), x.match(x.payload("icmp", "type"), "echo-request"), x.accept()),
        _r(x.match(x.payload("ether", "type"), "ip6"), x.match(x.payload("ip6", "saddr"), "::"), x.match(x.payload("icmpv6", "type"), {"set": [135, "nd-router-solicit"]}), x.accept()),
        _r(x.match(x.payload("ether", "type"), "arp"), x.accept()),
        _r(x.match(x.payload("ether", "type"), "arp"), x.match(x.payload("arp", "operation"), {"set": ["request", "reply"]}, "!="), x.drop()),
        _r(x.match(x.payload("ether", "type"), "arp"), x.match(x.payload("arp", "operation"), 1), x.accept()),
        _r(x.match(x.payload("ether", "type"), "arp"), x.match(x.concat(x.meta("iifname"), x.payload("arp", "saddr ether")), x.set_ref("macs"), "!="), x.drop()),
        _r(x.match(x.payload("ether", "type"), "ip"), x.match(x.concat(x.meta("iifname"), x.payload("ip", "saddr")), x.set_ref("ips"), "!="), x.drop()),
        _r(x.match(x.payload("ether", "type"), "ip"), x.match(x.payload("udp", "sport"), 68), x.match(x.payload("ip", "saddr"), "0.0.0.0"), x.accept()),
        _r(x.match(x.payload("ip", "saddr"), "1.2.3.4"), x.match(x.payload("ether", "type"), "ip"), x.drop()),
        _r(x.match(x.payload("ether", "type"), "ip6"), x.match(x.meta("l4proto"), "icmpv6"), x.drop()),
        _r(x.match(x.payload("ether", "type"), "ip"), x.match(x.meta("l4proto"), "icmpv6"), x.drop()),
        _r(x.match(x.payload("ether", "type"), 0x8035), x.match(x.payload("ether", "daddr"), "FF:FF:FF:FF:FF:FF"), x.accept()),
        _r(x.match(x.payload("ether", "type"), {"set": ["ip", "ip6", "arp", 0x9000]}, "!="), x.drop()),
        _r(x.match(x.payload("ether", "daddr"), "ff:ff:ff:ff:ff:ff"), x.match(x.payload("ether", "type"), "ip"), x.match(x.payload("ip", "daddr"), x.prefix("224.0.0.0", 4)), x.drop()),
        _r(x.vmap(x.meta("iifname"), "ports")),
    )
    bridge = Table(
        "bridge", "zonewall",
        (
            Chain("prerouting", bridge_rules, Hook("filter", "prerouting", -200)),
            Chain("b-fwd", (), Hook("filter", "forward", -190)),
            Chain("b-out", (), Hook("filter", "output", 100)),
            Chain("b-in", (), Hook("filter", "input", 0)),
            Chain("classify", (_r(x.set_mark(1)),)),
        ),
        (
            NamedSet("ports", "ifname", (("tap1", x.jump_value("classify")), ("tap2", x.jump_value("classify"))), map="verdict"),
            NamedSet("macs", ("ifname", "ether_addr"), tuple(x.concat(f"tap{i}", f"52:54:00:00:00:0{i}") for i in range(3))),
            NamedSet("ips", ("ifname", "ipv4_addr"), tuple(x.concat(f"tap{i}", f"10.0.0.{i}") for i in range(5))),
        ),
        (Limit("cap", 10, "second", 50),),
    )
    return Ruleset("vocabulary", (inet, bridge))


CASES = [pytest.param(p, id=p.name) for p in EXAMPLES] + [pytest.param(None, id="vocabulary")]


def rulesets_of(example: Path | None) -> list[Ruleset]:
    return [vocabulary_ruleset()] if example is None else list(example_rulesets(example))


# -- namespace helpers ------------------------------------------------------------------


@pytest.fixture
def render_netns() -> Iterator[str]:
    name = f"zwt-{os.getpid()}-render-{next(_counter)}"  # zwt-<pid>-: swept after a crash
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if created.returncode != 0:
        pytest.fail(f"ip netns add {name}: {created.stderr.strip()}", pytrace=False)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def in_netns(ns: str, *command: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "env", "TZ=UTC", *command], input=stdin, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command[:3])} in {ns} failed:\n{result.stderr}")
    return result.stdout


def load_json(ns: str, ruleset: Ruleset) -> None:
    in_netns(ns, sys.executable, "-c", LOAD_JSON, stdin=ir.dumps(ir.to_json(ruleset)))


# -- kernel tests -----------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("example", CASES)
def test_render_matches_kernel_listing(render_netns: str, example: Path | None) -> None:
    for ruleset in rulesets_of(example):
        in_netns(render_netns, "nft", "flush", "ruleset")
        load_json(render_netns, ruleset)
        for table in ruleset.tables:
            listed = in_netns(render_netns, "nft", "list", "table", table.family, table.name)
            assert normalize_listing(render_table(table)) == normalize_listing(listed), f"{ruleset.node}: {table.family} {table.name}"


@pytest.mark.kernel
@pytest.mark.parametrize("example", CASES)
def test_nft_check_accepts_rendered_tables(render_netns: str, example: Path | None) -> None:
    for ruleset in rulesets_of(example):
        for table in ruleset.tables:
            in_netns(render_netns, "nft", "-c", "-f", "-", stdin=render_table(table))


@pytest.mark.kernel
def test_hostile_strings_stay_data_when_the_text_is_loaded(render_netns: str) -> None:
    in_netns(render_netns, "nft", "add", "table", "inet", "sentinel")
    evil = 'x"; flush ruleset; add table inet pwned #\n'
    table = Table("inet", "zwq", (Chain("c", (_r(x.log_group(1, evil), comment=evil),)),))
    in_netns(render_netns, "nft", "-f", "-", stdin=render_table(table))
    assert in_netns(render_netns, "nft", "list", "tables").split("\n") == ["table inet sentinel", "table inet zwq", ""]
    listing = in_netns(render_netns, "nft", "list", "table", "inet", "zwq")
    assert "log prefix \"x'; flush ruleset; add table inet pwned #\" group 1 comment \"x'; flush ruleset; add table inet pwned #\"" in listing


# -- unit tests -------------------------------------------------------------------------


def test_quote_neutralises_quotes_and_control_characters() -> None:
    assert quote('a"b') == "\"a'b\""
    assert quote("line\nbreak\t\x00\x7f\x85end") == '"linebreakend"'
    assert quote("déjà vu") == '"déjà vu"'


def test_comment_with_nft_syntax_is_one_string() -> None:
    text = render_rule(Rule((x.counter(), x.accept()), 'x"; flush ruleset'))
    head, _, comment = text.partition(" comment ")
    assert head == "counter packets 0 bytes 0 accept"
    assert comment == "\"x'; flush ruleset\"" and comment.count('"') == 2


def test_policy_strings_are_quoted_everywhere() -> None:
    text = render_rule(Rule((x.match(x.meta("iifname"), 'e"th0\n'), x.log_group(3, 'p"re\x1bfix'), x.accept())))
    assert text == "iifname \"e'th0\" log prefix \"p'refix\" group 3 accept"
    named = NamedSet("ports", "ifname", (('t"ap', {"accept": None}),), map="verdict")
    assert "elements = { \"t'ap\" : accept }" in render_table(Table("bridge", "t", sets=(named,)))


def test_listing_quirks() -> None:
    rule = lambda *s: render_rule(Rule(tuple(s)))
    mark = x.meta("mark")
    assert rule(x.has_bits(0x80000000), x.ret()) == "meta mark 0x80000000/1 return"
    assert rule(x.has_bits(0x40000000), x.ret()) == "meta mark & 0x40000000 == 0x40000000 return"
    assert rule(x.match(x.masked(mark, 0xFFFFFFFF), 5)) == "meta mark 0x00000005"
    assert rule(x.match(x.ct("state"), ["related", "established"], "in")) == "ct state established,related"
    assert rule(x.match(x.ct("state"), "new")) == "ct state == new"
    assert rule(x.match(x.meta("l4proto"), "icmpv6")) == "meta l4proto ipv6-icmp"
    assert rule(x.match(x.payload("ether", "type"), "arp"), x.match(x.payload("arp", "operation"), 1)) == "arp operation request"
    assert rule(x.match(x.payload("ether", "type"), "ip"), x.match(x.payload("udp", "sport"), 68)) == "ether type ip udp sport 68"
    assert rule(x.match(x.meta("nfproto"), "ipv4"), x.match(x.payload("ip", "saddr"), "1.2.3.4")) == "ip saddr 1.2.3.4"
    assert rule(x.match(x.payload("tcp", "dport"), {"set": [23, x.value_range(20, 22), 80]})) == "tcp dport { 20-23, 80 }"
    assert rule(x.match(x.payload("icmpv6", "type"), {"set": ["nd-neighbor-solicit", "nd-router-solicit"]})) == "icmpv6 type { nd-router-solicit, nd-neighbor-solicit }"
    assert rule(x.match(x.meta("hour"), x.value_range("08:00:00", "17:59:59"))) == 'meta hour "08:00"-"17:59:59"'
    assert rule(x.limit_rate(10, "second", 5), x.limit_rate(1, "minute", 20)) == "limit rate 10/second limit rate 1/minute burst 20 packets"
    assert rule(x.reject_icmpx()) == "reject"


def test_base_chain_priorities_are_named_per_family() -> None:
    def header(family: str, hook: str, priority: int) -> str:
        text = render_table(Table(family, "t", (Chain("c", (), Hook("filter", hook, priority)),)))
        return text.splitlines()[2].strip()

    assert header("inet", "forward", 0) == "type filter hook forward priority filter; policy accept;"
    assert header("bridge", "prerouting", -200) == "type filter hook prerouting priority filter; policy accept;"
    assert header("inet", "forward", -200) == "type filter hook forward priority -200; policy accept;"
    assert header("inet", "input", -10) == "type filter hook input priority filter - 10; policy accept;"
    assert header("bridge", "forward", -190) == "type filter hook forward priority filter + 10; policy accept;"
    assert header("inet", "prerouting", -100).endswith("priority dstnat; policy accept;")
    assert header("inet", "forward", -100).endswith("priority -100; policy accept;")


def test_table_layout() -> None:
    table = Table(
        "inet", "t",
        (Chain("c", (Rule((x.counter(), x.drop()), "d"),)), Chain("e", ())),
        (NamedSet("s", "ipv4_addr", ("10.0.0.1", "10.0.0.2", "10.0.0.3"), comment="not listed"),),
        (Limit("cap", 10, "second", 50),),
    )
    assert render_table(table) == (
        "table inet t {\n"
        "\tlimit cap {\n\t\trate 10/second burst 50 packets\n\t}\n\n"
        "\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1, 10.0.0.2,\n\t\t\t     10.0.0.3 }\n\t}\n\n"
        "\tchain c {\n\t\tcounter packets 0 bytes 0 drop comment \"d\"\n\t}\n\n"
        "\tchain e {\n\t}\n"
        "}\n"
    )
    assert render_nft(Ruleset("n", (table, table))) == render_table(table) * 2


def test_normalize_listing() -> None:
    kernel = (
        "table inet t { # handle 4\n"
        "\tset s { # handle 2\n\t\ttype ipv4_addr\n"
        "\t\telements = { 10.0.0.3, 10.0.0.1,\n\t\t\t     10.0.0.2 }\n\t}\n\n"
        "\tset rl {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n"
        "\t\telements = { 10.9.9.9 expires 42s }\n\t}\n"
        "\tchain c { # handle 1\n"
        "\t\tip saddr { 10.0.0.2, 10.0.0.1 } counter packets 12 bytes 3400 accept comment \"a { z, b }\" # handle 7\n"
        "\t}\n}\n"
    )
    ours = (
        "table inet t {\n"
        "\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1, 10.0.0.2,\n\t\t\t     10.0.0.3 }\n\t}\n\n"
        "\tset rl {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n\t}\n\n"
        "\tchain c {\n"
        "\t\tip saddr { 10.0.0.1, 10.0.0.2 } counter packets 0 bytes 0 accept comment \"a { z, b }\"\n"
        "\t}\n}\n"
    )
    assert normalize_listing(kernel) == normalize_listing(ours)
    assert "elements = { 10.0.0.1, 10.0.0.2, 10.0.0.3 }" in normalize_listing(kernel)
    assert 'comment "a { z, b }"' in normalize_listing(kernel)  # strings are data, not sets
    assert normalize_listing(ours) != normalize_listing(ours.replace("accept", "drop"))


@pytest.mark.parametrize("example", [pytest.param(p, id=p.name) for p in EXAMPLES])
def test_every_compiled_statement_renders(example: Path) -> None:
    for ruleset in example_rulesets(example):
        text = render_nft(ruleset)
        assert text.count("table ") == len(ruleset.tables)
        assert text == render_nft(ruleset)  # deterministic
