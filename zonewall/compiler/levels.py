"""Compile policy rules into chain rules: verdicts, rate limits, logging, schedules.

A rule's verdict depends on the chain it lands in. In a VM's own chain an accept
simply returns to the dispatcher (the next stage runs). In a chain shared by many VMs
(global, zone) an accept sets the direction's accept bit in the packet mark and
returns; the VM chain that jumped there sees the bit and returns too. Drops and
rejects are final everywhere. Logged rules go through a tiny per-rule chain so the
log statement can carry the node-wide log cap without the cap deciding the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..policy.addresses import FAMILIES, Family
from ..policy.model import parse_rate
from ..policy.resolve import Policy, RuleRef
from . import nftexpr as x
from .ir import Chain, NamedSet, Rule
from .matches import IP_PROTO, SetRegistry, rule_matches
from .naming import LOG_LIMIT, log_prefix, rule_comment, rule_token
from .schedule import schedule_alternatives

Json = dict[str, Any]
AcceptMode = Literal["return", "mark-in", "mark-out", "accept"]
REJECT_CHAIN = "rejected"  # `reject` is an nft keyword: a chain of that name cannot be written in nft text
RATE_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass
class CompileContext:
    policy: Policy
    node: str
    registry: SetRegistry = field(default_factory=SetRegistry)
    extra_chains: dict[str, Chain] = field(default_factory=dict)  # per-rule log chains
    meters: dict[str, NamedSet] = field(default_factory=dict)  # per-source rate limit sets
    matches: dict[tuple[object, ...], list[tuple[Family | None, list[Json]]]] = field(default_factory=dict)  # by match keys
    now: datetime | None = None  # schedules convert to UTC with the offset in force now
    timezone: str | None = None  # the node's timezone, for schedules that name none

    @property
    def log_group(self) -> int:
        return self.policy.doc.settings.log.group


def verdict_statements(action: str, accept_mode: AcceptMode) -> list[Json]:
    if action == "drop":
        return [x.drop()]
    if action == "reject":
        return [x.jump(REJECT_CHAIN)]
    if accept_mode == "return":
        return [x.ret()]
    if accept_mode == "accept":
        return [x.accept()]
    bit = x.IN_ACCEPT_BIT if accept_mode == "mark-in" else x.OUT_ACCEPT_BIT
    return [x.or_mark(bit), x.ret()]


def reject_chain() -> Chain:
    """TCP gets a reset; other protocols an ICMP error where the node can route one."""
    return Chain(
        REJECT_CHAIN,
        (
            Rule((x.match(x.meta("l4proto"), "tcp"), x.reject_tcp_reset()), "reject"),
            Rule((x.reject_icmpx("admin-prohibited"),), "reject"),
        ),
    )


def _rate_statements(ctx: CompileContext, ref: RuleRef, family: Family) -> list[Json]:
    """`limit:` as statements placed before the verdict: over the rate, no match."""
    limit = ref.rule.limit
    if limit is None:
        return []
    rate, per = parse_rate(limit.rate)
    new_only = x.match(x.ct("state"), "new", "in")
    if limit.per == "rule":
        return [new_only, x.limit_rate(rate, per, limit.burst)]
    # per source: one token bucket per source address, in a dynamic set whose
    # entries expire once a source has been quiet for a refill period.
    name = f"rl-{rule_token(ref)}-{'v4' if family == 'ipv4' else 'v6'}"
    timeout = max(60, RATE_SECONDS[per] * max(1, limit.burst) // max(1, rate) + RATE_SECONDS[per])
    ctx.meters[name] = NamedSet(
        name=name,
        type="ipv4_addr" if family == "ipv4" else "ipv6_addr",
        flags=("timeout",),  # nft 1.0.6 JSON rejects "dynamic"; `update` works with timeout
        timeout=timeout,
        size=65535,
        comment=f"rate limit of rule {ref.id}",
    )
    return [new_only, x.meter_update(name, x.payload(IP_PROTO[family], "saddr"), rate, per, limit.burst)]


def compile_rule(ctx: CompileContext, ref: RuleRef, accept_mode: AcceptMode, scope: str, direction: str) -> list[Rule]:
    """A policy rule as chain rules (one per family/protocol alternative)."""
    rule = ref.rule
    if not rule.enabled:
        return []
    timings = schedule_alternatives(ctx.policy.doc.schedules[rule.schedule], ctx.now, ctx.timezone) if rule.schedule else [[]]
    verdict = verdict_statements(rule.action, accept_mode)
    if rule.log:
        chain_name = f"log-{rule_token(ref)}"
        prefix = log_prefix(ctx.node, scope, direction, ref.id, rule.action)
        ctx.extra_chains[chain_name] = Chain(
            chain_name,
            (Rule((x.limit_ref(LOG_LIMIT), x.log_group(ctx.log_group, prefix)), ref.id), Rule(tuple(verdict), ref.id)),
        )
        verdict = [x.goto(chain_name)]
    out: list[Rule] = []
    for family, statements in _matches(ctx, rule):
        variants: list[tuple[Family, list[Json]]]
        if rule.limit is not None and rule.limit.per == "source" and family is None:
            # the bucket is keyed by the source address, whose type is per family
            variants = [(f, [x.match(x.meta("nfproto"), f)] + statements) for f in FAMILIES]
        else:
            variants = [(family or "ipv4", statements)]
        for bucket_family, body in variants:
            for timing in timings:
                full = body + timing + _rate_statements(ctx, ref, bucket_family) + [x.counter()] + verdict
                out.append(Rule(tuple(full), rule_comment(ref.id, rule.comment)))
    return out


MATCH_KEYS = ("from_", "to", "service", "tcp", "udp", "sctp", "sport", "icmp", "icmpv6", "proto", "family")


def _matches(ctx: CompileContext, rule: Any) -> list[tuple[Family | None, list[Json]]]:
    """rule_matches, computed once per distinct set of match keys in a compile.

    Many guests carry the same rules (templates): their matches are identical, and
    the named sets they use are already registered by the first computation.
    """
    key = tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(rule, k) for k in MATCH_KEYS))
    found = ctx.matches.get(key)
    if found is None:
        found = ctx.matches[key] = rule_matches(ctx.policy, ctx.registry, rule)
    return found


def default_rules(ctx: CompileContext, action: str, scope: str, direction: str, accept_mode: AcceptMode, rule_id: str) -> list[Rule]:
    """The end of an evaluation: the default verdict, logged when settings.log.denied."""
    out: list[Rule] = []
    if action != "accept" and ctx.policy.doc.settings.log.denied:
        prefix = log_prefix(ctx.node, scope, direction, rule_id, action)
        out.append(Rule((x.limit_ref(LOG_LIMIT), x.log_group(ctx.log_group, prefix)), rule_id))
    out.append(Rule((x.counter(), *verdict_statements(action, accept_mode)), rule_id))
    return out
