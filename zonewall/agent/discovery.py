"""Which local device is a guest NIC's tap? (on a real hypervisor)

The compiler names a NIC's node-side port `tap:` if the policy gives one, else
`<vm>i<n>`. On a libvirt/Proxmox node the real name is chosen by the hypervisor
(vnet3, tap104i0, ...), so the agent looks for it, in this order:

1. an explicit `tap:` in the policy wins;
2. by MAC: libvirt gives the tap the guest's MAC with the first byte `fe`
   (52:54:00:12:34:56 -> fe:54:00:12:34:56), so a local link with that MAC is it;
3. by libvirt: `virsh domiflist VM` lists the domain's interfaces with their MACs;
4. otherwise the compiler's default name (what the lab uses).

The policy is then compiled with the discovered names (`with_taps`).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ..compiler.naming import tap_name
from ..compiler.schedule import local_timezone
from ..netns import run_in_netns
from ..policy.resolve import Policy
from .rtlinks import dump_links

log = logging.getLogger("zonewall.agent.discovery")

Links = dict[str, str]  # MAC (lowercase) -> interface name
VirshLister = Callable[[str], dict[str, str] | None]  # domain -> {MAC: interface}, None: no libvirt


@dataclass(frozen=True)
class Found:
    tap: str
    how: str  # explicit | mac | libvirt | default


def tap_mac(guest_mac: str) -> str:
    """The MAC libvirt gives a guest's tap: the first byte replaced by fe."""
    return "fe" + guest_mac.lower()[2:]


def local_links(netns: str | None = None) -> Links:
    """Every link of the (given or current) namespace by MAC, over rtnetlink (no
    process to start: this runs before every compile); `ip -j link` if that fails."""
    try:
        return {link.mac: link.name for link in run_in_netns(netns, dump_links) if link.mac and link.name}
    except OSError as exc:  # NetlinkError included
        log.debug("netlink link dump failed (%s); using ip", exc)
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-j", "link", "show"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("cannot list links: %s", exc)
        return {}
    return {str(link["address"]).lower(): link["ifname"] for link in links if link.get("address") and link.get("ifname")}


def compile_inputs(netns: str | None = None, timezone: Callable[[], str] = local_timezone) -> Hashable:
    """What a node's compile reads besides its documents: the links (taps found by
    MAC; a guest started or stopped changes them) and the local timezone with its
    current UTC offset (schedules are written in it, and DST moves it)."""
    name = timezone()
    return tuple(sorted(local_links(netns).items())), name, datetime.now(ZoneInfo(name)).utcoffset()


def parse_domiflist(text: str) -> dict[str, str]:
    """`virsh domiflist` output -> {MAC: interface}; rows without a device ('-') skipped.

        Interface   Type     Source    Model    MAC
       -------------------------------------------------------
        vnet0       bridge   vmbr1     virtio   52:54:00:00:01:01
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 5 and words[0] not in ("Interface", "-") and ":" in words[-1] and not words[0].startswith("---"):
            found[words[-1].lower()] = words[0]
    return found


def _virsh(*argv: str) -> str | None:
    """virsh's output, or None where there is no virsh, no libvirt, or it failed."""
    if shutil.which("virsh") is None:
        return None
    try:
        proc = subprocess.run(["virsh", "-q", *argv], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def libvirt_lister(run: Callable[..., str | None] = _virsh) -> VirshLister:
    """A lister for one discovery pass: libvirt's running domains are asked once, and
    `domiflist` only for those (a stopped or unknown domain has no tap to find).

    Asking every guest of the node in turn cost a virsh process each, on every
    compile: seconds per change on a node of 100 guests, most of them for guests
    that were not running or on a node without libvirt (bench/cluster.py).
    """
    running: set[str] | None = None
    asked = False

    def lister(domain: str) -> dict[str, str] | None:
        nonlocal running, asked
        if not asked:
            asked = True
            listed = run("list", "--name")
            running = None if listed is None else {line.strip() for line in listed.splitlines() if line.strip()}
        if running is None or domain not in running:
            return None
        text = run("domiflist", domain)
        return None if text is None else parse_domiflist(text)

    return lister


def discover_taps(policy: Policy, node: str, links: Links | None = None, virsh: VirshLister | None = None) -> dict[tuple[str, int], Found]:
    links = local_links() if links is None else links
    virsh = libvirt_lister() if virsh is None else virsh
    found: dict[tuple[str, int], Found] = {}
    for vm in policy.vms_on(node):
        libvirt: dict[str, str] | None = None
        for index, nic in enumerate(policy.doc.vms[vm].nics):
            if nic.tap:
                found[(vm, index)] = Found(nic.tap, "explicit")
                continue
            if nic.mac:
                name = links.get(tap_mac(nic.mac))
                if name:
                    found[(vm, index)] = Found(name, "mac")
                    continue
                if libvirt is None:
                    libvirt = virsh(vm) or {}
                if nic.mac.lower() in libvirt:
                    found[(vm, index)] = Found(libvirt[nic.mac.lower()], "libvirt")
                    continue
            found[(vm, index)] = Found(tap_name(vm, index, nic), "default")
    return found


def with_taps(policy: Policy, found: dict[tuple[str, int], Found]) -> Policy:
    """The policy with each discovered tap set as the NIC's `tap:` (for compiling)."""
    vms = dict(policy.doc.vms)
    changed = False
    for (vm, index), result in found.items():
        if result.how in ("mac", "libvirt"):
            nics = list(vms[vm].nics)
            nics[index] = nics[index].model_copy(update={"tap": result.tap})
            vms[vm] = vms[vm].model_copy(update={"nics": nics})
            changed = True
    if not changed:
        return policy
    tapped = Policy(policy.doc.model_copy(update={"vms": vms}), policy.source)
    # A tap is no rule, zone membership or address: what the policy worked out of
    # those holds (and the rule table cannot be rebuilt from an agent's source, which
    # keeps only what edits read: agent/memory.py).
    tapped.__dict__["_rule_table"] = policy._rule_table
    tapped.__dict__["_zone_members"] = policy._zone_members
    tapped.share_address_memos(policy)
    return tapped


def taps_report(found: dict[tuple[str, int], Found]) -> dict[str, str]:
    """{"web1/0": "vnet3 (mac)"}: what the agent reports to the controller."""
    return {f"{vm}/{index}": f"{result.tap} ({result.how})" for (vm, index), result in sorted(found.items())}
