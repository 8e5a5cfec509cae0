"""Rulesets for dataplane tests: a realistic node ruleset and a random generator."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Hook, Limit, NamedSet, Rule, Ruleset, Table

TABLE = "zonewall"


def guest_chain(name: str, port: int, comment_prefix: str = "") -> Chain:
    return Chain(
        name,
        (
            Rule((x.match(x.payload("tcp", "dport"), port), x.counter(), x.accept()), f"{comment_prefix}{name} allow"),
            Rule((x.match(x.payload("ip", "saddr"), x.set_ref("admins")), x.accept()), f"{name} admins"),
            Rule((x.limit_ref("log_cap"), x.log_group(1, f"zw {name} drop "), x.drop()), f"{name} log+drop"),
        ),
    )


def _addr(text: str) -> object:
    # libnftables JSON does not parse "10.0.0.0/8" as a prefix (it tries to resolve
    # it as a hostname); a prefix must be {"prefix": {...}}.
    if "/" in text:
        address, length = text.split("/")
        return x.prefix(address, int(length))
    return text


def _interval(addresses: tuple[str, ...]) -> tuple[str, ...]:
    return ("interval",) if any("/" in a for a in addresses) else ()


def node_ruleset(
    guests: dict[str, int] | None = None,
    *,
    admins: tuple[str, ...] = ("10.0.0.1", "10.0.0.2"),
    policy: str = "drop",
    priority: int = 0,
    log_rate: int = 10,
    bridge_table: bool = True,
) -> Ruleset:
    """A node with one guest chain per tap, dispatched by an `iifname vmap`."""
    guests = {"tap1": 22, "tap2": 80} if guests is None else guests
    chains = [
        Chain(
            "forward",
            (
                Rule((x.match(x.ct("state"), {"set": ["established", "related"]}), x.accept()), "established"),
                Rule((x.match(x.ct("state"), "invalid"), x.drop()), "invalid"),
                Rule((x.vmap(x.meta("iifname"), "guest_in"),), "dispatch"),
            ),
            Hook("filter", "forward", priority, policy),
        ),
        Chain("input", (Rule((x.accept(),), "host"),), Hook("filter", "input", 0, "accept")),
    ]
    chains += [guest_chain(f"g_{tap}", port) for tap, port in sorted(guests.items())]
    inet = Table(
        "inet",
        TABLE,
        chains=tuple(chains),
        sets=(
            NamedSet("admins", "ipv4_addr", tuple(_addr(a) for a in admins), flags=_interval(admins)),
            NamedSet(
                "guest_in",
                "ifname",
                tuple((tap, x.jump_value(f"g_{tap}")) for tap in sorted(guests)),
                map="verdict",
            ),
            NamedSet("meter", "ipv4_addr", flags=("timeout",), timeout=60, size=1024),
        ),
        limits=(Limit("log_cap", log_rate, "second", 5),),
    )
    tables = [inet]
    if bridge_table:
        tables.append(
            Table(
                "bridge",
                "zonewall_br",
                chains=(
                    Chain(
                        "pre",
                        (Rule((x.set_mark(7),), "mark"),),
                        Hook("filter", "prerouting", -200, "accept"),
                    ),
                ),
            )
        )
    return Ruleset("node1", tuple(tables))


# ---------------------------------------------------------------------------
# random rulesets for diff properties

_ADDRS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "192.168.7.7")
_PREFIXES = ({"prefix": {"addr": "172.16.0.0", "len": 16}}, {"prefix": {"addr": "172.20.0.0", "len": 24}})
_REGULAR = ("g0", "g1", "g2", "g3")
_TAPS = ("tap0", "tap1", "tap2", "tap3")


@st.composite
def random_table(draw: st.DrawFn, family: str = "inet", name: str = "zwr") -> Table:
    regular = [c for c in _REGULAR if draw(st.booleans())]
    sets: list[NamedSet] = []
    for set_name in ("s0", "s1"):
        if draw(st.booleans()):
            interval = draw(st.booleans())
            pool = list(_ADDRS) + (list(_PREFIXES) if interval else [])
            elems = draw(st.lists(st.sampled_from(pool), unique_by=str, max_size=5))
            sets.append(NamedSet(set_name, "ipv4_addr", tuple(elems), flags=("interval",) if interval else ()))
    if regular and draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(_TAPS), unique=True, max_size=4))
        verdicts = [draw(st.sampled_from([x.jump_value(c) for c in regular] + [x.goto_value(regular[0]), {"drop": None}])) for _ in keys]
        sets.append(NamedSet("dispatch", "ifname", tuple(zip(keys, verdicts)), map="verdict"))
    limits = [Limit(n, draw(st.sampled_from([10, 20])), "second", 5) for n in ("l0", "l1") if draw(st.booleans())]
    set_names = [s.name for s in sets if s.map is None]
    comments = st.sampled_from([None, "a", "b", "c"])

    def rules_for(chain: str, is_base: bool) -> tuple[Rule, ...]:
        later = [c for c in regular if is_base or c > chain]  # jumps only "forward": no loops
        templates: list[tuple[dict, ...]] = [
            (x.match(x.ct("state"), {"set": ["established", "related"]}), x.accept()),
            (x.counter(), x.drop()),
            (x.match(x.payload("tcp", "dport"), draw(st.sampled_from([22, 80, 443]))), x.accept()),
        ]
        templates += [(x.match(x.payload("ip", "saddr"), x.set_ref(s)), x.accept()) for s in set_names]
        templates += [(x.limit_ref(limit.name), x.log_group(2, "zw "), x.drop()) for limit in limits]
        templates += [(x.jump(c),) for c in later]
        if is_base and any(s.name == "dispatch" for s in sets):
            templates.append((x.vmap(x.meta("iifname"), "dispatch"),))
        picked = draw(st.lists(st.sampled_from(templates), max_size=4))
        return tuple(Rule(tuple(stmts), draw(comments)) for stmts in picked)

    chains = [
        Chain(
            "fw",
            rules_for("fw", True),
            Hook("filter", "forward", draw(st.sampled_from([0, 0, 0, 0, 10])), draw(st.sampled_from(["accept", "drop"]))),
        )
    ]
    rare_comment = st.sampled_from([None] * 9 + ["note"])  # a comment change forces a table re-create
    chains += [Chain(c, rules_for(c, False), comment=draw(rare_comment)) for c in regular]
    return Table(family, name, tuple(chains), tuple(sets), tuple(limits))


@st.composite
def random_ruleset(draw: st.DrawFn) -> Ruleset:
    tables = [draw(random_table())]
    if draw(st.booleans()):
        tables.append(draw(random_table("ip", "zwr2")))
    return Ruleset("node1", tuple(tables))


def renumbered(ruleset: Ruleset, chains: set[str] | None = None, mark: str = "moved ") -> Ruleset:
    """`ruleset` with the comments (the rule ids) of `chains` (None: all) changed."""
    def chain(c):  # type: ignore[no-untyped-def]
        if chains is not None and c.name not in chains:
            return c
        return dataclasses.replace(c, rules=tuple(Rule(r.statements, f"{mark}{r.comment}") for r in c.rules))
    return dataclasses.replace(ruleset, tables=tuple(dataclasses.replace(t, chains=tuple(chain(c) for c in t.chains)) for t in ruleset.tables))
