"""`packet_limit:` in nftables: a packet budget over a rule's connections.

A rule's `limit` counts new connections, which is all the rule ever sees: the
established packets of a connection are accepted before any rule (a one-process
ping flood is one connection). A packet-limited accept therefore marks the
connections it accepts: the connection mark's low 24 bits name the rule
(policy/dataplane_keys.packet_limit_mark, the same on every node and revision, so a
migrated connection keeps its budget), and the first packet and every later one
of the opening direction go through the rule's budget:

    vm/zone/... chain:  <matches> counter ct mark set ID goto plim-new-TOKEN
    plim-new-TOKEN:     jump plim-TOKEN; <the rule's verdict>
    plim-TOKEN:         within the rate: return; else counter drop
    forward/input/output, before the established accept (only when used):
        ct state established ct direction original ct mark & 0xffffff vmap @packet-limits

`per: source` keeps one budget per source address (a dynamic set, compiler/meters.py).
The last packet-limited rule that accepted a connection's first packet names it (the
receiver's `in` rule over the sender's `out` rule).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..policy.addresses import FAMILIES
from ..policy.dataplane_keys import PACKET_LIMIT_MARK_BITS, packet_limit_mark
from ..policy.resolve import RuleRef
from . import nftexpr as x
from .ir import Chain, NamedSet, Rule
from .meters import per_source_meter
from .naming import rule_objects_comment
from .plan.vocabulary import Step
from .stmt import Statement

if TYPE_CHECKING:
    from .levels import CompileContext

PACKET_LIMITS_MAP = "packet-limits"


def packet_limited_verdict(ctx: CompileContext, step: Step, verdict: list[Statement]) -> list[Statement]:
    """The statements ending a packet-limited accept (in place of `verdict`)."""
    ref: RuleRef = step.ref  # type: ignore[assignment]
    limit = step.packet_limit
    assert limit is not None and step.origin is not None
    token = ctx.rule_token(ref)
    budget = f"plim-{token}"
    if budget not in ctx.extra_chains:
        if limit.per_source:
            within = [Rule((x.match(x.meta("nfproto"), family), _within(ctx, token, family, step), x.ret()), ref.id) for family in FAMILIES]
        else:
            within = [Rule((x.limit_rate(limit.rate, limit.per, limit.burst), x.ret()), ref.id)]
        ctx.extra_chains[budget] = Chain(budget, (*within, Rule((x.counter(), x.drop()), f"{ref.id}: over its packet rate")), comment=f"packet rate of rule {ref.id}")
        ctx.packet_limits[packet_limit_mark(*step.origin)] = budget
    opened = f"plim-new-{token}"
    ctx.extra_chains[opened] = Chain(opened, (Rule((x.jump(budget),), ref.id), Rule(tuple(verdict), ref.id)))
    return [x.set_ct_mark_bits(PACKET_LIMIT_MARK_BITS, packet_limit_mark(*step.origin)), x.goto(opened)]


def _within(ctx: CompileContext, token: str, family: str, step: Step) -> Statement:
    limit = step.packet_limit
    assert limit is not None
    ref: RuleRef = step.ref  # type: ignore[assignment]
    within = replace(limit, over=False)  # the budget's own test: within the rate
    return per_source_meter(ctx.meters, f"plim-{token}", family, within, rule_objects_comment("packet rate", ref))  # type: ignore[arg-type]


def established_rules(ctx: CompileContext) -> list[Rule]:
    """The PACKET_LIMITS stage: the later packets of packet-limited connections go
    through their rule's budget (none when the node has no such rule: no cost)."""
    if not ctx.packet_limits:
        return []
    key = x.masked(x.ct("mark"), PACKET_LIMIT_MARK_BITS)
    return [Rule((x.match(x.ct("state"), "established", "in"), x.match(x.ct("direction"), "original"), x.vmap(key, PACKET_LIMITS_MAP)), "packet limits")]


def packet_limits_map(ctx: CompileContext) -> NamedSet | None:
    if not ctx.packet_limits:
        return None
    elements = tuple(sorted((mark, x.jump_value(chain)) for mark, chain in ctx.packet_limits.items()))
    return NamedSet(PACKET_LIMITS_MAP, "mark", elements, map="verdict", comment="connection mark -> its rule's packet budget")
