"""libvirt nwfilter + domain interfaces -> zonewall filters, VMs and NICs.

libvirt instantiates a NIC's filter tree into two firewalls, and so does this:

* layer-2 rules (`mac`, `arp`, `rarp`, `ip`, `ipv6`, `vlan`, rules without a protocol
  element) run statelessly per frame in ebtables chains: every filter's rules go into
  the chain its `chain` attribute names; the `root` chain runs, by priority, its own
  rules and a jump into each other chain (at the chain's priority); `return` leaves a
  chain. zonewall's guard filters run in sequence and `return` leaves one filter, so
  each chain becomes one zonewall filter and each run of root rules another, listed
  in libvirt's order in an `include` of the NIC's filter -> exact, including priorities;
* layer-3/4 rules (`tcp`, `udp`, `icmp`, ..., `all` and their `-ipv6` variants) run in
  iptables, statefully unless `statematch='false'`, sorted by priority over the whole
  tree -> the VM's own `rules` (first match wins); the VM defaults are accept, since
  libvirt filters only what a filter says.

A negated match (`match='no'`) becomes `return` on the positive match followed by the
action, which is exact when nothing follows it in its chain; `$IP` against an IP
header (not expressible in zonewall's filters) is recognised in libvirt's
anti-spoofing shape and mapped to the built-in `no-ip-spoofing`.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from ...policy.builtins import BUILTIN_FILTERS, IP_PROTOCOLS
from ..emit import Commented, Document, Flow, Raw
from ..names import Names, sanitize
from ..report import Report, Where
from .parse import L3_ELEMENTS, VARIABLE, Domain, Filter, FilterRef, Interface, LibvirtSource, Rule, XElem

HEADER = "Imported from libvirt nwfilter and domain XML by `zonewall import libvirt`."
ETHERTYPES = {"ipv4": 0x0800, "ip": 0x0800, "ipv6": 0x86DD, "arp": 0x0806, "rarp": 0x8035, "vlan": 0x8100}
CHAIN_ETHERTYPE = {"ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806, "rarp": 0x8035, "vlan": 0x8100}
# Where libvirt's stock filters sit (chain priority) when referenced but not given as XML.
STOCK_POSITION = {
    "no-mac-spoofing": -800, "no-ip-spoofing": -710, "allow-dhcp": -700, "allow-dhcpv6": -600, "no-ipv6-spoofing": -600,
    "no-ip-multicast": -700, "no-arp-mac-spoofing": -520, "no-arp-ip-spoofing": -510, "no-arp-spoofing": -520,
    "allow-arp": -500, "no-mac-broadcast": -800, "qemu-announce-self": -400, "no-other-l2-traffic": 1000, "clean-traffic": 0,
}
SAME_AS_STOCK = {"no-mac-spoofing", "allow-arp", "no-mac-broadcast", "no-ip-multicast", "no-arp-mac-spoofing"}
ARP_OPS = {"request": "request", "reply": "reply", "1": "request", "2": "reply"}
FILTER_KEYS = ("direction", "action", "priority", "mac", "arp", "ethertype", "from", "to", "tcp", "udp", "sport", "icmp", "proto", "comment")
RULE_KEYS = ("direction", "action", "from", "to", "tcp", "udp", "sctp", "sport", "icmp", "icmpv6", "proto", "family", "comment")


class Skip(Exception):
    pass


@dataclass
class Collected:
    rule: Rule
    flt: Filter
    env: dict[str, list[str]]


@dataclass
class BuiltinRef:
    name: str
    where: Where
    priority: int


@dataclass
class Part:
    """One zonewall filter of a NIC's sequence: a chain, a run of root rules, or a built-in."""

    kind: str  # chain | root | builtin
    priority: int
    items: list[Collected] = field(default_factory=list)
    builtin: str | None = None
    chain: str = "root"


def _merge(into: dict[str, Any], fragment: dict[str, Any]) -> None:
    for key, value in fragment.items():
        if key in ("mac", "arp"):
            into.setdefault(key, {}).update(value)
        else:
            into[key] = value


def _port_range(attrs: dict[str, str], prefix: str) -> Any:
    start, end = attrs.get(f"{prefix}portstart"), attrs.get(f"{prefix}portend")
    if start is None:
        if end is not None:
            raise Skip(f"{prefix}portend without {prefix}portstart")
        return None
    try:
        low, high = int(start, 0), int(end, 0) if end is not None else int(start, 0)
    except ValueError:
        raise Skip(f"port {start!r} is not a number") from None
    if low == 0 and high == 0:
        raise Skip("port 0 cannot be matched")
    low = max(low, 1)
    if low > high or high > 65535:
        raise Skip(f"port range {start}-{end} is empty or out of range")
    return low if low == high else f"{low}-{high}"


def _address(attrs: dict[str, str], side: str, v6: bool) -> Any:
    """srcipaddr/srcipmask, srcipfrom/srcipto (side 'src'/'dst') -> an address ref or None."""
    addr, mask = attrs.get(f"{side}ipaddr"), attrs.get(f"{side}ipmask")
    low, high = attrs.get(f"{side}ipfrom"), attrs.get(f"{side}ipto")
    if addr is not None:
        if addr == "$IP":
            return "$IP"
        try:
            if mask is None:
                return str(ipaddress.ip_address(addr))
            network = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
            return str(network.network_address) if network.num_addresses == 1 else str(network)
        except ValueError:
            raise Skip(f"{side}ipaddr {addr!r}/{mask} is not an address") from None
    if low is not None or high is not None:
        try:
            a, b = ipaddress.ip_address(low or high or ""), ipaddress.ip_address(high or low or "")
        except ValueError:
            raise Skip(f"{side}ipfrom/{side}ipto {low}-{high} is not an address range") from None
        return f"{a}-{b}" if a != b else str(a)
    return None


def _mac(value: str, mask: str | None) -> str:
    if mask is not None and mask.lower() not in ("ff:ff:ff:ff:ff:ff",):
        raise Skip(f"MAC mask {mask} (zonewall matches whole MAC addresses)")
    return value if value == "$MAC" else value.lower()


def _protocol(text: str) -> str:
    name = text.lower()
    if name.isdigit():
        number = int(name)
        return next((n for n, v in IP_PROTOCOLS.items() if v == number), name)
    if name in IP_PROTOCOLS:
        return name
    raise Skip(f"protocol {text!r} is not known")


class LibvirtImport:
    def __init__(self, source: LibvirtSource, report: Report, host: str, host_addresses: list[str]) -> None:
        self.src, self.report = source, report
        self.host, self.host_addresses = sanitize(host), host_addresses
        self.filter_names = Names(BUILTIN_FILTERS)
        self.filters: dict[str, Any] = {}
        self.part_names: dict[object, str] = {}
        self.tops: dict[object, str] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.vm_names = Names()

    # ------------------------------------------------------------ the filter tree

    def collect(self, name: str, env: dict[str, list[str]], trail: tuple[str, ...], where: Where) -> tuple[list[Collected | BuiltinRef], list[Collected]]:
        if name in trail:
            self.report.skipped(where, f"filter reference cycle {' -> '.join(trail + (name,))}; libvirt refuses it too")
            return [], []
        flt = self.src.filters.get(name)
        if flt is None:
            if name in BUILTIN_FILTERS:
                return [BuiltinRef(name, where, STOCK_POSITION.get(name, 0))], []
            self.report.skipped(where, f"filter {name} is neither in the XML given nor one of zonewall's built-ins ({', '.join(BUILTIN_FILTERS)})")
            return [], []
        l2: list[Collected | BuiltinRef] = []
        l3: list[Collected] = []
        for entry in flt.entries:
            if isinstance(entry, FilterRef):
                inner = dict(env)
                for key, values in entry.params.items():
                    resolved: list[str] = []
                    for value in values:
                        found = VARIABLE.match(value)
                        resolved += (env.get(found.group(1), [value]) if found else [value])
                    inner[key] = resolved
                a, b = self.collect(entry.filter, inner, trail + (name,), entry.where)
                l2 += a
                l3 += b
            elif entry.action == "continue":
                self.report.note(entry.where, "action continue has no effect on the verdict; not written")
            elif any(e.tag in L3_ELEMENTS for e in entry.elements):
                l3.append(Collected(entry, flt, env))
            else:
                l2.append(Collected(entry, flt, env))
        return l2, l3

    def instances(self, item: Collected) -> list[list[tuple[XElem, dict[str, str]]]]:
        """The rule's elements with variables substituted; libvirt instantiates a rule
        once per combination of list values. $IP and $MAC stay symbolic (the NIC's)."""
        names: list[str] = []
        for elem in item.rule.elements:
            for value in elem.attrs.values():
                found = VARIABLE.match(value)
                if found:
                    if found.group(2):
                        raise Skip(f"indexed/iterated variable {value} is not supported")
                    var = found.group(1)
                    if var in ("IP", "MAC") and var not in item.env:
                        continue
                    if var not in item.env:
                        raise Skip(f"variable ${var} has no value (libvirt would refuse to start the guest)")
                    if var not in names:
                        names.append(var)
        combos = list(itertools.product(*(item.env[n] for n in names))) if names else [()]
        out = []
        for combo in combos:
            values = dict(zip(names, combo))
            elems = []
            for elem in item.rule.elements:
                attrs = {}
                for key, value in elem.attrs.items():
                    found = VARIABLE.match(value)
                    attrs[key] = values.get(found.group(1), value) if found else value
                elems.append((elem, attrs))
            out.append(elems)
        return out

    # ------------------------------------------------------------ layer 2

    def l2_fragments(self, elem: XElem, attrs: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(implied keys, attribute conditions) of one layer-2 protocol element."""
        tag = elem.tag
        base: dict[str, Any] = {}
        conds: list[dict[str, Any]] = []
        known = {"match", "comment"}
        if tag in ("mac", "arp", "rarp", "ip", "ipv6", "vlan"):
            known |= {"srcmacaddr", "srcmacmask", "dstmacaddr", "dstmacmask"}
            if "srcmacaddr" in attrs:
                conds.append({"mac": {"src": _mac(attrs["srcmacaddr"], attrs.get("srcmacmask"))}})
            if "dstmacaddr" in attrs:
                conds.append({"mac": {"dst": _mac(attrs["dstmacaddr"], attrs.get("dstmacmask"))}})
        if tag == "stp":
            raise Skip("<stp> (spanning tree frames) cannot be matched by zonewall filters")
        if tag == "mac":
            known.add("protocolid")
            if "protocolid" in attrs:
                text = attrs["protocolid"].lower()
                try:
                    conds.append({"ethertype": ETHERTYPES[text] if text in ETHERTYPES else int(text, 0)})
                except ValueError:
                    raise Skip(f"protocolid {attrs['protocolid']!r} is not known") from None
        elif tag == "vlan":
            base["ethertype"] = 0x8100
            if set(attrs) - known:
                raise Skip("vlan ids and encapsulated protocols cannot be matched by zonewall filters")
        elif tag in ("arp", "rarp"):
            base["ethertype"] = ETHERTYPES[tag]
            known |= {"hwtype", "protocoltype", "opcode", "arpsrcmacaddr", "arpdstmacaddr", "arpsrcipaddr", "arpdstipaddr", "arpsrcipmask", "arpdstipmask"}
            if attrs.get("hwtype", "1") not in ("1", "0x1") or attrs.get("protocoltype", "0x800").lower() not in ("0x800", "0x0800", "2048"):
                raise Skip("ARP hwtype/protocoltype other than Ethernet/IPv4 cannot be matched")
            arp_conds = []
            if "opcode" in attrs:
                op = ARP_OPS.get(attrs["opcode"].lower())
                if op is None:
                    raise Skip(f"ARP opcode {attrs['opcode']!r} (zonewall matches request and reply)")
                arp_conds.append({"arp": {"op": op}})
            for attr, key in (("arpsrcmacaddr", "mac_src"), ("arpdstmacaddr", "mac_dst"), ("arpsrcipaddr", "ip_src"), ("arpdstipaddr", "ip_dst")):
                if attr in attrs:
                    value = attrs[attr]
                    if key.startswith("ip") and attrs.get(attr.replace("addr", "mask"), "32") not in ("32", "255.255.255.255"):
                        raise Skip(f"{attr} with a mask (zonewall matches single ARP addresses)")
                    arp_conds.append({"arp": {key: value if value.startswith("$") else value.lower()}})
            if "gratuitous" in attrs:
                raise Skip("gratuitous ARP matching is not supported")
            if tag == "rarp" and arp_conds:
                raise Skip("RARP payload fields cannot be matched (zonewall's arp keys match ARP frames)")
            conds += arp_conds
        elif tag in ("ip", "ipv6"):
            v6 = tag == "ipv6"
            base["ethertype"] = ETHERTYPES[tag]
            known |= {"srcipaddr", "srcipmask", "dstipaddr", "dstipmask", "protocol", "srcportstart", "srcportend", "dstportstart", "dstportend"}
            for side, key in (("src", "from"), ("dst", "to")):
                ref = _address(attrs, side, v6)
                if ref == "$IP":
                    raise Skip(f"{side}ipaddr='$IP' on <{tag}>: zonewall filters match $IP only in ARP fields (see docs/migrating.md)")
                if ref is not None:
                    conds.append({key: ref})
            proto = _protocol(attrs["protocol"]) if "protocol" in attrs else None
            dport, sport = _port_range(attrs, "dst"), _port_range(attrs, "src")
            if proto in ("tcp", "udp"):
                conds.append({proto: dport if dport is not None else "1-65535"})
                if sport is not None:
                    conds.append({"sport": sport})
            elif dport is not None or sport is not None:
                raise Skip(f"ports with protocol {proto}: zonewall filters match tcp and udp ports")
            elif proto is not None:
                conds.append({"proto": proto})
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise Skip(f"<{tag}> attribute(s) {', '.join(unknown)} cannot be matched by zonewall filters")
        return base, conds

    def l2_rules(self, item: Collected, root: bool, is_last: bool) -> list[dict[str, Any]]:
        rule = item.rule
        action = {"return": "accept" if root else "return"}.get(rule.action, rule.action)
        chain_type = CHAIN_ETHERTYPE.get(item.flt.chain_kind)
        out: list[dict[str, Any]] = []
        for instance in self.instances(item):
            base: dict[str, Any] = {"direction": rule.direction, "priority": rule.priority}
            if chain_type is not None:
                base["ethertype"] = chain_type
            negated: list[dict[str, Any]] = []
            for elem, attrs in instance:
                implied, conds = self.l2_fragments(elem, attrs)
                _merge(base, implied)
                if attrs.get("match", "yes").lower() in ("no", "false"):
                    negated += conds
                else:
                    for cond in conds:
                        _merge(base, cond)
                if "comment" in attrs:
                    base["comment"] = attrs["comment"]
            if negated:
                if not is_last:
                    raise Skip("match='no' is exact in zonewall only for the last rule of its chain (it becomes return-on-match, then the action)")
                for cond in negated:
                    positive = dict(base, action="return")
                    positive = {k: (dict(v) if isinstance(v, dict) else v) for k, v in positive.items()}
                    _merge(positive, cond)
                    out.append(positive)
            out.append(dict(base, action=action))
        return out

    def recognise(self, part: Part) -> str | None:
        """libvirt's anti-spoofing chains that zonewall has as built-ins."""
        def sig(item: Collected) -> tuple[str, str, str, tuple[tuple[str, str], ...], bool]:
            elem = item.rule.elements[0] if item.rule.elements else None
            attrs = tuple(sorted((k, v) for k, v in (elem.attrs.items() if elem else ()) if k not in ("match", "comment")))
            negated = bool(elem and elem.attrs.get("match", "yes").lower() in ("no", "false"))
            return (item.rule.action, item.rule.direction, elem.tag if elem else "", attrs, negated)

        sigs = [sig(i) for i in part.items]
        kind = part.chain.split("-", 1)[0]
        if any(i.env.get("IP") or i.env.get("MAC") for i in part.items):
            return None  # $IP/$MAC given literal values: translate literally
        dhcp = ("return", "out", "ip", (("dstipaddr", "255.255.255.255"), ("dstportstart", "67"), ("protocol", "udp"), ("srcipaddr", "0.0.0.0"), ("srcportstart", "68")), False)
        if kind == "ipv4":
            body = [s for s in sigs if s != dhcp]
            drop_all = [("drop", "out", "", (), False), ("drop", "out", "ip", (), False)]
            if (len(body) == 2 and body[0] == ("return", "out", "ip", (("srcipaddr", "$IP"),), False) and body[1] in drop_all) or body == [("drop", "out", "ip", (("srcipaddr", "$IP"),), True)]:
                differences = "zonewall's no-ip-spoofing also lets DHCP discovery (0.0.0.0, udp 68->67) through" if dhcp not in sigs else \
                    "zonewall's no-ip-spoofing lets DHCP discovery from 0.0.0.0 through to any destination, not only 255.255.255.255"
                self.report.inexact(part.items[0].flt.where, f"chain {part.chain} (filter {part.items[0].flt.name}) matches $IP against the IP header: mapped to the built-in no-ip-spoofing; {differences}")
                return "no-ip-spoofing"
        if kind == "mac":
            if sigs == [("return", "out", "mac", (("srcmacaddr", "$MAC"),), False), ("drop", "out", "", (), False)] or \
               sigs == [("return", "out", "mac", (("srcmacaddr", "$MAC"),), False), ("drop", "out", "mac", (), False)] or \
               sigs == [("drop", "out", "mac", (("srcmacaddr", "$MAC"),), True)]:
                return "no-mac-spoofing"
        return None

    def part_filter(self, part: Part, top: str, index: int) -> str | None:
        if part.kind == "builtin":
            assert part.builtin is not None
            return part.builtin
        recognised = self.recognise(part) if part.kind == "chain" else None
        if recognised:
            return recognised
        rules: list[Commented] = []
        ordered = sorted(part.items, key=lambda i: i.rule.priority)
        for n, item in enumerate(ordered):
            later = [o.rule.direction for o in ordered[n + 1:]]
            is_last = not any(d == "inout" or item.rule.direction == "inout" or d == item.rule.direction for d in later)
            try:
                made = self.l2_rules(item, part.kind == "root", is_last)
            except Skip as exc:
                self.report.skipped(item.rule.where, f"rule not translated: {exc}")
                continue
            for body in made:
                flow = Flow({k: (Raw(f"0x{body[k]:04x}") if k == "ethertype" else body[k]) for k in FILTER_KEYS if k in body})
                rules.append(Commented(flow, f"from {item.rule.where} (filter {item.flt.name})"))
        if not rules:
            return None
        content = tuple(repr(r.value) for r in rules)
        origins = sorted({i.flt.name for i in part.items})
        if part.kind == "chain" and len(origins) == 1:
            key: object = ("chain", part.chain, content)
            wanted = origins[0] if origins[0] not in BUILTIN_FILTERS else f"lv-{origins[0]}"
            comment = f"libvirt chain {part.chain} (priority {part.priority}) of filter {origins[0]} ({part.items[0].flt.where})"
        elif part.kind == "chain":
            key = ("chain", part.chain, content)
            wanted = f"{top}-{part.chain}"
            comment = f"libvirt chain {part.chain} (priority {part.priority}), rules of {', '.join(origins)}"
        else:
            key = ("root", index, content)
            wanted = f"{origins[0] if len(origins) == 1 else top}-root{index}"
            comment = f"rules of libvirt's root chain (priorities {ordered[0].rule.priority}..{ordered[-1].rule.priority}) from {', '.join(origins)}"
        if key not in self.part_names:
            name = self.filter_names.get(key, wanted)
            self.part_names[key] = name
            self.filters[name] = Commented({"rules": rules}, comment)
        return self.part_names[key]

    def nic_filter(self, ref: FilterRef, env: dict[str, list[str]]) -> tuple[list[str], list[Collected]]:
        """The NIC's guard filter names (one composed filter, or a built-in) and its layer-3 rules."""
        l2, l3 = self.collect(ref.filter, env, (), ref.where)
        for builtin in (i for i in l2 if isinstance(i, BuiltinRef)):
            severity = "note" if builtin.name in SAME_AS_STOCK else "inexact"
            self.report.add(builtin.where, severity, f"filter {builtin.name} is not in the XML given: zonewall's built-in of that name is used"
                            + ("" if severity == "note" else " (it differs from libvirt's stock filter, e.g. it handles IPv6; see docs/policy-guide.md)"))
        parts: list[Part] = []
        chains: dict[str, Part] = {}
        for item in l2:
            if isinstance(item, BuiltinRef):
                parts.append(Part("builtin", item.priority, builtin=item.name))
            elif item.flt.chain_kind == "root":
                parts.append(Part("root", item.rule.priority, [item]))
            elif item.flt.chain in chains:
                chains[item.flt.chain].items.append(item)
            else:
                chains[item.flt.chain] = Part("chain", item.flt.priority, [item], chain=item.flt.chain)
                parts.append(chains[item.flt.chain])
        # libvirt's root chain: chain jumps and root rules by priority (jumps first on a tie)
        order = sorted(parts, key=lambda p: (p.priority, p.kind == "root"))
        merged: list[Part] = []
        for part in order:
            if part.kind == "root" and merged and merged[-1].kind == "root":
                merged[-1].items += part.items
            else:
                merged.append(part)
        top_name = ref.filter if ref.filter not in BUILTIN_FILTERS else f"lv-{ref.filter}"
        literal_env = tuple(sorted((k, tuple(v)) for k, v in env.items() if k not in ("IP", "MAC")))
        top_key = (ref.filter, literal_env)
        if len(merged) == 1 and merged[0].kind == "builtin":
            return [merged[0].builtin or ""], l3
        if top_key in self.tops:
            return [self.tops[top_key]], l3
        top = self.filter_names.get(("top",) + top_key, top_name)
        self.tops[top_key] = top
        includes = [name for n, part in enumerate(merged, start=1) if (name := self.part_filter(part, top, n))]
        flt = self.src.filters.get(ref.filter)
        where = flt.where if flt else ref.where
        if not includes:
            return [], l3
        self.filters[top] = Commented({"include": includes}, f"nwfilter {ref.filter} ({where}): libvirt's evaluation order")
        return [top], l3

    # ------------------------------------------------------------ layer 3

    def l3_rules(self, item: Collected, nic_ips: list[str], narrow: list[str] | None) -> list[Commented]:
        rule = item.rule
        if rule.action == "continue":
            return []
        action = "accept" if rule.action == "return" else rule.action
        out: list[Commented] = []
        for instance in self.instances(item):
            body: dict[str, Any] = {"action": action}
            elem, attrs = instance[0]
            if len(instance) > 1:
                raise Skip("a rule with several protocol elements")
            tag = elem.tag
            v6 = tag.endswith("-ipv6")
            proto = tag[:-5] if v6 else tag
            negated = attrs.get("match", "yes").lower() in ("no", "false")
            known = {"match", "comment", "srcipaddr", "srcipmask", "dstipaddr", "dstipmask", "srcipfrom", "srcipto", "dstipfrom", "dstipto", "state"}
            for side, key in (("src", "from"), ("dst", "to")):
                ref = _address(attrs, side, v6)
                if ref == "$IP":
                    ref = list(nic_ips) or None
                    if ref is None:
                        raise Skip(f"{side}ipaddr='$IP' but the NIC has no known address")
                if ref is not None:
                    refs = ref if isinstance(ref, list) else [ref]
                    body[key] = [f"!{r}" for r in refs] if negated else (refs[0] if len(refs) == 1 else refs)
            if proto in ("tcp", "udp", "sctp", "udplite"):
                known |= {"srcportstart", "srcportend", "dstportstart", "dstportend"}
                dport, sport = _port_range(attrs, "dst"), _port_range(attrs, "src")
                if negated and (dport is not None or sport is not None):
                    raise Skip("match='no' on ports cannot be expressed")
                if proto == "udplite" and (dport is not None or sport is not None):
                    raise Skip("udplite ports cannot be matched")
                if dport is not None or sport is not None:
                    body[proto] = dport if dport is not None else "1-65535"
                    if sport is not None:
                        body["sport"] = sport
                else:
                    body["proto"] = proto
            elif proto == "icmp":
                known |= {"type", "code"}
                if "code" in attrs:
                    raise Skip("ICMP codes cannot be matched (zonewall matches types)")
                key = "icmpv6" if v6 else "icmp"
                if "type" in attrs:
                    body[key] = int(attrs["type"], 0)
                else:
                    body["proto"] = "icmpv6" if v6 else "icmp"
            elif proto in ("igmp", "esp", "ah"):
                body["proto"] = proto
            body["family"] = "ipv6" if v6 else "ipv4"
            state = attrs.get("state")
            if state is not None:
                states = {s.strip().upper() for s in state.split(",")}
                if "NEW" not in states:
                    if action == "accept" and states <= {"ESTABLISHED", "RELATED"}:
                        self.report.note(rule.where, f"state={state}: zonewall accepts established and related packets before any rule; not written")
                        return []
                    raise Skip(f"state={state}: zonewall's rules see only new connections")
                if states - {"NEW", "ESTABLISHED", "RELATED"}:
                    raise Skip(f"state={state} (INVALID/NONE) cannot be matched per rule")
            unknown = sorted(set(attrs) - known)
            if unknown:
                raise Skip(f"<{tag}> attribute(s) {', '.join(unknown)} cannot be matched by zonewall rules")
            if not rule.statematch:
                self.report.inexact(rule.where, "statematch='false': zonewall's rules are stateful (replies of an accepted connection pass, established packets are not dropped)")
            if "comment" in attrs:
                body["comment"] = attrs["comment"]
            for direction in (["in", "out"] if rule.direction == "inout" else [rule.direction]):
                item_body = dict(body, direction=direction)
                if narrow:
                    own = "to" if direction == "in" else "from"
                    if own in item_body:
                        self.report.inexact(rule.where, "a layer-3 rule of one NIC of a multi-NIC guest that names addresses itself: applies to all of the guest's NICs")
                    else:
                        item_body[own] = narrow if len(narrow) > 1 else narrow[0]
                out.append(Commented(Flow({k: item_body[k] for k in RULE_KEYS if k in item_body}), f"from {rule.where} (filter {item.flt.name}, priority {rule.priority})"))
        return out

    # ------------------------------------------------------------ guests

    def network_for(self, iface: Interface, ips: list[str]) -> str | None:
        if iface.network:
            net = self.src.networks.get(iface.network)
            name = sanitize(iface.network)
            if name not in self.networks:
                if net is None:
                    self.report.inexact(iface.where, f"network {iface.network} has no <network> XML here: bridge name and subnets assumed")
                    self.networks[name] = {"bridge": sanitize(iface.network)[:15], "subnets": [], "gateway": [], "comment": "assumed", "where": iface.where}
                else:
                    entry: dict[str, Any] = {"bridge": net.bridge or sanitize(net.name)[:15], "subnets": [], "gateway": [], "where": net.where}
                    for address, prefix, netmask in net.ips:
                        try:
                            interface = ipaddress.ip_interface(f"{address}/{prefix if prefix is not None else netmask or 24}")
                        except ValueError:
                            self.report.skipped(net.where, f"network {net.name}: address {address} not understood")
                            continue
                        entry["subnets"].append(str(interface.network))
                        entry["gateway"].append(str(interface.ip))
                    mode = {None: "isolated", "nat": "nat", "route": "routed", "open": "routed", "bridge": "bridged"}.get(net.forward)
                    if mode is None:
                        self.report.inexact(net.where, f"network {net.name}: forward mode {net.forward} has no zonewall equivalent; bridged assumed")
                        mode = "bridged"
                    entry["mode"] = mode
                    if mode in ("nat", "routed", "isolated") and net.ips:
                        # libvirt's dnsmasq on the bridge: DNS unless disabled, DHCP where an
                        # <ip> has a <dhcp> block. Modes are enforced, so without these the
                        # guests would lose the node's DHCP/DNS.
                        services = (["dhcp"] if "ipv4" in net.dhcp else []) + (["dhcpv6"] if "ipv6" in net.dhcp else [])
                        entry["host_services"] = services + (["dns"] if net.dns else [])
                    entry["comment"] = f"from {net.where}"
                    self.networks[name] = entry
        elif iface.bridge:
            name = sanitize(iface.bridge)
            self.networks.setdefault(name, {"bridge": iface.bridge, "subnets": [], "gateway": [], "comment": f"bridge {iface.bridge}; subnets assumed from the guests' addresses", "where": iface.where})
        else:
            self.report.skipped(iface.where, f"interface type {iface.type!r} has neither a source bridge nor a network; not imported")
            return None
        entry = self.networks[name]
        for ip in ips:
            address = ipaddress.ip_address(ip)
            if not any(address.version == ipaddress.ip_network(s).version and address in ipaddress.ip_network(s) for s in entry["subnets"]):
                prefix = next((p for a, p in iface.ips if a == ip and p is not None), 24 if address.version == 4 else 64)
                subnet = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
                entry["subnets"].append(subnet)
                self.report.note(iface.where, f"network {name}: subnet {subnet} assumed from the guest address {ip}")
        return name

    def learning(self, where: Where, nic: dict[str, Any], network: str, mode: str, servers: list[str]) -> None:
        """CTRL_IP_LEARNING and DHCPSERVER as the NIC's `learning` and its network's
        `dhcp_servers` (libvirt's modes map to zonewall's of the same name). `dhcp`
        without DHCPSERVER trusts any server in libvirt; zonewall trusts only listed
        ones, so it becomes `none` (closed) and is reported."""
        trusted = self.networks[network].setdefault("dhcp_servers", [])
        for server in servers:
            try:
                text = str(ipaddress.IPv4Address(server))
            except ValueError:
                self.report.skipped(where, f"DHCPSERVER {server!r} is not an IPv4 address")
                continue
            if text not in trusted:
                trusted.append(text)
        if mode not in ("any", "dhcp", "none"):
            self.report.skipped(where, f"CTRL_IP_LEARNING {mode!r}: libvirt knows any, dhcp and none; none written (closed)")
            mode = "none"
        if mode == "dhcp" and not trusted:
            self.report.inexact(where, "CTRL_IP_LEARNING dhcp without DHCPSERVER: libvirt trusts any DHCP server, zonewall only the network's dhcp_servers; learning none written (closed): list the servers and set learning: dhcp")
            mode = "none"
        if mode != "any":
            nic["learning"] = mode
            self.report.note(where, f"CTRL_IP_LEARNING {mode} -> learning: {mode}" + (" (the address a server of the network's dhcp_servers acks)" if mode == "dhcp" else ""))

    def domain(self, domain: Domain) -> tuple[str, Commented]:
        name = self.vm_names.get(domain.name, domain.name)
        if name != domain.name:
            self.report.note(domain.where, f"domain {domain.name} is called {name} in zonewall (names are lowercase letters, digits, - and _)")
        nics: list[Commented] = []
        per_nic_l3: list[tuple[list[Collected], list[str]]] = []
        for iface in domain.interfaces:
            ips: list[str] = []
            env: dict[str, list[str]] = {}
            learning, dhcp_servers = "any", []
            if iface.filterref is not None:
                for key, values in iface.filterref.params.items():
                    if key == "IP":
                        ips += values
                    elif key == "MAC":
                        if iface.mac and any(v.lower() != iface.mac.lower() for v in values):
                            self.report.inexact(iface.filterref.where, "parameter MAC differs from the interface's mac; zonewall's $MAC is the NIC's mac")
                    elif key == "CTRL_IP_LEARNING":
                        learning = values[-1].lower() if values else "any"
                    elif key == "DHCPSERVER":
                        dhcp_servers += values
                    else:
                        env[key] = values
            ips += [a for a, _ in iface.ips]
            clean: list[str] = []
            for ip in ips:
                try:
                    text = str(ipaddress.ip_address(ip))
                except ValueError:
                    self.report.skipped(iface.where, f"address {ip!r} is not an IP address")
                    continue
                if text not in clean:
                    clean.append(text)
            network = self.network_for(iface, clean)
            if network is None:
                continue
            entry: dict[str, Any] = {"network": network}
            if iface.mac:
                entry["mac"] = iface.mac.lower()
            if clean:
                entry["ips"] = clean
            if iface.target and re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", iface.target):
                entry["tap"] = iface.target
            if iface.filterref is not None:
                self.learning(iface.filterref.where, entry, network, learning, dhcp_servers)
            if iface.filterref is not None:
                names, l3 = self.nic_filter(iface.filterref, env)
                if names:
                    entry["filters"] = names
                    if not iface.mac and any(n for n in names):
                        self.report.note(iface.where, "no <mac address>: a MAC-based filter needs the NIC's mac (zonewall check says which)")
                if not clean:
                    self.report.inexact(iface.where, "no IP address known (no IP parameter or <ip>): libvirt would learn it; zonewall's $IP is empty until you add `ips`")
                per_nic_l3.append((l3, clean))
            nics.append(Commented(Flow(entry), f"<interface> at {iface.where}"))
        rules: list[Commented] = []
        multi = len(per_nic_l3) > 1
        for l3, ips in per_nic_l3:
            for item in sorted(l3, key=lambda i: i.rule.priority):
                try:
                    rules += self.l3_rules(item, ips, ips if multi else None) if not multi or ips else []
                    if multi and not ips:
                        self.report.skipped(item.rule.where, "a layer-3 rule on one NIC of a multi-NIC guest whose addresses are unknown")
                except Skip as exc:
                    self.report.skipped(item.rule.where, f"rule not translated: {exc}")
        body: dict[str, Any] = {"host": self.host, "default": Flow({"in": "accept", "out": "accept"}), "nics": nics}
        if rules:
            body["rules"] = rules
        if not nics:
            self.report.skipped(domain.where, f"domain {domain.name} has no importable <interface>; not imported")
            return name, Commented({}, "")
        return name, Commented(body, f"domain {domain.name} ({domain.where})")

    def run(self) -> dict[str, Document]:
        vms: dict[str, Any] = {}
        for dname in sorted(self.src.domains):
            name, body = self.domain(self.src.domains[dname])
            if body.value:
                vms[name] = body
        addresses = self.host_addresses or ["192.0.2.1"]
        if not self.host_addresses:
            self.report.note(Where("(command line)"), "no --host-address: the node's address is written as 192.0.2.1; change it before applying")
        doc = Document([HEADER, "Everything not translated exactly is listed in import-report.txt."], {"version": 1})
        doc.body["settings"] = {"default": Commented(Flow({"in": "accept", "out": "accept"}), "libvirt filters only what its nwfilters say")}
        doc.body["hosts"] = {self.host: Flow({"address": addresses if len(addresses) > 1 else addresses[0]})}
        networks = {}
        for name, net in sorted(self.networks.items()):
            entry = {"bridge": net["bridge"]}
            for key in ("subnets", "gateway", "mode", "host_services", "dhcp_servers"):
                if net.get(key):
                    entry[key] = net[key]
            if entry.get("mode") in ("nat", "routed", "isolated"):
                offered = ", ".join(entry.get("host_services", [])) or "none"
                self.report.note(net["where"], f"network mode {entry['mode']}: enforced by zonewall; the node offers its guests only host_services ({offered}, as libvirt's dnsmasq does here) and nothing else of the node")
            networks[name] = Commented(Flow(entry), net.get("comment"))
        doc.body["networks"] = networks
        if self.filters:
            doc.body["filters"] = dict(sorted(self.filters.items()))
        doc.body["vms"] = vms
        unused = sorted(set(self.src.filters) - self.referenced())
        for fname in unused:
            self.report.note(self.src.filters[fname].where, f"filter {fname} is used by no domain given; not written")
        return {"libvirt.yaml": doc}

    def referenced(self) -> set[str]:
        seen: set[str] = set()

        def walk(name: str) -> None:
            if name in seen or name not in self.src.filters:
                return
            seen.add(name)
            for entry in self.src.filters[name].entries:
                if isinstance(entry, FilterRef):
                    walk(entry.filter)

        for domain in self.src.domains.values():
            for iface in domain.interfaces:
                if iface.filterref is not None:
                    walk(iface.filterref.filter)
        return seen


def translate(source: LibvirtSource, report: Report, *, host: str = "node1", host_addresses: list[str] | None = None) -> dict[str, Document]:
    return LibvirtImport(source, report, host, list(host_addresses or [])).run()
