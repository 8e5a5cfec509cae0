"""SQLite's write-ahead log is copied back by the controller's housekeeping thread,
not by the commit of a request (a 10,000-VM revision is 16 MB: a checkpoint in its
commit delayed the change it carried)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from zonewall.controller.replica import build_controller
from zonewall.controller.store.db import SQLITE_AUTOCHECKPOINT_PAGES, checkpoint, default_url
from zonewall.controller.store.revisions import Proposal
from zonewall.lab.postgres import TemporaryPostgres

POLICY = """version: 1
hosts:
  node1: {address: [192.0.2.1]}
vms:
  web:
    host: node1
    nics: [{network: lan, ips: [10.0.0.5]}]
    rules:
      - {direction: in, action: accept, tcp: %d}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
"""


def _revision(port: int) -> dict[str, str]:
    # ~1 MB of comment, different in each revision: a large revision (the same text
    # would be stored once, store/chunks.py)
    padding = "".join(f"# {port} {line:05} {'x' * 84}\n" for line in range(10_000))
    return {"policy.yaml": POLICY % port + padding}


def test_the_housekeeping_thread_checkpoints_the_log_and_requests_leave_it(tmp_path: Path) -> None:
    controller = build_controller(default_url(tmp_path))
    database = tmp_path / "zonewall.db"
    with controller.sessions() as session:  # a request's connection: checkpoints only past the safety net
        assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == SQLITE_AUTOCHECKPOINT_PAGES
    for port in (1001, 1002, 1003):
        controller.revisions.commit(Proposal(_revision(port), "admin", "large", "upload"))
    before = database.stat().st_size
    assert (tmp_path / "zonewall.db-wal").stat().st_size > 3_000_000 > before  # in the log, not yet in the database
    controller.housekeeping.start()
    try:
        deadline = time.monotonic() + 10
        while database.stat().st_size < before + 3_000_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert database.stat().st_size >= before + 3_000_000  # copied back without any request
    finally:
        controller.housekeeping.stop()
    frames, copied = checkpoint(controller.sessions) or (0, -1)
    assert frames == copied  # nothing left behind


def test_checkpoint_is_nothing_to_do_on_postgresql(postgres: TemporaryPostgres) -> None:
    url = postgres.create_database()
    try:
        controller = build_controller(url)
        assert checkpoint(controller.sessions) is None
        controller.sessions.kw["bind"].dispose()
    finally:
        postgres.drop_database(url)
