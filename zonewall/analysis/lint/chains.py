"""The plan's chains as the lint sees them: each step restricted to what reaches the
chain (a VM's `in` only sees packets to its addresses, a network's only packets
between its guests), shared parts made once for all VMs alike."""

from __future__ import annotations

from collections.abc import Iterable

from ...compiler.plan.vocabulary import Step as PlanStep
from ...policy.addresses import AddressSet
from ...policy.resolve import RuleRef
from .. import space as s
from ..chains import Chain, Step
from ..space import Box, Intervals, Region
from .base import LintBase
from .cuts import _FAMILY, _MARK, FAMILY_RANGE, _contains, _restrict
from .state import _ChainState, _Restriction, _Step

# the cache key of a part made of a VM's own plan steps (make_state reads them straight)
OWN = object()


class ChainViews(LintBase):
    def all_chains(self) -> Iterable[_ChainState]:
        """The chains of this shard (shards.py; a run of one shard: every chain), each
        with its place in the whole run's order."""
        policy, doc, chains, shard = self.policy, self.doc, self.analyzer.chains, self.shard
        for position, vm in enumerate(doc.vms):
            if not shard.takes_vm(vm):
                continue
            addresses = policy.vm_addresses(vm)
            for side, direction in enumerate(("in", "out")):
                dim = s.DST if direction == "in" else s.SRC
                restrict = _Restriction.of_vm(dim, addresses)
                for nic in self.scoped_nics(vm, direction):
                    name, parts, default = self.vm_chain(vm, direction, nic)
                    state = self.make_state(name, "vm", vm, direction, parts, default, restrict)
                    state.order = (0, position, side, -1 if nic is None else nic)
                    yield state
        if not shard.takes_nodes:
            return
        for position, name in enumerate(doc.networks):
            if not policy.rules_of("network", name) or chains.network(name) is None:
                continue
            guests = self.network_guests(name)
            if guests.is_empty():
                continue
            by_family = {4: guests.v4, 6: guests.v6}
            restrict = _Restriction(dims=((s.SRC, by_family), (s.DST, by_family)))
            state = self.build_state(chains.network(name), "network", name, "net", True, restrict)  # type: ignore[arg-type]
            state.order = (1, position)
            yield state
        for position, node in enumerate(doc.hosts):
            for k, interface in enumerate(self.scoped_interfaces(node, "in")):
                state = self.build_state(chains.host_in(node, interface), "host", node, "in", True, None)
                state.order = (2, position, 0, k)
                yield state
            if chains.host_out(node) is not None:
                for k, interface in enumerate(self.scoped_interfaces(node, "out")):
                    state = self.build_state(chains.host_out(node, interface), "host", node, "out", False, None)  # type: ignore[arg-type]
                    state.order = (2, position, 1, k)
                    yield state

    def scoped_nics(self, vm: str, direction: str) -> tuple[int | None, ...]:
        """The NICs to lint the VM's chain for: one chain for all (None) unless a step
        is scoped to some NICs (`nic:`, issue 18); then each NIC's own, so that a rule
        is shadowed only by what applies on the same NIC."""
        plan = self.analyzer.plan.chains.vm(vm, direction)
        if not any(step.scope is not None and step.scope.nics for step in plan.steps):
            return (None,)
        return tuple(range(len(self.doc.vms[vm].nics)))

    def scoped_interfaces(self, node: str, direction: str) -> tuple[str | None, ...]:
        """The interfaces to lint a node's chain for (`interface:`, issue 18): one chain
        (None) unless a step is scoped; then one per interface pattern named, and one
        for the interfaces no pattern names (only the unscoped rules apply there)."""
        plan = self.analyzer.plan.chains.host_in(node) if direction == "in" else self.analyzer.plan.chains.host_out(node)
        names = sorted({name for level in plan.levels for step in level.steps if step.scope is not None for name in step.scope.interfaces}) if plan is not None else []
        return (None,) if not names else (*names, "")

    def vm_chain(self, vm: str, direction: str, nic: int | None = None) -> tuple[str, list[tuple[object, list[Step] | tuple[PlanStep, ...]]], Step]:
        """The plan's VM chain in parts (its levels, after the ICMPv6 essentials); the
        shared parts (global, zone) are built once for all VMs. Open port forwards
        match only forwarded connections and are left out (they decide no rule). With
        `nic`, as that NIC's traffic meets it (steps scoped to other NICs left out)."""
        plan, builder = self.analyzer.plan.chains.vm_nic(vm, direction, nic), self.analyzer.chains
        parts: list[tuple[object, list[Step] | tuple[PlanStep, ...]]] = []
        for level in plan.levels:
            if not level.shared and nic is None and self.shortcuts:
                parts.append((OWN, level.steps))  # plan steps, read straight (make_state)
                continue
            if not level.shared or nic is not None:
                render = builder.step if level.shared else builder.render  # a VM's own steps: met once
                parts.append((None, [render(step) for step in level.steps]))
                continue
            key = (level.kind, level.owner, direction)
            part = self._parts.get(key)
            if part is None:
                part = [self._essentials_step] if level.kind == "global" else []
                part = self._parts[key] = part + [builder.step(step) for step in level.steps]
            parts.append((key, part))
        default = self._defaults.get(plan.default.action + direction)
        if default is None:
            default = self._defaults[plan.default.action + direction] = builder.step(plan.default)
        name = plan.name if nic is None or len(self.doc.vms[vm].nics) == 1 else f"{plan.name} (nic {nic})"
        return name, parts, default

    def network_guests(self, network: str) -> AddressSet:
        ips = [ip for vm in self.doc.vms.values() for nic in vm.nics if nic.network == network for ip in nic.ips]
        return self.policy.address_set(ips) if ips else AddressSet()

    def build_state(self, chain: Chain, kind: str, owner: str, direction: str, essentials: bool, restrict: _Restriction | None) -> _ChainState:
        steps = [self._essentials_step] if essentials else []
        return self.make_state(chain.name, kind, owner, direction, [(None, steps + list(chain.steps))], chain.default, restrict)

    def make_state(self, name: str, kind: str, owner: str, direction: str, parts: list[tuple[object, list[Step] | tuple[PlanStep, ...]]], default: Step, restrict: _Restriction | None) -> _ChainState:
        """The chain's steps as the lint sees them. `parts` are (cache key or None, steps):
        a shared part (the global rules, a zone's) whose regions hold every address is
        the same for every VM with the same kind of addresses, so it is made once."""
        steps: list[_Step] = []
        for cache_key, part in parts:
            if cache_key is OWN:
                steps += [self.own_step(st, restrict) for st in part]  # type: ignore[arg-type]
            elif cache_key is not None and restrict is not None and restrict.dims is None:
                key = (cache_key, restrict.dim, restrict.token)
                found = self._part_memo.get(key)
                if found is None:
                    made = [self.step(st, restrict) for st in part]  # type: ignore[arg-type]
                    independent = all(self.independent(st.region, restrict.dim) for st in made)
                    found = self._part_memo[key] = (made, independent)
                    steps += made
                elif found[1]:
                    steps += found[0]
                else:
                    steps += [self.step(st, restrict) for st in part]
            else:
                steps += [self.step(st, restrict) for st in part]  # type: ignore[arg-type]
        default_logged = default.action != "accept" and self.log_denied
        return _ChainState(name, kind, owner, steps, default.action, default_logged, self.default_related(default, kind, owner, direction))

    def independent(self, region: Region, dim: int) -> bool:
        """Does every box of the region hold every address of its family in `dim`?"""
        key = (id(region), dim)
        found = self._independent.get(key)
        if found is None or found[0] is not region:
            flag = all(len(b[s.FAM]) == 1 and b[s.FAM][0][0] == b[s.FAM][0][1] and b[dim] == FAMILY_RANGE[b[s.FAM][0][0]] for b in region)
            found = self._independent[key] = (region, flag)
        return found[1]

    def step(self, st: Step, restrict: _Restriction | None) -> _Step:
        region = st.region
        eff = self.effective(region, restrict)
        ref = st.ref
        key = ref.id if ref is not None else "@" + st.label
        memo_key = (key, id(eff))
        found = self._step_memo.get(memo_key)
        if found is None or found.eff is not eff or found.region is not region:
            logged = ref.rule.log if ref is not None else False
            found = self._step_memo[memo_key] = _Step(key, ref, st.label, region, eff, st.action, st.limited, logged, self.sig(region))
            if self.shortcuts:
                found.meets = self.overlap_memo(found)
            if ref is not None and st.action == "accept" and ref.rule.direction == "in":
                found.exposes = bool(self.exposure_candidates(region))
        return found

    def own_step(self, st: PlanStep, restrict: _Restriction | None) -> _Step:
        """A VM's own rule as the lint sees it, read straight from its plan step: the
        region the analyzer's rendering gives it (ChainBuilder.render: the same memo
        of regions, the same `limited`), without the analyzer's Step in between nor
        the step memo (each own rule is met in one chain: 200,000 entries kept for
        nothing at 10,000 VMs)."""
        ref: RuleRef = st.ref  # type: ignore[assignment]
        key = self.shape_key(st, restrict)
        shape = self._shapes.get(key) if key is not None else None
        if shape is None or shape[0] is not st.matches:
            region = self.analyzer.regions.of(st)
            eff = self.effective(region, restrict)
            shape = (st.matches, region, eff, self.sig(region), bool(self.exposure_candidates(region)))
            if key is not None and self.independent(region, restrict.dim):  # type: ignore[union-attr]
                # every box holds every address of its family on the VM's side: what
                # reaches the chain depends on the kind of the VM's addresses alone
                # (effective: marked, or cut to its several), so every VM alike shares it
                self._shapes[key] = shape
        _, region, eff, sig, exposing = shape
        limited = st.limit is not None and not st.limit.over
        made = _Step(ref.id, ref, st.label, region, eff, st.action, limited, ref.rule.log, sig)
        made.meets = self.overlap_memo(made)
        if exposing and st.action == "accept" and ref.rule.direction == "in":
            made.exposes = True
        return made

    def shape_key(self, st: PlanStep, restrict: _Restriction | None) -> tuple[object, ...] | None:
        """What a VM's own step is to the lint, but for which rule it is: its matches
        (the plan's tuple, shared by every rule with the same match keys), its time
        window, and what reaches the chain (the VM's side, and the kind of its
        addresses per family). None: not shared (a network's or node's chain)."""
        if restrict is None or restrict.dims is not None:
            return None
        return (id(st.matches), st.time, restrict.dim, restrict.token)

    def overlap_memo(self, step: _Step) -> dict[int, bool]:
        """Whether `step` overlaps a later step (id of that one's region -> bool)
        depends on the two regions alone: every step with this region shares one memo,
        so the rules of 10,000 VMs, which resolve to ~41,000 regions, test ~182,000
        pairs instead of ~457,000 (shortcuts=False: one memo per step, per rule)."""
        return self._meets_of.setdefault(step.eid, step.meets)

    def effective(self, region: Region, restrict: _Restriction | None) -> Region:
        """What of the region reaches the chain, memoised: equal inputs give the same
        object, so the analysis of chains sharing rules (a zone's VMs) is memoised by
        region identity."""
        if restrict is None or not region:
            return region
        if restrict.dims is not None:  # network chains: plain restriction, kept alive
            eff = region
            for dim, by_family in restrict.dims:
                eff = _restrict(eff, dim, by_family)
            self._alive.append(eff)
            return eff
        dim = restrict.dim
        if self.independent(region, dim):
            # every box holds every address of its family: marked wherever the chain
            # has one address of the family, cut to the chain's several otherwise
            key: tuple[object, ...] = (id(region), dim, restrict.token)
            found = self._effective.get(key)
            if found is not None and found[0] is region:
                return found[1]
            marks: list[object] = []
            for b in region:
                spec = restrict.spec.get(b[s.FAM][0][0])
                marks.append(0 if spec is None else 1 if type(spec) is int else spec)
            return self._effective_of(region, dim, marks, key)
        marks = []
        for b in region:
            fam = b[s.FAM]
            if len(fam) != 1 or fam[0][0] != fam[0][1]:
                eff = _restrict(region, dim, restrict.by_family)
                self._alive.append(eff)
                return eff
            spec = restrict.spec.get(fam[0][0])
            if spec is None:
                marks.append(0)
            elif type(spec) is int:
                marks.append(1 if _contains(b[dim], spec) else 0)
            else:
                marks.append(s.iv_intersect(b[dim], spec) or 0)
        key = (id(region), dim, tuple(marks))
        found = self._effective.get(key)
        if found is not None and found[0] is region:
            return found[1]
        return self._effective_of(region, dim, marks, key)

    def _effective_of(self, region: Region, dim: int, marks: list[object], key: tuple[object, ...]) -> Region:
        out: list[Box] = []
        for b, mark in zip(region, marks):
            if mark == 0:
                continue
            f = b[s.FAM][0][0]
            if mark == 1:  # the chain's one address of the family: any constant will do
                values: Intervals = _MARK
            else:
                values = mark  # type: ignore[assignment]
            out.append(b[: s.FAM] + (_FAMILY[f],) + b[s.FAM + 1 : dim] + (values,) + b[dim + 1 :])  # dim is SRC or DST
        eff = tuple(out)
        self._effective[key] = (region, eff)
        return eff
