"""Network modes (libvirt's) and host services, for one node.

`bridged` (the default) gives the node no L3 presence on the network: nothing here.
The other modes put the network's `gateway` on the node's bridge and make the node
the guests' router:

* `nat`: routed out (and masqueraded, compiler/nat.py); routed in only when the
  connection was dnat'ed (port forwarding) or belongs to an established one;
* `routed`: forwarded without NAT, only from and to the network's subnets;
* `isolated`: nothing routed in or out; guests reach each other and the node.

Routed traffic towards a guest does not pass the bridge forward hook before the inet
forward chain (it is the node that sends it), so the destination-NIC bits of the mark
are not set: `l3in-NET` dispatches by destination address instead (one map lookup,
`l3-guests-v4`/`-v6`). Traffic from a guest to the node or through it enters the node
through the bridge's input hook, which sets the source-NIC bits as usual.

On those networks (and on a bridged network that lists `host_services`) a guest
reaches of the node only its network's `host_services` (e.g. dhcp, dns): the guest's
own `out` rules run first, then `hostsvc-NET` accepts the services and drops the rest.
"""

from __future__ import annotations

import ipaddress

from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import Chain, NamedSet, Rule
from .levels import verdict_statements
from .matches import SetRegistry, match_statements
from .naming import vm_chain
from .nics import LocalNic
from .plan.hooks import ROUTED_IN, Stage
from .plan.modes import L3_MODES, host_services, routed_checks
from .plan.rules import RulePlanner
from .plan.switches import nic_filtered
from .plan.vocabulary import NotForwarded, Step, final
from .stmt import Statement


def l3_networks(policy: Policy, nics: list[LocalNic]) -> list[str]:
    return sorted({n.nic.network for n in nics if policy.doc.networks[n.nic.network].mode in L3_MODES})


def host_service_networks(policy: Policy, nics: list[LocalNic]) -> list[str]:
    return sorted({n.nic.network for n in nics if policy.doc.networks[n.nic.network].mode in L3_MODES or policy.doc.networks[n.nic.network].host_services})


class ModeBuilder:
    """Chains and maps for the node's non-bridged networks and host services."""

    def __init__(self, policy: Policy, planner: RulePlanner, nics: list[LocalNic], registry: SetRegistry, invalid: Statement, ct_rules: list[Rule] | None = None,
                 protection: list[Rule] | None = None, invalid_log: list[Statement] | None = None) -> None:
        """`protection`: the guests' protection rules (compiler/protection.py); `invalid_log`:
        log statements for invalid packets (settings.log.invalid)."""
        self.policy, self.planner, self.nics, self.registry, self.invalid = policy, planner, nics, registry, invalid
        self.invalid_log = list(invalid_log or [])
        self.ct_rules = list(ct_rules or [])  # conntrack helpers for new connections
        self.protection = list(protection or [])  # the guests' protection (compiler/protection.py)
        self.chains: dict[str, Chain] = {}
        self.sets: dict[str, NamedSet] = {}

    # -- forward --------------------------------------------------------------------

    def forward_rules(self) -> dict[Stage, list[Rule]]:
        """The forward chain's ROUTED_FROM and ROUTED_TO stages (and the chains and
        maps they use)."""
        networks = l3_networks(self.policy, self.nics)
        if not networks:
            return {Stage.ROUTED_FROM: [], Stage.ROUTED_TO: []}
        bridges = {n: self.policy.doc.networks[n].bridge for n in networks}
        self._guest_maps(networks)
        for network in networks:
            self.chains[f"l3in-{network}"] = self._in_chain(network)
        inbound = [(bridges[n], x.jump_value(f"l3in-{n}")) for n in networks]
        self.sets["l3-in"] = NamedSet("l3-in", "ifname", tuple(sorted(inbound)), map="verdict", comment="routed towards a guest network")
        rules: list[Rule] = []
        outbound = []
        for network in networks:
            chain = self._out_chain(network)
            if chain is not None:
                self.chains[chain.name] = chain
                outbound.append((bridges[network], x.jump_value(chain.name)))
        if outbound:
            self.sets["l3-out"] = NamedSet("l3-out", "ifname", tuple(sorted(outbound)), map="verdict", comment="routed from a guest network")
            rules.append(Rule((x.vmap(x.meta("iifname"), "l3-out"),), "routed from a guest network"))
        return {Stage.ROUTED_FROM: rules, Stage.ROUTED_TO: [Rule((x.vmap(x.meta("oifname"), "l3-in"),), "routed to a guest network")]}

    def _guest_maps(self, networks: list[str]) -> None:
        for family in ("ipv4", "ipv6"):
            elements = []
            for nic in self.nics:
                if nic.nic.network in networks and nic_filtered(self.policy, nic.vm, nic.nic_index):  # enable switches (issue 18)
                    for ip in nic.nic.ips:
                        if ipaddress.ip_address(ip).version == (4 if family == "ipv4" else 6):
                            elements.append((ip, x.jump_value(vm_chain(nic.vm, "in"))))
            name = f"l3-guests-{'v4' if family == 'ipv4' else 'v6'}"
            self.sets[name] = NamedSet(name, f"{family}_addr", tuple(sorted(elements, key=lambda e: ipaddress.ip_address(e[0]))), map="verdict", comment="routed guest address -> its VM's in chain")

    def _checks(self, steps: tuple[Step, ...]) -> list[Rule]:
        """A mode's routing checks (plan/modes.py): drops."""
        out = []
        for step in steps:
            condition = [x.match(x.ct("status"), "dnat", "!")] if isinstance(step.condition, NotForwarded) else []
            for match in step.matches or (None,):
                statements = match_statements(self.registry, match) if match is not None else []
                out.append(Rule((*condition, *statements, x.counter(), *verdict_statements(step.action, "accept")), step.label))
        return out

    def _in_chain(self, network: str) -> Chain:
        net = self.policy.doc.networks[network]
        checks = routed_checks(self.policy, network)
        assert checks is not None, network
        stages = {
            Stage.BRIDGED_INSIDE: [Rule((x.match(x.meta("iifname"), net.bridge), x.ret()), "bridged inside the network")],
            Stage.INVALID: ([Rule((x.match(x.ct("state"), "invalid", "in"), *self.invalid_log), "invalid logged")] if self.invalid_log else [])
            + [Rule((x.match(x.ct("state"), "invalid", "in"), x.counter(), self.invalid), "invalid")],
            Stage.PROTECTION: self.protection,
            Stage.MODE_CHECKS: self._checks(checks.inbound),
            Stage.CONNTRACK: self.ct_rules,
            Stage.SENDER: [Rule((x.vmap(x.masked(x.meta("mark"), x.SRC_NIC_MASK), "out-dispatch"),), "sender: out rules")],
            Stage.RECEIVER_BY_ADDRESS: [
                Rule((x.vmap(x.payload("ip", "daddr"), "l3-guests-v4"),), "receiver: in rules"),
                Rule((x.vmap(x.payload("ip6", "daddr"), "l3-guests-v6"),), "receiver: in rules"),
            ],
            Stage.ACCEPT: [Rule((x.accept(),), "routed to the network")],
        }
        rules: list[Rule] = []
        for stage in ROUTED_IN:
            rules += stages[stage]
            if stage is Stage.MODE_CHECKS and any(final(step) for step in checks.inbound):
                break  # nothing gets past the checks (isolated)
        return Chain(f"l3in-{network}", tuple(rules))

    def _out_chain(self, network: str) -> Chain | None:
        net = self.policy.doc.networks[network]
        checks = routed_checks(self.policy, network)
        if checks is None or not checks.outbound:
            return None  # nat: guests may go out (their own out rules decide)
        rules = [Rule((x.match(x.meta("oifname"), net.bridge), x.ret()), "bridged inside the network"), *self._checks(checks.outbound)]
        return Chain(f"l3out-{network}", tuple(rules))

    # -- input ----------------------------------------------------------------------

    def input_rules(self) -> list[Rule]:
        """The input chain's HOST_SERVICES stage."""
        networks = host_service_networks(self.policy, self.nics)
        if not networks:
            return []
        entries = []
        for network in networks:
            net = self.policy.doc.networks[network]
            services = host_services(self.policy, self.planner, network)
            assert services is not None, network
            rules: list[Rule] = []
            for step in services.steps:
                for match in step.matches or ():
                    rules.append(Rule((*match_statements(self.registry, match), x.counter(), x.accept()), step.label))
            rules.append(Rule((x.counter(), *verdict_statements(services.default.action, "accept")), services.default.label))
            name = f"hostsvc-{network}"
            self.chains[name] = Chain(name, tuple(rules))
            entries.append((net.bridge, x.jump_value(name)))
        self.sets["host-services"] = NamedSet("host-services", "ifname", tuple(sorted(entries)), map="verdict", comment="guest network -> the node services it may use")
        return [Rule((x.vmap(x.meta("iifname"), "host-services"),), "from a guest network: host_services only")]
