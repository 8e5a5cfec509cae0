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
from datetime import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from ..policy.builtins import MANAGEMENT_TCP_PORTS
from ..policy.resolve import Policy, RuleRef
from . import nftexpr as x
from .guards import bridge_table
from .ir import Chain, Hook, Limit, NamedSet, Rule, Ruleset, Table
from .levels import REJECT_CHAIN, AcceptMode, CompileContext, compile_rule, default_rules, reject_chain
from .matches import IP_PROTO, address_elements
from .conntrack import global_timeouts, helper_objects, helper_rules, timeout_rules, zone_timeouts
from .modes import ModeBuilder
from .nat import dnat_open_rules, nat_chains
from .naming import LOG_LIMIT, TABLE, level_chain, vm_chain
from .nics import LocalNic, local_nics

Json = dict[str, Any]
# Link-local ICMPv6 that IPv6 cannot work without (RFC 4890 4.4.1): neighbour and
# router discovery, multicast listener discovery. Guards vet what guests send.
ICMPV6_ESSENTIAL = [
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-router-solicit",
    "nd-router-advert",
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "mld2-listener-report",
]
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
    meta = {
        "node": node,
        "nics": {n.index: {"vm": n.vm, "nic": n.nic_index, "tap": n.tap, "network": n.nic.network, "mac": n.nic.mac} for n in nics},
    }
    return Ruleset(node, (inet, bridge), meta)


class InetBuilder:
    def __init__(self, ctx: CompileContext, nics: list[LocalNic]):
        self.ctx, self.nics = ctx, nics
        self.policy = ctx.policy
        self.chains: dict[str, Chain] = {}
        self.sets: dict[str, NamedSet] = {}
        invalid = x.accept() if self.policy.doc.settings.conntrack.invalid == "accept" else x.drop()
        self.timeouts = global_timeouts(self.policy)
        self.ct_rules = helper_rules(self.policy) + timeout_rules(self.timeouts, "conntrack timeout")
        self.timeout_objects = {t.name: t for t in self.timeouts.values()}
        self.modes = ModeBuilder(self.policy, nics, ctx.registry, invalid, self.ct_rules)

    def build(self) -> Table:
        vms = sorted({n.vm for n in self.nics})
        shared = self.shared_level_chains(vms)
        for vm in vms:
            for direction in ("in", "out"):
                self.vm_chain(vm, direction, shared)
        isolated = self.isolation_chains()
        self.chains[REJECT_CHAIN] = reject_chain()
        self.dispatch_maps(isolated)
        base = [self.forward_chain(), self.input_chain()]
        output = self.output_chain()
        if output is not None:
            base.append(output)
        base += nat_chains(self.policy, self.ctx.node)
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

    def level(self, refs: list[RuleRef], direction: str, accept_mode: AcceptMode, scope: str) -> list[Rule]:
        rules: list[Rule] = []
        for ref in refs:
            if ref.rule.direction in (direction, None):
                rules += compile_rule(self.ctx, ref, accept_mode, scope, direction)
        return rules

    def shared_level_chains(self, vms: list[str]) -> set[str]:
        """Global and zone chains: once per node, whatever the number of VMs using them."""
        made: set[str] = set()
        zones = sorted({self.policy.doc.vms[vm].zone for vm in vms if self.policy.doc.vms[vm].zone})
        for direction in ("in", "out"):
            mode: AcceptMode = "mark-in" if direction == "in" else "mark-out"
            candidates = [(level_chain("global", "", direction), self.policy.rules_of("global"), "global")]
            candidates += [(level_chain("zone", z, direction), self.policy.rules_of("zone", z), f"zone:{z}") for z in zones]
            for name, refs, scope in candidates:
                rules = self.level(refs, direction, mode, scope)
                if rules:
                    self.chains[name] = Chain(name, tuple(rules), comment=f"{scope} rules, {direction}")
                    made.add(name)
        return made

    def vm_chain(self, vm: str, direction: str, shared: set[str]) -> None:
        bit = x.IN_ACCEPT_BIT if direction == "in" else x.OUT_ACCEPT_BIT
        zone = self.policy.doc.vms[vm].zone
        overrides = zone_timeouts(self.policy, zone)
        self.timeout_objects.update((t.name, t) for t in overrides.values())
        # only new connections get here; a later `ct timeout set` replaces an earlier one
        rules: list[Rule] = timeout_rules(overrides, f"zone {zone} conntrack timeout")

        def call(chain: str) -> None:
            if chain in shared:
                rules.append(Rule((x.jump(chain),), chain))
                rules.append(Rule((x.has_bits(bit), x.ret()), f"{chain} accepted"))

        call(level_chain("global", "", direction))
        rules += self.level(self.policy.rules_of("vm", vm), direction, "return", vm)
        if zone:
            call(level_chain("zone", zone, direction))
        if direction == "in":
            rules += dnat_open_rules(self.policy, vm)
        action = self.policy.default_action(vm, direction)
        rules += default_rules(self.ctx, action, vm, direction, "return", f"default-{direction}")
        name = vm_chain(vm, direction)
        self.chains[name] = Chain(name, tuple(rules), comment=f"vm {vm}, {direction}")

    def isolation_chains(self) -> dict[str, str]:
        """For each isolated network with a local NIC: the check between two of its guests."""
        made: dict[str, str] = {}
        networks = sorted({n.nic.network for n in self.nics if self.policy.doc.networks[n.nic.network].isolated})
        for network in networks:
            name = f"net-{network}"
            rules = self.level(self.policy.rules_of("network", network), "net", "return", f"net:{network}")
            rules += default_rules(self.ctx, "drop", f"net:{network}", "net", "return", f"net-{network}-default")
            self.chains[name] = Chain(name, tuple(rules), comment=f"isolated network {network}: guest to guest")
            members = self.network_guest_sets(network)
            for side, field in (("src", "daddr"), ("dst", "saddr")):
                hops = [
                    Rule((x.match(x.payload(IP_PROTO[family], field), x.set_ref(set_name)), x.jump(name)), f"peer on {network}")
                    for family, set_name in members
                ]
                self.chains[f"net-{network}-{side}"] = Chain(f"net-{network}-{side}", tuple(hops))
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

    def dispatch_maps(self, isolated: dict[str, str]) -> None:
        def vmap(name: str, elements: list[tuple[int, Json]], comment: str) -> None:
            self.sets[name] = NamedSet(name, "mark", tuple(elements), map="verdict", comment=comment)

        vmap("out-dispatch", [(n.src_mark, x.jump(vm_chain(n.vm, "out"))) for n in self.nics], "source guest NIC -> its VM's out chain")
        vmap("in-dispatch", [(n.dst_mark, x.jump(vm_chain(n.vm, "in"))) for n in self.nics], "destination guest NIC -> its VM's in chain")
        vmap("net-src", [(n.src_mark, x.jump(f"net-{n.nic.network}-src")) for n in self.nics if n.nic.network in isolated], "isolated network of the source NIC")
        vmap("net-dst", [(n.dst_mark, x.jump(f"net-{n.nic.network}-dst")) for n in self.nics if n.nic.network in isolated], "isolated network of the destination NIC")

    def state_rules(self) -> list[Rule]:
        invalid = x.accept() if self.policy.doc.settings.conntrack.invalid == "accept" else x.drop()
        return [
            Rule((x.match(x.ct("state"), ["established", "related"], "in"), x.counter(), x.accept()), "established"),
            Rule((x.match(x.ct("state"), "invalid", "in"), x.counter(), invalid), "invalid"),
            Rule((x.match(x.payload("icmpv6", "type"), {"set": ICMPV6_ESSENTIAL}), x.counter(), x.accept()), "ICMPv6 essentials"),
        ]

    def forward_chain(self) -> Chain:
        src, dst = x.masked(x.meta("mark"), x.SRC_NIC_MASK), x.masked(x.meta("mark"), x.DST_NIC_MASK)
        state = self.state_rules()
        rules = [
            state[0],  # established first: the common case costs one rule
            *self.modes.forward_rules(),
            Rule((x.match(x.masked(x.meta("mark"), GUEST_TRAFFIC), 0), x.accept()), "not guest traffic"),
            *state[1:],
            *self.ct_rules,
            Rule((x.vmap(src, "out-dispatch"),), "sender: out rules"),
            Rule((x.vmap(src, "net-src"),), "isolated network"),
            Rule((x.vmap(dst, "net-dst"),), "isolated network"),
            Rule((x.vmap(dst, "in-dispatch"),), "receiver: in rules"),
        ]
        return Chain("forward", tuple(rules), Hook("filter", "forward", 0))

    # -- the node itself -------------------------------------------------------------

    def management_rules(self) -> list[Rule]:
        """Anti-lockout: settings.management always reaches ssh and zonewall's ports."""
        addresses = self.policy.address_set(self.policy.doc.settings.management) if self.policy.doc.settings.management else None
        if addresses is None:
            return []
        rules = []
        for family in ("ipv4", "ipv6"):
            elements = address_elements(addresses, family)  # type: ignore[arg-type]
            if not elements:
                continue
            name = f"management-{'v4' if family == 'ipv4' else 'v6'}"
            self.sets[name] = NamedSet(name, f"{family}_addr", tuple(elements), flags=("interval",), comment="settings.management")
            rules.append(
                Rule(
                    (
                        x.match(x.payload(IP_PROTO[family], "saddr"), x.set_ref(name)),
                        x.match(x.payload("tcp", "dport"), {"set": list(MANAGEMENT_TCP_PORTS)}),
                        x.counter(),
                        x.accept(),
                    ),
                    "anti-lockout",
                )
            )
        return rules

    def host_rules(self, direction: str) -> list[Rule]:
        rules: list[Rule] = []
        for owner in ("", self.ctx.node):
            refs = self.policy.rules_of("host", owner)
            compiled = self.level(refs, direction, "accept", "host")
            if compiled:
                name = level_chain("host", owner, direction)
                self.chains[name] = Chain(name, tuple(compiled), comment=f"host rules, {direction}")
                rules.append(Rule((x.jump(name),), name))
        return rules

    def input_chain(self) -> Chain:
        src = x.masked(x.meta("mark"), x.SRC_NIC_MASK)
        rules = [
            Rule((x.match(x.meta("iif"), "lo"), x.accept()), "loopback"),
            *self.state_rules(),
            *self.management_rules(),
            *timeout_rules(self.timeouts, "conntrack timeout", guest_only=True),
            Rule((x.vmap(src, "out-dispatch"),), "from a guest: its out rules first"),
            *self.modes.input_rules(),
            *self.host_rules("in"),
            *default_rules(self.ctx, self.policy.doc.settings.host_default.in_, "host", "in", "accept", "host-default-in"),
        ]
        return Chain("input", tuple(rules), Hook("filter", "input", 0))

    def output_chain(self) -> Chain | None:
        host_rules = self.host_rules("out")
        action = self.policy.doc.settings.host_default.out
        if not host_rules and action == "accept":
            return None  # nothing to enforce: no hook, no per-packet cost
        rules = [
            Rule((x.match(x.meta("oif"), "lo"), x.accept()), "loopback"),
            Rule((x.match(x.ct("state"), ["established", "related"], "in"), x.counter(), x.accept()), "established"),
            # a node that cannot send neighbour solicitations has no IPv6 at all
            self.state_rules()[2],
            *host_rules,
            *default_rules(self.ctx, action, "host", "out", "accept", "host-default-out"),
        ]
        return Chain("output", tuple(rules), Hook("filter", "output", 0))
