"""A status report makes the node's row on first contact and updates it in one
statement afterwards: what the inventory shows is always the newest report."""

from __future__ import annotations

from zonewall.controller.store.db import as_utc, open_database
from zonewall.controller.store.nodes import NodeStore, Registration, Status


def test_the_first_report_makes_the_row_and_later_ones_update_it(db_url: str) -> None:
    nodes = NodeStore(open_database(db_url))
    assert nodes.get("node7") is None
    first = nodes.report("node7", Status(3, "fp3", "h3", "ok", None, taps={"vm1": "tap1"}, apply_seconds=0.5, problems=("p",)))
    assert (first.applied_revision, first.state, first.taps, first.apply_seconds) == (3, "ok", '{"vm1": "tap1"}', 0.5)
    second = nodes.report("node7", Status(4, "fp4", "h4", "error", "boom", drift_repairs=2))
    assert (second.applied_revision, second.fingerprint, second.state, second.last_error, second.drift_repairs) == (4, "fp4", "error", "boom", 2)
    assert second.taps == '{"vm1": "tap1"}' and second.apply_seconds == 0.5  # not sent: kept
    stored = nodes.get("node7")
    assert stored is not None and (stored.applied_revision, stored.state, stored.problems) == (4, "error", "[]")
    assert as_utc(stored.last_contact) >= as_utc(first.last_contact)  # type: ignore[operator]
    nodes.register("node7", Registration("1.0", "hv7"))
    again = nodes.get("node7")
    assert again is not None and again.applied_revision == 4 and again.hostname == "hv7"  # registering keeps the status
    assert [row.name for row in nodes.all()] == ["node7"]  # one row, never a second
