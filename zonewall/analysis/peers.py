"""One endpoint's peers grouped by the shape of their side of a flow.

`reach` asks, for every VM and node whose address the endpoint accepts (or sends
to), what that peer's side of the flow does: its guards, the ICMPv6 essentials, its
node's protection, its VM chain for packets whose other end is the endpoint, and
its network's check (paths.peer_side). Of 10,000 peers few differ in anything but
their addresses: the same guard filters, the same global and zone rules, a
default, and VM rules of which (for packets to or from one endpoint) almost none
can match. Built peer by peer, those sides cost seconds.

`PeerSides.reduced(owner, signature, own)` answers what
`Effective.reduce(paths.peer_side(...))` answers, the side reduced to the steps
that overlap the packets in question, with the key that groups peers whose
reductions are equal, but from pieces shared by every peer:

* guards: one stage per filter list (and network, for `allow-dhcp-server`), without
  the anti-spoofing drops, which never see a peer's own packets;
* chains shared by many peers (the global and zone levels, the node's protection,
  the network's check): reduced once per set of packets (`signature`);
* the peer's own VM rules: only those that can meet the endpoint's addresses and
  overlap the packets become steps; the others are skipped without building them;
* the default: one step per action and logging choice.

Whatever that does not cover exactly (a routed peer, a node, a VM with security
group references or an open port forward, a step whose region names particular
peer addresses) takes the general way, per peer. `reduced_slowly` is that way for
every peer, kept callable: the tests compare the two.

For another caller (diff compares the sides of two policies): `Effective` reduces
any stages; `PeerSides` is one endpoint's peers, one role, one set of pieces.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..compiler.plan.chains import Level, LevelKind, default_step
from ..compiler.plan.modes import is_routed
from ..compiler.plan.switches import nic_filtered
from ..policy.addresses import AddressSet
from ..policy.model import Dnat
from ..policy.ownrules import has_own_rule_index, own_rule_index
from . import space as s
from .chains import Chain, Step
from .guards import NIC_DEPENDENT, GuardRule, GuardStage
from .paths import ESSENTIALS, PathStage
from .space import Intervals, Region

if TYPE_CHECKING:
    from ..policy.resolve import RuleRef
    from .engine import Analyzer

NicKey = tuple[str, str, int | None]  # (kind, name, nic)
Key = tuple[object, ...]
_UNSEEN = object()
_CANDIDATES = "_own_rule_candidates"  # where an analyzer keeps each VM's candidates per endpoint (its __dict__)
_LENT = "_own_rule_candidates_lent"  # another analyzer's memo it may read, and the VMs it may not read it for
CANDIDATES_KEPT = 16  # endpoints whose peers' candidates a diff's kept side keeps (~10,000 VMs' lists each at 10,000 VMs: ~1 MB)
NO_GUARDS: tuple[GuardStage, Key] = (GuardStage("none", ()), ())  # a NIC without a guard stage


class PeerSpace:
    """The accepted pieces restricted to one peer's addresses, built only when a step
    must be tested against them exactly (most steps are decided by the memo).
    `read` tells whether a reduction asked for them: one that did not is the same for
    every peer of the same shape (analysis/peerclass.py)."""

    def __init__(self, pieces: list[Region], signature: tuple[int, ...], addresses: dict[int, Intervals], dim: int):
        self.pieces, self.signature, self.addresses, self.dim = pieces, signature, addresses, dim
        self.read = False
        self._region: Region | None = None

    @property
    def region(self) -> Region:
        self.read = True
        found = self._region
        if found is None:
            restrict, addresses, dim = s.box_restrict, self.addresses, self.dim
            found = self._region = tuple(
                b for i in self.signature for b in s.region(*(restrict(box, dim, addresses.get(box[s.FAM][0][0], ())) for box in self.pieces[i]))
            )
        return found


def peer_name(name: str) -> str:
    """A stage's name as a group of peers shares it: named for the role, not the first peer."""
    return "peer " + name.split(" ", 1)[1] if name.startswith(("vm:", "host:")) else name


class Effective:
    """Per peer, the stages reduced to the steps that overlap its packets; peers with
    equal reductions behave alike and are evaluated together."""

    def __init__(self) -> None:
        self._src_full: dict[int, bool] = {}
        self._overlap: dict[tuple[int, tuple[int, ...]], bool] = {}

    def peer_dim_full(self, region: Region, dim: int) -> bool:
        """Whether the region takes every address of the peer's side (then whether it
        meets a peer's packets does not depend on which peer)."""
        key = id(region) * 8 + dim
        found = self._src_full.get(key)
        if found is None:
            found = self._src_full[key] = all(box[dim] == ((0, s.ADDRESS_MAX[box[s.FAM][0][0]]),) for box in region if len(box[s.FAM]) == 1)
        return found

    def meets(self, region: Region, signature: tuple[int, ...], pieces: list[Region]) -> bool:
        """Whether the region meets the pieces at all (shared by every peer with this signature)."""
        key = (id(region), signature)
        found = self._overlap.get(key)
        if found is None:
            found = self._overlap[key] = any(s.overlaps(pieces[i], region) for i in signature)
        return found

    def overlaps(self, region: Region, signature: tuple[int, ...], pieces: list[Region], own: PeerSpace, dim: int) -> bool:
        # Only a region that meets the pieces and names particular peer addresses
        # needs the exact test against this peer's part.
        meets = self.meets(region, signature, pieces)
        if not meets or self.peer_dim_full(region, dim):
            return meets
        return s.overlaps(own.region, region)

    def reduce(self, stages: Iterable[PathStage], signature: tuple[int, ...], pieces: list[Region], own: PeerSpace, dim: int) -> tuple[tuple[PathStage, ...], Key]:
        reduced: list[PathStage] = []
        key: list[object] = []
        for stage in stages:
            if isinstance(stage, Chain):
                steps = tuple(step for step in stage.steps if self.overlaps(step.region, signature, pieces, own, dim))
                reduced.append(Chain(peer_name(stage.name), steps, stage.default))
                key.append(chain_key(steps, stage.default))
            elif isinstance(stage, GuardStage):
                filters = []
                for name, rules in stage.filters:
                    kept = tuple(
                        r for r in rules
                        # the peer's own packets (`own` is restricted to its addresses) are never spoofed
                        if r.region and not (r.foreign_source and dim == s.SRC) and self.overlaps(r.region, signature, pieces, own, dim)
                    )
                    if kept:
                        filters.append((name, kept))
                reduced.append(GuardStage("peer guards", tuple(filters)))
                key.append(guard_key(filters))
            else:  # scoped checks, translations, forwards, essentials: kept whole (made once each)
                reduced.append(stage)
                key.append(("stage", id(stage)))
        return tuple(reduced), tuple(key)


def chain_key(steps: Iterable[Step], default: Step) -> Key:
    return ("chain", tuple((id(st.region), st.action, st.label, st.limited) for st in steps), default.action, default.label)


def guard_key(filters: Iterable[tuple[str, tuple[GuardRule, ...]]]) -> Key:
    return ("guard", tuple((name, tuple((r.region, r.action, r.label) for r in rules)) for name, rules in filters))


def know_owners(analyzer: Analyzer, peer: AddressSet) -> None:
    """Tell the analyzer's planner which `vm:` and `zone:` references meet `peer`,
    from who owns its addresses (the directory): every VM's rules name some VM or
    zone, and their address sets (10,000 VMs' addresses) need not be built to know."""
    owners = {name for family, values in ((4, peer.v4), (6, peer.v6)) if values
              for _address, (kind, name, _nic) in analyzer.directory.owned_within(family, values) if kind == "vm"}
    vms = analyzer.policy.doc.vms
    zones = {zone for name in owners if (zone := vms[name].zone) is not None}
    analyzer.plan.rules.known_meets(peer, owners, zones)


def lend_candidates(analyzer: Analyzer, other: Analyzer, replaced: Iterable[str]) -> None:
    """Let `analyzer` (a diff's new side) take a VM's candidates (`PeerSides.candidates`:
    its own rules that can meet an endpoint, with their regions and rendered steps)
    from `other`'s memo (the old side's), but for the VMs whose rules were `replaced`;
    `keep_candidates` later keeps what `other` made or kept. Exact
    after rule edits in place whose steps `analyzer` took from `other`
    (`Analyzer.share_meanings`): every name means the same in both policies, and a VM
    whose rules were not replaced has the very RuleRefs in both, with the same regions
    and steps."""
    memo: dict[tuple[str, AddressSet], dict[str, object]] = other.__dict__.setdefault(_CANDIDATES, {})  # (what it makes in this diff too)
    analyzer.__dict__[_LENT] = (memo, frozenset(replaced))


def keep_candidates(analyzer: Analyzer) -> None:
    """End `lend_candidates`: what the old side made or kept (its peers whose side is
    the same in both policies are asked of it alone) kept in `analyzer`'s memo, but
    the replaced VMs', and `analyzer` cut loose from the old side's memo. A
    controller's chain of commits to a few zones in turn then finds each of 10,000
    peers' candidates for a zone's VMs made, on its old side (the previous commit's
    new side, analysis/kept.py), not again each commit. A memo holds the endpoints
    most recently asked, this diff's first, at most CANDIDATES_KEPT of them."""
    lent = analyzer.__dict__.pop(_LENT, None)
    if lent is None:
        return
    theirs, replaced = lent
    mine: dict[tuple[str, AddressSet], dict[str, object]] = analyzer.__dict__.setdefault(_CANDIDATES, {})
    for key, found in theirs.items():  # (most recent first: this diff's endpoints, then those it kept)
        if key not in mine and len(mine) >= CANDIDATES_KEPT:
            break
        kept = mine.setdefault(key, {})
        for vm, candidates in found.items():
            if vm not in replaced:
                kept.setdefault(vm, candidates)


class PeerSides:
    """The reduced sides of one endpoint's peers (module docstring). `mine`: the
    endpoint, `role`: its role in the flows (receiver for `reach --to`), `peer`: its
    addresses, `pieces`: what its own side accepts, `dim`: the peers' address
    dimension. `indexed`: each VM's own rules that can meet the endpoint from the
    policy's `OwnRuleIndex` (policy/ownrules.py, built with the policy's indexes)
    instead of a scan of the VM's rules: the same answer (the tests compare them);
    at 10,000 VMs a cold reach on a loaded policy takes ~100 ms less with it. None:
    the index when the policy has it built, else the scan (building it for one
    query costs more than the scan)."""

    def __init__(self, analyzer: Analyzer, mine: NicKey, role: str, peer: AddressSet, pieces: list[Region], dim: int, *, grouped: bool = True,
                 indexed: bool | None = None):
        self.analyzer, self.paths, self.policy = analyzer, analyzer.paths, analyzer.policy
        self.mine, self.role, self.peer, self.pieces, self.dim = mine, role, peer, pieces, dim
        self.other_role = "sender" if role == "receiver" else "receiver"
        self.direction = "out" if self.other_role == "sender" else "in"  # of the peers' chains and guards
        self.effective = Effective()
        self._kept_steps: dict[tuple[int, tuple[int, ...]], tuple[tuple[Step, ...], tuple[Step, ...]]] = {}  # (chain or level, signature) -> (kept, tested per peer)
        self._chains: dict[tuple[int, tuple[int, ...]], tuple[Chain, Key]] = {}
        self._levels: dict[tuple[str, str], tuple[Level, tuple[Step, ...], bool]] = {}  # the level is kept with its steps: its id stays its own
        self._guards: dict[tuple[object, ...], tuple[tuple[str, tuple[GuardRule, ...]], ...] | None] = {}
        self._guard_reduced: dict[tuple[object, ...], tuple[GuardStage, Key] | None] = {}
        self._defaults: dict[tuple[object, ...], Step] = {}
        self._routed: dict[str, bool] = {}
        self._forwarded = {entry.to.vm for entry in self.policy.doc.nat if isinstance(entry, Dnat) and entry.open} if self.direction == "in" else set()
        self.grouped = grouped
        self._meets_test = analyzer.plan.rules.meets_test(peer)
        self._meets_known = analyzer.plan.rules.known_to_meet(peer)
        # each VM's own rules that can meet the endpoint, kept on the analyzer for
        # the next query about it (a warm analyzer)
        memo: dict[tuple[str, AddressSet], dict[str, object]] = analyzer.__dict__.setdefault(_CANDIDATES, {})
        self._own_candidates = memo.setdefault((self.direction, peer), {})
        lent: tuple[dict[tuple[str, AddressSet], dict[str, object]], frozenset[str]] | None = analyzer.__dict__.get(_LENT)
        self._lender = lent[0].get((self.direction, peer)) if lent is not None else None  # (live: the lender may still fill it)
        self._not_lent = lent[1] if lent is not None else frozenset()
        self._own_hits: dict[str, list[RuleRef]] | None = None  # from the index: each VM's rules that can meet the endpoint
        self.index = indexed if indexed is not None else has_own_rule_index(self.policy)
        if grouped:
            know_owners(analyzer, peer)

    # -- the general way ------------------------------------------------------------

    def reduced_slowly(self, owner: NicKey, signature: tuple[int, ...], own: PeerSpace) -> tuple[tuple[PathStage, ...], Key] | None:
        """The peer's whole side, built and reduced (None: the flow does not split)."""
        stages = self.paths.peer_side(self.mine, self.role, owner, self.peer)
        if stages is None:
            return None
        return self.effective.reduce(stages, signature, self.pieces, own, self.dim)

    # -- from shared pieces -------------------------------------------------------------

    def reduced(self, owner: NicKey, signature: tuple[int, ...], own: PeerSpace) -> tuple[tuple[PathStage, ...], Key] | None:
        """What `reduced_slowly` answers, from shared pieces where it can (`grouped`)."""
        fast = self.shared(owner, signature, own)
        return fast if fast is not None else self.reduced_slowly(owner, signature, own)

    def shared(self, owner: NicKey, signature: tuple[int, ...], own: PeerSpace) -> tuple[tuple[PathStage, ...], Key] | None:
        """The side from shared pieces (None: not `grouped`, or the general way's)."""
        return self._reduced(owner, signature, own) if self.grouped else None

    def forwarded(self, vm: str) -> bool:
        """Whether an open port forward leads to the VM (its side: the general way)."""
        return vm in self._forwarded

    def candidates(self, vm: str) -> list[list[Any]] | None:
        """The VM's own rules that can meet the endpoint ([rule, region, step once
        built], in order; None: a security group reference), asked once per VM."""
        found = self._own_candidates.get(vm, _UNSEEN)
        if found is _UNSEEN:
            if self._lender is not None and vm not in self._not_lent:
                found = self._lender.get(vm, _UNSEEN)
            if found is _UNSEEN:
                found = self._indexed_candidates(vm) if self.index else self._candidates(vm)
            self._own_candidates[vm] = found
        return found  # type: ignore[return-value]

    def _is_routed(self, network: str) -> bool:
        found = self._routed.get(network)
        if found is None:
            found = self._routed[network] = is_routed(self.policy, network)
        return found

    def _reduced(self, owner: NicKey, signature: tuple[int, ...], own: PeerSpace) -> tuple[tuple[PathStage, ...], Key] | None:
        kind, name, nic = owner
        if kind != "vm" or nic is None:
            return None
        vm = self.policy.doc.vms[name]
        network = vm.nics[nic].network
        if self._is_routed(network) or name in self._forwarded:
            return None
        mkind, mname, mnic = self.mine
        same_segment = False
        if mkind == "vm" and mnic is not None:
            mine_network = self.policy.doc.vms[mname].nics[mnic].network
            if self._is_routed(mine_network):
                return None  # a routed endpoint: paths.splits decides
            same_segment = mine_network == network
        filtered = nic_filtered(self.policy, name, nic)
        stages: list[PathStage] = []
        key: list[object] = []
        if filtered:
            guard = self._guard(name, nic, network, signature)
            if guard is None:
                return None
            if guard is not NO_GUARDS:
                stages.append(guard[0])
                key.append(guard[1])
        stages.append(ESSENTIALS)
        key.append(("stage", id(ESSENTIALS)))
        protection = self.paths.protection(vm.host, "guests")
        if protection is not None:
            stage, stage_key = self._shared_chain(protection, signature, own)
            stages.append(stage)
            key.append(stage_key)
        if filtered:
            found = self._vm_chain(name, nic, signature, own)
            if found is None:
                return None
            stages.append(found[0])
            key.append(found[1])
        net_chain = self.analyzer.chains.network(network) if same_segment else None
        if net_chain is not None:
            stage, stage_key = self._shared_chain(net_chain, signature, own)
            if self.other_role == "sender":
                stages.append(stage)
                key.append(stage_key)
            else:  # the kernel checks the network between the sender's out and the receiver's in chain
                stages.insert(len(stages) - 1, stage)
                key.insert(len(key) - 1, stage_key)
        return tuple(stages), tuple(key)

    # -- pieces ---------------------------------------------------------------------

    def _kept(self, memo_key: tuple[int, tuple[int, ...]], steps: tuple[Step, ...], signature: tuple[int, ...]) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
        """The steps that meet the pieces, and those of them whose region names
        particular peer addresses (tested per peer)."""
        found = self._kept_steps.get(memo_key)
        if found is None:
            effective, pieces, dim = self.effective, self.pieces, self.dim
            kept = tuple(step for step in steps if effective.meets(step.region, signature, pieces))
            found = self._kept_steps[memo_key] = (kept, tuple(step for step in kept if not effective.peer_dim_full(step.region, dim)))
        return found

    def _exact(self, kept: tuple[Step, ...], exact: tuple[Step, ...], own: PeerSpace) -> tuple[Step, ...]:
        if not exact:
            return kept
        return tuple(step for step in kept if step not in exact or s.overlaps(own.region, step.region))

    def _shared_chain(self, chain: Chain, signature: tuple[int, ...], own: PeerSpace) -> tuple[Chain, Key]:
        """A chain many peers pass (the node's protection, the network's check), reduced."""
        memo_key = (id(chain), signature)
        found = self._chains.get(memo_key)
        if found is not None:
            return found
        kept, exact = self._kept(memo_key, chain.steps, signature)
        steps = self._exact(kept, exact, own)
        made = (Chain(peer_name(chain.name), steps, chain.default), chain_key(steps, chain.default))
        if not exact:  # the same for every peer
            self._chains[memo_key] = made
        return made

    def _guard(self, vm: str, nic: int, network: str, signature: tuple[int, ...]) -> tuple[GuardStage, Key] | None:
        """The NIC's guard stage reduced (NO_GUARDS: it has none; None: the general way)."""
        names = tuple(self.policy.nic_filters(vm, nic))
        shape = (names, network if "allow-dhcp-server" in names else None)
        if shape not in self._guards:
            self._guards[shape] = self._guard_filters(names, network)
        filters = self._guards[shape]
        if filters is None:
            return NO_GUARDS
        memo_key = (shape, signature)
        if memo_key not in self._guard_reduced:
            self._guard_reduced[memo_key] = self._reduce_guards(filters, signature)
        return self._guard_reduced[memo_key]

    def _reduce_guards(self, filters: tuple[tuple[str, tuple[GuardRule, ...]], ...], signature: tuple[int, ...]) -> tuple[GuardStage, Key] | None:
        effective, pieces, dim = self.effective, self.pieces, self.dim
        kept_filters = []
        for name, rules in filters:
            kept = []
            for rule in rules:
                if not effective.meets(rule.region, signature, pieces):
                    continue
                if not effective.peer_dim_full(rule.region, dim):
                    return None  # depends on the peer's addresses
                kept.append(rule)
            if kept:
                kept_filters.append((name, tuple(kept)))
        return GuardStage("peer guards", tuple(kept_filters)), guard_key(kept_filters)

    def _guard_filters(self, names: tuple[str, ...], network: str) -> tuple[tuple[str, tuple[GuardRule, ...]], ...] | None:
        """A filter list's rules as every NIC with it has them but the anti-spoofing
        drops (`foreign_source`: only a sender has them, and the pieces restrict its
        packets to its own addresses); None when such NICs have no guard stage."""
        guards = self.analyzer.guards
        filters = []
        present = False
        for name in names:
            if name in self.policy.doc.filters:
                rules = guards.custom(name, self.direction)
            elif name in NIC_DEPENDENT:
                rules = guards.nic_independent(name, self.direction)
                present = present or self.direction == "out"  # every NIC has its own drops there
            elif name == "allow-dhcp-server":
                rules = guards.dhcp_server(network, self.direction)
            else:
                rules = guards.builtin_shared(name, self.direction)
            present = present or bool(rules)
            kept = tuple(rule for rule in rules if rule.region and not rule.foreign_source)
            if kept:
                filters.append((name, kept))
        return tuple(filters) if present else None

    def _default(self, vm: str) -> Step:
        spec = self.policy.doc.vms[vm]
        action = self.policy.default_action(vm, self.direction)
        logging = spec.log
        choice = getattr(logging, "in_" if self.direction == "in" else "out") if logging is not None else None
        memo_key = (action, choice)
        found = self._defaults.get(memo_key)
        if found is None:
            found = self._defaults[memo_key] = self.analyzer.chains.step(default_step(self.policy, action, f"default-{self.direction}", self.direction, logging))
        return found

    def _vm_chain(self, vm: str, nic: int, signature: tuple[int, ...], own: PeerSpace) -> tuple[Chain, Key] | None:
        """The peer's VM chain for packets whose other end is the endpoint, reduced:
        global, its own and its zone's rules, the default (None: not shared)."""
        zone = self.policy.doc.vms[vm].zone
        steps = self._level_kept("global", "", nic, signature, own)
        own_steps = self._own_steps(vm, nic, signature, own)
        if own_steps is None:
            return None
        steps += own_steps
        if zone:
            steps += self._level_kept("zone", zone, nic, signature, own)
        default = self._default(vm)
        return Chain(f"peer {self.direction}", tuple(steps), default), chain_key(steps, default)

    def _level_kept(self, kind: LevelKind, owner: str, nic: int, signature: tuple[int, ...], own: PeerSpace) -> list[Step]:
        """A shared level's steps that overlap the peer's packets, as its NIC meets them."""
        level, steps, scoped = self._level_steps(kind, owner)
        memo_key = (id(level), signature)
        kept, exact = self._kept(memo_key, steps, signature)
        if not exact and not scoped:  # the same for every peer with this signature
            return list(kept)
        return [step for step in self._exact(kept, exact, own) if step.scope is None or step.scope.holds_for_nic(nic)]

    def _level_steps(self, kind: LevelKind, owner: str) -> tuple[Level, tuple[Step, ...], bool]:
        """The level (filtered for the endpoint), its steps, whether one is NIC-scoped."""
        found = self._levels.get((kind, owner))
        if found is None:
            level = self.analyzer.plan.chains.level(kind, owner, self.direction, self.peer)
            steps = tuple(map(self.analyzer.chains.step, level.steps))
            found = self._levels[kind, owner] = (level, steps, any(step.scope is not None and step.scope.nics for step in steps))
        return found

    def _own_steps(self, vm: str, nic: int, signature: tuple[int, ...], own: PeerSpace) -> list[Step] | None:
        """The VM's own rules as steps, only those that can meet the endpoint and
        overlap the pieces (the rest are never built); None: security group references."""
        candidates = self.candidates(vm)
        if candidates is None:
            return None
        effective, pieces, dim = self.effective, self.pieces, self.dim
        out: list[Step] = []
        for candidate in candidates:
            if not effective.overlaps(candidate[1], signature, pieces, own, dim):
                continue
            step = candidate[2]
            if step is None:
                step = candidate[2] = self.analyzer.chains.step(self.analyzer.plan.rules.step(candidate[0]))
            if step.scope is None or step.scope.holds_for_nic(nic):
                out.append(step)
        return out

    def _indexed_candidates(self, vm: str) -> list[list[Any]] | None:
        """What `_candidates` answers, from the policy's index of own rules by the
        references of their other end (`OwnRuleIndex`): no scan of the VM's rules."""
        index = own_rule_index(self.policy, self.direction)
        hits = self._own_hits
        if hits is None:
            hits = self._own_hits = index.meeting(self._meets_test)
        found = index.candidates(vm, hits)
        if found is None:
            return None
        if found:  # filed by place: the rule there now, with its id and line (an edit that moved lines carries the index)
            run = self.policy.rules_of("vm", vm)
            found = [run[ref.index] for ref in found]
        # a rule's entry (its region, its step once built) is the analyzer's, whatever the
        # endpoint: a zone commit asks it of ~50,000 rules for each class of its VMs
        entries: dict[int, list[Any]] = self.analyzer.__dict__.setdefault("_own_rule_entries", {})
        rules, regions = self.analyzer.plan.rules, self.analyzer.regions
        out = []
        for ref in found:
            entry = entries.get(id(ref))
            if entry is None or entry[0] is not ref:  # (the entry keeps its rule: its id stays its own)
                entry = entries[id(ref)] = [ref, regions.of_matches(rules.matches(ref.rule), rules.time(ref.rule.schedule)), None]
            out.append(entry)
        return out

    def _candidates(self, vm: str) -> list[list[Any]] | None:
        """[rule, its region, its step once built] for the VM's own rules in the
        direction that can meet the endpoint; None: it references a security group."""
        rules = self.analyzer.plan.rules
        regions = self.analyzer.regions
        direction, meets, known = self.direction, self._meets_test, self._meets_known
        outbound = direction == "out"
        out: list[list[Any]] = []
        # asked for every rule of the cluster by a cold reach: the cheap tests first,
        # a one-item list looked up in what the test has learned (most are)
        for ref in self.policy.rules_of("vm", vm):
            rule = ref.rule
            if rule.security_group is not None:
                return None
            rule_direction = rule.direction
            if (rule_direction is not None and rule_direction != direction) or not rule.enabled:
                continue
            other = rule.to if outbound else rule.from_
            if other is None:
                hit: object = True
            elif len(other) == 1:
                hit = known.get(other[0])  # None: not yet known, or an exclusion
                if hit is None:
                    hit = meets(other)
            else:
                hit = meets(other)
            if hit:
                schedule = rule.schedule
                out.append([ref, regions.of_matches(rules.matches(rule), rules.time(schedule) if schedule is not None else None), None])
        return out
