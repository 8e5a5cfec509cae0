"""The Proxmox importer never writes a policy more open than its input.

Each case is a small Proxmox configuration that is broken, unusual or not exactly
expressible. It is imported with `zonewall import proxmox`, and `zonewall trace`
(not a look at the YAML) must answer at least as closed as pve-firewall does for
the flows named beside it; or the import must fail with a `file:line` error and
write nothing. Proxmox's verdicts are stated with the reason from pve-firewall's
code (PVE/Firewall.pm) beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.policy.loader import load_policy

INVENTORY = """\
local_network: 192.168.1.0/24
nodes:
  pve1: {address: [192.168.1.11], uplink: eth0}
bridges:
  vmbr0: {subnets: [10.0.0.0/24]}
  vmbr1: {subnets: [10.0.1.0/24]}
guests:
  100:
    node: pve1
    nics:
      net0: {bridge: vmbr0, mac: "BC:24:11:00:00:10", ips: [10.0.0.10]}
      net1: {bridge: vmbr1, mac: "BC:24:11:00:01:10", ips: [10.0.1.10]}
  101:
    node: pve1
    nics:
      net0: {bridge: vmbr0, mac: "BC:24:11:00:00:11", ips: [10.0.0.11]}
"""
GUEST = "[OPTIONS]\nenable: 1\n\n[RULES]\n"
OUT = "outside:198.51.100.7"


def make(tmp_path: Path, files: dict[str, str], inventory: str = INVENTORY) -> Path:
    source = tmp_path / "pve"
    source.mkdir(parents=True)
    (source / "inventory.yaml").write_text(inventory)
    files = {"cluster.fw": "[OPTIONS]\nenable: 1\n", **files}
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    return source


def run_import(source: Path, out: Path) -> Any:
    return CliRunner().invoke(app, ["import", "proxmox", str(source), "-o", str(out), "--json"])


def imported(tmp_path: Path, files: dict[str, str], inventory: str = INVENTORY) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path / "out"
    result = run_import(make(tmp_path, files, inventory), out)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)["items"]


def verdict(policy: Path, src: str, dst: str, *flow: str) -> str:
    result = CliRunner().invoke(app, ["trace", str(policy), "--from", src, "--to", dst, *flow, "--json"])
    assert result.exit_code in (0, 1), result.output
    answer = json.loads(result.stdout)
    if src[0].isdigit():  # a guest named by its address: trace must send from exactly that one
        assert answer["flow"]["src"] == src, answer["flow"]
    return answer["verdict"]


def blocked(policy: Path, src: str, dst: str, *flow: str) -> bool:
    return verdict(policy, src, dst, *flow) in ("drop", "reject")


# -------------------------------------------------------------------- ICMP


def test_icmp_dport_is_the_icmp_type(tmp_path: Path) -> None:
    # pve-firewall stores the ICMP type in dport: `-p icmp -dport 0` matches echo-reply
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -p icmp -dport 0\nIN ACCEPT -p icmp -dport timestamp-request\n"})
    assert verdict(policy, OUT, "10.0.0.10", "--icmp", "echo-reply") == "accept"
    assert verdict(policy, OUT, "10.0.0.10", "--icmp", "timestamp-request") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "echo-request")  # policy_in DROP


def test_an_icmp_code_in_a_drop_blocks_that_code_only(tmp_path: Path) -> None:
    # Proxmox drops host-unreachable (type 3 code 1) and accepts the rest of ICMP;
    # zonewall matches the code (issue 18): exactly as closed, no wider
    policy, items = imported(tmp_path, {"100.fw": GUEST + "IN DROP -p icmp -dport host-unreachable\nIN ACCEPT -p icmp\n"})
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "host-unreachable")
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "destination-unreachable/1")
    assert verdict(policy, OUT, "10.0.0.10", "--icmp", "port-unreachable") == "accept"  # type 3, another code
    assert verdict(policy, OUT, "10.0.0.10", "--icmp", "echo-request") == "accept"
    assert not any("host-unreachable" in i["message"] for i in items)


def test_an_icmp_code_in_an_accept_opens_that_code_only(tmp_path: Path) -> None:
    policy, items = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -p icmp -icmp-type port-unreachable\n"})
    assert verdict(policy, OUT, "10.0.0.10", "--icmp", "port-unreachable") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "host-unreachable")  # type 3 code 1: policy_in DROP
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "destination-unreachable")  # code 0


# -------------------------------------------------------------------- ipfilter


def test_an_empty_ipfilter_set_drops_every_source(tmp_path: Path) -> None:
    # Proxmox: `-m set ! --match-set ipfilter-net0 src -j DROP` with an empty set
    policy, _ = imported(tmp_path, {"100.fw": "[OPTIONS]\nenable: 1\npolicy_out: ACCEPT\n\n[IPSET ipfilter-net0]\n\n[RULES]\n"})
    assert blocked(policy, "10.0.0.10", OUT, "--tcp", "443")
    assert verdict(policy, "10.0.1.10", OUT, "--tcp", "443") == "accept"  # net1 has no ipfilter


def test_ipfilter_without_a_set_is_an_empty_set(tmp_path: Path) -> None:
    policy, _ = imported(tmp_path, {"100.fw": "[OPTIONS]\nenable: 1\nipfilter: 1\n"})
    assert blocked(policy, "10.0.0.10", OUT, "--tcp", "443")
    assert blocked(policy, "10.0.1.10", OUT, "--tcp", "443")


def test_a_nic_without_addresses_under_an_empty_ipfilter_set_does_not_learn(tmp_path: Path) -> None:
    """Learning mode would let the guest's first source through; Proxmox lets none."""
    from zonewall.compiler.learning import is_learning
    from zonewall.compiler.nics import local_nics
    from zonewall.policy.loader import load_policy

    inventory = INVENTORY.replace("ips: [10.0.0.10]", "ips: []")
    out, _ = imported(tmp_path, {"100.fw": "[OPTIONS]\nenable: 1\n\n[IPSET ipfilter-net0]\n"}, inventory)
    policy = load_policy(out)
    nic = next(n for n in local_nics(policy, "pve1") if n.vm == "vm100" and n.nic_index == 0)
    assert not is_learning(policy, nic)
    rules = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.filters["pve-ipfilter-100-net0"].rules]
    assert {"direction": "out", "action": "drop", "ethertype": 0x0800} in rules  # every IPv4 source
    assert not [r for r in rules if r["action"] == "return" and "." in str(r.get("from"))]  # no IPv4 source allowed


def test_an_address_in_two_nics_ipfilter_sets_imports(tmp_path: Path) -> None:
    fw = "[OPTIONS]\nenable: 1\n\n[IPSET ipfilter-net0]\n10.0.0.10\n10.0.0.99\n\n[IPSET ipfilter-net1]\n10.0.1.10\n10.0.0.99\n"
    policy, _ = imported(tmp_path, {"100.fw": fw})
    assert verdict(policy, "10.0.0.10", OUT, "--tcp", "443") == "accept"
    assert verdict(policy, "10.0.1.10", OUT, "--tcp", "443") == "accept"


def test_a_containers_configured_ip_is_in_its_ipfilter(tmp_path: Path) -> None:
    # pve-firewall adds a container's ip= to its ipfilter set (ipfilter: 1)
    inventory = INVENTORY + (
        "  200:\n    node: pve1\n    nics:\n      net0: {bridge: vmbr0, ip: 10.0.0.20/24}\n"  # uses its ip
        "  201:\n    node: pve1\n    nics:\n      net0: {bridge: vmbr0, ip: 10.0.0.30/24, ips: [10.0.0.31]}\n"  # uses another
    )
    ipfilter = "[OPTIONS]\nenable: 1\nipfilter: 1\n"
    policy, _ = imported(tmp_path, {"200.fw": ipfilter, "201.fw": ipfilter}, inventory)
    assert verdict(policy, "10.0.0.20", OUT, "--tcp", "443") == "accept"
    assert blocked(policy, "10.0.0.31", OUT, "--tcp", "443")


# -------------------------------------------------------------------- rules zonewall cannot express


@pytest.mark.parametrize("rule, why", [
    ("IN DROP -p tcp -dport someservice", "port 'someservice'"),
    ("IN DROP -p udplite -dport 5000", "ports on protocol udplite"),
    ("IN REJECT -p xtp", "protocol 'xtp'"),
    ("OUT DROP -source +ipfilter-net0", "ipfilter IP set"),
])
def test_a_drop_that_cannot_be_translated_fails_the_import(tmp_path: Path, rule: str, why: str) -> None:
    out = tmp_path / "out"
    result = run_import(make(tmp_path, {"100.fw": GUEST.replace("[RULES]", "[IPSET ipfilter-net0]\n10.0.0.10\n\n[RULES]") + rule + "\n"}), out)
    assert result.exit_code == 2
    assert f"100.fw:8: this {rule.split()[1]} rule cannot be translated" in result.output
    assert why in result.output and "nothing was written" in result.output and not out.exists()


def test_the_same_rule_as_accept_is_left_out(tmp_path: Path) -> None:
    policy, items = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -p tcp -dport someservice\nIN ACCEPT -p udplite -dport 5000\n"})
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "80")
    assert [i["severity"] for i in items if i["file"] == "100.fw"].count("skipped") == 2


def test_forward_rules_fail_only_where_proxmox_enforces_them(tmp_path: Path) -> None:
    # pve-firewall's iptables ruleset ignores FORWARD rules; its nftables one applies them
    _, items = imported(tmp_path / "a", {"host.fw": "[RULES]\nFORWARD DROP -p tcp -dport 22\n"})
    assert any("ignores it" in i["message"] for i in items)
    nft = {"host.fw": "[OPTIONS]\nnftables: 1\n\n[RULES]\nFORWARD DROP -p tcp -dport 22\n"}
    result = run_import(make(tmp_path / "b", nft), tmp_path / "b" / "out")
    assert result.exit_code == 2 and "host.fw:5: FORWARD DROP" in result.output


def test_a_macro_with_a_conflicting_port_is_refused_as_proxmox_does(tmp_path: Path) -> None:
    # apply_macro: "parameter 'dport' already define in macro" -> the rule is not used
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN HTTP(ACCEPT) -dport 8080\n"})
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "80")
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "8080")


def test_a_macro_keeps_the_rules_own_source_port(tmp_path: Path) -> None:
    # apply_macro adds parameters the macro leaves open: SSH with -sport 1024 only
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN SSH(ACCEPT) -sport 1024\n"})
    assert verdict(policy, OUT, "10.0.0.10", "--tcp", "22", "--sport", "1024") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "22", "--sport", "2000")


# -------------------------------------------------------------------- interfaces


def test_a_host_accept_on_one_interface_is_not_opened_on_all(tmp_path: Path) -> None:
    # Proxmox: `-i vmbr1` accepts tcp/101 arriving on vmbr1 only; zonewall host rules
    # are scoped to the interface (issue 18): not opened on the uplink
    policy, items = imported(tmp_path, {"host.fw": "[RULES]\nIN ACCEPT -i vmbr1 -p tcp -dport 101\nIN REJECT -i vmbr0 -p tcp -dport 100\n"})
    assert blocked(policy, OUT, "host:pve1", "--tcp", "101")  # OUT arrives on the uplink
    assert blocked(policy, OUT, "host:pve1", "--tcp", "100")  # policy_in DROP there
    rules = [r.model_dump(by_alias=True, exclude_defaults=True) for r in load_policy(policy).doc.hosts["pve1"].rules]
    assert {"direction": "in", "action": "accept", "tcp": ["101"], "interface": ["vmbr1"]} in rules
    assert {"direction": "in", "action": "reject", "tcp": ["100"], "interface": ["vmbr0"]} in rules
    assert not any("-i vmbr" in i["message"] for i in items)


def test_a_nic_accept_is_not_opened_on_the_other_nics(tmp_path: Path) -> None:
    inventory = INVENTORY.replace("ips: [10.0.1.10]", "ips: []")
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -i net1 -p tcp -dport 3000\n"}, inventory)
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "3000")  # net0: Proxmox never matches -i net1 there


def test_a_nic_accept_with_a_foreign_destination_is_not_opened(tmp_path: Path) -> None:
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -i net1 -dest 10.0.0.10 -p tcp -dport 3000\n"})
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "3000")  # the address is net0's: Proxmox's net1 chain never sees it


def test_a_nic_accept_is_scoped_to_its_nic(tmp_path: Path) -> None:
    # issue 18: `-i net1` is written `nic: [net1]`: open on net1, closed on net0
    policy, items = imported(tmp_path, {"100.fw": GUEST + "IN ACCEPT -i net1 -p tcp -dport 3000\n"})
    assert verdict(policy, OUT, "10.0.1.10", "--tcp", "3000") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "3000")
    assert not any("-i net1" in i["message"] for i in items)  # exact: nothing reported


def test_a_group_used_on_one_nic_is_referenced_for_that_nic(tmp_path: Path) -> None:
    cluster = "[OPTIONS]\nenable: 1\n\n[group web]\nIN ACCEPT -p tcp -dport 443\n"
    policy, _ = imported(tmp_path, {"cluster.fw": cluster, "100.fw": GUEST + "GROUP web -i net1\n", "101.fw": GUEST + "GROUP web\n"})
    assert verdict(policy, OUT, "10.0.1.10", "--tcp", "443") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "443")  # net0 of guest 100
    assert verdict(policy, OUT, "10.0.0.11", "--tcp", "443") == "accept"  # guest 101, every NIC
    vms = load_policy(policy).doc.vms
    assert [r.model_dump(by_alias=True, exclude_defaults=True) for r in vms["vm100"].rules] == [{"security_group": "web", "nic": ["net1"]}]


# -------------------------------------------------------------------- switches and log levels


def test_a_nic_with_firewall_0_is_unfiltered_and_its_sibling_filtered(tmp_path: Path) -> None:
    inventory = INVENTORY.replace("ips: [10.0.1.10]}", "ips: [10.0.1.10], firewall: false}")
    policy, items = imported(tmp_path, {"100.fw": GUEST}, inventory)
    assert verdict(policy, OUT, "10.0.1.10", "--tcp", "3000") == "accept"  # Proxmox filters nothing on net1
    assert blocked(policy, OUT, "10.0.0.10", "--tcp", "3000")  # net0: policy_in DROP
    assert not any("firewall=0" in i["message"] for i in items)


def test_a_node_with_its_firewall_off_accepts_and_the_others_do_not(tmp_path: Path) -> None:
    inventory = INVENTORY.replace("nodes:\n", "nodes:\n  pve2: {address: [192.168.1.12], uplink: eth0}\n")
    files = {"cluster.fw": "[OPTIONS]\nenable: 1\npolicy_in: DROP\n", "nodes/pve1/host.fw": "[OPTIONS]\nenable: 0\n", "nodes/pve2/host.fw": "[OPTIONS]\nenable: 1\n"}
    policy, _ = imported(tmp_path, files, inventory)
    assert verdict(policy, OUT, "host:pve1", "--tcp", "3000") == "accept"
    assert blocked(policy, OUT, "host:pve2", "--tcp", "3000")
    assert load_policy(policy).doc.hosts["pve1"].firewall is False


def test_a_datacenter_firewall_left_off_is_written_off(tmp_path: Path) -> None:
    policy, items = imported(tmp_path, {"cluster.fw": "[OPTIONS]\npolicy_in: DROP\n", "100.fw": GUEST})
    assert load_policy(policy).doc.settings.firewall is False
    assert verdict(policy, OUT, "10.0.0.10", "--tcp", "3000") == "accept"  # Proxmox filters nothing
    assert any("settings.firewall: false" in i["message"] for i in items)
    on, _ = imported(tmp_path / "on", {"100.fw": GUEST})
    assert load_policy(on).doc.settings.firewall is True and blocked(on, OUT, "10.0.0.10", "--tcp", "3000")


def test_log_levels_are_written_per_guest_and_a_bad_one_is_reported(tmp_path: Path) -> None:
    policy, items = imported(tmp_path, {"100.fw": "[OPTIONS]\nenable: 1\nlog_level_in: warning\nlog_level_out: loud\n\n[RULES]\n", "101.fw": GUEST})
    vms = load_policy(policy).doc.vms
    assert vms["vm100"].log is not None and (vms["vm100"].log.in_, vms["vm100"].log.out) == ("warning", None)
    assert vms["vm101"].log is None
    assert any("log_level_out: 'loud' is not a syslog level" in i["message"] for i in items)


# -------------------------------------------------------------------- Proxmox's built-ins


def test_the_blacklist_is_dropped_before_the_management_set(tmp_path: Path) -> None:
    cluster = "[OPTIONS]\nenable: 1\n\n[IPSET management]\n192.168.9.0/24\n\n[IPSET blacklist]\n192.168.9.66\n"
    policy, _ = imported(tmp_path, {"cluster.fw": cluster, "100.fw": GUEST + "IN ACCEPT -p tcp -dport 80\n"})
    assert blocked(policy, "outside:192.168.9.66", "host:pve1", "--tcp", "22")
    assert verdict(policy, "outside:192.168.9.65", "host:pve1", "--tcp", "22") == "accept"
    assert blocked(policy, "outside:192.168.9.66", "10.0.0.10", "--tcp", "80")  # into guests too
    assert verdict(policy, "outside:192.168.9.65", "10.0.0.10", "--tcp", "80") == "accept"


def test_a_node_rule_dropping_ssh_keeps_its_effect(tmp_path: Path) -> None:
    # pve-firewall's management accept comes after the node's rules: a host rule that
    # drops ssh from part of the local network wins; zonewall's anti-lockout would not
    policy, items = imported(tmp_path, {"host.fw": "[RULES]\nIN DROP -source 192.168.1.66 -p tcp -dport 22\n"})
    assert blocked(policy, "outside:192.168.1.66", "host:pve1", "--tcp", "22")
    assert verdict(policy, "outside:192.168.1.65", "host:pve1", "--tcp", "22") == "accept"  # the local network
    assert any("settings.management" in i["message"] and "left unset" in i["message"] for i in items)


def test_without_corosync_conf_or_local_network_nothing_is_opened(tmp_path: Path) -> None:
    inventory = INVENTORY.replace("local_network: 192.168.1.0/24\n", "")
    policy, items = imported(tmp_path, {"cluster.fw": "[OPTIONS]\nenable: 1\npolicy_out: DROP\n"}, inventory)
    assert blocked(policy, "outside:192.168.1.12", "host:pve1", "--udp", "5405")
    assert blocked(policy, "outside:192.168.1.12", "host:pve1", "--tcp", "8006")
    assert blocked(policy, "host:pve1", "outside:192.168.1.12", "--tcp", "22")
    assert {i["file"] for i in items if i["severity"] == "inexact"} >= {"corosync.conf", "cluster.fw"}


# -------------------------------------------------------------------- broken input


def test_broken_lines_open_nothing(tmp_path: Path) -> None:
    # pve-firewall skips what it cannot parse (a line, an option, a rule with errors)
    broken = (
        "[OPTIONS]\nenable: 1\npolicy_in: PERHAPS\nbogus option line\n\n"
        "[RULES]\n"
        "IN ACCEPT -dport 22\n"                       # a port without -p
        "IN ACCEPT -p tcp -dport 99999\n"             # out of range
        "IN ACCEPT -p tcp -dport 30:20\n"             # backwards
        "IN ACCEPT -source nosuchalias -p tcp -dport 23\n"
        "IN ACCEPT -source +nosuchset -p tcp -dport 24\n"
        "IN NoSuchMacro(ACCEPT)\n"
        "IN ACCEPT -p icmp -icmp-type 3/4\n"
        "IN ACCEPT -p icmp -icmp-type echo-request -dport 8\n"
        "IN ALLOW -p tcp -dport 25\n"
        "SIDEWAYS ACCEPT -p tcp -dport 26\n"
        "IN ACCEPT -p tcp --frobnicate 27\n"
        "GROUP nosuchgroup\n"
        "[NOSUCHSECTION]\nIN ACCEPT -p tcp -dport 28\n"
    )
    policy, items = imported(tmp_path, {"100.fw": broken})
    for port in (22, 20, 23, 24, 25, 26, 27, 28, 80):
        assert blocked(policy, OUT, "10.0.0.10", "--tcp", str(port)), port
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "destination-unreachable")
    assert blocked(policy, OUT, "10.0.0.10", "--icmp", "echo-request")
    assert len([i for i in items if i["file"] == "100.fw"]) >= 14


def test_an_ipv6_only_macro_opens_nothing_over_ipv4(tmp_path: Path) -> None:
    # DHCPv6 exists only in pve-firewall's IPv6 macro table
    inventory = INVENTORY.replace("ips: [10.0.0.10]", 'ips: [10.0.0.10, "fd00::10"]').replace("subnets: [10.0.0.0/24]", 'subnets: [10.0.0.0/24, "fd00::/64"]')
    policy, _ = imported(tmp_path, {"100.fw": GUEST + "IN DHCPv6(ACCEPT)\n"}, inventory)
    assert verdict(policy, "outside:2001:db8::7", "fd00::10", "--udp", "546", "--sport", "547") == "accept"
    assert blocked(policy, OUT, "10.0.0.10", "--udp", "546", "--sport", "547")


# -------------------------------------------------------------------- line endings


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\r", "\x0b", "\x0c", "\x1c"])
def test_a_comment_holding_a_line_separator_stays_a_comment(tmp_path: Path, separator: str) -> None:
    """pve-firewall reads lines at "\\n" only: the whole line is a comment there."""
    fw = GUEST + f"# no direct mail{separator}IN ACCEPT -p tcp -dport 3389\n"
    source = make(tmp_path, {})
    (source / "100.fw").write_bytes(fw.encode("utf-8"))
    out = tmp_path / "out"
    result = run_import(source, out)
    assert result.exit_code == 0, result.output
    assert blocked(out, OUT, "10.0.0.10", "--tcp", "3389")


def test_windows_line_endings_still_read_every_rule(tmp_path: Path) -> None:
    source = make(tmp_path, {})
    (source / "100.fw").write_bytes((GUEST + "IN ACCEPT -p tcp -dport 443\n").replace("\n", "\r\n").encode())
    out = tmp_path / "out"
    assert run_import(source, out).exit_code == 0
    assert verdict(out, OUT, "10.0.0.10", "--tcp", "443") == "accept"
    assert blocked(out, OUT, "10.0.0.10", "--tcp", "444")


def test_a_deeply_nested_inventory_is_an_import_error(tmp_path: Path) -> None:
    source = make(tmp_path, {}, inventory="nodes: " + "[" * 5000 + "]" * 5000 + "\n")
    result = run_import(source, tmp_path / "out")
    assert result.exit_code != 0
    assert "nested too deeply" in result.output
    assert not (tmp_path / "out").exists()
