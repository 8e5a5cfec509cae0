"""Names shared by the compiler, the dataplane and the lab: tables, chains, sets, taps; built
here and parsed back here (chain_scope, level_of). Log prefixes: logprefix.py."""

from __future__ import annotations

import hashlib

from ..policy.model import Nic
from ..policy.resolve import RuleRef
from . import logprefix

TABLE = "zonewall"  # one table per family: inet (stateful filtering) and bridge (guards, marks)
LOG_LIMIT = "log-cap"  # named limit object: settings.log.rate per node


def tap_name(vm: str, index: int, nic: Nic | None = None) -> str:
    """The node-side port of a guest NIC: the NIC's `tap:`, else `<vm>i<index>`.

    Proxmox names taps `tap<vmid>i<n>`; zonewall's default keeps the VM's name when
    it fits the kernel's 15 characters, else a short hash keeps it unique.
    """
    if nic is not None and nic.tap:
        return nic.tap
    suffix = f"i{index}"
    if len(vm) + len(suffix) <= 15:
        return vm + suffix
    digest = hashlib.sha1(vm.encode()).hexdigest()[:5]
    return vm[: 15 - len(suffix) - 5] + digest + suffix


def port_object(prefix: str, tap: str, suffix: str = "") -> str:
    """The name of an nft chain or set that belongs to one guest port.

    Interface names may hold `:`, nft identifiers may not, and nft 1.0.6 cannot quote a
    chain's name in its text syntax; `/` is allowed in identifiers and never in an
    interface name, so the swap keeps names unique (and `compile --format nft` loadable).
    """
    return f"{prefix}-{tap.replace(':', '/')}" + (f"-{suffix}" if suffix else "")


def ref_set_name(kind: str, name: str, family: str) -> str:
    """Named set for a `kind:name` address reference, one per family."""
    short = {"group": "g", "zone": "z", "vm": "v", "network": "n", "host": "h"}[kind]
    return f"{short}-{name}-{'v4' if family == 'ipv4' else 'v6'}"


def vm_chain(vm: str, direction: str) -> str:
    return f"vm-{vm}-{direction}"


def network_chain(network: str, side: str = "") -> str:
    """`net-NET`: a network's own rules; `net-NET-src|dst`: the network check of a NIC."""
    return f"net-{network}" + (f"-{side}" if side else "")


def level_chain(level: str, owner: str, direction: str) -> str:
    if level == "global":
        return f"global-{direction}"
    if level == "host":
        return f"host-{owner}-{direction}" if owner else f"hostrules-{direction}"
    return f"{level}-{owner}-{direction}"


def group_chain(group: str, context: str, direction: str) -> str:
    """The chain of a security group (issue 18): once per node, per context (guest
    chains go on after an accept, node chains end) and direction."""
    return f"sg-{group}-{context}-{direction}"


def rule_token(ref: RuleRef, twins: int = 0) -> str:
    """A short token for a rule's own kernel objects (its log chain, rate-limit
    meters, packet budget), the same while the rule itself is.

    A rule with an explicit id is named by it. A derived id (`file:line`) moves
    whenever a line is added above the rule, and the objects would move with it: a
    per-source meter's state lost, and every chain jumping to a log chain rewritten
    (most of a node's chains for one rule line added). Such a rule is named by its
    content and `twins`, how many rules before it in its owner's list are the same
    (no two rules of an owner share a token). An explicit id cannot contain "/", so
    the two kinds never meet."""
    what = ref.id if ref.rule.id is not None else f"rule/{twins}/{ref.rule.model_dump_json()}"
    return hashlib.sha1(f"{ref.level}/{ref.owner}/{what}".encode()).hexdigest()[:10]


def rule_objects_comment(what: str, ref: RuleRef) -> str:
    """The comment of a rule's own kernel object (a meter set): the rule by its
    explicit id, else by its owner. Not by a derived id: a set whose comment changes
    is a set redefined (deleted and made again, its state lost), and a derived id
    moves with every line added above the rule (`rule_token`)."""
    if ref.rule.id is not None:
        return f"{what} of rule {ref.id}"
    return f"{what} of a {ref.level} rule" + (f" of {ref.owner}" if ref.owner else "")


def log_prefix(node: str, scope: str, direction: str, rule_id: str, verdict: str, level: str | None = None) -> str:
    """The NFLOG prefix of a log statement (compiler/logprefix.py has the format)."""
    return logprefix.build(node, scope, direction, rule_id, verdict, level)


COMMENT_MAX_BYTES = 128  # libnftables refuses longer rule comments


def rule_comment(rule_id: str, comment: str | None) -> str:
    """`id: comment`, cut to what the kernel stores (never inside a UTF-8 character).

    The id comes first: readback, counters and operators find rules by it.
    """
    text = f"{rule_id}: {comment}" if comment else rule_id
    data = text.encode()
    if len(data) <= COMMENT_MAX_BYTES:
        return text
    return data[: COMMENT_MAX_BYTES - 3].decode(errors="ignore") + "..."


# The names above read back (rule counters, NFLOG records), beside their builders so that
# the two cannot drift apart.


def level_of(scope: str | None, rule_id: str | None) -> str | None:
    """The level of a rule from its NFLOG/counter scope and id."""
    if scope is None:
        return None
    if rule_id is not None and (rule_id.startswith(("default-", "host-default-")) or rule_id.endswith("-default")):
        return "default"
    if scope.startswith("guard:"):
        return "guard"
    if scope.startswith("zone:"):
        return "zone"
    if scope.startswith("net:"):
        return "network"
    if scope.startswith("sg:"):
        return "security_group"
    if scope in ("global", "host"):
        return scope
    return "vm"


def chain_scope(family: str, chain: str) -> tuple[str, str] | None:
    """(scope, direction) of a chain of zonewall's tables; None for dispatch/base chains."""
    if family == "bridge":
        return None
    for direction in ("in", "out"):
        suffix = f"-{direction}"
        if not chain.endswith(suffix):
            continue
        stem = chain[: -len(suffix)]
        if stem.startswith("vm-"):
            return stem[3:], direction
        if stem.startswith("zone-"):
            return f"zone:{stem[5:]}", direction
        if stem.startswith("sg-"):  # a security group's chain (issue 18): sg-NAME-guest|host-DIR
            return f"sg:{stem[3:].rsplit('-', 1)[0]}", direction
        if stem == "global":
            return "global", direction
        if stem.startswith("host") :
            return "host", direction
    if chain.startswith("net-"):
        return f"net:{chain[4:]}", "net"
    if chain == "input":
        return "host", "in"
    if chain == "output":
        return "host", "out"
    return None
