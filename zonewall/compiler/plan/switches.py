"""Enable switches (issue 18): which levels filter at all, as Proxmox VE's `enable`.

* `settings.firewall: false` (Proxmox's datacenter `enable: 0`): nothing is
  filtered anywhere: no guest, node or network check, no mode check, no guard, and
  invalid packets are not dropped. Address translations (masquerade, snat, dnat)
  stay: they are addressing, not filtering, and a nat network's guests keep the
  outside.
* `hosts.NODE.firewall: false` (host.fw `enable: 0`): the node's own rules
  (`host_rules`, its `rules`) and `host_default` do not apply: it accepts; the
  anti-lockout, connection state and what its guests' own checks decide about
  their traffic to it (their `out` rules, their network's `host_services`) stay.
* `vms.NAME.firewall: false` (guest `enable: 0`) and a NIC's `firewall: false`
  (Proxmox's `firewall=0`): the NIC's traffic passes none of the VM's chains and
  none of its guard filters. The network's own check between two of its guests
  (network rules, `isolated`) is the network's and stays.

Every consumer asks here: the plan's chains and modes, the compiler's dispatch
maps and guards, the analyzer's paths.
"""

from __future__ import annotations

from ...policy.resolve import Policy


def cluster_filtered(policy: Policy) -> bool:
    return policy.doc.settings.firewall


def host_filtered(policy: Policy, node: str) -> bool:
    return cluster_filtered(policy) and policy.doc.hosts[node].firewall


def vm_filtered(policy: Policy, vm: str) -> bool:
    """Whether any NIC of the VM is filtered."""
    spec = policy.doc.vms[vm]
    return cluster_filtered(policy) and spec.firewall and any(nic.firewall for nic in spec.nics)


def nic_filtered(policy: Policy, vm: str, index: int) -> bool:
    spec = policy.doc.vms[vm]
    return cluster_filtered(policy) and spec.firewall and spec.nics[index].firewall


def guard_filters(policy: Policy, vm: str, index: int) -> list[str]:
    """The NIC's guard filters (Policy.nic_filters), none when it is not filtered."""
    return policy.nic_filters(vm, index) if nic_filtered(policy, vm, index) else []


def invalid_action(policy: Policy) -> str:
    """What `ct state invalid` gets: settings.conntrack.invalid, accept when nothing is filtered."""
    return policy.doc.settings.conntrack.invalid if cluster_filtered(policy) else "accept"
