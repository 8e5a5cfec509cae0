"""An imported Proxmox VE configuration behaves in the lab as its rules say.

tests/importers/fixtures/proxmox-lab (as exported files with an inventory, and as a tree laid out as
/etc/pve: tests/importers/pvetree.py) (two nodes, five guests, security groups, IP sets with a
nomatch entry, aliases, macros, a disabled rule, -i on a multi-NIC guest, per-guest
policies, a node's own host.fw) is imported with `zonewall import proxmox`, the
result is brought up as a lab and every flow below is probed with real packets.
The expectations are written by hand from the .fw files (the comment names the rule).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.importers.pvetree import LOCAL_NETWORK, assemble_pve_tree
from tests.labtools import running_lab
from zonewall.cli import app
from zonewall.lab.probe import run_probes
from zonewall.lab.probing import Service, endpoint, probe_spec

pytestmark = pytest.mark.kernel

SOURCE = Path(__file__).resolve().parents[1] / "importers" / "fixtures" / "proxmox-lab"
OFFICE, WIFI, PARTNER, INTERNET = "198.51.100.10", "198.51.100.200", "203.0.113.10", "192.0.2.99"
BLACKLISTED, CLUSTER_NET = "198.51.100.77", "192.168.50.99"  # an office address in [IPSET blacklist]; the nodes' local network
INTERNET6 = "2001:db8:ffff::10"

# (source, target, service, delivered?, why)
FLOWS: list[tuple[str, str, str, bool, str]] = [
    (f"outside:{OFFICE}", "vm:web1", "tcp/80", True, "group web: HTTP(ACCEPT)"),
    (f"outside:{INTERNET}", "vm:web1", "tcp/80", True, "group web: HTTP from anywhere"),
    (f"outside:{INTERNET}", "vm:web1", "tcp/443", True, "group web: HTTPS"),
    (f"outside:{INTERNET}", "vm:web1", "tcp/22", False, "SSH only from +trusted"),
    (f"outside:{OFFICE}", "vm:web1", "tcp/22", True, "SSH from +trusted (office)"),
    (f"outside:{WIFI}", "vm:web1", "tcp/22", False, "+trusted excludes !198.51.100.128/25"),
    (f"outside:{PARTNER}", "vm:web1", "tcp/22", True, "+trusted has the partner net"),
    (f"outside:{INTERNET}", "vm:web1", "tcp/8080", False, "policy_in DROP"),
    (f"outside:{INTERNET}", "vm:web1", "icmp", True, "group web: Ping(ACCEPT)"),
    ("vm:mon1", "vm:web1", "tcp/9100", True, "group monitored: -source monitor (alias)"),
    ("vm:app1", "vm:web1", "tcp/9100", False, "node exporter only from the monitor alias"),
    ("vm:web1", "vm:app1", "tcp/8080", True, "200.fw: +dc/webservers -dport 8080,8081"),
    ("vm:web2", "vm:app1", "tcp/8081", True, "200.fw: the second port of the list, from web2 on the other node"),
    ("vm:web1", "vm:app1", "tcp/22", False, "200.fw: SSH only from +trusted"),
    (f"outside:{OFFICE}", "vm:app1", "tcp/22", True, "200.fw: SSH from +trusted"),
    (f"outside:{INTERNET}", "vm:app1", "tcp/8080", False, "webservers only"),
    (f"outside:{OFFICE}", "vm:app1", "tcp/9500", False, "200.fw: REJECT 9000:9999"),
    (f"outside:{INTERNET}", "vm:app1", "icmp", False, "no Ping on app1"),
    ("vm:app1", "vm:db1", "tcp/5432", True, "300.fw: PostgreSQL(ACCEPT) -source app (VM alias)"),
    ("vm:web1", "vm:db1", "tcp/5432", False, "only the app alias"),
    ("vm:db1", "outside:192.0.2.53", "udp/53", True, "300.fw: OUT DNS(ACCEPT)"),
    ("vm:db1", "outside:192.0.2.80", "tcp/80", False, "300.fw: policy_out DROP"),
    ("vm:db1", "vm:web1", "tcp/443", True, "300.fw: OUT ACCEPT -dest 10.60.1.0/24 -dport 443"),
    ("vm:db1", "outside:192.0.2.80", "tcp/443", False, "-dest 10.60.1.0/24 only"),
    ("vm:db1", "vm:web1", "tcp/80", False, "300.fw: policy_out DROP"),
    ("vm:web1", "outside:192.0.2.25", "tcp/25", False, "100.fw: OUT DROP -dport 25"),
    ("vm:web1", "outside:192.0.2.25", "tcp/587", True, "policy_out ACCEPT"),
    (f"outside:{INTERNET}", "vm:web2", "tcp/8443", False, "101.fw: the 8443 rule is disabled (|IN)"),
    (f"outside:{INTERNET}", "vm:web2", "tcp/443", True, "101.fw: GROUP web"),
    ("vm:app1", "vm:mon1@vmbr2", "tcp/3000", True, "400.fw: IN ACCEPT -i net1 -dport 3000"),
    ("vm:web1", "vm:mon1@vmbr1", "tcp/3000", False, "-i net1: not on net0"),
    (f"outside:{OFFICE}", "vm:mon1@vmbr1", "tcp/22", True, "400.fw: SSH from +trusted"),
    (f"outside:{OFFICE}", "host:pve1", "tcp/22", True, "management IP set (anti-lockout)"),
    (f"outside:{INTERNET}", "host:pve1", "tcp/22", False, "datacenter policy_in DROP"),
    (f"outside:{OFFICE}", "host:pve1", "tcp/8006", True, "management IP set: Proxmox GUI"),
    (f"outside:{INTERNET}", "host:pve1", "tcp/8006", False, "datacenter policy_in DROP"),
    (f"outside:{INTERNET}", "host:pve2", "tcp/8443", True, "nodes/pve2/host.fw"),
    (f"outside:{INTERNET}", "host:pve1", "tcp/8443", False, "pve1 has no such host rule"),
    (f"outside:{PARTNER}", "host:pve1", "tcp/10050", True, "cluster.fw [RULES]: +trusted -dport 10050"),
    (f"outside:{WIFI}", "host:pve2", "tcp/10050", False, "nomatch half of +trusted"),
    (f"outside:{INTERNET6}", "vm:web1", "tcp/80", True, "IPv6: HTTP from anywhere"),
    # Proxmox's built-ins, written explicitly by the import (proxmox-cluster.yaml)
    (f"outside:{BLACKLISTED}", "host:pve1", "tcp/22", False, "blacklist dropped before the management set's access"),
    (f"outside:{BLACKLISTED}", "vm:web1", "tcp/80", False, "blacklist dropped before any guest rule"),
    (f"outside:{CLUSTER_NET}", "host:pve1", "tcp/8006", True, "the management set always holds local_network"),
    (f"outside:{CLUSTER_NET}", "host:pve2", "tcp/22", True, "the management set always holds local_network"),
    (f"outside:{CLUSTER_NET}", "host:pve1", "udp/5405", False, "corosync only between ring addresses"),
    ("host:pve2", "host:pve1", "udp/5405", True, "corosync between the nodes' ring0 addresses"),
    ("host:pve1", "host:pve2", "udp/5404", True, "corosync between the nodes' ring0 addresses"),
    ("host:pve1", "host:pve2", "udp/5406", False, "corosync is 5404-5405 only"),
    (f"outside:{INTERNET6}", "vm:web1", "tcp/22", False, "IPv6: +trusted is IPv4 only"),
    (f"outside:{INTERNET6}", "vm:web1", "icmp", True, "IPv6: Ping is echo-request in both families"),
    ("vm:mon1", "vm:web1", "tcp/9100@ipv6", False, "IPv6: the monitor alias is an IPv4 address"),
]


def _service(text: str) -> tuple[Service, str | None]:
    text, _, family = text.partition("@")
    if text == "icmp":
        return Service("icmp", None), family or None
    proto, port = text.split("/")
    return Service(proto, int(port)), family or None  # type: ignore[arg-type]


def _family(source: str, target: str, forced: str | None) -> str:
    if forced:
        return forced
    for ref in (source, target):
        if ref.startswith("outside:") and ":" in ref[len("outside:"):]:
            return "ipv6"
    return "ipv4"


def test_flow_table_is_large_enough() -> None:
    assert len(FLOWS) >= 30
    assert {expected for *_, expected, _ in FLOWS} == {True, False}


@pytest.fixture(scope="module", params=["exported-files", "etc-pve-tree"])
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .fw files with a hand-written inventory, and the same files in a tree laid out
    as /etc/pve, whose guest configs and corosync.conf are the inventory."""
    out = tmp_path_factory.mktemp("pve-import") / "policy"
    if request.param == "exported-files":
        args = [str(SOURCE)]
    else:
        args = [str(assemble_pve_tree(tmp_path_factory.mktemp("pve-tree") / "etc-pve")), "--local-network", LOCAL_NETWORK]
    result = CliRunner().invoke(app, ["import", "proxmox", *args, "-o", str(out), "--strict"])
    assert result.exit_code == 0, result.output
    return out


def test_imported_proxmox_policy_behaves_as_its_rules_say(imported: Path) -> None:
    with running_lab(imported) as (state, policy):
        specs, labels = [], []
        for source, target, service_text, expected, why in FLOWS:
            service, forced = _service(service_text)
            family = _family(source, target, forced)
            src = endpoint(state, policy, source, family, role="source")  # type: ignore[arg-type]
            dst = endpoint(state, policy, target, family, role="target", peer=src.ref)  # type: ignore[arg-type]
            specs.append(probe_spec(src, dst, service, timeout=1.0))
            labels.append((source, target, service_text, expected, why))
        results = run_probes(specs, max_workers=48)
        errors = [f"{s} -> {t} {svc}: {r.detail}" for (s, t, svc, _, _), r in zip(labels, results) if r.verdict == "error"]
        assert not errors, errors
        wrong = [f"{s} -> {t} {svc}: expected {'delivered' if e else 'blocked'} ({why}), got {r.verdict}"
                 for (s, t, svc, e, why), r in zip(labels, results) if r.delivered != e]
        assert wrong == [], "\n".join(wrong)
