"""Names shared by the compiler, the dataplane and the lab: tables, chains, sets, taps."""

from __future__ import annotations

import hashlib

from ..policy.model import Nic
from . import logprefix
from ..policy.resolve import RuleRef

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


def rule_token(ref: RuleRef) -> str:
    """A short stable token for per-rule objects (rate-limit sets, log chains)."""
    return hashlib.sha1(f"{ref.level}/{ref.owner}/{ref.id}".encode()).hexdigest()[:10]


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
