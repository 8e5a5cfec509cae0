"""ICMP and ICMPv6 codes: the names a rule may use for a type *and* a code.

A rule's `icmp:`/`icmpv6:` items are type names or numbers (policy/builtins.py), and,
with this module, a type and a code:

* a name that is a type and a code, as iptables and Proxmox VE spell them
  (`host-unreachable`, `port-unreachable`, `fragmentation-needed`, ...), or as nft
  lists them (`admin-prohibited`, `frag-needed`, ...);
* `TYPE/CODE`: a type name or number and a code number (`destination-unreachable/4`,
  `3/1`, `echo-request/0`).

As with type names, a name that exists in both families (`port-unreachable`: ICMP
3/3, ICMPv6 1/4) matches in both, and one that exists in one family only makes the
rule that family's. Names are read case-insensitively (iptables writes
`TOS-host-unreachable`).
"""

from __future__ import annotations

from .builtins import ICMP_V4_TYPES, ICMP_V6_TYPES

# (type, code), iptables' names (which pve-firewall takes) first, then nft's where they differ
ICMP_V4_CODES: dict[str, tuple[int, int]] = {
    "network-unreachable": (3, 0),
    "host-unreachable": (3, 1),
    "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3),
    "fragmentation-needed": (3, 4),
    "source-route-failed": (3, 5),
    "network-unknown": (3, 6),
    "host-unknown": (3, 7),
    "network-prohibited": (3, 9),
    "host-prohibited": (3, 10),
    "tos-network-unreachable": (3, 11),
    "tos-host-unreachable": (3, 12),
    "communication-prohibited": (3, 13),
    "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15),
    "network-redirect": (5, 0),
    "host-redirect": (5, 1),
    "tos-network-redirect": (5, 2),
    "tos-host-redirect": (5, 3),
    "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1),
    "ip-header-bad": (12, 0),
    "required-option-missing": (12, 1),
    # nft's spellings
    "net-unreachable": (3, 0),
    "prot-unreachable": (3, 2),
    "frag-needed": (3, 4),
    "net-prohibited": (3, 9),
    "admin-prohibited": (3, 13),
}
ICMP_V6_CODES: dict[str, tuple[int, int]] = {
    "no-route": (1, 0),
    "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2),
    "address-unreachable": (1, 3),
    "port-unreachable": (1, 4),
    "failed-policy": (1, 5),
    "reject-route": (1, 6),
    "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1),
    "bad-header": (4, 0),
    "unknown-header-type": (4, 1),
    "unknown-option": (4, 2),
    # nft's spellings
    "admin-prohibited": (1, 1),
    "addr-unreachable": (1, 3),
    "policy-fail": (1, 5),
}
# What nft calls a code (`icmp code host-unreachable`): the label a rendering shows
NFT_CODE_NAMES: dict[str, dict[tuple[int, int], str]] = {
    "ipv4": {(3, 0): "net-unreachable", (3, 1): "host-unreachable", (3, 2): "prot-unreachable", (3, 3): "port-unreachable",
             (3, 4): "frag-needed", (3, 9): "net-prohibited", (3, 10): "host-prohibited", (3, 13): "admin-prohibited"},
    "ipv6": {(1, 0): "no-route", (1, 1): "admin-prohibited", (1, 3): "addr-unreachable", (1, 4): "port-unreachable",
             (1, 5): "policy-fail", (1, 6): "reject-route"},
}
CODES: dict[str, dict[str, tuple[int, int]]] = {"ipv4": ICMP_V4_CODES, "ipv6": ICMP_V6_CODES}
TYPES: dict[str, dict[str, int]] = {"ipv4": ICMP_V4_TYPES, "ipv6": ICMP_V6_TYPES}


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) <= 255 else None


def is_coded(item: str) -> bool:
    """Whether an `icmp:` item names a code (not only a type)."""
    return "/" in item or item.lower() in ICMP_V4_CODES or item.lower() in ICMP_V6_CODES


def valid_coded(item: str) -> bool:
    """A well-formed code item: a code name, or TYPE/CODE with a known type."""
    if "/" not in item:
        return item.lower() in ICMP_V4_CODES or item.lower() in ICMP_V6_CODES
    kind, _, code = item.partition("/")
    known_type = _number(kind) is not None or kind in ICMP_V4_TYPES or kind in ICMP_V6_TYPES
    return known_type and _number(code) is not None


def type_and_code(item: str, family: str) -> tuple[int, int] | None:
    """(type, code) of a code item in `family`; None where it does not exist there."""
    if "/" not in item:
        return CODES[family].get(item.lower())
    kind, _, code = item.partition("/")
    number = _number(kind)
    if number is None:
        number = TYPES[family].get(kind)
    return None if number is None else (number, int(code))


def code_label(family: str, type_number: int, code: int) -> str | int:
    """What nft shows for a code: its name where nft has one, else the number."""
    return NFT_CODE_NAMES[family].get((type_number, code), code)


def describe(family: str, type_number: int, code: int) -> str:
    """`destination-unreachable/host-unreachable`, `echo-request/1`, `42/3`."""
    type_name = next((name for name, value in TYPES[family].items() if value == type_number), str(type_number))
    code_name = next((name for name, value in CODES[family].items() if value == (type_number, code)), str(code))
    return f"{type_name}/{code_name}"


def families_of(item: str) -> set[str]:
    """The families an `icmp:` item exists in (`any` and numbers: both)."""
    if item == "any" or item.isdigit():
        return {"ipv4", "ipv6"}
    if is_coded(item):
        return {family for family in ("ipv4", "ipv6") if type_and_code(item, family) is not None}
    return {family for family in ("ipv4", "ipv6") if item in TYPES[family]}
