"""Proxmox security groups become zonewall `security_groups` (issue 18): written
once in cluster.yaml and referenced, not copied into every guest and node. The
imported policy treats every flow as the copied one does (`zonewall diff` between
the two imports finds nothing), and a group that means other addresses in one guest
(Proxmox resolves a name in the guest's own aliases first) stays copied there."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from zonewall.analysis.diff import diff_policies
from zonewall.cli import app
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

FIXTURES = Path(__file__).parent / "fixtures"


def imported(source: Path, out: Path, *args: str) -> Policy:
    result = CliRunner().invoke(app, ["import", "proxmox", str(source), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return load_policy(out)


def references(policy: Policy, vm: str) -> list[str]:
    return [r.security_group for r in policy.doc.vms[vm].rules if getattr(r, "security_group", None)]


def test_groups_are_referenced_and_mean_what_the_copies_mean(tmp_path: Path) -> None:
    for fixture in ("proxmox-lab", "proxmox-all"):
        mapped = imported(FIXTURES / fixture, tmp_path / fixture / "mapped")
        copied = imported(FIXTURES / fixture, tmp_path / fixture / "copied", "--copy-groups")
        assert mapped.doc.security_groups and not copied.doc.security_groups, fixture
        result = diff_policies(copied, mapped)
        assert result.identical, (fixture, result.to_json())


def test_a_group_is_written_once_and_referenced_by_each_guest(tmp_path: Path) -> None:
    policy = imported(FIXTURES / "proxmox-lab", tmp_path / "out")
    assert sorted(policy.doc.security_groups) == ["monitored", "web"]
    users = {vm: references(policy, vm) for vm in policy.doc.vms}
    assert sum("monitored" in used for used in users.values()) == 4  # 100, 101, 200 and 300 use it
    text = "\n".join(p.read_text() for p in (tmp_path / "out").glob("vm-*.yaml"))
    assert "node exporter" not in text  # the rule itself only in cluster.yaml
    assert "node exporter" in (tmp_path / "out" / "cluster.yaml").read_text()


def test_a_group_meaning_other_addresses_in_one_guest_is_copied_there(tmp_path: Path) -> None:
    source = tmp_path / "pve"
    shutil.copytree(FIXTURES / "proxmox-lab", source)
    guest = source / "200.fw"
    guest.write_text(guest.read_text().replace("[RULES]", "[ALIASES]\nmonitor 10.60.1.99\n\n[RULES]"))
    policy = imported(source, tmp_path / "out")
    (vm200,) = yaml.safe_load((tmp_path / "out" / "vm-200.yaml").read_text())["vms"]
    assert "monitored" not in references(policy, vm200)
    exporter = [r for r in policy.doc.vms[vm200].rules if getattr(r, "tcp", None) == ["9100"]]
    assert len(exporter) == 1 and policy.address_set(exporter[0].from_).v4 == policy.address_set(["10.60.1.99"]).v4  # the guest's own alias
    others = [vm for vm in policy.doc.vms if vm != vm200 and "monitored" in references(policy, vm)]
    assert len(others) == 3  # still referenced by the guests where it means the same
    report = (tmp_path / "out" / "import-report.txt").read_text()
    assert "security group monitored copied into these rules, not referenced: its names mean other addresses in this guest" in report
    copied = imported(source, tmp_path / "copied", "--copy-groups")
    assert diff_policies(copied, policy).identical
