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
from ..policy.resolve import ELEMENTS_MEMO, Policy, RuleRef
from . import nftexpr as x
from .ir import Chain, NamedSet, Rule
from .matches import IP_PROTO, SetRegistry, match_statements
from .meters import per_source_meter
from .naming import LOG_LIMIT, group_chain, log_prefix, rule_comment, rule_objects_comment, rule_token
from .nics import LocalNic, local_nics
from .packet_limits import packet_limited_verdict
from .plan import Plan
from .plan.groups import GroupCall
from .plan.vocabulary import Scope, Step
from .schedule import time_alternatives
from .stmt import Statement

AcceptMode = Literal["return", "mark-in", "mark-out", "accept"]
REJECT_CHAIN = "rejected"  # `reject` is an nft keyword: a chain of that name cannot be written in nft text


@dataclass
class CompileContext:
    policy: Policy
    node: str
    registry: SetRegistry = field(default_factory=SetRegistry)
    extra_chains: dict[str, Chain] = field(default_factory=dict)  # per-rule log chains
    meters: dict[str, NamedSet] = field(default_factory=dict)  # per-source rate limit sets
    packet_limits: dict[int, str] = field(default_factory=dict)  # connection mark -> its packet budget chain
    matches: dict[int, tuple[object, list[tuple[Family | None, list[Statement]]]]] = field(default_factory=dict)  # by plan match tuple
    now: datetime | None = None  # schedules convert to UTC with the offset in force now
    timezone: str | None = None  # the node's timezone, for schedules that name none
    plan: Plan = None  # type: ignore[assignment]  # built from policy, now, timezone
    _nics: dict[tuple[str, int], LocalNic] | None = None

    def __post_init__(self) -> None:
        if self.plan is None:
            self.plan = Plan(self.policy, now=self.now, timezone=self.timezone)
        self.registry.memo = self.policy.__dict__.get(ELEMENTS_MEMO, self.registry.memo)  # kept with the policy, if it keeps it (Policy.keep_compile_memos)

    def rule_token(self, ref: RuleRef) -> str:
        """naming.rule_token of `ref`, with its twins among its owner's rules."""
        if ref.rule.id is not None:
            return rule_token(ref)
        earlier = self.policy.rules_of(ref.level, ref.owner)[: ref.index]
        return rule_token(ref, sum(1 for other in earlier if other.rule == ref.rule))

    @property
    def log_group(self) -> int:
        return self.policy.doc.settings.log.group

    @property
    def log_level(self) -> str:
        return self.policy.doc.settings.log.level

    def nic(self, vm: str, index: int) -> LocalNic | None:
        """A guest NIC of this node (for rules scoped to NICs)."""
        if self._nics is None:
            self._nics = {(n.vm, n.nic_index): n for n in local_nics(self.policy, self.node)}
        return self._nics.get((vm, index))


def verdict_statements(action: str, accept_mode: AcceptMode) -> list[Statement]:
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


def _rate_statements(ctx: CompileContext, step: Step, family: Family) -> list[Statement]:
    """`limit:` as statements placed before the verdict: over the rate, no match."""
    limit = step.limit
    if limit is None:
        return []
    new_only = x.match(x.ct("state"), "new", "in")
    if not limit.per_source:
        return [new_only, x.limit_rate(limit.rate, limit.per, limit.burst)]
    ref: RuleRef = step.ref  # type: ignore[assignment]
    return [new_only, per_source_meter(ctx.meters, f"rl-{ctx.rule_token(ref)}", family, limit, rule_objects_comment("rate limit", ref))]


def render_step(ctx: CompileContext, step: Step, accept_mode: AcceptMode, scope: str, direction: str) -> list[Rule]:
    """A plan step of a policy rule as chain rules (one per family/protocol
    alternative and time piece)."""
    ref: RuleRef = step.ref  # type: ignore[assignment]
    timings = time_alternatives(step.time)
    verdict = verdict_statements(step.action, accept_mode)
    if step.packet_limit is not None:
        verdict = packet_limited_verdict(ctx, step, verdict)
    if step.log:
        # a security group's rule is rendered once per context (guest chains, node chains)
        chain_name = f"log-{ctx.rule_token(ref)}" + ("-h" if ref.level == "security_group" and accept_mode == "accept" else "")
        prefix = log_prefix(ctx.node, scope, direction, ref.id, step.action, step.log_level or ctx.log_level)
        ctx.extra_chains[chain_name] = Chain(
            chain_name,
            (Rule((x.limit_ref(LOG_LIMIT), x.log_group(ctx.log_group, prefix)), ref.id), Rule(tuple(verdict), ref.id)),
        )
        verdict = [x.goto(chain_name)]
    out: list[Rule] = []
    for where in scope_alternatives(ctx, step.scope, ref.owner, direction):
        out += _render_matches(ctx, step, where, timings, verdict, ref)
    return out


def _render_matches(ctx: CompileContext, step: Step, where: list[Statement], timings: list[list[Statement]], verdict: list[Statement], ref: RuleRef) -> list[Rule]:
    out: list[Rule] = []
    for family, statements in _matches(ctx, step):
        statements = where + statements
        variants: list[tuple[Family, list[Statement]]]
        if step.limit is not None and step.limit.per_source and family is None:
            # the bucket is keyed by the source address, whose type is per family
            variants = [(f, [x.match(x.meta("nfproto"), f)] + statements) for f in FAMILIES]
        else:
            variants = [(family or "ipv4", statements)]
        for bucket_family, body in variants:
            for timing in timings:
                full = body + timing + _rate_statements(ctx, step, bucket_family) + [x.counter()] + verdict
                out.append(Rule(tuple(full), rule_comment(ref.id, step.comment)))
    return out


# -- issue 18: where a step applies (NICs, interfaces), security group references ----------


def scope_alternatives(ctx: CompileContext, scope: Scope | None, vm: str, direction: str) -> list[list[Statement]]:
    """Statements restricting a rule to its Scope, one list per alternative ([[]]: none).

    NICs: the packet mark's NIC bits (the source NIC for `out`; for `in` the
    destination NIC, or, for a NIC the node routes to (nat, routed, isolated
    networks), no destination bits and its address: routed packets are dispatched
    to the VM by address, plan/hooks.py ROUTED_IN). Interfaces: `iifname` (in) /
    `oifname` (out), one alternative per name (a trailing * is nft's wildcard)."""
    if scope is None:
        return [[]]
    out: list[list[Statement]] = []
    if scope.nics:
        nics = [nic for index in scope.nics if (nic := ctx.nic(vm, index)) is not None]
        if not nics:
            return []  # the NIC is not on this node: never
        if direction == "out":
            out.append([x.match(x.masked(x.meta("mark"), x.SRC_NIC_MASK), _one_or_set(sorted(n.src_mark for n in nics)))])
        else:
            out.append([x.match(x.masked(x.meta("mark"), x.DST_NIC_MASK), _one_or_set(sorted(n.dst_mark for n in nics)))])
            routed = [n for n in nics if ctx.policy.doc.networks[n.nic.network].mode != "bridged"]
            for family, ips in (("ipv4", [ip for n in routed for ip in n.ipv4()]), ("ipv6", [ip for n in routed for ip in n.nic.ips if ":" in ip])):
                if ips:
                    out.append([x.match(x.masked(x.meta("mark"), x.DST_NIC_MASK), 0), x.match(x.payload(IP_PROTO[family], "daddr"), _one_or_set(sorted(ips)))])
    if scope.interfaces:
        key = x.meta("iifname" if direction == "in" else "oifname")
        out += [[x.match(key, name)] for name in scope.interfaces]
    return out


def _one_or_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def render_call(ctx: CompileContext, call: GroupCall, accept_mode: AcceptMode, vm: str) -> list[Rule]:
    """A reference to a security group: a jump to its chain (made once per node and
    context), then, in a guest's chain, the group's accept carried on (the accept
    bit, as for global and zone chains). In a node's chain an accept is final."""
    name = group_chain(call.group, call.context, call.direction)
    if name not in ctx.extra_chains:
        mode: AcceptMode = "accept" if call.context == "host" else ("mark-in" if call.direction == "in" else "mark-out")
        rules: list[Rule] = []
        for step in call.steps:
            rules += render_step(ctx, step, mode, f"sg:{call.group}", call.direction)
        ctx.extra_chains[name] = Chain(name, tuple(rules), comment=f"security group {call.group}, {call.direction}")
    out: list[Rule] = []
    for where in scope_alternatives(ctx, call.scope, vm, call.direction):
        out.append(Rule((*where, x.jump(name)), call.label))
    if out and call.context == "guest":
        bit = x.IN_ACCEPT_BIT if call.direction == "in" else x.OUT_ACCEPT_BIT
        out.append(Rule((x.has_bits(bit), x.ret()), f"{name} accepted"))
    return out


def _matches(ctx: CompileContext, step: Step) -> list[tuple[Family | None, list[Statement]]]:
    """A step's matches as statements, rendered once per distinct match tuple in a
    compile (the plan shares one tuple between rules with the same match keys, and
    the named sets they use are registered by the first rendering)."""
    key = id(step.matches)
    found = ctx.matches.get(key)
    if found is None:
        rendered = [(m.family, match_statements(ctx.registry, m)) for m in step.matches or ()]
        found = ctx.matches[key] = (step.matches, rendered)
    return found[1]


def render_default(ctx: CompileContext, step: Step, scope: str, direction: str, accept_mode: AcceptMode) -> list[Rule]:
    """The end of an evaluation: the default verdict, logged when the plan says so
    (settings.log.denied, a VM's or node's `log`)."""
    out: list[Rule] = []
    if step.log:
        prefix = log_prefix(ctx.node, scope, direction, step.label, step.action, step.log_level or ctx.log_level)
        out.append(Rule((x.limit_ref(LOG_LIMIT), x.log_group(ctx.log_group, prefix)), step.label))
    out.append(Rule((x.counter(), *verdict_statements(step.action, accept_mode)), step.label))
    return out
