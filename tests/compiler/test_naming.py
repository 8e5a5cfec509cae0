"""Names are built and parsed back in one module (compiler/naming.py for chains,
compiler/logprefix.py for log prefixes): what the counters and the NFLOG reader read
is exactly what the compiler wrote."""

from __future__ import annotations

import pytest

from zonewall.compiler.logprefix import parse as parse_log_prefix
from zonewall.compiler.naming import (
    chain_scope,
    group_chain,
    level_chain,
    level_of,
    log_prefix,
    network_chain,
    vm_chain,
)


@pytest.mark.parametrize(
    ("chain", "scope"),
    [
        (vm_chain("web1", "in"), ("web1", "in")),
        (vm_chain("db-2", "out"), ("db-2", "out")),
        (level_chain("zone", "dmz", "in"), ("zone:dmz", "in")),
        (level_chain("global", "", "out"), ("global", "out")),
        (level_chain("host", "node1", "in"), ("host", "in")),
        (level_chain("host", "", "out"), ("host", "out")),
        (network_chain("storage"), ("net:storage", "net")),
        (group_chain("web", "guest", "in"), ("sg:web", "in")),
    ],
)
def test_every_rule_chain_name_reads_back_as_its_scope(chain: str, scope: tuple[str, str]) -> None:
    assert chain_scope("inet", chain) == scope


def test_dispatch_and_bridge_chains_have_no_scope() -> None:
    assert chain_scope("inet", "forward") is None
    assert chain_scope("bridge", vm_chain("web1", "in")) is None


def test_a_log_prefix_reads_back_field_by_field() -> None:
    prefix = log_prefix("node1", "zone:web", "out", "r-1", "reject", "info")
    assert parse_log_prefix(prefix) == ("node1", "zone:web", "out", "r-1", "reject", "info")
    assert level_of("zone:web", "r-1") == "zone"


def test_a_prefix_cut_at_the_kernels_limit_loses_only_the_verdict() -> None:
    prefix = log_prefix("n", "web1", "in", "r" * 130, "drop")
    assert len(prefix.encode()) == 127
    node, scope, direction, rule_id, verdict, level = parse_log_prefix(prefix)
    assert (node, scope, direction, verdict, level) == ("n", "web1", "in", None, None)
    assert rule_id is not None and rule_id.startswith("rrr")


def test_a_foreign_prefix_is_not_ours() -> None:
    assert parse_log_prefix("kernel: something") == (None, None, None, None, None, None)
