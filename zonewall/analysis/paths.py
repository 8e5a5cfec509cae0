"""Which stages a flow passes, in order: the kernel's packet path over the plan.

A flow crosses one or two nodes. On each it passes one inet hook (forward, input or
output), whose stages the plan orders (compiler/plan/hooks.py, walked here stage by
stage), after the bridge family's guard filters of the NICs it is bridged from and
to. Which hooks and which guests (the kernel's forwarding, as the lab and a
Proxmox/libvirt node have it):

* two NICs of one network, where it is bridged (any bridged network; a non-bridged
  network on one node): the forward hook, with the sender's `out` chain, the
  network's check and the receiver's `in` chain, between both NICs' guards;
* a guest of a non-bridged (nat, routed, isolated) network to its own node: the
  input hook, where its `out` chain runs after the anti-lockout, then the network's
  `host_services`;
* a guest of a non-bridged network to a guest of another one on the same node: one
  forward pass, routed out of the first (its mode's checks) into the second
  (ROUTED_IN: its mode's checks, the sender's `out` chain, the receiver's `in`);
* anything else leaves the sender's node (through the outside router or the
  uplink; source translations apply to what the node routes out) and arrives at the
  receiver's node from outside: routed into a non-bridged network (no guard towards
  the guest: the node itself sends it onto the bridge), bridged to a guest of a
  bridged one (its guards, its `in` chain), or to the node's input. The node's own
  traffic to a guest of its non-bridged network goes straight onto the bridge: its
  output hook only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..compiler.plan import Plan
from ..compiler.plan.hooks import FORWARD, INPUT, ROUTED_IN, Stage
from ..compiler.plan.modes import host_services, is_routed, routed_checks
from ..compiler.plan.nat import SourceNat, port_forwards, source_nats
from ..compiler.plan.protection import protection_checks
from ..compiler.plan.switches import nic_filtered
from ..compiler.plan.tenants import tenant_boundary
from ..compiler.plan.vocabulary import Step as PlanStep
from ..policy.addresses import AddressSet, address_value
from . import space as s
from .chains import PASS, Chain, ChainBuilder, Step
from .guards import GuardBuilder, GuardStage
from .space import Intervals, Region

Nic = tuple[str, int]  # (vm, nic index)


class _Essentials:
    """The ICMPv6 essentials, accepted for good by the inet hooks before any rule."""

    name = "icmpv6-essentials"


ESSENTIALS = _Essentials()


@dataclass(frozen=True)
class Translation:
    """Source NAT at a node's postrouting: packets from `sources` (per family) leave
    with the new source; first entry wins. The stages after it see the new source."""

    name: str
    rules: tuple[tuple[int, Intervals, int, str], ...]  # (family, sources, new source, label)


@dataclass(frozen=True)
class ForwardRule:
    family: int
    listen: Intervals  # destination addresses
    proto: int
    port: int
    address: int  # the VM's address it forwards to
    to_port: int
    entry: int  # index in `nat`
    arrive: tuple[PathStage, ...]  # what the forwarded packet passes at the VM


@dataclass(frozen=True)
class Forwarding:
    """dnat at a node's prerouting: a packet to a forwarded port goes on as a packet
    to the VM (`arrive`), the node's input never sees it. Except from `untranslated`
    sources: the node's own bridged guests, whose connection the node already tracks
    (untranslated) from bridging it out towards the router, before it comes back."""

    name: str
    rules: tuple[ForwardRule, ...]
    untranslated: Region = ()


@dataclass(frozen=True)
class Scoped:
    """`stages` apply to the packets in `region` only; the rest passes untouched
    (e.g. a receiver's guards for packets bridged from its own network, the mode's
    checks for those routed in)."""

    region: Region
    stages: tuple[PathStage, ...]
    name: str = "scoped"


PathStage = Union[GuardStage, Chain, _Essentials, Translation, Forwarding, Scoped]
PROTOCOLS = {"tcp": 6, "udp": 17}


@dataclass
class _Pass:
    """One pass through one hook of one node, and who it concerns there."""

    node: str
    sender: Nic | None = None  # a local guest NIC sent it (its mark's source bits)
    receiver: Nic | None = None  # bridged to a local guest's port (destination bits)
    network: str | None = None  # both ends are guests of this network
    routed_from: str | None = None  # routed out of this non-bridged network
    routed_to: tuple[str, Nic] | None = None  # routed into this network, to this guest
    guest_network: str | None = None  # input: arriving from this guest network's bridge


class Paths:
    """Stages of flows and of one side of flows, from the plan's pieces."""

    def __init__(self, plan: Plan, chains: ChainBuilder, guards: GuardBuilder):
        self.plan, self.chains, self.guard_stages = plan, chains, guards
        self.policy = plan.policy
        self._memo: dict[tuple[object, ...], object] = {}

    # -- facts ---------------------------------------------------------------------

    def network(self, nic: Nic) -> str:
        return self.policy.doc.vms[nic[0]].nics[nic[1]].network

    def node(self, nic: Nic) -> str:
        return self.policy.doc.vms[nic[0]].host

    def routed(self, nic: Nic) -> bool:
        return is_routed(self.policy, self.network(nic))

    def same_segment(self, a: Nic, b: Nic) -> bool:
        """Bridged between the two NICs (no router in between)."""
        return self.network(a) == self.network(b) and (not self.routed(a) or self.node(a) == self.node(b))

    # -- plan pieces as analyzer stages ---------------------------------------------

    def _plan_chain(self, name: str, steps: tuple[PlanStep, ...], default: PlanStep | None, *, accept_ends: bool = False) -> Chain:
        """Plan steps as a chain; without a default the rest passes (goes on)."""
        after = self.chains.step(default) if default is not None else Step(s.universe(), "accept", PASS)
        return Chain(name, tuple(self.chains.step(step) for step in steps), after, accept_ends)

    def routed_from(self, network: str) -> Chain | None:
        """The mode's checks of what the node routes out of the network."""
        return self._routed(network, "out")

    def routed_into(self, network: str) -> Chain | None:
        """The mode's checks of what the node routes into the network."""
        return self._routed(network, "in")

    def _routed(self, network: str, way: str) -> Chain | None:
        key = ("routed", network, way)
        if key not in self._memo:
            checks = routed_checks(self.policy, network)
            steps = () if checks is None else checks.outbound if way == "out" else checks.inbound
            self._memo[key] = self._plan_chain(f"network:{network} routed {way}", steps, None) if steps else None
        return self._memo[key]  # type: ignore[return-value]

    def host_services(self, network: str) -> Chain | None:
        key = ("services", network)
        if key not in self._memo:
            services = host_services(self.policy, self.plan.rules, network)
            self._memo[key] = None if services is None else self._plan_chain(f"network:{network} host_services", services.steps, services.default, accept_ends=True)
        return self._memo[key]  # type: ignore[return-value]

    def tenant_boundary(self, a: Nic, b: Nic) -> Chain | None:
        """A flow between two tenants' guests ends at once (plan/tenants.py)."""
        key = ("tenants", self.network(a), self.network(b))
        if key not in self._memo:
            step = tenant_boundary(self.policy, self.network(a), self.network(b))
            self._memo[key] = None if step is None else self._plan_chain("tenants", (), step)
        return self._memo[key]  # type: ignore[return-value]

    def protection(self, node: str, target: str) -> Chain | None:
        """The node's PROTECTION stage for its input (`host`) or its guests' connections."""
        key = ("protection", node, target)
        if key not in self._memo:
            checks = protection_checks(self.policy, node)
            steps = checks.host if target == "host" else checks.guests
            self._memo[key] = self._plan_chain(f"host:{node} protection" + (" (guests)" if target == "guests" else ""), steps, None) if steps else None
        return self._memo[key]  # type: ignore[return-value]

    def management(self, node: str) -> Chain | None:
        key = ("management", node)
        if key not in self._memo:
            plan = self.plan.chains.host_in(node)
            self._memo[key] = self._plan_chain(f"host:{node} in", plan.before, None, accept_ends=True) if plan.before else None
        return self._memo[key]  # type: ignore[return-value]

    def translation(self, node: str) -> Translation | None:
        """What the node's postrouting does to the source of what it routes out."""
        key = ("nat", node)
        if key not in self._memo:
            rules = []
            for nat in source_nats(self.policy, node):
                new = self._new_source(nat, node)
                if new is not None:
                    rules.append((4 if nat.family == "ipv4" else 6, nat.sources, new, nat.label))
            self._memo[key] = Translation(f"{node} source nat", tuple(rules)) if rules else None
        return self._memo[key]  # type: ignore[return-value]

    def _new_source(self, nat: SourceNat, node: str) -> int | None:
        if nat.to is not None:
            return address_value(nat.to)[1]
        # masquerade: the address of the interface it leaves through (the uplink's)
        family = 4 if nat.family == "ipv4" else 6
        return next((value for f, value in map(address_value, self.policy.doc.hosts[node].address) if f == family), None)

    def guards(self, nic: Nic, direction: str) -> GuardStage | None:
        return self.guard_stages.stage(nic[0], nic[1], direction)

    # -- one hook ------------------------------------------------------------------

    def _hook(self, hook: tuple[Stage, ...], p: _Pass, sender_peer: AddressSet | None = None, receiver_peer: AddressSet | None = None) -> list[PathStage]:
        """The analyzer stages of one pass: the plan's stages of the hook, in order."""
        out: list[PathStage] = []
        for stage in hook:
            if stage in (Stage.LOOPBACK, Stage.PACKET_LIMITS, Stage.ESTABLISHED, Stage.INVALID, Stage.CONNTRACK, Stage.BRIDGED_INSIDE):
                continue  # no verdict for the first packet of a new connection between endpoints
            if stage is Stage.ROUTED_FROM:
                chain = self.routed_from(p.routed_from) if p.routed_from else None
                out += [chain] if chain else []
            elif stage is Stage.ROUTED_TO:
                if p.routed_to is not None:
                    return out + self._hook(ROUTED_IN, p, sender_peer, receiver_peer)  # it accepts at the end
            elif stage is Stage.NOT_GUEST:
                if p.sender is None and p.receiver is None and hook is FORWARD:
                    return out  # accepted
            elif stage is Stage.ESSENTIALS:
                out.append(ESSENTIALS)
            elif stage is Stage.PROTECTION:
                chain = self.protection(p.node, "host" if hook is INPUT else "guests")
                out += [chain] if chain else []
            elif stage is Stage.MANAGEMENT:
                chain = self.management(p.node)
                out += [chain] if chain else []
            elif stage is Stage.SENDER:
                chain = self.vm_chain(p.sender, "out", sender_peer) if p.sender is not None else None
                out += [chain] if chain else []
            elif stage is Stage.NETWORK:
                chain = self.chains.network(p.network) if p.network else None
                out += [chain] if chain else []
            elif stage is Stage.RECEIVER:
                chain = self.vm_chain(p.receiver, "in", receiver_peer) if p.receiver is not None else None
                out += [chain] if chain else []
            elif stage is Stage.MODE_CHECKS:
                chain = self.routed_into(p.routed_to[0]) if p.routed_to else None
                out += [chain] if chain else []
            elif stage is Stage.RECEIVER_BY_ADDRESS:
                chain = self.vm_chain(p.routed_to[1], "in", receiver_peer) if p.routed_to is not None else None
                out += [chain] if chain else []
            elif stage is Stage.ACCEPT:
                return out
            elif stage is Stage.HOST_SERVICES:
                chain = self.host_services(p.guest_network) if p.guest_network else None
                if chain is not None:
                    return out + [chain]  # its default drops: host rules are for everybody else
            elif stage is Stage.HOST_RULES:
                chain = self._host_rules(p.node, "in" if hook is INPUT else "out", self.interface(p.node, p.guest_network))
                out += [chain] if chain else []
            elif stage is Stage.HOST_DEFAULT:
                pass  # the default of the HOST_RULES chain
            else:  # pragma: no cover - a new stage needs a clause here
                raise AssertionError(f"stage {stage} has no analyzer clause")
        return out

    def vm_chain(self, nic: Nic, direction: str, peer: AddressSet | None = None) -> Chain | None:
        """The VM's chain as the NIC's traffic meets it; None when the NIC is not
        filtered (enable switches, issue 18: plan/switches.py)."""
        return self.chains.vm(nic[0], direction, peer, nic[1]) if nic_filtered(self.policy, nic[0], nic[1]) else None

    def interface(self, node: str, network: str | None) -> str | None:
        """The node's interface a path meets its host rules on (for `interface:`
        rules, issue 18): a routed guest network's bridge, else the uplink (None:
        the policy names none; plan/chains.py host_interface reads it most open)."""
        return self.policy.doc.networks[network].bridge if network is not None else self.policy.doc.hosts[node].uplink

    def _host_rules(self, node: str, direction: str, interface: str | None = None) -> Chain | None:
        """host_rules, the host's own rules and the default (the anti-lockout is the
        MANAGEMENT stage before), as they apply on `interface`."""
        key = ("host", node, direction, interface)
        if key not in self._memo:
            plan = self.plan.chains.host_in(node) if direction == "in" else self.plan.chains.host_out(node)
            chain = None
            if plan is not None:
                plan = self.plan.chains.host_interface(plan, interface)  # `interface:` rules (issue 18)
                steps = tuple(step for level in plan.levels for step in level.steps)
                before = plan.before if direction == "out" else ()  # the output hook's essentials are its own
                chain = self._plan_chain(plan.name, before + steps, plan.default, accept_ends=direction == "in")
            self._memo[key] = chain
        return self._memo[key]  # type: ignore[return-value]

    # -- whole flows ---------------------------------------------------------------

    def flow(self, src: tuple[str, str, int | None], dst: tuple[str, str, int | None]) -> tuple[PathStage, ...]:
        """The stages of a flow from `src` to `dst` ((kind, name, nic))."""
        key = ("flow", src, dst)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = tuple(self._flow(src, dst))
        return found  # type: ignore[return-value]

    def _flow(self, src: tuple[str, str, int | None], dst: tuple[str, str, int | None]) -> list[PathStage]:
        skind, sname, snic = src
        dkind, dname, dnic = dst
        a: Nic | None = (sname, snic) if skind == "vm" and snic is not None else None
        b: Nic | None = (dname, dnic) if dkind == "vm" and dnic is not None else None
        out: list[PathStage] = []
        if a is not None:
            guard = self.guards(a, "out")
            out += [guard] if guard else []
            if b is not None and (apart := self.tenant_boundary(a, b)) is not None:
                return out + [apart]
            if b is not None and self.same_segment(a, b):
                guard = self.guards(b, "in")
                out += [guard] if guard else []
                network = self.network(a)
                return out + self._hook(FORWARD, _Pass(self.node(a), sender=a, receiver=b, network=network))
            if self.routed(a):
                node = self.node(a)
                if dkind == "host" and dname == node:
                    # its packet meets the node's prerouting first: a forwarded port
                    # takes it on to that guest (routed from its network)
                    forwarding = self.forwarding(node, via=a)
                    return out + ([forwarding] if forwarding else []) + self._hook(INPUT, _Pass(node, sender=a, guest_network=self.network(a)))
                if b is not None and self.routed(b) and self.node(b) == node:
                    return out + self._hook(FORWARD, _Pass(node, sender=a, routed_from=self.network(a), routed_to=(self.network(b), b)))
                out += self._hook(FORWARD, _Pass(node, sender=a, routed_from=self.network(a)))
                translation = self.translation(node)
                out += [translation] if translation else []
            else:
                out += self._hook(FORWARD, _Pass(self.node(a), sender=a))
        elif skind == "host":
            local = b is not None and self.routed(b) and self.node(b) == sname
            interface = self.interface(sname, self.network(b) if local else None)  # type: ignore[arg-type]
            chain = self._host_rules(sname, "out", interface) if self.plan.chains.host_out(sname) is not None else None
            out += [chain] if chain else []
            if local:
                return out  # straight onto the bridge: no forward hook
            if dkind == "host" and dname == sname:
                return out
        return out + self._arrive(dkind, dname, b)

    def _arrive(self, kind: str, name: str, b: Nic | None, receiver_peer: AddressSet | None = None) -> list[PathStage]:
        """What a packet from outside passes at the receiver's node."""
        if b is not None:
            node = self.node(b)
            if self.routed(b):
                return self._hook(FORWARD, _Pass(node, routed_to=(self.network(b), b)), receiver_peer=receiver_peer)
            guard = self.guards(b, "in")
            return ([guard] if guard else []) + self._hook(FORWARD, _Pass(node, receiver=b), receiver_peer=receiver_peer)
        if kind == "host":
            forwarding = self.forwarding(name)
            return ([forwarding] if forwarding else []) + self._hook(INPUT, _Pass(name))
        return []

    # -- one side, for reach and diff ----------------------------------------------

    def side(self, kind: str, name: str, nic: int | None, role: str, peer: AddressSet | None = None) -> tuple[PathStage, ...]:
        """What a flow passes on one endpoint's side, whatever the other end (scoped
        by the other end's address where that changes the path: bridged from its own
        segment or routed, the node itself). Exact for every peer for which
        `peer_side` is not None. `peer`: only packets whose other end is in `peer`
        (ChainBuilder.vm)."""
        key = ("side", kind, name, nic, role, peer)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = tuple(self._side(kind, name, nic, role, peer))
        return found  # type: ignore[return-value]

    def _side(self, kind: str, name: str, nic: int | None, role: str, peer: AddressSet | None) -> list[PathStage]:
        if kind == "host":
            if role == "receiver":
                forwarding = self.forwarding(name)
                return ([forwarding] if forwarding else []) + self._hook(INPUT, _Pass(name))
            # what it sends leaves by its uplink (`interface:` rules: as `flow` takes them),
            # but to a guest it routes itself: that flow does not split (`splits`)
            chain = self._host_rules(name, "out", self.interface(name, None)) if self.plan.chains.host_out(name) is not None else None
            return [chain] if chain else []
        if kind != "vm" or nic is None:
            return []
        me: Nic = (name, nic)
        direction = "in" if role == "receiver" else "out"
        guard = self.guards(me, direction)
        guards: list[PathStage] = [guard] if guard else []
        found = self.vm_chain(me, direction, peer)
        chain: list[PathStage] = [found] if found is not None else []
        protection = self.protection(self.node(me), "guests")
        protected: list[PathStage] = [protection] if protection is not None else []
        if not self.routed(me):
            return guards + [ESSENTIALS, *protected, *chain]
        network, node = self.network(me), self.node(me)
        dim = s.SRC if role == "receiver" else s.DST
        own_node = self.scoped(("node", node, dim), self.node_region(node, dim), ())
        out: list[PathStage] = []
        if role == "receiver":
            # the node's own packets go straight onto the bridge: no chain of ours
            out.append(self.scoped(("node", node, dim, "unfiltered"), own_node.region, (self.unfiltered(node),)))
            if guards:
                out.append(Scoped(self.segment_region(network, dim), tuple(guards), "bridged"))
            checks = self.routed_into(network)
        else:
            out += guards  # the sender's guards see everything it sends
            management = self.management(node)
            if management is not None:
                out.append(self.scoped(("management", node, dim), own_node.region, (management,)))
            checks = self.routed_from(network)
        if checks is not None:
            out.append(self.scoped(("routed", network, dim), self.routed_region(network, node, dim), (checks,)))
        out += [ESSENTIALS, *protected, *chain]
        if role == "sender":
            services = self.host_services(network)
            if services is not None:
                out.append(self.scoped(("services", network, node, dim), own_node.region, (services,)))
        return out

    def peer_side(self, own: tuple[str, str, int | None], role: str, other: tuple[str, str, int | None], peer: AddressSet | None = None) -> tuple[PathStage, ...] | None:
        """The stages of the other end's side of a flow whose `role` side is `own`'s
        (its `side`), with the network check between them; None when the flow does
        not split into the two sides (a translated source, a routed guest and its own
        node): evaluate the whole flow (`flow`) then."""
        split = self.splits(own, role, other)
        if split is not True:
            return split
        sender, receiver = (other, own) if role == "receiver" else (own, other)
        a = (sender[1], sender[2]) if sender[0] == "vm" and sender[2] is not None else None
        b = (receiver[1], receiver[2]) if receiver[0] == "vm" and receiver[2] is not None else None
        other_role = "sender" if role == "receiver" else "receiver"
        stages = self.side(other[0], other[1], other[2], other_role, peer)
        network = self.chains.network(self.network(a)) if a is not None and b is not None and self.same_segment(a, b) else None
        if network is None:
            return stages
        # the kernel checks the network between the sender's out and the receiver's in chain
        return stages + (network,) if other_role == "sender" else stages[:-1] + (network, stages[-1])

    def splits(self, own: tuple[str, str, int | None], role: str, other: tuple[str, str, int | None]) -> bool | tuple[()] | None:
        """True when a flow between the two splits into the two `side`s; None when
        only the whole flow says what happens; () when `own`'s side alone decides."""
        sender, receiver = (other, own) if role == "receiver" else (own, other)
        a = (sender[1], sender[2]) if sender[0] == "vm" and sender[2] is not None else None
        b = (receiver[1], receiver[2]) if receiver[0] == "vm" and receiver[2] is not None else None
        if sender[0] == "host" and b is not None and self.routed(b) and self.node(b) == sender[1]:
            return None  # the node to a guest it routes: out by the guest network's bridge, not its uplink (`interface:` rules)
        if a is None or not self.routed(a) or (b is not None and self.same_segment(a, b)):
            return True
        node = self.node(a)
        if receiver[0] == "host" and receiver[1] == node:
            return () if role == "sender" else None  # its own side's host_services decided
        routed_locally = b is not None and self.routed(b) and self.node(b) == node
        return None if not routed_locally and self.translates(node, a) else True

    def translates(self, node: str, nic: Nic) -> bool:
        """Whether the node translates some source address of the NIC when it routes out."""
        translation = self.translation(node)
        if translation is None:
            return False
        for ip in self.policy.doc.vms[nic[0]].nics[nic[1]].ips:
            family, value = address_value(ip)
            if any(f == family and any(low <= value <= high for low, high in sources) for f, sources, _new, _label in translation.rules):
                return True
        return False

    def unfiltered(self, node: str) -> Chain:
        key = ("unfiltered", node)
        if key not in self._memo:
            self._memo[key] = Chain(f"host:{node} out onto the bridge", (), Step(s.universe(), "accept", "from the node itself (no forward hook)"), accept_ends=True)
        return self._memo[key]  # type: ignore[return-value]

    def scoped(self, key: tuple[object, ...], region: Region, stages: tuple[PathStage, ...]) -> Scoped:
        """A Scoped stage made once per key (reach and diff group peers by identity)."""
        full = ("scoped",) + key
        if full not in self._memo:
            self._memo[full] = Scoped(region, stages, str(key[0]))
        return self._memo[full]  # type: ignore[return-value]

    def forwarding(self, node: str, via: Nic | None = None) -> Forwarding | None:
        """The node's port forwards, as a stage of its receiving side: a forwarded
        packet goes on to the VM as one from outside, or (`via`: sent by a guest of
        one of the node's routed networks) as one routed from that guest's network.
        Hairpin (a guest using a forward to a guest of its own network) is not done:
        the reply would bypass the translation, so the connection fails; the packet
        is treated as the node's (its host_services decide)."""
        key = ("forwarding", node, via)
        if key not in self._memo:
            rules = []
            for forward in port_forwards(self.policy, node):
                vm = self.policy.doc.vms[forward.vm]
                nic = next(i for i, n in enumerate(vm.nics) if forward.address in n.ips)
                family = 4 if forward.family == "ipv4" else 6
                listen = s.merge((v, v) for v in (address_value(a)[1] for a in forward.listen))
                b: Nic = (forward.vm, nic)
                if via is not None and self.same_segment(via, b):
                    continue
                if via is None:
                    arrive = tuple(self._arrive("vm", forward.vm, b))
                else:
                    routed_to = (self.network(b), b) if self.routed(b) else None
                    arrive = tuple(self._hook(FORWARD, _Pass(node, sender=via, routed_from=self.network(via), routed_to=routed_to)))
                rules.append(ForwardRule(family, listen, PROTOCOLS[forward.protocol], forward.port, address_value(forward.address)[1], forward.to_port, forward.entry, arrive))
            # (the node's guest addresses only where it forwards something: 10,000 of them cost)
            self._memo[key] = Forwarding(f"{node} dnat", tuple(rules), self._addresses_region(self.bridged_guest_addresses(node), s.SRC)) if rules else None
        return self._memo[key]  # type: ignore[return-value]

    def bridged_guest_addresses(self, node: str) -> AddressSet:
        """Addresses of the node's guests on bridged networks."""
        ips = [ip for vm in self.policy.vms_on(node) for nic in self.policy.doc.vms[vm].nics if not is_routed(self.policy, nic.network) for ip in nic.ips]
        return self.policy.address_set(ips) if ips else AddressSet()

    def forwarded_from(self, node: str, source: tuple[str, str, int | None], target: Nic) -> bool:
        """Whether a flow from `source` to the node's port forwarded to `target` is
        translated: not from the node's bridged guests (their connection is tracked
        untranslated), nor from a routed guest on the target's own segment (hairpin,
        see `forwarding`: the analyzer treats it as the node's)."""
        kind, name, nic = source
        if kind != "vm" or nic is None or self.node((name, nic)) != node:
            return True
        return self.routed((name, nic)) and not self.same_segment((name, nic), target)

    def node_region(self, node: str, dim: int) -> Region:
        """Packets whose `dim` address is one of the node's."""
        key = ("node-region", node, dim)
        if key not in self._memo:
            self._memo[key] = self._addresses_region(self.policy.address_set(self.policy.doc.hosts[node].address), dim)
        return self._memo[key]  # type: ignore[return-value]

    def segment_region(self, network: str, dim: int) -> Region:
        """Packets whose `dim` address is on the network's segment (its subnets)."""
        key = ("segment", network, dim)
        if key not in self._memo:
            self._memo[key] = self._addresses_region(self.policy.network_addresses(network), dim)
        return self._memo[key]  # type: ignore[return-value]

    def routed_region(self, network: str, node: str, dim: int) -> Region:
        """Packets the node routes to/from the network: the other end is neither on its
        segment nor the node itself."""
        key = ("routed-region", network, node, dim)
        if key not in self._memo:
            self._memo[key] = s.subtract(s.subtract(s.universe(), self.segment_region(network, dim)), self.node_region(node, dim))
        return self._memo[key]  # type: ignore[return-value]

    @staticmethod
    def _addresses_region(addresses: AddressSet, dim: int) -> Region:
        boxes = []
        for index, values in enumerate((addresses.v4, addresses.v6)):
            if values:
                dims = list(s.universe()[index])
                dims[dim] = values
                boxes.append(tuple(dims))
        return tuple(boxes)
