"""The typed policy model (pydantic v2): shapes and local checks of every key.

Cross-references (vm:, zone:, services, ...) are checked in `resolve.py`; this module
only knows what one key may hold.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .addresses import AddressSyntaxError, parse_ref
from .builtins import CONNTRACK_HELPERS, CONNTRACK_TIMEOUT_KEYS, ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from .dataplane_keys import NicLearning, PacketLimit, Protection
from .icmpcodes import families_of, is_coded, valid_coded

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,30}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
IfName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")]
Action = Literal["accept", "drop", "reject"]
Direction = Literal["in", "out"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class FieldProblem(ValueError):
    """A check over several keys that knows which key (path below it) is at fault,
    so the error points at that key rather than at the start of the mapping.
    `missing`: the key is required here and absent (shown at the mapping)."""

    def __init__(self, message: str, *path: object, missing: bool = False):
        super().__init__(message)
        self.path = path
        self.missing = missing


def _as_list(value: Any) -> Any:
    """Keys documented as 'X or [X, ...]' accept a single value."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _check_port_item(item: Any) -> str:
    """A port `22`, or a range "8000-8100"; returned normalised as text."""
    if isinstance(item, bool):
        raise ValueError(f"{item!r} is not a port (expected 1-65535 or \"a-b\")")
    if isinstance(item, int):
        low = high = item
    elif isinstance(item, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", item):
        parts = [int(p) for p in item.split("-")]
        low, high = parts[0], parts[-1]
    else:
        raise ValueError(f"{item!r} is not a port (expected 1-65535 or \"a-b\")")
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range (expected 1-65535)")
    if low > high:
        raise ValueError(f"port range {item!r} is empty: its start is above its end")
    return str(low) if low == high else f"{low}-{high}"


def _nonempty_list(what: str, hint: str = "") -> Any:
    def check(value: Any) -> list[Any]:
        items = _as_list(value)
        if not items:
            raise ValueError(f"empty {what} list{hint}")
        return items

    return BeforeValidator(check)


Ports = Annotated[list[Annotated[str, BeforeValidator(_check_port_item)]], _nonempty_list("port")]


def _icmp_type(item: Any) -> str:
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 255:
        return str(item)
    if isinstance(item, str) and (item == "any" or item in ICMP_V4_TYPES or item in ICMP_V6_TYPES):
        return str(item)
    # a type and a code (issue 18): host-unreachable, destination-unreachable/4, 3/1 (policy/icmpcodes.py)
    if isinstance(item, str) and is_coded(item):
        if valid_coded(item):
            return item.lower() if "/" not in item else item
        raise ValueError(f"{item!r} is not an ICMP type and code (expected TYPE/CODE with a type name or number and a code 0-255, e.g. destination-unreachable/4)")
    raise ValueError(f"{item!r} is not an ICMP type (expected a name such as echo-request or host-unreachable, TYPE/CODE, a number 0-255, or any)")


IcmpTypes = Annotated[list[Annotated[str, BeforeValidator(_icmp_type)]], _nonempty_list("ICMP type")]


def _protocol(item: Any) -> str:
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 255:
        return str(item)
    if isinstance(item, str) and item in IP_PROTOCOLS:
        return item
    raise ValueError(f"{item!r} is not an IP protocol (expected a name such as esp, gre, ospf or a number 0-255)")


Protocols = Annotated[list[Annotated[str, BeforeValidator(_protocol)]], _nonempty_list("protocol")]


def _ref(item: Any) -> str:
    try:
        parse_ref(item)
    except AddressSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return str(item).strip()


AddressRefs = Annotated[list[Annotated[str, BeforeValidator(_ref)]], _nonempty_list("address", " (omit the key to mean any)")]
# settings.management may be empty: omitted or [] both mean "no management addresses"
OptionalAddressRefs = Annotated[list[Annotated[str, BeforeValidator(_ref)]], BeforeValidator(_as_list)]


def _ip(item: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(item).strip()))
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address") from None


IPs = Annotated[list[Annotated[str, BeforeValidator(_ip)]], BeforeValidator(_as_list)]


def _subnet(item: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(item).strip(), strict=True))
    except ValueError as exc:
        if "host bits" in str(exc):
            fixed = ipaddress.ip_network(str(item).strip(), strict=False)
            raise ValueError(f"{item!r} has host bits set (did you mean {fixed}?)") from None
        raise ValueError(f"{item!r} is not a CIDR subnet") from None


Subnets = Annotated[list[Annotated[str, BeforeValidator(_subnet)]], BeforeValidator(_as_list)]

RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")


def parse_rate(text: str) -> tuple[int, str]:
    found = RATE_PATTERN.match(text)
    if not found or int(found.group(1)) < 1:
        raise ValueError(f"{text!r} is not a rate (expected N/second, N/minute, N/hour or N/day with N >= 1)")
    return int(found.group(1)), found.group(2)


def _rate(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a rate (expected e.g. 5/minute)")
    parse_rate(value)
    return value.replace(" ", "")


Rate = Annotated[str, BeforeValidator(_rate)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class DefaultPolicy(Strict):
    in_: Action | None = Field(None, alias="in")
    out: Action | None = None


# Log levels (issue 18), syslog's names as Proxmox VE uses them; `nolog`: not logged.
# NFLOG has no level of its own: the level travels in the record's prefix
# (compiler/logprefix.py) and is stored with the record.
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LogLevel = Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
LogChoice = Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog"]


class LogSettings(Strict):
    denied: bool = False
    rate: Rate = "10/second"
    burst: int = Field(50, ge=1, le=100000)
    group: int = Field(1, ge=0, le=65535, description="NFLOG group the agent reads")
    # issue 18: what is logged without `log: true` on each rule, and at which level
    rules: list[Action] = Field(default_factory=list, description="log every match of the rules with these actions")
    invalid: bool = Field(False, description="log packets conntrack finds invalid")
    level: LogLevel = Field("warning", description="the level of records that name none")


class LogDefaults(Strict):
    """A VM's or node's logging of what its default decides, per direction (Proxmox
    VE's log_level_in/log_level_out): a level, or nolog (not even with
    settings.log.denied)."""

    in_: LogChoice | None = Field(None, alias="in")
    out: LogChoice | None = None


def _check_timeouts(value: dict[str, int]) -> dict[str, int]:
    for key, seconds in value.items():
        if key not in CONNTRACK_TIMEOUT_KEYS:
            raise FieldProblem(f"unknown timeout {key!r} (expected one of {', '.join(CONNTRACK_TIMEOUT_KEYS)})", key)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 2_000_000:
            raise FieldProblem(f"timeout {key} = {seconds!r} is out of range (expected 1-2000000 seconds)", key)
    return value


class ConntrackSettings(Strict):
    timeouts: dict[str, Any] = {}
    helpers: list[str] = []
    invalid: Literal["drop", "accept"] = "drop"
    new_tcp: Literal["any", "syn"] = "any"  # syn: a TCP packet without a connection must be a SYN to start one

    _timeouts = field_validator("timeouts")(classmethod(lambda cls, value: _check_timeouts(value)))

    @field_validator("helpers")
    @classmethod
    def _helpers(cls, value: list[str]) -> list[str]:
        for index, helper in enumerate(value):
            if helper not in CONNTRACK_HELPERS:
                raise FieldProblem(f"unknown conntrack helper {helper!r} (expected one of {', '.join(CONNTRACK_HELPERS)})", index)
        return value


class ZoneConntrack(Strict):
    timeouts: dict[str, Any] = {}

    _timeouts = field_validator("timeouts")(classmethod(lambda cls, value: _check_timeouts(value)))


class HostDefault(Strict):
    in_: Action = Field("accept", alias="in")
    out: Action = "accept"


# Names hypervisors give guest ports: libvirt vnetN, Proxmox tap<VMID>i<N> (VMs),
# veth<VMID>i<N> (containers), fwpr<VMID>p<N> (a NIC with Proxmox's firewall bridge).
DEFAULT_GUEST_PORTS = ["vnet*", "tap*", "veth*", "fwpr*"]
GuestPortPattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,14}\*?$|^[A-Za-z0-9_.:-]{1,15}$")]


class Settings(Strict):
    # issue 18: false turns zonewall's filtering off cluster-wide (Proxmox's
    # datacenter `enable`); translations stay (docs/policy-guide.md, enable switches)
    firewall: bool = True
    default: DefaultPolicy = DefaultPolicy(in_="drop", out="accept")
    host_default: HostDefault = HostDefault()
    management: OptionalAddressRefs = []
    log: LogSettings = LogSettings()
    conntrack: ConntrackSettings = ConntrackSettings()
    # Bridge ports named like these are guests' even before a NIC of the policy is
    # known on them: their frames are dropped until it is (fails closed; docs/policy-guide.md).
    guest_ports: list[GuestPortPattern] = Field(default_factory=lambda: list(DEFAULT_GUEST_PORTS), max_length=64)
    protection: Protection = Protection()  # every node's, unless the host gives its own

    @field_validator("management", mode="before")
    @classmethod
    def _management(cls, value: Any) -> Any:
        return [] if value in (None, []) else value


class RateLimit(Strict):
    rate: Rate
    burst: int = Field(5, ge=0, le=1_000_000)
    per: Literal["rule", "source"] = "rule"


NicRef = Annotated[Union[Annotated[int, Field(ge=0, le=255)], Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")]], "nic"]
# an interface name, or a prefix with a trailing * (nft's interface wildcards)
IfPattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,15}$|^[A-Za-z0-9_.:-]{1,14}\*$")]


class Rule(Strict):
    """One rule, as written under zones/vms/global_rules/host_rules/networks.

    A rule with `security_group` (issue 18) is a reference: the group's rules run in
    its place (first match wins through them); it may carry only `nic`/`interface`,
    `enabled`, `comment` and `id`."""

    direction: Direction | None = None
    action: Action | None = None  # required unless security_group (checked below)
    from_: AddressRefs | None = Field(None, alias="from")
    to: AddressRefs | None = None
    service: list[Name] | None = None
    tcp: Ports | None = None
    udp: Ports | None = None
    sctp: Ports | None = None
    sport: Ports | None = None
    icmp: IcmpTypes | None = None
    icmpv6: IcmpTypes | None = None
    proto: Protocols | None = None
    family: Literal["ipv4", "ipv6"] | None = None
    limit: RateLimit | None = None
    packet_limit: PacketLimit | None = None
    log: bool | LogChoice = False  # true, a level (issue 18), or nolog
    schedule: Name | None = None
    comment: str | None = Field(None, max_length=1000)
    enabled: bool = True
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,47}$")] | None = None
    # issue 18
    security_group: Name | None = None  # a reference to security_groups.NAME
    nic: Annotated[list[NicRef], _nonempty_list("NIC")] | None = None  # VM rules: only on these NICs (index or name)
    interface: Annotated[list[IfPattern], _nonempty_list("interface")] | None = None  # host rules: only on these node interfaces

    @field_validator("service", mode="before")
    @classmethod
    def _service(cls, value: Any) -> Any:
        return _as_list(value) if value is not None else None

    @model_validator(mode="after")
    def _security_group_reference(self) -> Rule:
        """A reference names the group and where it applies, nothing it would match."""
        if self.security_group is None:
            if self.action is None:
                raise FieldProblem("missing required key `action`", "action", missing=True)
            return self
        allowed = {"security_group", "nic", "interface", "enabled", "comment", "id"}
        extra = [k for k in type(self).model_fields if k not in allowed and getattr(self, k) != type(self).model_fields[k].default]
        if extra:
            key = extra[0].rstrip("_")
            raise FieldProblem(f"`{key}` cannot be set on a security group reference (the group's rules say what they match; "
                               "a reference takes only nic, interface, enabled, comment and id)", key)
        return self

    @model_validator(mode="after")
    def _combination(self) -> Rule:
        protocol_keys = [k for k in ("tcp", "udp", "sctp", "icmp", "icmpv6", "proto") if getattr(self, k) is not None]
        if self.service is not None and (protocol_keys or self.sport is not None):
            raise FieldProblem(f"`service` cannot be combined with protocol keys ({', '.join(protocol_keys or ['sport'])}); write two rules", (protocol_keys or ["sport"])[0])
        if self.sport is not None and not any(getattr(self, k) is not None for k in ("tcp", "udp", "sctp")):
            raise FieldProblem("`sport` needs tcp, udp or sctp (source ports of which protocol?)", "sport")
        if self.limit is not None and self.action != "accept":
            raise FieldProblem("`limit` is only meaningful on an accept rule (over the rate, connections fall through)", "limit")
        if self.packet_limit is not None and self.action != "accept":
            raise FieldProblem("`packet_limit` is only meaningful on an accept rule (it limits the packets of the connections it accepts)", "packet_limit")
        if self.icmp is not None and self.family == "ipv6":
            only_v4 = [t for t in self.icmp if "ipv6" not in families_of(t)]
            if only_v4:
                raise FieldProblem(f"ICMP type {only_v4[0]} does not exist in IPv6 but the rule has family: ipv6", "icmp", self.icmp.index(only_v4[0]))
        if self.icmpv6 is not None and self.family == "ipv4":
            raise FieldProblem("`icmpv6` cannot match a rule with family: ipv4", "icmpv6")
        if self.icmpv6 is not None:
            not_v6 = [t for t in self.icmpv6 if "ipv6" not in families_of(t)]
            if not_v6:
                raise FieldProblem(f"{not_v6[0]!r} is not an ICMPv6 type or code", "icmpv6", self.icmpv6.index(not_v6[0]))
        return self


class Host(Strict):
    address: IPs
    uplink: IfName | None = None
    rules: list[Rule] = []
    protection: Protection | None = None  # replaces settings.protection on this node
    comment: str | None = None
    # issue 18: false: the node's own rules and default do not filter it (Proxmox host.fw `enable: 0`)
    firewall: bool = True
    log: LogDefaults | None = None  # logging of what host_default decides (Proxmox log_level_in/out)

    @field_validator("address")
    @classmethod
    def _address(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a host needs at least one address")
        return value


class Network(Strict):
    bridge: IfName
    subnets: Subnets = []
    gateway: IPs = []
    mode: Literal["bridged", "nat", "routed", "isolated"] = "bridged"
    isolated: bool = False
    rules: list[Rule] = []
    host_services: list[Name] = []
    filters: list[Name] = []  # guard filters of every NIC on the network, before the VM's own
    dhcp_servers: IPs = []  # the DHCP servers its guests may trust (allow-dhcp-server, learning: dhcp)
    tenant: Name | None = None  # a tenant's networks may overlap other tenants' (own conntrack zone)
    comment: str | None = None

    @model_validator(mode="after")
    def _gateway_in_subnet(self) -> Network:
        nets = [ipaddress.ip_network(s) for s in self.subnets]
        for index, gateway in enumerate(self.gateway):
            ip = ipaddress.ip_address(gateway)
            if not any(ip.version == n.version and ip in n for n in nets):
                raise FieldProblem(f"gateway {gateway} is not inside any of the network's subnets ({', '.join(self.subnets) or 'none'})", "gateway", index)
        for index, rule in enumerate(self.rules):
            if rule.direction is not None:
                raise FieldProblem("network rules have no direction (they are checked between two guests of the network)", "rules", index, "direction")
        return self


class Group(Strict):
    members: AddressRefs
    comment: str | None = None


class Service(Strict):
    tcp: Ports | None = None
    udp: Ports | None = None
    sctp: Ports | None = None
    icmp: IcmpTypes | None = None
    icmpv6: IcmpTypes | None = None
    proto: Protocols | None = None
    helper: str | None = None
    comment: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Service:
        if all(getattr(self, k) is None for k in ("tcp", "udp", "sctp", "icmp", "icmpv6", "proto")):
            raise ValueError("a service needs at least one of tcp, udp, sctp, icmp, icmpv6, proto")
        if self.helper is not None and self.helper not in CONNTRACK_HELPERS:
            raise FieldProblem(f"unknown conntrack helper {self.helper!r} (expected one of {', '.join(CONNTRACK_HELPERS)})", "helper")
        return self


class MacMatch(Strict):
    src: str | None = None
    dst: str | None = None


class ArpMatch(Strict):
    op: Literal["request", "reply"] | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    mac_src: str | None = None
    mac_dst: str | None = None


class FilterRule(Strict):
    direction: Literal["in", "out", "inout"] = "inout"
    action: Literal["accept", "drop", "reject", "return"]
    priority: int = Field(0, ge=-1000, le=1000)
    mac: MacMatch | None = None
    arp: ArpMatch | None = None
    ethertype: int | None = Field(None, ge=0, le=0xFFFF)
    from_: AddressRefs | None = Field(None, alias="from")
    to: AddressRefs | None = None
    tcp: Ports | None = None
    udp: Ports | None = None
    sport: Ports | None = None
    icmp: IcmpTypes | None = None
    proto: Protocols | None = None
    comment: str | None = Field(None, max_length=1000)


class Filter(Strict):
    include: list[Name] = []
    rules: list[FilterRule] = []
    comment: str | None = None


TIME_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Schedule(Strict):
    days: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    time: str = "00:00-24:00"
    timezone: str | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        found = TIME_WINDOW.match(str(value))
        if not found or (found.group(3) == "24" and found.group(4) != "00"):
            raise ValueError(f"{value!r} is not a time window (expected HH:MM-HH:MM, e.g. 08:00-18:00)")
        if found.group(1, 2) == found.group(3, 4):
            raise ValueError(f"time window {value!r} is empty")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (expected an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a schedule needs at least one day")
        return value


class Zone(Strict):
    default: DefaultPolicy | None = None
    rules: list[Rule] = []
    conntrack: ZoneConntrack | None = None
    comment: str | None = None


MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


class Nic(Strict):
    network: Name
    mac: Annotated[str, StringConstraints(pattern=MAC_PATTERN, to_lower=True)] | None = None
    ips: IPs = []
    tap: IfName | None = None
    filters: list[Name] = []
    learning: NicLearning = NicLearning()
    # issue 18: a name rules can scope to (`nic: net1`), and the NIC's enable switch
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:-]{0,14}$")] | None = None
    firewall: bool = True  # false: the NIC is not filtered (Proxmox's firewall=0)

    @field_validator("mac")
    @classmethod
    def _unicast(cls, value: str | None) -> str | None:
        if value is not None and int(value[:2], 16) & 1:
            raise ValueError(f"{value} is a multicast MAC address; a NIC needs a unicast one")
        return value


class VM(Strict):
    host: Name
    zone: Name | None = None
    default: DefaultPolicy | None = None
    nics: list[Nic]
    filters: list[Name] = []
    rules: list[Rule] = []
    comment: str | None = None
    # issue 18
    firewall: bool = True  # false: the guest is not filtered (Proxmox's guest `enable`)
    kind: Literal["vm", "container"] = "vm"  # a container's NICs are veth ports (Proxmox CT, LXC)
    log: LogDefaults | None = None  # logging of what its default decides (Proxmox log_level_in/out)

    @field_validator("nics")
    @classmethod
    def _nics(cls, value: list[Nic]) -> list[Nic]:
        if not value:
            raise ValueError("a VM needs at least one NIC")
        return value


class ListenSpec(Strict):
    address: IPs = []
    tcp: Annotated[int, Field(ge=1, le=65535)] | None = None
    udp: Annotated[int, Field(ge=1, le=65535)] | None = None

    @model_validator(mode="after")
    def _one_port(self) -> ListenSpec:
        if (self.tcp is None) == (self.udp is None):
            raise FieldProblem("listen needs exactly one of tcp or udp", *(("udp",) if self.tcp is not None else ()))
        return self


class DnatTarget(Strict):
    vm: Name
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    address: str | None = None


class Masquerade(Strict):
    type: Literal["masquerade"]
    network: Name
    family: Literal["ipv4", "ipv6"] = "ipv4"
    comment: str | None = None


class Snat(Strict):
    type: Literal["snat"]
    from_: AddressRefs = Field(alias="from")
    to: IPs
    host: Name | None = None
    comment: str | None = None


class Dnat(Strict):
    type: Literal["dnat"]
    host: Name
    listen: ListenSpec
    to: DnatTarget
    open: bool = True
    comment: str | None = None


NatEntry = Annotated[Masquerade | Snat | Dnat, Field(discriminator="type")]


def group_bodies(value: Any) -> Any:
    """A group is a list of address refs, or {members: [...], comment: ...}."""
    if isinstance(value, dict):
        return {name: ({"members": body} if isinstance(body, (list, str)) else body) for name, body in value.items()}
    return value


class SecurityGroup(Strict):
    """Rules kept once and referenced from VM, zone, global and host rule lists
    (`{security_group: NAME}`), like Proxmox VE's security groups (issue 18)."""

    rules: list[Rule] = []
    comment: str | None = None


class PolicyDocument(Strict):
    version: Literal[1]
    settings: Settings = Settings()
    hosts: dict[Name, Host] = {}
    networks: dict[Name, Network] = {}
    groups: Annotated[dict[Name, Group], BeforeValidator(group_bodies)] = {}
    services: dict[Name, Service] = {}
    filters: dict[Name, Filter] = {}
    schedules: dict[Name, Schedule] = {}
    zones: dict[Name, Zone] = {}
    global_rules: list[Rule] = []
    host_rules: list[Rule] = []
    vms: dict[Name, VM] = {}
    nat: list[NatEntry] = []
    security_groups: dict[Name, SecurityGroup] = {}  # issue 18
