"""Rule counters over netlink (dataplane/rulecounters.py) against the kernel: the
same answer as libnftables' listing (`read_counters`) for every kind of ruleset the
compiler writes and with traffic counted; the rules' meaning worked out again only
when the ruleset generation moved (ours, or a rule deleted by hand)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from zonewall.compiler import nftexpr as x
from zonewall.compiler.ir import Chain, Hook, Rule, Ruleset, Table
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.counters import RuleCounter, read_counters
from zonewall.dataplane.rulecounters import CounterReader
from zonewall.lab.netns import netns_socket

from .kernel_helpers import nft
from .samples import TABLE
from .test_kernel_state import rulesets

pytestmark = pytest.mark.kernel


@pytest.fixture
def backend(netns_name: str) -> Iterator[LibNftBackend]:
    with LibNftBackend(netns_name) as b:
        yield b


@pytest.fixture
def reader(netns_name: str) -> Iterator[CounterReader]:
    r = CounterReader(netns_name)
    yield r
    r.close()


def counting(ports: tuple[int, ...]) -> Ruleset:
    """An output chain counting UDP to each port (the discard rule drops port 9)."""
    rules = [Rule((x.match(x.payload("udp", "dport"), port), x.counter(), x.accept()), f"port-{port}: udp {port}") for port in ports]
    rules.append(Rule((x.match(x.payload("udp", "dport"), 9), x.counter(), x.drop()), "discard: udp 9"))
    return Ruleset("node1", (Table("inet", TABLE, chains=(Chain("output", tuple(rules), Hook("filter", "output", 0, "accept")),)),))


def send(netns: str, port: int, count: int) -> None:
    with netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(count):
            with contextlib.suppress(PermissionError):  # a dropped datagram: EPERM, counted all the same
                sender.sendto(b"x", ("127.0.0.1", port))


def packets(counters: list[RuleCounter]) -> dict[str, int]:
    return {c.rule: c.packets for c in counters}


def test_every_compiled_ruleset_reads_as_the_listing_gives_it(netns_factory) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    for name, ruleset in rulesets():
        netns = netns_factory()
        with LibNftBackend(netns) as backend:
            apply_ruleset(backend, ruleset)
            reader = CounterReader(netns)
            try:
                got = reader.read()
            finally:
                reader.close()
            want = read_counters(backend)
            assert got == want, name  # keys, verdicts (log chains, rejects, returns), kernel handles
            assert {c.verdict for c in got} >= {"accept"}, name
            checked += 1
    assert checked >= 20


def test_traffic_is_counted_as_the_listing_counts_it(backend: LibNftBackend, reader: CounterReader, netns_name: str) -> None:
    apply_ruleset(backend, counting((5000, 5001)))
    send(netns_name, 5000, 3)
    send(netns_name, 9, 2)
    got = reader.read()
    assert got == read_counters(backend)
    assert packets(got) == {"port-5000": 3, "port-5001": 0, "discard": 2}
    assert {c.rule: c.verdict for c in got} == {"port-5000": "accept", "port-5001": "accept", "discard": "drop"}


def test_the_rules_meaning_is_worked_out_again_only_when_the_generation_moved(backend: LibNftBackend, reader: CounterReader, netns_name: str) -> None:
    first = apply_ruleset(backend, counting((5000,)))
    reader.read()
    send(netns_name, 5000, 4)
    again = reader.read()
    assert reader.layouts == 1  # nothing committed: only the numbers were read
    assert packets(again)["port-5000"] == 4

    apply_ruleset(backend, counting((5000, 5002)), previous=counting((5000,)), seen=first.view)  # ours: the generation moves
    send(netns_name, 5002, 1)
    changed = reader.read()
    assert reader.layouts == 2 and packets(changed)["port-5002"] == 1 and changed == read_counters(backend)

    listing = nft(netns_name, "-a", "list", "chain", "inet", TABLE, "output")
    handle = next(line.split("# handle ")[1].split()[0] for line in listing.splitlines() if "port-5002" in line)
    parsed = reader.parsed
    nft(netns_name, "delete", "rule", "inet", TABLE, "output", "handle", handle)  # by hand
    by_hand = reader.read()
    assert reader.layouts == 3 and "port-5002" not in packets(by_hand) and by_hand == read_counters(backend)
    assert reader.parsed <= parsed + 1  # the rules left are the messages read before (but the one after it: its position names another rule now)
    parsed = reader.parsed
    nft(netns_name, "add", "rule", "inet", TABLE, "output", "udp", "dport", "5003", "counter", "accept", "comment", '"port-5003: udp 5003"')
    added = reader.read()
    assert reader.parsed == parsed + 1 and packets(added)["port-5003"] == 0 and added == read_counters(backend)


def test_absent_tables_have_no_counters(reader: CounterReader) -> None:
    assert reader.read() == []


def numbered(ports: list[object], first_line: int, edited: dict[int, int] | None = None) -> Ruleset:
    """An output chain counting UDP to each port (an int, or a list: an inline set),
    the rules' ids derived ids from `first_line` on, as a policy file gives them."""
    rules = [Rule((x.match(x.payload("udp", "dport"), {"set": port} if isinstance(port, list) else port), x.counter(), x.accept()), f"policy:{first_line + n}")
             for n, port in enumerate(ports)]
    return Ruleset("node1", (Table("inet", TABLE, chains=(Chain("output", tuple(rules), Hook("filter", "output", 0, "accept")),)),))


def test_rules_an_apply_only_renamed_say_the_id_they_had(backend: LibNftBackend, reader: CounterReader, netns_name: str) -> None:
    """A line added above rules with derived ids: their chain is made again with the
    ids moved; each counter says the id its rule had (an inline set's rule too, whose
    set the kernel names anew), the rule added says nothing, until the next apply."""
    before = numbered([5001, [5002, 5003], 5004], 10)
    first = apply_ruleset(backend, before)
    send(netns_name, 5002, 2)
    assert {c.rule: c.was for c in reader.read()} == {"policy:10": None, "policy:11": None, "policy:12": None}
    after = numbered([[4990, 4991], 5001, [5002, 5003], 5004], 10)  # a rule added at the head (its inline set the kernel's first)
    second = apply_ruleset(backend, after, previous=before, seen=first.view)
    read = reader.read()
    assert {c.rule: c.was for c in read} == {"policy:10": None, "policy:11": "policy:10", "policy:12": "policy:11", "policy:13": "policy:12"}
    assert [c.was for c in reader.read()] == [c.was for c in read]  # told again until the generation moves
    edited = numbered([[4990, 4991], 5001, [5002, 5008], 5004], 10)  # a rule edited: the others were not renamed
    apply_ruleset(backend, edited, previous=after, seen=second.view)
    assert {c.rule: c.was for c in reader.read()} == {"policy:10": None, "policy:11": None, "policy:12": None, "policy:13": None}
