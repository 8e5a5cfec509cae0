"""A scheduled rule exists only inside its window, enforced by the kernel itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
hosts: {{node1: {{address: 192.168.100.11}}}}
networks: {{lan: {{bridge: vmbr1, subnets: [10.6.0.0/24]}}}}
schedules:
  open-now: {{time: "{open}", timezone: Asia/Kolkata}}
  closed-now: {{time: "{closed}", timezone: America/New_York}}
vms:
  client: {{host: node1, nics: [{{network: lan, ips: [10.6.0.10]}}]}}
  server:
    host: node1
    nics: [{{network: lan, ips: [10.6.0.20]}}]
    rules:
      - {{id: in-window, direction: in, action: accept, tcp: 8001, schedule: open-now}}
      - {{id: out-of-window, direction: in, action: accept, tcp: 8002, schedule: closed-now}}
"""


def window(zone: str, start: timedelta, end: timedelta) -> str:
    """HH:MM-HH:MM in `zone`, relative to now (may cross midnight)."""
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC).astimezone(ZoneInfo(zone))
    return f"{(now + start):%H:%M}-{(now + end):%H:%M}"


@pytest.mark.kernel
def test_rule_exists_only_inside_its_window(tmp_path):
    text = POLICY.format(
        open=window("Asia/Kolkata", timedelta(hours=-1), timedelta(hours=1)),
        closed=window("America/New_York", timedelta(hours=2), timedelta(hours=3)),
    )
    with running_lab(write_policy(tmp_path, text)) as (state, policy):
        inside = probe(state, policy, "vm:client", "vm:server", Service("tcp", 8001), timeout=0.5)
        outside = probe(state, policy, "vm:client", "vm:server", Service("tcp", 8002), timeout=0.5)
    assert inside.delivered, inside.detail
    assert outside.verdict == "blocked", outside.detail
