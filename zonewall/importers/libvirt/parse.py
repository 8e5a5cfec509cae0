"""Read libvirt XML (nwfilter `<filter>`, domain `<domain>`, network `<network>`) with line numbers.

Parsed with xml.parsers.expat so every element keeps its line; a file that is not
well-formed XML stops the import (file:line: what expat says).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from ..report import ImportFailure, Report, Where

# nwfilter protocol elements: layer 2 (ebtables in libvirt) and layer 3/4 (iptables)
L2_ELEMENTS = ("mac", "vlan", "stp", "arp", "rarp", "ip", "ipv6")
L3_BASE = ("tcp", "udp", "udplite", "sctp", "icmp", "igmp", "esp", "ah", "all")
L3_ELEMENTS = L3_BASE + tuple(f"{p}-ipv6" for p in L3_BASE)
# libvirt's default chain priorities (a chain named e.g. ipv4-ip takes ipv4's)
CHAIN_PRIORITY = {"root": 0, "stp": -810, "mac": -800, "vlan": -750, "ipv4": -700, "ipv6": -600, "arp": -500, "rarp": -400}


@dataclass
class XElem:
    tag: str
    attrs: dict[str, str]
    where: Where
    children: list[XElem] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> XElem | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[XElem]:
        return [c for c in self.children if c.tag == tag]


def parse_xml(path: Path, shown: str) -> XElem:
    parser = expat.ParserCreate()
    stack: list[XElem] = []
    root: list[XElem] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        elem = XElem(tag, dict(attrs), Where(shown, parser.CurrentLineNumber))
        if stack:
            stack[-1].children.append(elem)
        else:
            root.append(elem)
        stack.append(elem)

    def end(tag: str) -> None:
        stack.pop()

    def data(text: str) -> None:
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as exc:
        raise ImportFailure([f"{shown}:{exc.lineno}: not well-formed XML: {expat.ErrorString(exc.code)}"]) from None
    except OSError as exc:
        raise ImportFailure([f"{shown}: cannot read: {exc.strerror}"]) from None
    return root[0]


@dataclass
class FilterRef:
    where: Where
    filter: str
    params: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Rule:
    where: Where
    action: str
    direction: str
    priority: int
    statematch: bool
    elements: list[XElem]


@dataclass
class Filter:
    name: str
    chain: str
    priority: int
    where: Where
    entries: list[Rule | FilterRef] = field(default_factory=list)

    @property
    def chain_kind(self) -> str:
        return self.chain.split("-", 1)[0]


@dataclass
class Interface:
    where: Where
    type: str
    mac: str | None = None
    bridge: str | None = None
    network: str | None = None
    target: str | None = None
    ips: list[tuple[str, int | None]] = field(default_factory=list)
    filterref: FilterRef | None = None


@dataclass
class Domain:
    name: str
    where: Where
    interfaces: list[Interface] = field(default_factory=list)


@dataclass
class Network:
    name: str
    where: Where
    bridge: str | None = None
    forward: str | None = None
    ips: list[tuple[str, int | None, str | None]] = field(default_factory=list)  # address, prefix, netmask
    dns: bool = True  # libvirt's dnsmasq answers DNS unless <dns enable='no'/>
    dhcp: list[str] = field(default_factory=list)  # families with a <dhcp> block: ipv4, ipv6


@dataclass
class LibvirtSource:
    filters: dict[str, Filter] = field(default_factory=dict)
    domains: dict[str, Domain] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)


def _int(text: str | None, default: int, where: Where, what: str, problems: list[str]) -> int:
    if text is None:
        return default
    try:
        return int(text, 0)
    except ValueError:
        problems.append(f"{where}: {what} {text!r} is not a number")
        return default


def _filterref(elem: XElem) -> FilterRef:
    ref = FilterRef(elem.where, elem.attrs.get("filter", ""))
    for param in elem.findall("parameter"):
        ref.params.setdefault(param.attrs.get("name", ""), []).append(param.attrs.get("value", ""))
    return ref


def read_filter(elem: XElem, problems: list[str]) -> Filter:
    name = elem.attrs.get("name")
    if not name:
        problems.append(f"{elem.where}: <filter> without a name")
        name = "unnamed"
    chain = elem.attrs.get("chain", "root")
    kind = chain.split("-", 1)[0]
    if kind not in CHAIN_PRIORITY:
        problems.append(f"{elem.where}: filter {name}: unknown chain {chain!r} (expected root, mac, stp, vlan, arp, rarp, ipv4, ipv6, optionally with a -suffix)")
    flt = Filter(name, chain, _int(elem.attrs.get("priority"), CHAIN_PRIORITY.get(kind, 0), elem.where, "priority", problems), elem.where)
    for child in elem.children:
        if child.tag == "filterref":
            flt.entries.append(_filterref(child))
        elif child.tag == "rule":
            action = child.attrs.get("action", "")
            direction = child.attrs.get("direction", "")
            if action not in ("drop", "reject", "accept", "return", "continue"):
                problems.append(f"{child.where}: rule action {action!r} (expected drop, reject, accept, return or continue)")
                continue
            if direction not in ("in", "out", "inout"):
                problems.append(f"{child.where}: rule direction {direction!r} (expected in, out or inout)")
                continue
            statematch = child.attrs.get("statematch", "true").lower() not in ("0", "false")
            elements = list(child.children)
            for e in elements:
                if e.tag not in L2_ELEMENTS + L3_ELEMENTS:
                    problems.append(f"{e.where}: unknown protocol element <{e.tag}>")
            flt.entries.append(Rule(child.where, action, direction, _int(child.attrs.get("priority"), 500, child.where, "priority", problems), statematch,
                                    [e for e in elements if e.tag in L2_ELEMENTS + L3_ELEMENTS]))
    return flt


def read_domain(elem: XElem, problems: list[str]) -> Domain:
    name_elem = elem.find("name")
    name = name_elem.text.strip() if name_elem is not None else ""
    if not name:
        problems.append(f"{elem.where}: <domain> without a <name>")
    domain = Domain(name or "unnamed", elem.where)
    devices = elem.find("devices")
    for iface in devices.findall("interface") if devices is not None else []:
        item = Interface(iface.where, iface.attrs.get("type", ""))
        mac = iface.find("mac")
        if mac is not None:
            item.mac = mac.attrs.get("address")
        source = iface.find("source")
        if source is not None:
            item.bridge = source.attrs.get("bridge")
            item.network = source.attrs.get("network")
        target = iface.find("target")
        if target is not None:
            item.target = target.attrs.get("dev")
        for ip in iface.findall("ip"):
            prefix = ip.attrs.get("prefix")
            item.ips.append((ip.attrs.get("address", ""), int(prefix) if prefix and prefix.isdigit() else None))
        ref = iface.find("filterref")
        if ref is not None:
            item.filterref = _filterref(ref)
        domain.interfaces.append(item)
    return domain


def read_network(elem: XElem) -> Network:
    name_elem = elem.find("name")
    network = Network(name_elem.text.strip() if name_elem is not None else "unnamed", elem.where)
    bridge = elem.find("bridge")
    if bridge is not None:
        network.bridge = bridge.attrs.get("name")
    forward = elem.find("forward")
    network.forward = forward.attrs.get("mode", "nat") if forward is not None else None
    if forward is not None and network.bridge is None:
        inner = forward.find("bridge")
        network.bridge = inner.attrs.get("name") if inner is not None else None
    for ip in elem.findall("ip"):
        prefix = ip.attrs.get("prefix")
        network.ips.append((ip.attrs.get("address", ""), int(prefix) if prefix and prefix.isdigit() else None, ip.attrs.get("netmask")))
        if ip.find("dhcp") is not None:
            family = "ipv6" if ip.attrs.get("family") == "ipv6" or ":" in ip.attrs.get("address", "") else "ipv4"
            network.dhcp.append(family)
    dns = elem.find("dns")
    if dns is not None and dns.attrs.get("enable") == "no":
        network.dns = False
    return network


def read_directory(directory: Path, report: Report) -> LibvirtSource:
    """Every *.xml below `directory` (e.g. /etc/libvirt/nwfilter and /etc/libvirt/qemu)."""
    if not directory.is_dir():
        raise ImportFailure([f"{directory}: not a directory"])
    source = LibvirtSource()
    problems: list[str] = []
    for path in sorted(directory.rglob("*.xml")):
        shown = path.relative_to(directory).as_posix()
        root = parse_xml(path, shown)
        if root.tag == "filter":
            flt = read_filter(root, problems)
            if flt.name in source.filters:
                problems.append(f"{root.where}: filter {flt.name} is also defined at {source.filters[flt.name].where}")
            source.filters[flt.name] = flt
        elif root.tag == "domain":
            domain = read_domain(root, problems)
            if domain.name in source.domains:
                problems.append(f"{root.where}: domain {domain.name} is also defined at {source.domains[domain.name].where}")
            source.domains[domain.name] = domain
        elif root.tag == "network":
            network = read_network(root)
            source.networks[network.name] = network
        else:
            report.skipped(root.where, f"<{root.tag}> is not a filter, domain or network; ignored")
    if problems:
        raise ImportFailure(problems)
    return source


VARIABLE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?$")
