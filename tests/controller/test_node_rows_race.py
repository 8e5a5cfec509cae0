"""A new agent's first requests (registration, log lines, the long-poll's first
contact, a status report) reach the controllers at once and each makes the node's row
when it finds none: all of them succeed, and the node has one row."""

from __future__ import annotations

import threading

from zonewall.controller.store.db import open_database
from zonewall.controller.store.nodes import NodeStore, Registration, Status


def test_first_contacts_at_once_all_succeed(db_url: str) -> None:
    # two stores on one database: two controllers
    stores = [NodeStore(open_database(db_url)), NodeStore(open_database(db_url))]
    failures: list[BaseException] = []
    for round_ in range(30):
        node = f"node{round_}"
        start = threading.Barrier(8)

        def first(kind: int) -> None:
            nodes = stores[kind % 2]
            start.wait()
            try:
                if kind // 2 == 0:
                    nodes.register(node, Registration("1.0", "hv"))
                elif kind // 2 == 1:
                    nodes.add_logs(node, [("info", "started")])
                elif kind // 2 == 2:
                    nodes.touch(node)
                else:
                    nodes.report(node, Status(1, "fp", "h", "ok", None))
            except BaseException as exc:  # collected, asserted below
                failures.append(exc)

        threads = [threading.Thread(target=first, args=(kind,)) for kind in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, [repr(f)[:200] for f in failures[:3]]
    assert [row.name for row in stores[0].all()] == sorted(f"node{i}" for i in range(30))
