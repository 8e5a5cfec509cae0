"""Each example, enforced in the lab with real packets, equals the matrix written here.

IPv6 is checked against the same matrix: IPv6 works wherever IPv4 does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labtools import running_lab
from zonewall.lab.probing import reachability_matrix
from zonewall.lab.report import differences

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

THREE_TIER = {
    "vm:web1": {"vm:app1": ["tcp/8080"]},
    "vm:app1": {"vm:db1": ["tcp/5432"]},
    "vm:db1": {},
    "mgmt": {
        "vm:web1": ["tcp/22", "tcp/443"],
        "vm:app1": ["tcp/22"],
        "vm:db1": ["tcp/22"],
        "host:node1": ["tcp/22"],
        "host:node2": ["tcp/22"],
    },
    "internet": {"vm:web1": ["tcp/443"]},
}

NFS = ["tcp/111", "tcp/2049", "udp/111", "udp/2049"]
NAS_ISOLATION = {
    # on the isolated NAS network the tenants cannot reach each other ...
    "vm:vm1": {"vm:vm2@svc": ["tcp/443"], "vm:vm2@nas": [], "vm:nfs1": NFS},
    "vm:vm2": {"vm:vm1@svc": ["tcp/443"], "vm:vm1@nas": [], "vm:nfs1": NFS},
    # ... and the NFS server reaches no tenant through it (only rules `to: vm:nfs1`)
    "vm:nfs1": {"vm:vm1@svc": ["tcp/443"], "vm:vm2@svc": ["tcp/443"], "vm:vm1@nas": [], "vm:vm2@nas": []},
    "mgmt": {"vm:vm1@svc": ["tcp/443"], "vm:vm1@nas": ["tcp/443"], "vm:vm2@svc": ["tcp/443"], "vm:vm2@nas": ["tcp/443"], "vm:nfs1": []},
    "internet": {"vm:vm1@svc": ["tcp/443"], "vm:vm1@nas": ["tcp/443"], "vm:vm2@svc": ["tcp/443"], "vm:vm2@nas": ["tcp/443"]},
}

MICROSEGMENTATION = {
    "vm:web1": {"vm:web2": [], "vm:app1": ["tcp/8080"], "vm:db1": []},
    "vm:web2": {"vm:web1": [], "vm:app1": ["tcp/8080"], "vm:db1": []},
    "vm:app1": {"vm:db1": ["tcp/5432"], "vm:web1": []},
    "vm:db1": {"vm:app1": []},
    "vm:mon1": {"vm:web1": ["tcp/9100"], "vm:web2": ["tcp/9100"], "vm:app1": ["tcp/9100"], "vm:db1": ["tcp/9100"]},
    "mgmt": {
        "vm:web1": ["tcp/22", "tcp/443"],
        "vm:web2": ["tcp/22", "tcp/443"],
        "vm:app1": ["tcp/22"],
        "vm:db1": ["tcp/22"],
        "vm:mon1": ["tcp/22"],
        "host:node1": ["tcp/22"],
        "host:node2": ["tcp/22"],
    },
    "internet": {"vm:web1": ["tcp/443"], "vm:web2": ["tcp/443"], "host:node1": []},
}


def _expand(expected: dict[str, dict[str, list[str]]], measured: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """Cells not written above are 'nothing gets through'; every written cell must exist."""
    for source, row in expected.items():
        assert source in measured, f"matrix has no source {source}"
        for target in row:
            assert target in measured[source], f"matrix has no cell {source} -> {target}"
    return {s: {t: sorted(expected.get(s, {}).get(t, [])) for t in row} for s, row in measured.items()}


@pytest.mark.kernel
@pytest.mark.parametrize(
    "example, expected",
    [("three-tier", THREE_TIER), ("nas-isolation", NAS_ISOLATION), ("microsegmentation", MICROSEGMENTATION)],
)
def test_example_matrix_matches_hand_written(example: str, expected: dict[str, dict[str, list[str]]]) -> None:
    with running_lab(EXAMPLES / example / "policy") as (state, policy):
        for family in ("ipv4", "ipv6"):
            measured = reachability_matrix(state, policy, family)  # type: ignore[arg-type]
            assert differences(measured, _expand(expected, measured)) == [], family
