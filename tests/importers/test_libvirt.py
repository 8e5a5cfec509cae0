"""`zonewall import libvirt` on nwfilter and domain XML in libvirt's format.

fixtures/libvirt holds libvirt's anti-spoofing filters and `tenant-clean`, composed
with filterrefs the way libvirt's clean-traffic is, and a `web-server` filter with
layer-3 rules; the other cases write their XML here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.importers.libvirt.parse import read_directory
from zonewall.importers.report import ImportFailure, Report
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

FIXTURE = Path(__file__).parent / "fixtures" / "libvirt"


def run_import(source: Path, out: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["import", "libvirt", str(source), "-o", str(out), "--host-address", "192.168.71.2", *args])


def import_xml(tmp_path: Path, files: dict[str, str], *args: str) -> tuple[Policy | None, str, int]:
    source = tmp_path / "src"
    source.mkdir(parents=True)
    for name, text in files.items():
        (source / name).write_text(text)
    out = tmp_path / "out"
    result = run_import(source, out, *args)
    report = (out / "import-report.txt").read_text() if (out / "import-report.txt").exists() else result.output
    return (load_policy(out) if result.exit_code == 0 else None), report, result.exit_code


def domain(filterref: str, params: str = "", ip: str = "10.9.0.10") -> str:
    return f"""<domain type='kvm'><name>g1</name><devices>
  <interface type='bridge'><mac address='52:54:00:09:00:10'/><source bridge='br0'/>
    <filterref filter='{filterref}'><parameter name='IP' value='{ip}'/>{params}</filterref>
  </interface></devices></domain>"""


def filter_rules(policy: Policy, name: str) -> list[dict[str, Any]]:
    return [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.filters[name].rules]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Policy, str]:
    out = tmp_path_factory.mktemp("lv") / "out"
    result = run_import(FIXTURE, out)
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["check", str(out)]).exit_code == 0
    return load_policy(out), (out / "libvirt.yaml").read_text()


def test_clean_traffic_style_composition_keeps_libvirts_order(imported: tuple[Policy, str]) -> None:
    policy, text = imported
    # chains by priority: mac -800, ipv4-ip -710, ipv4 -700, root rule -650, arp-mac -520, arp-ip -510, root -500.. 1000
    assert policy.doc.filters["tenant-clean"].include == [
        "no-mac-spoofing", "no-ip-spoofing", "lv-allow-incoming-ipv4", "tenant-clean-root4",
        "lv-no-arp-mac-spoofing", "lv-no-arp-ip-spoofing", "tenant-clean-root7",
    ]
    assert filter_rules(policy, "lv-no-arp-ip-spoofing") == [
        {"direction": "out", "action": "return", "priority": 400, "arp": {"ip_src": "$IP"}, "ethertype": 0x0806},
        {"direction": "out", "action": "drop", "priority": 1000, "ethertype": 0x0806},
    ]
    assert filter_rules(policy, "tenant-clean-root7") == [
        {"action": "accept", "priority": -500, "ethertype": 0x0806},  # direction inout (the default)
        {"action": "drop", "priority": 1000},
    ]
    # the chain's protocol becomes the rules' ethertype; the whole ipv4 chain accepts incoming
    assert filter_rules(policy, "lv-allow-incoming-ipv4") == [{"direction": "in", "action": "accept", "priority": 500, "ethertype": 0x0800}]
    assert "# from nwfilter/no-arp-ip-spoofing.xml:3 (filter no-arp-ip-spoofing)" in text
    assert policy.nic_filters("tenant1", 0)[-1] == "tenant-clean"
    assert policy.doc.vms["tenant1"].nics[0].ips == ["10.71.0.20"]


def test_nested_filterref_and_layer3_rules(imported: tuple[Policy, str]) -> None:
    policy, _ = imported
    assert policy.doc.filters["web-server"].include == policy.doc.filters["tenant-clean"].include
    web1 = policy.doc.vms["web1"]
    assert web1.nics[0].tap == "vnet10" and web1.nics[0].ips == ["10.71.0.10"]  # IP parameter -> the NIC's address
    assert (web1.default.in_, web1.default.out) == ("accept", "accept")
    got = [r.model_dump(by_alias=True, exclude_defaults=True) for r in web1.rules]
    assert got == [
        {"direction": "in", "action": "accept", "tcp": ["80"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "tcp": ["443"], "family": "ipv4", "comment": "tls"},
        {"direction": "in", "action": "accept", "from": ["10.71.0.5"], "udp": ["161-162"], "family": "ipv4"},  # $ADMIN
        {"direction": "in", "action": "accept", "icmp": ["8"], "family": "ipv4"},  # inout -> both directions
        {"direction": "out", "action": "accept", "icmp": ["8"], "family": "ipv4"},
        {"direction": "out", "action": "drop", "tcp": ["25"], "family": "ipv4"},
        {"direction": "in", "action": "drop", "family": "ipv4"},  # <all/>
    ]


def test_anti_spoofing_with_ip_in_the_header_maps_to_the_builtin(tmp_path: Path) -> None:
    seed = """<filter name='no-ip-spoofing-seed' chain='ipv4'>
  <rule action='drop' direction='out' priority='500'>
    <ip match='no' srcipaddr='$IP'/>
  </rule>
</filter>"""
    policy, report, code = import_xml(tmp_path, {"f.xml": seed, "g1.xml": domain("no-ip-spoofing-seed")})
    assert code == 0 and policy is not None
    assert policy.doc.filters["no-ip-spoofing-seed"].include == ["no-ip-spoofing"]
    assert "f.xml:1: inexact: chain ipv4 (filter no-ip-spoofing-seed) matches $IP against the IP header" in report
    _, _, strict = import_xml(tmp_path / "strict", {"f.xml": seed, "g1.xml": domain("no-ip-spoofing-seed")}, "--strict")
    assert strict == 1


def test_negated_match_last_in_chain_is_exact(tmp_path: Path) -> None:
    xml = """<filter name='own-mac' chain='mac-own'>
  <rule action='drop' direction='out'><mac match='no' srcmacaddr='$MAC'/></rule>
</filter>"""
    arp = """<filter name='arp-guard' chain='arp'>
  <rule action='drop' direction='out' priority='100'><arp match='no' arpsrcipaddr='$IP' arpsrcmacaddr='$MAC'/></rule>
</filter>"""
    early = """<filter name='early' chain='arp-x'>
  <rule action='drop' direction='out' priority='100'><arp match='no' opcode='Request'/></rule>
  <rule action='accept' direction='out' priority='200'><arp/></rule>
</filter>"""
    top = "<filter name='top' chain='root'><filterref filter='own-mac'/><filterref filter='arp-guard'/><filterref filter='early'/></filter>"
    policy, report, code = import_xml(tmp_path, {"a.xml": xml, "b.xml": arp, "c.xml": early, "t.xml": top, "g1.xml": domain("top")})
    assert code == 0 and policy is not None, report
    assert policy.doc.filters["top"].include == ["no-mac-spoofing", "arp-guard", "early"]  # mac chain recognised
    assert filter_rules(policy, "arp-guard") == [
        {"direction": "out", "action": "return", "priority": 100, "arp": {"mac_src": "$MAC"}, "ethertype": 0x0806},
        {"direction": "out", "action": "return", "priority": 100, "arp": {"ip_src": "$IP"}, "ethertype": 0x0806},
        {"direction": "out", "action": "drop", "priority": 100, "ethertype": 0x0806},
    ]
    assert filter_rules(policy, "early") == [{"direction": "out", "action": "accept", "priority": 200, "ethertype": 0x0806}]
    assert "c.xml:2: skipped: rule not translated: match='no' is exact in zonewall only for the last rule of its chain" in report


PROTOCOLS = """<filter name='protocols' chain='root'>
  <rule action='accept' direction='out' priority='10'><mac protocolid='0x88cc' dstmacaddr='01:80:c2:00:00:0e'/></rule>
  <rule action='drop' direction='out' priority='11'><arp opcode='Reply' arpdstipaddr='10.9.0.1'/></rule>
  <rule action='accept' direction='out' priority='12'><rarp srcmacaddr='$MAC' dstmacaddr='ff:ff:ff:ff:ff:ff'/></rule>
  <rule action='drop' direction='in' priority='13'><ip protocol='tcp' srcipaddr='10.0.0.0' srcipmask='8' dstportstart='23'/></rule>
  <rule action='drop' direction='in' priority='14'><ipv6 srcipaddr='fd00::' srcipmask='16' protocol='udp' srcportstart='53'/></rule>
  <rule action='drop' direction='out' priority='15'><vlan vlanid='10'/></rule>
  <rule action='drop' direction='out' priority='16'><stp/></rule>
  <rule action='drop' direction='out' priority='17'><ip dscp='46'/></rule>
  <rule action='continue' direction='out' priority='18'><mac/></rule>
  <rule action='accept' direction='in' priority='500'><tcp srcipfrom='10.9.0.1' srcipto='10.9.0.9' dstportstart='22'/></rule>
  <rule action='accept' direction='in' priority='501'><udp dstportstart='53' srcportstart='1024' srcportend='65535'/></rule>
  <rule action='accept' direction='in' priority='502'><sctp dstportstart='3868'/></rule>
  <rule action='accept' direction='in' priority='503'><udplite/></rule>
  <rule action='accept' direction='in' priority='504'><icmp type='0'/></rule>
  <rule action='accept' direction='in' priority='505'><igmp/></rule>
  <rule action='accept' direction='in' priority='506'><esp/></rule>
  <rule action='accept' direction='in' priority='507'><ah/></rule>
  <rule action='accept' direction='in' priority='508'><tcp-ipv6 dstportstart='443'/></rule>
  <rule action='accept' direction='in' priority='509'><udp-ipv6 dstportstart='547'/></rule>
  <rule action='accept' direction='in' priority='510'><icmp-ipv6 type='128'/></rule>
  <rule action='accept' direction='in' priority='511'><sctp-ipv6/></rule>
  <rule action='accept' direction='in' priority='512'><esp-ipv6/></rule>
  <rule action='accept' direction='in' priority='513'><ah-ipv6/></rule>
  <rule action='accept' direction='in' priority='514'><udplite-ipv6/></rule>
  <rule action='accept' direction='in' priority='515'><igmp-ipv6/></rule>
  <rule action='return' direction='in' priority='516'><all-ipv6 srcipaddr='$IP' match='no'/></rule>
  <rule action='accept' direction='in' priority='517' statematch='false'><tcp dstportstart='80'/></rule>
  <rule action='accept' direction='in' priority='518'><tcp dstportstart='81' state='ESTABLISHED,RELATED'/></rule>
  <rule action='drop' direction='in' priority='519'><tcp dstportstart='82' state='INVALID'/></rule>
  <rule action='drop' direction='in' priority='520'><icmp type='3' code='4'/></rule>
  <rule action='drop' direction='in' priority='521'><tcp dstportstart='84' flags='SYN/SYN'/></rule>
  <rule action='reject' direction='out' priority='522'><tcp srcmacaddr='$MAC' dstportstart='85'/></rule>
  <rule action='drop' direction='in' priority='523'><udp srcipaddr='$UNDEFINED'/></rule>
</filter>"""


def test_every_protocol_element(tmp_path: Path) -> None:
    policy, report, code = import_xml(tmp_path, {"p.xml": PROTOCOLS, "g1.xml": domain("protocols")})
    assert code == 0 and policy is not None, report
    l2 = filter_rules(policy, "protocols-root1")
    assert l2 == [
        {"direction": "out", "action": "accept", "priority": 10, "mac": {"dst": "01:80:c2:00:00:0e"}, "ethertype": 0x88CC},
        {"direction": "out", "action": "drop", "priority": 11, "arp": {"op": "reply", "ip_dst": "10.9.0.1"}, "ethertype": 0x0806},
        {"direction": "out", "action": "accept", "priority": 12, "mac": {"src": "$MAC", "dst": "ff:ff:ff:ff:ff:ff"}, "ethertype": 0x8035},
        {"direction": "in", "action": "drop", "priority": 13, "ethertype": 0x0800, "from": ["10.0.0.0/8"], "tcp": ["23"]},
        {"direction": "in", "action": "drop", "priority": 14, "ethertype": 0x86DD, "from": ["fd00::/16"], "udp": ["1-65535"], "sport": ["53"]},
    ]
    got = [r.model_dump(by_alias=True, exclude_defaults=True) for r in policy.doc.vms["g1"].rules]
    assert got == [
        {"direction": "in", "action": "accept", "from": ["10.9.0.1-10.9.0.9"], "tcp": ["22"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "udp": ["53"], "sport": ["1024-65535"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "sctp": ["3868"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "proto": ["udplite"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "icmp": ["0"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "proto": ["igmp"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "proto": ["esp"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "proto": ["ah"], "family": "ipv4"},
        {"direction": "in", "action": "accept", "tcp": ["443"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "udp": ["547"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "icmpv6": ["128"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "proto": ["sctp"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "proto": ["esp"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "proto": ["ah"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "proto": ["udplite"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "proto": ["igmp"], "family": "ipv6"},
        {"direction": "in", "action": "accept", "from": ["!10.9.0.10"], "family": "ipv6"},  # return -> accept; $IP negated
        {"direction": "in", "action": "accept", "tcp": ["80"], "family": "ipv4"},  # statematch='false' (reported)
    ]
    for expected in (
        "p.xml:7: skipped: rule not translated: vlan ids",
        "p.xml:8: skipped: rule not translated: <stp>",
        "p.xml:9: skipped: rule not translated: <ip> attribute(s) dscp",
        "p.xml:10: note: action continue has no effect",
        "p.xml:28: inexact: statematch='false'",
        "p.xml:29: note: state=ESTABLISHED,RELATED",
        "p.xml:30: skipped: rule not translated: state=INVALID",
        "p.xml:31: skipped: rule not translated: ICMP codes",
        "p.xml:32: skipped: rule not translated: <tcp> attribute(s) flags",
        "p.xml:33: skipped: rule not translated: <tcp> attribute(s) srcmacaddr",
        "p.xml:34: skipped: rule not translated: variable $UNDEFINED has no value",
    ):
        assert expected in report, expected


def test_networks_builtins_and_broken_references(tmp_path: Path) -> None:
    network = """<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'/></network>"""
    dom = """<domain><name>Guest_A</name><devices>
  <interface type='network'><mac address='52:54:00:09:00:20'/><source network='default'/>
    <filterref filter='clean-traffic'><parameter name='IP' value='192.168.122.20'/></filterref></interface>
  <interface type='network'><mac address='52:54:00:09:00:21'/><source network='default'/>
    <filterref filter='loop-a'><parameter name='IP' value='192.168.122.21'/></filterref></interface>
</devices></domain>"""
    loops = "<filter name='loop-a'><filterref filter='loop-b'/></filter>"
    loopb = "<filter name='loop-b'><filterref filter='loop-a'/><filterref filter='nowhere'/></filter>"
    policy, report, code = import_xml(tmp_path, {"n.xml": network, "d.xml": dom, "la.xml": loops, "lb.xml": loopb})
    assert code == 0 and policy is not None, report
    net = policy.doc.networks["default"]
    assert (net.bridge, net.mode, net.subnets, net.gateway) == ("virbr0", "nat", ["192.168.122.0/24"], ["192.168.122.1"])
    vm = policy.doc.vms["guest_a"]
    assert vm.nics[0].filters == ["clean-traffic"] and vm.nics[1].filters == []
    assert "d.xml:3: inexact: filter clean-traffic is not in the XML given: zonewall's built-in of that name is used" in report
    assert "filter reference cycle loop-a -> loop-b -> loop-a" in report
    assert "lb.xml:1: skipped: filter nowhere is neither in the XML given" in report


def test_bad_xml_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "bad.xml").write_text("<filter name='x'>\n  <rule action='drop' direction='out'>\n</filter>\n")
    with pytest.raises(ImportFailure, match=r"bad.xml:3: not well-formed XML"):
        read_directory(source, Report())
    (source / "bad.xml").write_text("<filter name='x'><rule action='explode' direction='out'/></filter>")
    result = run_import(source, tmp_path / "out")
    assert result.exit_code == 2 and "bad.xml:1: rule action 'explode'" in result.output and not (tmp_path / "out").exists()


def test_routed_modes_keep_libvirts_dhcp_and_dns(tmp_path: Path) -> None:
    """An enforced nat/routed/isolated mode must keep what libvirt's dnsmasq offers."""
    nets = {
        "n1.xml": """<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip>
  <ip family='ipv6' address='fd00:7a::1' prefix='64'><dhcp><range start='fd00:7a::10' end='fd00:7a::ff'/></dhcp></ip></network>""",
        "n2.xml": """<network><name>lab</name><bridge name='virbr1'/><dns enable='no'/>
  <ip address='10.77.0.1' prefix='24'><dhcp><range start='10.77.0.2' end='10.77.0.9'/></dhcp></ip></network>""",
        "n3.xml": """<network><name>routed</name><forward mode='route'/><bridge name='virbr2'/>
  <ip address='10.78.0.1' prefix='24'/></network>""",
        "n4.xml": """<network><name>host-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>""",
    }
    ifaces = "".join(
        f"<interface type='network'><mac address='52:54:00:09:01:0{i}'/><source network='{n}'/></interface>"
        for i, n in enumerate(["default", "lab", "routed", "host-bridge"])
    )
    dom = f"<domain><name>g</name><devices>{ifaces}</devices></domain>"
    policy, report, code = import_xml(tmp_path, {**nets, "d.xml": dom})
    assert code == 0 and policy is not None, report
    networks = policy.doc.networks
    assert (networks["default"].mode, networks["default"].host_services) == ("nat", ["dhcp", "dhcpv6", "dns"])
    assert (networks["lab"].mode, networks["lab"].host_services) == ("isolated", ["dhcp"])
    assert (networks["routed"].mode, networks["routed"].host_services) == ("routed", ["dns"])
    assert (networks["host-bridge"].mode, networks["host-bridge"].host_services) == ("bridged", [])
    assert "not enforced" not in report
    assert "network mode nat: enforced by zonewall; the node offers its guests only host_services (dhcp, dhcpv6, dns" in report


def learning_domain(params: str) -> str:
    return f"""<domain type='kvm'><name>g1</name><devices>
  <interface type='bridge'><mac address='52:54:00:09:00:10'/><source bridge='br0'/>
    <filterref filter='clean-traffic'>{params}</filterref>
  </interface></devices></domain>"""


@pytest.mark.parametrize(("params", "learning", "servers"), [
    ("<parameter name='CTRL_IP_LEARNING' value='dhcp'/><parameter name='DHCPSERVER' value='10.9.0.1'/><parameter name='DHCPSERVER' value='10.9.0.2'/>", "dhcp", ["10.9.0.1", "10.9.0.2"]),
    ("<parameter name='CTRL_IP_LEARNING' value='none'/>", "none", []),
    ("<parameter name='CTRL_IP_LEARNING' value='any'/>", "any", []),
    ("", "any", []),
    # libvirt trusts any DHCP server without DHCPSERVER; zonewall would need the list: closed
    ("<parameter name='CTRL_IP_LEARNING' value='dhcp'/>", "none", []),
    ("<parameter name='CTRL_IP_LEARNING' value='sometimes'/>", "none", []),
])
def test_learning_modes_map_to_zonewalls(tmp_path: Path, params: str, learning: str, servers: list[str]) -> None:
    policy, report, code = import_xml(tmp_path, {"g1.xml": learning_domain(params)})
    assert code == 0 and policy is not None, report
    nic = policy.doc.vms["g1"].nics[0]
    assert nic.learning.ipv4 == learning and nic.ips == []
    assert policy.doc.networks[nic.network].dhcp_servers == servers
    if "dhcp'/>" in params and not servers:
        assert "CTRL_IP_LEARNING dhcp without DHCPSERVER" in report
