"""Compile a policy for one node: the inet table (stateful filtering) + bridge table.

Packet path for bridged guest traffic (see docs/architecture.md):
  bridge prerouting/forward (-200): the port's NIC index goes into the packet mark,
      guard filters run;
  inet forward (0), through br_netfilter: not guest traffic -> accept; established/
      related -> accept; invalid -> settings; then the sender's `out` chain (a vmap
      lookup on the source NIC bits), the isolated-network check, and the receiver's
      `in` chain (a vmap lookup on the destination NIC bits). Every stage is one map
      lookup: dispatch cost does not grow with the number of guests.
A VM chain runs global rules (shared chain), its own rules, its zone's rules (shared
chain, once per node) and its default, in that order, first match wins.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..policy.resolve import Policy
from . import nftexpr as x
from .ct_objects import global_timeouts, helper_objects, helper_rules, timeout_rules, zone_timeouts
from .guards import bridge_table
from .ir import Chain, Hook, Limit, NamedSet, NicMeta, Rule, Ruleset, RulesetMeta, Table
from .levels import REJECT_CHAIN, AcceptMode, CompileContext, reject_chain, render_call, render_default, render_step
from .matches import IP_PROTO, address_elements, match_statements
from .modes import ModeBuilder
from .naming import LOG_LIMIT, TABLE, level_chain, log_prefix, network_chain, vm_chain
from .nat import forward_open_rule, nat_chains
from .nics import LocalNic, local_nics
from .packet_limits import established_rules, packet_limits_map
from .plan.chains import ESSENTIALS, Level, NetworkChain, VmChain
from .plan.groups import GroupCall
from .plan.hooks import FORWARD, INPUT, OUTPUT, Stage
from .plan.switches import invalid_action, nic_filtered
from .protection import protection_rules
from .stmt import Statement
from .tenants import conntrack_zone_chain

Json = dict[str, Any]
GUEST_TRAFFIC = x.NIC_BITS


class UnknownNode(ValueError):
    pass


def compile_node(
    policy: Policy, node: str, *, now: datetime | None = None, timezone: str | None = None, learned: Mapping[tuple[str, int], Sequence[str]] | None = None
) -> Ruleset:
    """The complete zonewall ruleset for `node` (deterministic for a given policy and
    `learned`: (vm, nic index) -> the addresses learning NICs learned, from the agent)."""
    # The IR is millions of small objects for a large node and none of them form
    # cycles: the cyclic garbage collector only walks them (half the compile time
    # at 10,000 guests, docs/performance.md), so it is paused while compiling.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile_node(policy, node, now, timezone, learned)
    finally:
        if was_enabled:
            gc.enable()


def _compile_node(policy: Policy, node: str, now: datetime | None, timezone: str | None, learned: Mapping[tuple[str, int], Sequence[str]] | None = None) -> Ruleset:
    if node not in policy.doc.hosts:
        known = ", ".join(sorted(policy.doc.hosts)) or "none"
        raise UnknownNode(f"host {node} is not in the policy (hosts: {known})")
    nics = local_nics(policy, node)
    ctx = CompileContext(policy, node, now=now, timezone=timezone)
    inet = InetBuilder(ctx, nics).build()
    bridge = bridge_table(policy, node, nics, learned)
    meta = RulesetMeta(
        node=node,
        nics={n.index: NicMeta(vm=n.vm, nic=n.nic_index, tap=n.tap, network=n.nic.network, mac=n.nic.mac) for n in nics},
    )
    return Ruleset(node, (inet, bridge), meta)


class InetBuilder:
    def __init__(self, ctx: CompileContext, nics: list[LocalNic]):
        self.ctx, self.nics = ctx, nics
        self.policy = ctx.policy
        self.plan = ctx.plan.chains
        self.chains: dict[str, Chain] = {}
        self.sets: dict[str, NamedSet] = {}
        invalid = x.accept() if invalid_action(self.policy) == "accept" else x.drop()
        self.timeouts = global_timeouts(self.policy)
        self.ct_rules = helper_rules(self.policy) + timeout_rules(self.timeouts, "conntrack timeout")
        self.timeout_objects = {t.name: t for t in self.timeouts.values()}
        self.node_plan = ctx.plan.node(ctx.node)  # the node-scoped plan this renders
        protection = self.node_plan.protection
        self.protect_host = protection_rules(ctx, protection.host, "in")
        self.protect_guests = protection_rules(ctx, protection.guests, "guests")
        # unfiltered NICs (enable switches, issue 18) are classified (marked) but run no chain of theirs
        self.filtered = [n for n in nics if nic_filtered(self.policy, n.vm, n.nic_index)]
        self.modes = ModeBuilder(self.policy, ctx.plan.rules, nics, ctx.registry, invalid, self.ct_rules,
                                 protection=self.protect_guests, invalid_log=self.invalid_log("fwd"))

    def build(self) -> Table:
        node = self.node_plan
        shared = self.shared_level_chains(node.shared)
        for chain in node.vm_chains:
            self.vm_chain(chain, shared)
        checked = self.network_chains(node.networks)
        self.chains[REJECT_CHAIN] = reject_chain()
        self.dispatch_maps(checked)
        host_rules = {direction: self.host_rules(direction) for direction in ("in", "out")}  # before the stages that count their packet limits
        base = [self.forward_chain(), self.input_chain(host_rules["in"])]
        output = self.output_chain(host_rules["out"])
        if output is not None:
            base.append(output)
        zones = conntrack_zone_chain(node.zones)
        base += [zones] if zones is not None else []
        base += nat_chains(self.policy, self.ctx.node)
        limits_map = packet_limits_map(self.ctx)
        if limits_map is not None:
            self.sets[limits_map.name] = limits_map
        self.chains.update(self.modes.chains)
        self.sets.update(self.modes.sets)
        for extra in self.ctx.extra_chains.values():
            self.chains[extra.name] = extra
        sets = {**self.ctx.registry.sets, **self.ctx.meters, **self.sets}
        rate, per = self.policy.doc.settings.log.rate.split("/")
        limits = (Limit(LOG_LIMIT, int(rate), per, self.policy.doc.settings.log.burst),)
        chains = base + [self.chains[name] for name in sorted(self.chains)]
        timeouts = tuple(self.timeout_objects[name] for name in sorted(self.timeout_objects))
        return Table("inet", TABLE, tuple(chains), tuple(sets[name] for name in sorted(sets)), limits, helper_objects(self.policy), timeouts)

    # -- rule levels --------------------------------------------------------------

    def render(self, level: Level, accept_mode: AcceptMode, scope: str) -> list[Rule]:
        rules: list[Rule] = []
        for item in level.body:
            if isinstance(item, GroupCall):  # a security group (issue 18): its chain, jumped to
                rules += render_call(self.ctx, item, accept_mode, level.owner)
            else:
                rules += render_step(self.ctx, item, accept_mode, scope, level.direction)
        return rules

    def shared_level_chains(self, levels: tuple[Level, ...]) -> set[str]:
        """Global and zone chains: once per node, whatever the number of VMs using them."""
        made: set[str] = set()
        for level in levels:
            mode: AcceptMode = "mark-in" if level.direction == "in" else "mark-out"
            scope = "global" if level.kind == "global" else f"zone:{level.owner}"
            rules = self.render(level, mode, scope)
            if rules:
                name = level_chain(level.kind, level.owner, level.direction)
                self.chains[name] = Chain(name, tuple(rules), comment=f"{scope} rules, {level.direction}")
                made.add(name)
        return made

    def vm_chain(self, plan: VmChain, shared: set[str]) -> None:
        vm, direction = plan.vm, plan.direction
        bit = x.IN_ACCEPT_BIT if direction == "in" else x.OUT_ACCEPT_BIT
        zone = self.policy.doc.vms[vm].zone
        overrides = zone_timeouts(self.policy, zone)
        self.timeout_objects.update((t.name, t) for t in overrides.values())
        # only new connections get here; a later `ct timeout set` replaces an earlier one
        rules: list[Rule] = timeout_rules(overrides, f"zone {zone} conntrack timeout")
        for level in plan.levels:
            if not level.shared:
                rules += self.render(level, "return", vm)
                continue
            chain = level_chain(level.kind, level.owner, direction)
            if chain in shared:
                rules.append(Rule((x.jump(chain),), chain))
                rules.append(Rule((x.has_bits(bit), x.ret()), f"{chain} accepted"))
        rules += [forward_open_rule(step) for step in plan.forwards]
        rules += render_default(self.ctx, plan.default, vm, direction, "return")
        name = vm_chain(vm, direction)
        self.chains[name] = Chain(name, tuple(rules), comment=f"vm {vm}, {direction}")

    def network_chains(self, checks: tuple[NetworkChain, ...]) -> dict[str, str]:
        """For each network with a local NIC and a check (isolated, or with rules):
        the check between two of its guests."""
        made: dict[str, str] = {}
        for plan in checks:
            network = plan.network
            name = network_chain(network)
            rules: list[Rule] = []
            for step in plan.steps:
                rules += render_step(self.ctx, step, "return", f"net:{network}", "net")
            rules += render_default(self.ctx, plan.default, f"net:{network}", "net", "return")
            kind = "isolated network" if self.policy.doc.networks[network].isolated else "network"
            self.chains[name] = Chain(name, tuple(rules), comment=f"{kind} {network}: guest to guest")
            members = self.network_guest_sets(network)
            for side, field in (("src", "daddr"), ("dst", "saddr")):
                hops = [
                    Rule((x.match(x.payload(IP_PROTO[family], field), x.set_ref(set_name)), x.jump(name)), f"peer on {network}")
                    for family, set_name in members
                ]
                self.chains[network_chain(network, side)] = Chain(network_chain(network, side), tuple(hops))
            made[network] = name
        return made

    def network_guest_sets(self, network: str) -> list[tuple[str, str]]:
        """Sets of every guest address on `network`, on any node."""
        out = []
        addresses: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
        for vm in self.policy.doc.vms.values():
            for nic in vm.nics:
                if nic.network == network:
                    for ip in nic.ips:
                        addresses["ipv6" if ":" in ip else "ipv4"].append(ip)
        for family, ips in addresses.items():
            if not ips:
                continue
            name = f"netguests-{network}-{'v4' if family == 'ipv4' else 'v6'}"
            elements = address_elements(self.policy.address_set(ips), family)  # type: ignore[arg-type]
            self.sets[name] = NamedSet(name, f"{family}_addr", tuple(elements), flags=("interval",), comment=f"guests of network {network}")
            out.append((family, name))
        return out

    # -- dispatch -----------------------------------------------------------------

    def dispatch_maps(self, checked: dict[str, str]) -> None:
        def vmap(name: str, elements: list[tuple[int, Json]], comment: str) -> None:
            self.sets[name] = NamedSet(name, "mark", tuple(elements), map="verdict", comment=comment)

        vmap("out-dispatch", [(n.src_mark, x.jump_value(vm_chain(n.vm, "out"))) for n in self.filtered], "source guest NIC -> its VM's out chain")
        vmap("in-dispatch", [(n.dst_mark, x.jump_value(vm_chain(n.vm, "in"))) for n in self.filtered], "destination guest NIC -> its VM's in chain")
        vmap("net-src", [(n.src_mark, x.jump_value(network_chain(n.nic.network, "src"))) for n in self.nics if n.nic.network in checked], "network check of the source NIC")
        vmap("net-dst", [(n.dst_mark, x.jump_value(network_chain(n.nic.network, "dst"))) for n in self.nics if n.nic.network in checked], "network check of the destination NIC")

    def invalid_log(self, direction: str) -> list[Statement]:
        """settings.log.invalid (issue 18): invalid packets logged before their verdict."""
        log = self.policy.doc.settings.log
        if not log.invalid:
            return []
        prefix = log_prefix(self.ctx.node, "state", direction, "invalid", invalid_action(self.policy), log.level)
        return [x.limit_ref(LOG_LIMIT), x.log_group(log.group, prefix)]

    def state_rules(self, direction: str = "fwd") -> dict[Stage, list[Rule]]:
        invalid = x.accept() if invalid_action(self.policy) == "accept" else x.drop()
        is_invalid = x.match(x.ct("state"), "invalid", "in")
        logged = [Rule((is_invalid, *self.invalid_log(direction)), "invalid logged")] if self.policy.doc.settings.log.invalid else []
        return {
            Stage.ESTABLISHED: [Rule((x.match(x.ct("state"), ["established", "related"], "in"), x.counter(), x.accept()), "established")],
            Stage.INVALID: logged + [Rule((is_invalid, x.counter(), invalid), "invalid")],
            Stage.ESSENTIALS: [Rule((*match_statements(self.ctx.registry, ESSENTIALS.matches[0]), x.counter(), x.accept()), "ICMPv6 essentials")],  # type: ignore[index]
        }

    def forward_chain(self) -> Chain:
        src, dst = x.masked(x.meta("mark"), x.SRC_NIC_MASK), x.masked(x.meta("mark"), x.DST_NIC_MASK)
        stages = {
            **self.state_rules(),
            **self.modes.forward_rules(),
            Stage.NOT_GUEST: [Rule((x.match(x.masked(x.meta("mark"), GUEST_TRAFFIC), 0), x.accept()), "not guest traffic")],
            Stage.PACKET_LIMITS: established_rules(self.ctx),
            Stage.PROTECTION: self.protect_guests,
            Stage.CONNTRACK: self.ct_rules,
            Stage.SENDER: [Rule((x.vmap(src, "out-dispatch"),), "sender: out rules")],
            Stage.NETWORK: [Rule((x.vmap(src, "net-src"),), "network check"), Rule((x.vmap(dst, "net-dst"),), "network check")],
            Stage.RECEIVER: [Rule((x.vmap(dst, "in-dispatch"),), "receiver: in rules")],
        }
        return Chain("forward", tuple(rule for stage in FORWARD for rule in stages[stage]), Hook("filter", "forward", 0))

    # -- the node itself -------------------------------------------------------------

    def management_rules(self) -> list[Rule]:
        """Anti-lockout: settings.management always reaches ssh and zonewall's ports."""
        step = self.plan.management()
        if step is None:
            return []
        return [Rule((*match_statements(self.ctx.registry, m), x.counter(), x.accept()), step.label) for m in step.matches or ()]

    def host_rules(self, direction: str) -> list[Rule]:
        rules: list[Rule] = []
        for level in self.plan.host_levels(self.ctx.node, direction):
            compiled = self.render(level, "accept", "host")
            if compiled:
                name = level_chain("host", level.owner, direction)
                self.chains[name] = Chain(name, tuple(compiled), comment=f"host rules, {direction}")
                rules.append(Rule((x.jump(name),), name))
        return rules

    def input_chain(self, host_rules: list[Rule]) -> Chain:
        src = x.masked(x.meta("mark"), x.SRC_NIC_MASK)
        stages = {
            Stage.LOOPBACK: [Rule((x.match(x.meta("iif"), "lo"), x.accept()), "loopback")],
            Stage.PACKET_LIMITS: established_rules(self.ctx),
            **self.state_rules("in"),
            Stage.MANAGEMENT: self.management_rules(),
            Stage.PROTECTION: self.protect_host,
            Stage.CONNTRACK: timeout_rules(self.timeouts, "conntrack timeout", guest_only=True),
            Stage.SENDER: [Rule((x.vmap(src, "out-dispatch"),), "from a guest: its out rules first")],
            Stage.HOST_SERVICES: self.modes.input_rules(),
            Stage.HOST_RULES: host_rules,
            Stage.HOST_DEFAULT: render_default(self.ctx, self.plan.host_in(self.ctx.node).default, "host", "in", "accept"),
        }
        return Chain("input", tuple(rule for stage in INPUT for rule in stages[stage]), Hook("filter", "input", 0))

    def output_chain(self, host_rules: list[Rule]) -> Chain | None:
        plan = self.plan.host_out(self.ctx.node)
        if plan is None:
            return None  # nothing to enforce: no hook, no per-packet cost
        state = self.state_rules()
        stages = {
            Stage.LOOPBACK: [Rule((x.match(x.meta("oif"), "lo"), x.accept()), "loopback")],
            Stage.PACKET_LIMITS: established_rules(self.ctx),
            Stage.ESTABLISHED: state[Stage.ESTABLISHED],
            Stage.ESSENTIALS: state[Stage.ESSENTIALS],  # a node that cannot send neighbour solicitations has no IPv6 at all
            Stage.HOST_RULES: host_rules,
            Stage.HOST_DEFAULT: render_default(self.ctx, plan.default, "host", "out", "accept"),
        }
        return Chain("output", tuple(rule for stage in OUTPUT for rule in stages[stage]), Hook("filter", "output", 0))
