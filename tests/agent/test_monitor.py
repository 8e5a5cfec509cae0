"""Parsing `nft monitor` output into generations, and what counts as drift."""

from __future__ import annotations

from zonewall.agent.drift import touches_ours
from zonewall.dataplane.monitor import Generation, GenerationParser, event_table

OUTPUT = """add table inet zonewall
add chain inet zonewall c { type filter hook input priority filter; policy accept; }
add rule inet zonewall c tcp dport 22 accept comment "x; delete table inet other"
add element bridge zonewall nic-src { "web1i0" : 0x00000001 }
add ct helper inet zonewall ftp { type "ftp" protocol tcp; l3proto inet; }
# new generation 2 by process 4242 (python3)
delete table inet other
# new generation 3 by process 31617 (nft)
"""


def test_generations_group_events_with_their_process() -> None:
    parser = GenerationParser()
    generations = [g for line in OUTPUT.splitlines() if (g := parser.feed(line)) is not None]
    assert generations == [
        Generation(2, 4242, "python3", frozenset({("inet", "zonewall"), ("bridge", "zonewall")})),
        Generation(3, 31617, "nft", frozenset({("inet", "other")})),
    ]


def test_event_lines() -> None:
    assert event_table("delete rule inet zonewall vm-web1-in handle 12") == ("inet", "zonewall")
    assert event_table("add ct helper inet t h { }") == ("inet", "t")
    assert event_table("# new generation 3 by process 1 (nft)") is None
    assert event_table("") is None


def test_only_foreign_changes_to_our_tables_are_drift() -> None:
    ours = frozenset({("inet", "zonewall")})
    assert touches_ours(Generation(5, 100, "nft", ours), own_pid=42)
    assert not touches_ours(Generation(5, 42, "python3", ours), own_pid=42)  # our own apply
    assert not touches_ours(Generation(6, 100, "dockerd", frozenset({("ip", "docker")})), own_pid=42)
