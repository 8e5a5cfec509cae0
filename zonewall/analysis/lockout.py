"""Would a node's ruleset cut the operator off from its ssh?

The compiler always accepts `settings.management` on tcp 22 first, so a lockout can
only happen when no management addresses are set: then the host rules and
`host_default` alone decide who reaches ssh. This evaluates them exactly over source
addresses (first match wins), treating scheduled rules as absent (the worst case).
"""

from __future__ import annotations

from ..compiler.plan.rules import ProtocolKeys
from ..policy.addresses import AddressSet
from ..policy.resolve import Policy

SSH_PORT = 22


def _matches_ssh(policy: Policy, keys: ProtocolKeys) -> bool:
    if keys.any_protocol:
        return True
    for port in keys.tcp:
        low, _, high = port.partition("-")
        if int(low) <= SSH_PORT <= int(high or low):
            return not keys.sport  # a source-port condition may not hold for an ssh client
    return False


def ssh_reachable_from(policy: Policy, node: str) -> AddressSet:
    """The source addresses that may open tcp/22 on `node` under the policy."""
    management = policy.address_set(policy.doc.settings.management) if policy.doc.settings.management else AddressSet()
    node_addresses = policy.address_set([f"host:{node}"])
    remaining = AddressSet.everything().minus(management)
    allowed = management
    for ref in policy.rules_of("host", "") + policy.rules_of("host", node):
        rule = ref.rule
        if rule.direction != "in" or not rule.enabled or rule.schedule is not None:
            continue
        if not _matches_ssh(policy, ProtocolKeys.of(policy, rule)):
            continue
        if rule.to is not None and policy.address_set(rule.to).intersect(node_addresses).is_empty():
            continue
        matched = remaining.intersect(policy.address_set(rule.from_))
        if rule.family is not None:
            matched = matched.only(rule.family)
        if rule.action == "accept":
            allowed = allowed.union(matched)
        remaining = remaining.minus(matched)
    if policy.doc.settings.host_default.in_ == "accept":
        allowed = allowed.union(remaining)
    return allowed


def lockout_problem(policy: Policy, node: str) -> str | None:
    """A reason to refuse the apply, or None when someone can still reach ssh."""
    if not ssh_reachable_from(policy, node).is_empty():
        return None
    return (
        f"this ruleset would cut every address off from ssh on {node}: settings.management is empty "
        f"and no host rule accepts tcp/22 while host_default.in is {policy.doc.settings.host_default.in_}. "
        "Add your admin network to settings.management, or apply with --force."
    )
