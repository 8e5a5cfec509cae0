"""analysis/flowrows.py `_alike_merged`: the rows of endpoints whose own sides decided
alike but for their names become one row where that is exact.

* Property: random rows of single endpoints (VMs with one or two NICs, nodes) with
  own-named and peer-named decisions; merged, every row read as "each of `from` to
  each of `to`, never an endpoint to itself", with a stage named for the role read
  as the endpoint's own, gives exactly the flows and decisions of the rows given.
* Property: a class's rows (several members' labels each, their peers holding the
  members, differ.Differ._add_pending) merge to exactly what the same flows give
  row by row: the answer depends on the flows, not on how differ.py gathered them.
* Negatives: rows whose own outcomes differ (another rule decides) stay apart, and a
  row of one endpoint never holds it on both sides.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.analysis.engine import Decision, Outcome
from zonewall.analysis.flowrows import DiffResult, DiffRow, _merge_rows, _name_replaced
from zonewall.analysis.rowsides import SideLister

# endpoint name -> its labels: vm:b has two NICs, node h is a host
ENDPOINTS = {
    "vm:a": ("vm:a",),
    "vm:b": ("vm:b@x", "vm:b@y"),
    "vm:c": ("vm:c",),
    "vm:c1": ("vm:c1",),  # a name the name "vm:c" begins
    "vm:d": ("vm:d",),
    "host:h": ("host:h",),
}
NAME_OF = {label: name for name, labels in ENDPOINTS.items() for label in labels}
LABELS = sorted(NAME_OF) + ["outside: any ipv4"]
VERDICTS = {"r1": "accept", "r2": "drop", "r3": "reject", "r4": "reject"}


def outcome(verdict: str, stage: str, rule: str) -> Outcome:
    return Outcome(verdict, (Decision(stage, verdict, rule),))


def own_stage(name: str, role: str) -> str:
    return f"{name} out" if role == "sender" else f"{name} in"


Fact = tuple[str, str, str, tuple[str, ...], tuple[str, str, str], tuple[str, str, str]]  # role, own label, change, services, old, new


@st.composite
def facts(draw: st.DrawFn) -> tuple[Fact, frozenset[str]]:
    """One endpoint's row: (role, own label, change, services, old, new), its peers.
    Decisions are (verdict, stage kind, rule): "own" stages name the endpoint."""
    role = draw(st.sampled_from(["sender", "receiver"]))
    own = draw(st.sampled_from(sorted(NAME_OF)))
    peers = draw(st.frozensets(st.sampled_from([p for p in LABELS if NAME_OF.get(p) != NAME_OF[own]]), min_size=1))
    # a rule has one action: r1 accepts, r2 drops, r3 and r4 reject
    decision = st.tuples(st.sampled_from(["own", "peer"]), st.sampled_from(["r1", "r2", "r3", "r4"])).map(lambda d: (VERDICTS[d[1]], *d))
    old = draw(decision)
    new = draw(decision.filter(lambda d: d[0] != old[0]))  # (a row's flows are treated differently)
    change = "opened" if new[0] == "accept" else "closed" if old[0] == "accept" else "changed"
    services = draw(st.sampled_from([("tcp 25",), ("tcp 30000",)]))
    return (role, own, change, services, old, new), peers


def decision_outcome(decision: tuple[str, str, str], name: str, role: str) -> Outcome:
    verdict, kind, rule = decision
    return outcome(verdict, own_stage(name, role) if kind == "own" else ("peer in" if role == "sender" else "peer out"), rule)


def row_of(fact: Fact, own_labels: set[str], peers: set[str], named: str) -> DiffRow:
    role, _own, change, services, old, new = fact
    owners = {label: (NAME_OF[label], frozenset(ENDPOINTS[NAME_OF[label]])) for label in own_labels}
    src, dst = (set(own_labels), set(peers)) if role == "sender" else (set(peers), set(own_labels))
    return DiffRow(change, src, dst, services, "always", decision_outcome(old, named, role), decision_outcome(new, named, role),
                   role=role, named=named, owners=owners)


def single_rows(drawn: list[tuple[Fact, frozenset[str]]]) -> list[DiffRow]:
    """As diffrecord.Recorder._add_rows keeps them: one row per (endpoint, role, change,
    services, decisions), the peers of its facts together."""
    rows: dict[Fact, DiffRow] = {}
    for fact, peers in drawn:
        row = rows.get(fact)
        if row is None:
            rows[fact] = row_of(fact, {fact[1]}, set(peers), NAME_OF[fact[1]])
        else:
            (row.dst if fact[0] == "sender" else row.src).update(peers)
    return list(rows.values())


def flows(rows: list[DiffRow]) -> set[tuple[object, ...]]:
    """Every (change, from, to, service, old, new) the rows say, stages named for the
    role read as the endpoint's own."""
    out = set()
    for row in rows:
        for a in row.src:
            for b in row.dst:
                if NAME_OF.get(a, a) == NAME_OF.get(b, b):
                    continue  # never an endpoint to itself

                def side(o: Outcome | None) -> tuple[str, str, str] | None:
                    if o is None or o.decisive is None:
                        return None
                    d = o.decisive
                    stage = d.stage.replace("from ", NAME_OF.get(a, a) + " ", 1) if d.stage.startswith("from ") else \
                        d.stage.replace("to ", NAME_OF.get(b, b) + " ", 1) if d.stage.startswith("to ") else d.stage
                    return (o.verdict, stage, d.label)

                for service in row.services:  # (rows equal but for their services are one row)
                    out.add((row.change, a, b, service, side(row.old), side(row.new)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(facts(), min_size=1, max_size=25))
def test_merged_rows_say_exactly_the_flows_of_the_rows_given(drawn: list[tuple[Fact, frozenset[str]]]) -> None:
    rows = single_rows(drawn)
    expected = flows(rows)
    merged = _merge_rows(single_rows(drawn))
    assert flows(merged) == expected
    for row in merged:  # a row of one endpoint never names it on the other side
        for own, other in ((row.src, row.dst), (row.dst, row.src)):
            names = {NAME_OF.get(label, label) for label in own}
            if len(names) == 1:
                assert not names & {NAME_OF.get(label, label) for label in other}, row


@st.composite
def class_rows(draw: st.DrawFn) -> tuple[Fact, list[str], frozenset[str]]:
    """A class's row: its members' labels (distinct endpoints), peers that may hold them."""
    (fact, peers) = draw(facts())
    members = draw(st.lists(st.sampled_from([label for label in sorted(NAME_OF) if label.startswith("vm:")]), min_size=1, max_size=4, unique_by=lambda x: NAME_OF[x]))
    more = draw(st.frozensets(st.sampled_from(members)))
    return fact, members, peers | more


@settings(max_examples=300, deadline=None)
@given(st.lists(class_rows(), min_size=1, max_size=6), st.lists(facts(), max_size=10))
def test_a_class_row_merges_as_its_members_rows_do(classes: list[tuple[Fact, list[str], frozenset[str]]], others: list[tuple[Fact, frozenset[str]]]) -> None:
    gathered, apart = single_rows(others), single_rows(others)
    for fact, members, peers in classes:
        first = NAME_OF[members[0]]
        gathered.append(row_of(fact, set(members), set(peers), first))
        for member in members:  # the same flows row by row: each member its own name, its peers but itself
            own_peers = {p for p in peers if NAME_OF.get(p) != NAME_OF[member]}
            if own_peers:
                apart.append(row_of(fact, {member}, own_peers, NAME_OF[member]))
    by_class, by_member = _merge_rows(gathered), _merge_rows(apart)
    assert flows(by_class) == flows(by_member)
    assert DiffResult(by_class, [], []).to_json() == DiffResult(by_member, [], []).to_json()


def test_rows_alike_but_for_their_names_are_one_row_and_others_stay_apart() -> None:
    zone_rule = ("reject", "own", "r3")
    peer_default = ("drop", "peer", "r2")
    rows = single_rows([
        (("sender", "vm:a", "changed", ("tcp 25",), zone_rule, peer_default), frozenset({"vm:c", "vm:d", "host:h"})),
        (("sender", "vm:c", "changed", ("tcp 25",), zone_rule, peer_default), frozenset({"vm:a", "vm:d", "host:h"})),
        (("sender", "vm:d", "changed", ("tcp 25",), zone_rule, peer_default), frozenset({"vm:a", "vm:c", "host:h"})),
        # vm:c1's own rule r4 decides (a reject too): alike in every other way, its row stays its own
        (("sender", "vm:c1", "changed", ("tcp 25",), ("reject", "own", "r4"), peer_default), frozenset({"vm:a", "vm:d", "host:h"})),
    ])
    merged = _merge_rows(rows)
    assert len(merged) == 2, merged
    shared = next(r for r in merged if len(r.src) > 1)
    assert shared.src == {"vm:a", "vm:c", "vm:d"} and shared.dst == {"vm:a", "vm:c", "vm:d", "host:h"}
    assert shared.old is not None and shared.old.decisive is not None and shared.old.decisive.stage == "from out"
    alone = next(r for r in merged if len(r.src) == 1)
    assert alone.src == {"vm:c1"} and alone.dst == {"vm:a", "vm:d", "host:h"}
    assert alone.old is not None and alone.old.decisive is not None and alone.old.decisive.stage == "vm:c1 out"  # not vm:c's name, nor the role's


NAME_TEXT = st.text(alphabet="ab1_.:-@ é", max_size=12)


@settings(max_examples=400, deadline=None)
@given(NAME_TEXT, st.text(alphabet="ab1_.:-@ é", min_size=1, max_size=4), st.sampled_from(["\0", "the receiver", "vm:x"]))
def test_a_name_is_replaced_where_it_stands_alone_as_the_pattern_says(text: str, name: str, word: str) -> None:
    """`_name_replaced` replaces what `(?<![\\w.:-])NAME(?![\\w.@-])` matches, and
    nothing else: "vm:web1" in "vm:web1 out", not in "vm:web10 out"."""
    pattern = re.compile(rf"(?<![\w.:-]){re.escape(name)}(?![\w.@-])")
    assert _name_replaced(text, name, word) == pattern.sub(lambda _m: word, text)


def test_a_longer_name_that_begins_with_the_name_is_left() -> None:
    assert _name_replaced("vm:web1 out, vm:web10 out", "vm:web1", "W") == "W out, vm:web10 out"
    assert _name_replaced("vm:web1@x", "vm:web1", "W") == "vm:web1@x"
    assert _name_replaced("zone z vm:web1", "vm:web1", "W") == "zone z W"
    assert _name_replaced("ba a a", "a a", "W") == "ba W"  # a standing occurrence inside a refused one


LABELS = [f"vm:vm{i}" for i in range(40)] + ["host:node1", "outside: any", "vm:vm1@lan"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.frozensets(st.sampled_from(LABELS)), st.frozensets(st.sampled_from(LABELS))), min_size=1, max_size=6))
def test_each_side_is_listed_in_sorted_order(sides: list[tuple[frozenset[str], frozenset[str]]]) -> None:
    """rowsides.SideLister reads a large side out of every label sorted once; a small one
    is sorted on its own: either way the list `sorted` gives (no zone to name)."""
    rows = [DiffRow("opened", set(src), set(dst)) for src, dst in sides]
    listed = SideLister((side for row in rows for side in (row.src, row.dst)), dict)
    for row in rows:
        assert listed(row.src) == sorted(row.src) and listed(row.dst) == sorted(row.dst)
