"""Who is at the ends of a flow: a VM's NIC, a node, or an address outside.

References are those of the policy (`vm:NAME`, `host:NAME`, an address) plus
`vm:NAME@NETWORK` (that NIC) and `outside:ADDR`. The NIC a multi-homed VM sends from
and the address a VM is reached at follow the lab's (and a well-configured guest's)
routing: the NIC on the peer's subnet, else the first routed NIC of the family.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, TypeVar

from ..compiler.plan.modes import is_routed
from ..policy.addresses import AddressSet, address_value
from ..policy.resolve import Policy
from .space import Intervals

Kind = Literal["vm", "host", "outside"]


class EndpointError(ValueError):
    pass


@dataclass(frozen=True)
class Endpoint:
    kind: Kind
    name: str  # VM or node name; for outside the address text (or "outside")
    nic: int | None = None  # a VM's NIC index (None: chosen per peer)
    network: str | None = None  # requested NIC network (vm:NAME@NET)
    address: str | None = None  # the exact address asked for (a VM's or node's)

    @property
    def label(self) -> str:
        if self.kind == "outside":
            return f"outside:{self.name}"
        suffix = f"@{self.network}" if self.network else ""
        return f"{self.kind}:{self.name}{suffix}"


def family_number(address: str) -> int:
    return ipaddress.ip_address(address).version


Owner = tuple[str, str, int | None]  # (kind, name, NIC index)
OwnerTable = dict[int, tuple[list[int], list[Owner]]]
_OWNERS = "_address_owners"  # where a policy keeps its OwnerTable
_PLACES = "_address_places"  # and its owners' places in it
_BY_OWNER = "_addresses_by_owner"  # and the same by owner
_T = TypeVar("_T")
_INSIDE = "_address_places_inside"  # and the places inside sets of intervals asked before
INSIDE_KEPT = 512  # sets of intervals whose places are kept (a zone commit at 10,000 VMs asks ~135); cleared when full


def _owner_table(policy: Policy) -> OwnerTable:
    # one pass, each address parsed once (reach builds this cold for every query)
    pairs: dict[int, list[tuple[int, Owner]]] = {4: [], 6: []}
    for name, vm in policy.doc.vms.items():
        for index, nic in enumerate(vm.nics):
            owner: Owner = ("vm", name, index)
            for ip in nic.ips:
                version, value = address_value(ip)
                pairs[version].append((value, owner))
    for name, host in policy.doc.hosts.items():
        for ip in host.address:
            version, value = address_value(ip)
            pairs[version].append((value, ("host", name, None)))
    out = {}
    for family in (4, 6):
        found = sorted(pairs[family])
        out[family] = ([p[0] for p in found], [p[1] for p in found])
    return out


def owner_places(owners: list[Owner]) -> dict[Owner, list[int]]:
    """Each owner's places in a family's table of owners."""
    found: dict[Owner, list[int]] = {}
    for place, owner in enumerate(owners):
        found.setdefault(owner, []).append(place)
    return found


def places_inside(keys: list[int], intervals: Intervals) -> int:
    """The places in a sorted table of addresses (`keys`) of those inside the
    intervals, as the bits of an integer: a run of bits per interval."""
    found = 0
    for low, high in intervals:
        start, stop = bisect.bisect_left(keys, low), bisect.bisect_right(keys, high)
        if stop > start:
            found |= ((1 << (stop - start)) - 1) << start
    return found


class Directory:
    """Addresses of the policy's endpoints, and who owns an address."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def _kept(self, key: str, make: Callable[[], _T]) -> _T:
        """What is kept with the policy under `key` (made now if not yet): the table and
        what is read of it, lent together to a policy with the same addresses (`lend`)."""
        found: _T | None = self.policy.__dict__.get(key)
        if found is None:
            found = self.policy.__dict__[key] = make()
        return found

    @cached_property
    def owners(self) -> OwnerTable:
        """Per family: sorted address integers and their owner (kind, name, nic);
        built once per policy, kept with it (a commit's diff reads it again as the
        next commit's old side: 40,000 addresses at 10,000 VMs)."""
        return self._kept(_OWNERS, lambda: _owner_table(self.policy))

    def lend(self, policy: Policy) -> None:
        """`policy` has the same VMs, NICs and nodes with the same addresses (a diff
        of rule edits): it owns addresses exactly as this directory's policy does."""
        policy.__dict__[_OWNERS] = self.owners
        policy.__dict__[_BY_OWNER] = self._by_owner  # made once per whole load, as the table
        policy.__dict__[_PLACES] = self._places
        policy.__dict__[_INSIDE] = self._inside

    @cached_property
    def _by_owner(self) -> dict[Owner, dict[int, list[int]]]:
        """Each owner's addresses, kept with the policy and lent with the table (a
        commit's diff asks it of every peer: ~20 ms to remake at 10,000 VMs)."""
        return self._kept(_BY_OWNER, self._addresses_by_owner)

    def _addresses_by_owner(self) -> dict[Owner, dict[int, list[int]]]:
        out: dict[Owner, dict[int, list[int]]] = {}
        for family in (4, 6):
            keys, owners = self.owners[family]
            for value, owner in zip(keys, owners):
                out.setdefault(owner, {}).setdefault(family, []).append(value)
        return out

    @cached_property
    def _places(self) -> dict[int, dict[Owner, list[int]]]:
        """Per family, each owner's places in the sorted table, kept with the policy and
        lent with the table (analysis/peerlabels.py: ~20 ms to remake at 10,000 VMs)."""
        return self._kept(_PLACES, lambda: {family: owner_places(self.owners[family][1]) for family in (4, 6)})

    @cached_property
    def _inside(self) -> dict[tuple[int, Intervals], int]:
        """`inside`'s memo, kept with the policy and lent with the table."""
        return self._kept(_INSIDE, dict)

    def inside(self, family: int, intervals: Intervals) -> int:
        """The places in the family's table of the addresses inside the intervals, as
        the bits of an integer (a run of bits per interval: analysis/peerlabels.py).
        Kept with the table and lent with it: a chain of commits to one zone asks the
        same ~135 sets of ~500 intervals each commit at 10,000 VMs (~40 ms to make)."""
        memo = self._inside
        found = memo.get((family, intervals))
        if found is None:
            found = places_inside(self.owners[family][0], intervals)
            if len(memo) >= INSIDE_KEPT:
                memo.clear()
            memo[family, intervals] = found
        return found

    def places(self, family: int) -> dict[Owner, list[int]]:
        """Each owner's places in the family's sorted table (`owners`)."""
        return self._places[family]

    def addresses(self, owner: tuple[str, str, int | None]) -> dict[int, list[int]]:
        """An owner's addresses per family (a VM NIC's or a node's; {} for none)."""
        return self._by_owner.get(owner, {})

    def owner(self, address: str) -> tuple[str, str, int | None] | None:
        ip = ipaddress.ip_address(address)
        keys, owners = self.owners[ip.version]
        index = bisect.bisect_left(keys, int(ip))
        if index < len(keys) and keys[index] == int(ip):
            return owners[index]
        return None

    def owners_within(self, family: int, intervals: tuple[tuple[int, int], ...]) -> list[tuple[str, str, int | None]]:
        """The owner of every address inside the intervals (`owned_within` without the
        addresses), in order of address: an owner of several is named once each."""
        keys, owners = self.owners[family]
        out: list[tuple[str, str, int | None]] = []
        for low, high in intervals:
            out.extend(owners[bisect.bisect_left(keys, low) : bisect.bisect_right(keys, high)])
        return out

    def owned_within(self, family: int, intervals: tuple[tuple[int, int], ...]) -> list[tuple[int, tuple[str, str, int | None]]]:
        """Every (address, owner) inside the intervals."""
        keys, owners = self.owners[family]
        out = []
        for low, high in intervals:
            start = bisect.bisect_left(keys, low)
            stop = bisect.bisect_right(keys, high)
            out.extend(zip(keys[start:stop], owners[start:stop]))
        return out

    @cached_property
    def cluster(self) -> AddressSet:
        """Every address that is not outside: what a VM or node owns, and the subnets
        of non-bridged networks (the node's own segments: nobody but their guests and
        the node lives there)."""
        v4 = [(a, a) for a in self.owners[4][0]]
        v6 = [(a, a) for a in self.owners[6][0]]
        owned = AddressSet.of(v4, v6)
        for name in self.policy.doc.networks:
            if is_routed(self.policy, name):
                owned = owned.union(self.policy.network_addresses(name))
        return owned

    # -- references --------------------------------------------------------------

    def parse(self, ref: str) -> Endpoint:
        text = ref.strip()
        if text.startswith("outside:"):
            address = text[len("outside:") :]
            try:
                return Endpoint("outside", str(ipaddress.ip_address(address)))
            except ValueError:
                raise EndpointError(f"{ref}: expected outside:ADDRESS") from None
        kind, sep, name = text.partition(":")
        if sep and kind == "vm":
            vm, _, network = name.partition("@")
            if vm not in self.policy.doc.vms:
                raise EndpointError(f"{ref}: vm {vm} is not in the policy")
            if network and not any(n.network == network for n in self.policy.doc.vms[vm].nics):
                raise EndpointError(f"{ref}: vm {vm} has no NIC on network {network}")
            return Endpoint("vm", vm, network=network or None)
        if sep and kind == "host":
            if name not in self.policy.doc.hosts:
                raise EndpointError(f"{ref}: host {name} is not in the policy")
            return Endpoint("host", name)
        if sep and kind in ("zone", "group", "network"):
            raise EndpointError(f"{ref}: a flow needs one endpoint; use `zonewall reach` for a {kind}")
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            if text in self.policy.doc.vms:
                return Endpoint("vm", text)
            if text in self.policy.doc.hosts:
                return Endpoint("host", text)
            raise EndpointError(f"{ref}: expected vm:NAME[@NETWORK], host:NAME, outside:ADDRESS or an address") from None
        found = self.owner(address)
        if found is None:
            return Endpoint("outside", address)
        kind, name, nic = found
        if kind == "host":
            return Endpoint("host", name, address=address)
        nics = self.policy.doc.vms[name].nics
        return Endpoint("vm", name, nic=nic, network=nics[nic].network if len(nics) > 1 else None, address=address)  # type: ignore[index]

    # -- concrete addresses --------------------------------------------------------

    def target_address(self, endpoint: Endpoint, family: int, near: Endpoint | None = None) -> tuple[str, int | None]:
        """Where a flow to `endpoint` goes: (address, NIC index)."""
        if endpoint.kind == "outside":
            return endpoint.name, None
        if endpoint.address is not None:
            if family_number(endpoint.address) != family:
                raise EndpointError(f"{endpoint.address} is IPv{family_number(endpoint.address)} but the flow is IPv{family}")
            return endpoint.address, endpoint.nic
        if endpoint.kind == "host":
            for address in self.policy.doc.hosts[endpoint.name].address:
                if family_number(address) == family:
                    return address, None
            raise EndpointError(f"host {endpoint.name} has no IPv{family} address")
        vm = self.policy.doc.vms[endpoint.name]
        candidates = [i for i, nic in enumerate(vm.nics) if (endpoint.nic is None or i == endpoint.nic) and (endpoint.network is None or nic.network == endpoint.network)]
        shared: set[str] = set()
        if near is not None and near.kind == "vm":
            shared = {nic.network for nic in self.policy.doc.vms[near.name].nics}
        candidates.sort(key=lambda i: vm.nics[i].network not in shared)
        for index in candidates:
            for ip in vm.nics[index].ips:
                if family_number(ip) == family:
                    return ip, index
        raise EndpointError(f"vm {endpoint.name} has no IPv{family} address" + (f" on network {endpoint.network}" if endpoint.network else ""))

    def source_address(self, endpoint: Endpoint, family: int, destination: str) -> tuple[str, int | None]:
        """The address (and NIC) a flow from `endpoint` to `destination` leaves with."""
        if endpoint.kind == "outside":
            return endpoint.name, None
        if endpoint.kind == "host" or endpoint.address is not None:
            return self.target_address(endpoint, family)
        vm = self.policy.doc.vms[endpoint.name]
        target = ipaddress.ip_address(destination)
        indexes = [i for i, nic in enumerate(vm.nics) if (endpoint.nic is None or i == endpoint.nic) and (endpoint.network is None or nic.network == endpoint.network)]

        def address_of(index: int) -> str | None:
            return next((ip for ip in vm.nics[index].ips if family_number(ip) == family), None)

        # the connected subnet first (the kernel's most specific route)
        for index in indexes:
            subnets = self.policy.doc.networks[vm.nics[index].network].subnets
            if any(target in ipaddress.ip_network(net) for net in subnets if ipaddress.ip_network(net).version == family) and address_of(index):
                return address_of(index), index  # type: ignore[return-value]
        # else the default route: the first routed NIC with an address of the family;
        # a guest with only isolated NICs has none (trace it as if it had one: the
        # isolated network's check decides)
        for index in indexes:
            if self.policy.doc.networks[vm.nics[index].network].mode != "isolated" and address_of(index):
                return address_of(index), index  # type: ignore[return-value]
        for index in indexes:
            if address_of(index):
                return address_of(index), index  # type: ignore[return-value]
        raise EndpointError(f"vm {endpoint.name} has no IPv{family} address")
