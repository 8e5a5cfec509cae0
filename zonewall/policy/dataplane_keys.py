"""Policy keys of issue 18's dataplane constructs (zonewall's additions to the spec).

Kept apart from model.py so each construct is one clause there:

* `Protection` (`settings.protection`, a host's `protection`): Proxmox's host
  options `tcpflags`, `nosmurfs`, `protection_synflood`, for the node's input and,
  with `guests: true`, for new connections of its guests;
* `PacketLimit` (a rule's `packet_limit`): a packet rate over every packet of the
  connections the rule accepts (a rule's `limit` counts new connections only);
* `NicLearning` (a NIC's `learning`): libvirt's CTRL_IP_LEARNING per family.

What each one means on the packet path is the plan's (compiler/plan/protection.py,
plan/rules.py, compiler/learning.py); here only what a key may hold.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Proxmox's defaults for protection_synflood_rate / _burst (pve-firewall, proxmox-firewall)
SYNFLOOD_RATE, SYNFLOOD_BURST = 200, 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _per_second(value: Any, what: str) -> int:
    """`200`, `200/second` -> 200 (a rate per source is per second, as Proxmox's)."""
    from .model import parse_rate

    if isinstance(value, int) and not isinstance(value, bool):
        rate, per = value, "second"
    elif isinstance(value, str):
        rate, per = parse_rate(value)
    else:
        raise ValueError(f"{what} {value!r} is not a rate (expected N/second, or a number of packets per second)")
    if per != "second" or not 1 <= rate <= 1_000_000:
        raise ValueError(f"{what} {value!r}: expected 1-1000000 per second")
    return rate


class SynFlood(_Strict):
    """New TCP connections (SYNs) per source and second, with a burst; over it the
    SYN is dropped. Proxmox's defaults: 200/second, burst 1000."""

    rate: int = SYNFLOOD_RATE
    burst: int = Field(SYNFLOOD_BURST, ge=1, le=1_000_000)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> int:
        return _per_second(value, "synflood rate")


class Protection(_Strict):
    """Drops before any rule, for new connections (established ones never meet it).

    Default: all off (a policy without the key behaves as before)."""

    tcpflags: bool = False  # invalid TCP flag combinations (Proxmox's tcpflags)
    nosmurfs: bool = False  # packets from a broadcast or multicast source (Proxmox's nosmurfs)
    synflood: SynFlood | None = None  # a SYN rate per source (Proxmox's protection_synflood)
    guests: bool = False  # also for the node's guests (new connections to, from and between them)

    @field_validator("synflood", mode="before")
    @classmethod
    def _synflood(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @property
    def enabled(self) -> bool:
        return self.tcpflags or self.nosmurfs or self.synflood is not None


class PacketLimit(_Strict):
    """`packet_limit` on an accept rule: every packet of the connections it accepts
    (the direction that opened them) counts; packets over the rate are dropped, the
    connection stays."""

    rate: str
    burst: int = Field(5, ge=1, le=1_000_000)
    per: Literal["rule", "source"] = "rule"

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> str:
        from .model import parse_rate

        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a rate (expected e.g. 100/second)")
        parse_rate(value)
        return value.replace(" ", "")


LearningIPv4 = Literal["any", "dhcp", "none"]
LearningIPv6 = Literal["any", "none"]


class NicLearning(_Strict):
    """How a NIC without addresses of a family gets one (libvirt's CTRL_IP_LEARNING).

    ipv4: `any` (the first address it uses: the spec's learning mode, the default),
    `dhcp` (the address a trusted DHCP server of its network acks), `none` (never).
    ipv6: `none` (the default: only its link-local address) or `any`. A string is
    the IPv4 mode, as libvirt's parameter is."""

    ipv4: LearningIPv4 = "any"
    ipv6: LearningIPv6 = "none"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("any", "dhcp", "none"):
                raise ValueError(f"learning {value!r}: expected any, dhcp or none (or {{ipv4: ..., ipv6: ...}})")
            return {"ipv4": value}
        return value


DEFAULT_LEARNING = NicLearning()


# -- numbers the kernel carries for these constructs (stable across nodes and revisions)

PACKET_LIMIT_MARK_BITS = 0x00FFFFFF  # the connection mark's low 24 bits: the packet-limited rule


def packet_limit_mark(level: str, owner: str, rule_id: str) -> int:
    """The connection mark naming a packet-limited rule: a hash of where the rule
    is, so a connection keeps its rule across revisions and nodes (a migrated
    connection carries its mark). Never 0 (no packet limit); collisions are
    refused by the checker."""
    import zlib

    return zlib.crc32(f"{level}/{owner}/{rule_id}".encode()) % PACKET_LIMIT_MARK_BITS + 1


def tenant_zone(tenant: str) -> int:
    """The conntrack zone of a tenant's networks: a hash of its name (stable, so a
    revision that adds a tenant moves nobody's connections), never 0 (the default
    zone, networks without a tenant). Collisions are refused by the checker."""
    import zlib

    return zlib.crc32(tenant.encode()) % 65535 + 1
