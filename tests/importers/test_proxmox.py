"""`zonewall import proxmox` on hand-written Proxmox VE configurations.

fixtures/proxmox-all exercises every construct of the format (and a few broken
lines); fixtures/proxmox-lab is the clean configuration the kernel test
brings up. Each test reads the translated policy back with the real loader.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.importers.emit import render
from zonewall.importers.proxmox.macros import MACROS
from zonewall.importers.proxmox.parse import parse_rule
from zonewall.importers.proxmox.source import read_source
from zonewall.importers.proxmox.translate import translate
from zonewall.importers.report import ImportFailure, Report, Where
from zonewall.policy.builtins import BUILTIN_SERVICES
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

FIXTURES = Path(__file__).parent / "fixtures"
ALL = FIXTURES / "proxmox-all"
EXAMPLE = FIXTURES / "proxmox-lab"


def run_import(source: Path, out: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["import", "proxmox", str(source), "-o", str(out), *args])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Policy, Path, str]:
    out = tmp_path_factory.mktemp("pve") / "out"
    result = run_import(ALL, out)
    assert result.exit_code == 0, result.output
    return load_policy(out), out, (out / "import-report.txt").read_text()


def rules(policy: Policy, vm: str) -> list[dict[str, Any]]:
    return [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.vms[vm].rules]


# ---------------------------------------------------------------- the rule grammar


def test_parse_rule_with_every_option() -> None:
    rule = parse_rule("|IN SSH(ACCEPT) -i net0 -source +dc/admins -dest 10.0.0.1 -log info # admins", Where("100.fw", 7))
    assert (rule.enabled, rule.type, rule.macro, rule.action, rule.iface) == (False, "in", "SSH", "ACCEPT", "net0")
    assert (rule.source, rule.dest, rule.log, rule.comment) == ("+dc/admins", "10.0.0.1", "info", "admins")
    rule = parse_rule("OUT DROP -p tcp --dport 80,443,8000:8100 -sport 1024:65535", Where("x", 1))
    assert (rule.proto, rule.dport, rule.sport, rule.enabled) == ("tcp", "80,443,8000:8100", "1024:65535", True)
    rule = parse_rule("IN ACCEPT -p icmp -icmp-type echo-request", Where("x", 1))
    assert rule.icmp_type == "echo-request"
    assert parse_rule("GROUP web -i net1", Where("x", 1)).iface == "net1"


@pytest.mark.parametrize("line, message", [
    ("IN", "cannot parse rule"),
    ("SIDEWAYS ACCEPT", "unknown rule type"),
    ("IN ALLOW -p tcp", "unknown action"),
    ("IN ACCEPT -p tcp -frobnicate 1", "cannot parse rule parameters"),
])
def test_parse_rule_errors(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rule(line, Where("x", 1))


# ---------------------------------------------------------------- translation


def test_round_trip_passes_check_and_is_deterministic(tmp_path: Path, imported: tuple[Policy, Path, str]) -> None:
    _, out, _ = imported
    again = tmp_path / "again"
    assert run_import(ALL, again).exit_code == 0
    for path in sorted(out.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    result = CliRunner().invoke(app, ["check", str(out)])
    assert result.exit_code == 0, result.output


def test_every_translated_rule_names_its_source_line(imported: tuple[Policy, Path, str]) -> None:
    _, out, _ = imported
    text = (out / "vm-100.yaml").read_text()
    assert "tcp: [22, 80, 8000-8100]}  # from 100.fw:29" in text
    assert "- {security_group: base}  # from 100.fw:26" in text
    assert "# from cluster.fw:48 (group web, via 100.fw:25)" in text  # copied: GROUP web -i net0
    cluster = (out / "cluster.yaml").read_text()
    assert "# from cluster.fw:41, macro SMB part 3" in cluster  # the group's rule, written once
    groups = cluster[cluster.index("\nsecurity_groups:"):].split("\n\n")[0]
    assert "- {direction: in, action: accept, icmp: echo-request" in groups
    for line in text.splitlines() + groups.splitlines():
        if line.lstrip().startswith(("- {direction", "- {security_group")):
            assert "# from " in line or "# dhcp: 1" in line or "# Proxmox built-in" in line, line


def test_datacenter_rules_protect_the_nodes_after_host_fw(imported: tuple[Policy, Path, str]) -> None:
    policy, _, _ = imported
    assert policy.doc.host_rules == []  # a host.fw exists: each node gets its own list
    pve1 = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.hosts["pve1"].rules]
    pve2 = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.hosts["pve2"].rules]
    assert pve1[0] == {"direction": "in", "action": "accept", "tcp": ["10000-10010"], "sport": ["1024-65535"]}
    assert pve1[2]["tcp"] == ["443"]  # a port by service name
    assert pve1[3:] == pve2  # then the datacenter rules, the same on every node
    assert pve2[0] == {"direction": "in", "action": "accept", "from": ["group:management"], "service": ["ssh"], "log": "info", "comment": "admins"}
    assert pve2[2]["from"] == ["10.10.0.1-10.10.0.20", "group:lan"] and pve2[2]["udp"] == ["5405-5412"]
    # then Proxmox's built-in: the management set reaches the management ports, after every rule
    assert pve2[-1] == {"direction": "in", "action": "accept", "from": ["group:management"], "service": ["pve-management"]}
    assert policy.doc.services["pve-management"].tcp == ["8006", "5900-5999", "3128", "22", "60000-60050"]
    settings = policy.doc.settings
    assert (settings.host_default.in_, settings.host_default.out) == ("reject", "accept")
    assert settings.management == ["group:management"]
    assert (settings.log.rate, settings.log.burst, settings.log.denied) == ("2/minute", 7, False)
    # log_level_in: info in nodes/pve1/host.fw: that node's default logs at info; nolog (100.fw) writes nothing
    assert policy.doc.hosts["pve1"].log is not None and policy.doc.hosts["pve1"].log.in_ == "info" and policy.doc.hosts["pve1"].log.out is None
    assert policy.doc.hosts["pve2"].log is None and policy.doc.vms["web-server"].log is None
    assert settings.conntrack.invalid == "accept" and settings.conntrack.timeouts == {"tcp_established": 7200}


def test_ipsets_aliases_and_nomatch(imported: tuple[Policy, Path, str]) -> None:
    policy, _, _ = imported
    groups = {name: g.members for name, g in policy.doc.groups.items()}
    assert groups["partners"] == ["203.0.113.0/24", "2001:db8:1::/48", "!203.0.113.64/26"]
    assert groups["management"] == ["192.168.10.5"]  # an alias inside an IP set
    assert groups["empty"] == ["!any"]
    assert groups["web-server-friends"] == ["10.10.0.50", "10.10.0.60"]  # guest/db alias resolved
    blocklist = policy.address_set(["group:blocklist"])
    import ipaddress

    def inside(ip: str) -> bool:
        value = int(ipaddress.ip_address(ip))
        return any(low <= value <= high for low, high in blocklist.v4)

    # ipset longest-prefix semantics: 10/8, minus !10.10/16, plus 10.10.5/24 inside it
    assert inside("10.1.2.3") and not inside("10.10.1.1") and inside("10.10.5.9") and not inside("11.0.0.1")


def test_guest_rules_groups_macros_and_interfaces(imported: tuple[Policy, Path, str]) -> None:
    policy, _, _ = imported
    vm = policy.doc.vms["web-server"]  # inventory name Web.Server
    assert (vm.host, vm.zone, vm.default.in_, vm.default.out) == ("pve1", "vmbr0", "drop", "reject")
    got = rules(policy, "web-server")
    assert got[:2] == [{"direction": "out", "action": "accept", "udp": ["67"], "sport": ["68"]},
                       {"direction": "in", "action": "accept", "udp": ["68"], "sport": ["67"]}]  # dhcp: 1
    web = got[4]
    assert web["service"] == ["pve-web"] and web["nic"] == ["net0"] and "to" not in web  # GROUP web -i net0: scoped to the NIC
    assert policy.doc.services["pve-web"].tcp == ["80", "443"]
    assert got[5]["enabled"] is False  # group rule on net1 used on net0: never matches
    assert got[6]["proto"] == ["gre"]  # -p 47
    assert got[7] == {"security_group": "base"}  # GROUP base: referenced, its rules written once
    base = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.security_groups["base"].rules]
    assert base[0] == {"direction": "in", "action": "accept", "icmp": ["echo-request"], "family": "ipv4"}
    assert base[1] == {"direction": "in", "action": "accept", "icmpv6": ["nd-neighbor-solicit"]}
    smb = [r for r in base if r.get("from") == ["group:partners"]]
    assert [r.get("sport") for r in smb] == [None, None, ["137"], None]  # SMB's source-port entry
    assert {"direction": "in", "action": "accept", "tcp": ["9999"], "enabled": False} in base  # |IN in a group
    assert {"direction": "out", "action": "reject", "to": ["group:blocklist"]} in base  # +dc/blocklist
    assert not [r for r in got if r.get("icmp") == ["echo-request"]]  # not copied as well
    assert {"direction": "in", "action": "accept", "from": ["group:web-server-friends"], "to": ["10.10.0.10"], "tcp": ["5432"]} in got
    assert {"direction": "in", "action": "accept", "nic": ["net1"], "udp": ["1-65535"], "sport": ["53"]} in got  # -i net1
    assert {"direction": "out", "action": "accept", "to": ["group:web-server-db"], "sctp": ["3868"]} in got
    assert not [r for r in got if r.get("service") == ["http"] or r.get("tcp") == ["8080"]]  # HTTP(ACCEPT) -dport 8080: Proxmox refuses it
    assert got[-1] == {"direction": "out", "action": "drop", "proto": ["udp"]}
    nic0, nic1 = vm.nics
    assert nic0.tap == "tap100i0" and nic0.mac == "bc:24:11:10:00:10"
    assert nic0.filters == ["no-mac-spoofing", "no-arp-mac-spoofing", "pve-ipfilter-100-net0"]  # radv: 1
    assert nic1.filters == ["no-mac-spoofing", "no-arp-mac-spoofing", "pve-ipfilter-100-net1"]  # ipfilter: 1, no set: an empty one
    net0 = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.filters["pve-ipfilter-100-net0"].rules]
    assert net0 == [
        {"direction": "out", "action": "return", "from": ["10.10.0.10"]},
        {"direction": "out", "action": "drop", "ethertype": 0x0800},
        {"direction": "out", "action": "return", "from": ["fd10::10", "fe80::be24:11ff:fe10:10"]},  # plus the EUI-64 link-local
        {"direction": "out", "action": "drop", "ethertype": 0x86DD},
        {"direction": "out", "action": "return", "arp": {"ip_src": "10.10.0.10"}},
        {"direction": "out", "action": "drop", "ethertype": 0x0806},
    ]
    net1 = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.filters["pve-ipfilter-100-net1"].rules]
    assert net1[0] == {"direction": "out", "action": "drop", "ethertype": 0x0800}  # every IPv4 source
    assert nic1.network == "vmbr9" and policy.doc.networks["vmbr9"].subnets == ["10.90.0.0/24"]


def test_disabled_firewalls_are_switched_off_with_their_rules_kept(imported: tuple[Policy, Path, str]) -> None:
    """Issue 18: a guest without `enable: 1` and a NIC with firewall=0 become the
    policy's switches (Proxmox filters nothing there); their rules stay as written,
    so turning the switch on gives what Proxmox would enforce."""
    from zonewall.analysis.engine import Analyzer
    from zonewall.analysis.trace import FlowSpec, trace

    policy, _, _ = imported
    vm101 = policy.doc.vms["vm101"]  # no `enable: 1`: Proxmox applies nothing
    assert vm101.firewall is False and (vm101.default.in_, vm101.default.out) == ("accept", "accept")
    assert [(r.action, r.enabled) for r in vm101.rules] == [("drop", True)]  # IN DROP -p tcp -dport 23, kept
    vm102 = policy.doc.vms["vm102"]  # enable: 1 but its only NIC has firewall=0
    assert vm102.zone == "quarantine" and vm102.firewall is False and [n.firewall for n in vm102.nics] == [False]
    assert vm102.nics[0].filters == []
    assert policy.doc.vms["web-server"].firewall is True and [n.name for n in policy.doc.vms["web-server"].nics] == ["net0", "net1"]
    analyzer = Analyzer(policy)
    assert trace(analyzer, "outside:198.51.100.7", "vm:vm101", FlowSpec("tcp", 23)).verdict == "accept"  # switched off
    assert trace(analyzer, "outside:198.51.100.7", "vm:web-server", FlowSpec("tcp", 23)).verdict != "accept"  # filtered beside it


def test_interface_icmp_codes_and_log_levels_are_written_as_such(imported: tuple[Policy, Path, str]) -> None:
    """Issue 18: `-i vmbr0` on a host rule scopes it to that interface, an ICMP code
    is matched as the code (not widened to its type), `-log info` keeps its level."""
    policy, _, report = imported
    pve2 = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.hosts["pve2"].rules]
    assert {"direction": "in", "action": "accept", "tcp": ["8006"], "interface": ["vmbr0"]} in pve2
    assert {"security_group": "base"} in pve2  # the datacenter's GROUP base
    base = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.security_groups["base"].rules]
    assert any(r.get("icmp") == ["port-unreachable"] and r["action"] == "drop" and r.get("enabled", True) for r in base)
    assert pve2[0]["log"] == "info"
    assert "cluster.fw:31" not in report and "cluster.fw:40" not in report  # nothing inexact about them any more


def test_report_lists_what_was_not_translated_with_locations(imported: tuple[Policy, Path, str]) -> None:
    _, _, report = imported
    for expected in (
        "100.fw:31: skipped: rule not translated: '3/4' is not an ICMP type Proxmox knows; Proxmox ignores this rule too",
        "100.fw:32: skipped: rule not translated: ports on protocol udplite: zonewall matches ports of tcp, udp and sctp only (left out: closed)",
        "100.fw:33: skipped: rule not translated: unknown macro 'Unknownmacro'",
        "100.fw:34: skipped: rule not translated: no IP set named 'nosuchset'",
        "100.fw:36: skipped: rule not translated: macro HTTP already sets -dport 80 (the rule gives 8080); Proxmox ignores this rule too",
        "100.fw:38: skipped: unknown action 'bogus'",
        "100.fw:39: skipped: security group 'nosuchgroup'",
        "100.fw:8: inexact: ndp: 0",
        "100.fw:11: skipped: option ips: 1",
        "cluster.fw:34: note: FORWARD rule: Proxmox's iptables firewall ignores it",
        "cluster.fw:7: skipped: option policy_forward",
        "nodes/pve1/host.fw: inexact: node pve1: tcpflags/protection_synflood also apply to the node's guests",
        "nodes/pve1/host.fw:7: skipped: option nf_conntrack_max",
        "999.fw: skipped: guest 999 is not in the inventory",
        "notes.fw: skipped: not a Proxmox firewall file",
    ):
        assert expected in report, expected


def test_host_options_become_the_nodes_protection(imported: tuple[Policy, Path, str], tmp_path: Path) -> None:
    """host.fw's nosmurfs (on unless 0), tcpflags and protection_synflood are the
    node's `protection`, for its guests too (Proxmox's smurfs check runs in every
    guest's input chain)."""
    policy, _, report = imported
    protection = policy.doc.hosts["pve1"].protection
    assert protection is not None and (protection.nosmurfs, protection.tcpflags, protection.synflood, protection.guests) == (True, True, None, True)
    assert "option nosmurfs" not in report and "option tcpflags" not in report
    source = tmp_path / "pve"
    shutil.copytree(ALL, source)
    host_fw = source / "nodes" / "pve1" / "host.fw"
    host_fw.write_text(host_fw.read_text().replace("nosmurfs: 1\ntcpflags: 1\n", "nosmurfs: 0\nprotection_synflood: 1\nprotection_synflood_rate: 50\n"))
    assert run_import(source, tmp_path / "out").exit_code == 0
    protection = load_policy(tmp_path / "out").doc.hosts["pve1"].protection
    assert protection is not None and (protection.nosmurfs, protection.tcpflags, protection.guests) == (False, False, True)
    assert protection.synflood is not None and (protection.synflood.rate, protection.synflood.burst) == (50, 1000)


def test_strict_writes_nothing_and_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_import(ALL, out, "--strict")
    assert result.exit_code == 1
    assert "nothing was written" in result.output and not out.exists()
    clean = run_import(EXAMPLE, tmp_path / "clean", "--strict")  # the example translates exactly
    assert clean.exit_code == 0, clean.output


def test_output_with_policy_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.yaml").write_text("version: 1\n")
    assert run_import(EXAMPLE, out).exit_code == 2
    assert run_import(EXAMPLE, out, "--force").exit_code != 2


def test_bad_inventory_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "pve"
    source.mkdir()
    (source / "inventory.yaml").write_text("nodes:\n  pve1: {address: 10.0.0.1}\nguests:\n  100:\n    node: pve9\n    nics:\n      net0: {bridge: vmbr0, mac: nope}\n")
    result = run_import(source, tmp_path / "out")
    assert result.exit_code == 2
    assert "inventory.yaml:5: guest 100: node pve9 is not under nodes" in result.output
    assert "inventory.yaml:7: guest 100 net0: 'nope' is not a MAC address" in result.output
    (source / "inventory.yaml").unlink()
    with pytest.raises(ImportFailure, match="no inventory"):
        read_source(source, None, Report())


def test_macro_table_services() -> None:
    """Macros equal to a built-in service use it; the rest become pve-* services."""
    report = Report()
    source = read_source(EXAMPLE, None, report)
    documents = translate(source, report)
    text = "".join(render(d) for d in documents.values())
    assert "service: http}" in text and "service: postgres}" in text and "service: ping}" in text
    assert set(MACROS) >= {"SSH", "HTTP", "HTTPS", "DNS", "Ping", "SMB", "Ceph", "PostgreSQL", "Web", "Trcrt"}
    assert BUILTIN_SERVICES["ping"] == {"icmp": ["echo-request"]}  # Proxmox's Ping is echo-request in both families


def test_unparsable_alias_and_ipset_lines_are_reported_not_crashed(tmp_path: Path) -> None:
    # these two messages once named an undefined variable: a bad line raised NameError
    from zonewall.importers.proxmox.parse import parse_file

    fw = tmp_path / "cluster.fw"
    fw.write_text("[ALIASES]\nlonely # no cidr\ngood 10.0.0.1\n\n[IPSET web]\nnot one entry\n10.0.0.2\n")
    report = Report()
    parsed = parse_file(fw, "cluster.fw", "cluster", report)
    messages = [item.message for item in report.items]
    assert "cannot parse alias 'lonely # no cidr' (expected NAME CIDR)" in messages
    assert "cannot parse IP set entry 'not one entry'" in messages
    assert list(parsed.aliases) == ["good"]
