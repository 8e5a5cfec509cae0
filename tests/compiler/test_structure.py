"""The shape of a compiled node: dispatch is a lookup and nothing is copied per guest."""

from __future__ import annotations

from pathlib import Path

from zonewall.compiler.node import compile_node
from zonewall.policy.loader import load_policy_text

ROOT = Path(__file__).resolve().parents[2]


def policy_with(vms: int) -> str:
    lines = [
        "version: 1",
        "settings: {management: [192.168.100.0/24]}",
        "hosts: {node1: {address: 192.168.100.11}}",
        "networks: {lan: {bridge: vmbr1, subnets: [10.8.0.0/16]}}",
        "groups: {admins: [192.168.100.0/24]}",
        "global_rules: [{direction: in, action: accept, from: group:admins, service: ssh}]",
        "zones:",
        "  web:",
        "    rules:",
        "      - {direction: in, action: accept, service: https}",
        "      - {direction: in, action: accept, from: zone:web, service: http-alt}",
        "vms:",
    ]
    for i in range(vms):
        lines.append(
            f"  vm{i}: {{host: node1, zone: web, filters: [clean-traffic], "
            f'nics: [{{network: lan, mac: "52:54:00:08:{i // 256:02x}:{i % 256:02x}", ips: [10.8.{i // 200}.{i % 200 + 1}]}}]}}'
        )
    return "\n".join(lines) + "\n"


def shape(vms: int) -> dict[str, object]:
    ruleset = compile_node(load_policy_text(policy_with(vms)), "node1")
    inet, bridge = ruleset.table("inet", "zonewall"), ruleset.table("bridge", "zonewall")
    return {
        "forward": len(inet.chain("forward").rules),
        "zone": len(inet.chain("zone-web-in").rules),
        "zone_chains": sum(1 for c in inet.chains if c.name.startswith("zone-")),
        "vm_chain": len(inet.chain("vm-vm0-in").rules),
        "guard_chains": sorted(c.name for c in bridge.chains if c.name.startswith(("filter-", "guards-"))),
        "dispatch": len(inet.set("in-dispatch").elements),
        "zone_set": len(inet.set("z-web-v4").elements),
    }


def test_zone_rules_exist_once_per_node_and_dispatch_is_a_map() -> None:
    small, large = shape(3), shape(300)
    # the per-packet path does not grow with the number of guests ...
    assert small["forward"] == large["forward"]
    assert small["vm_chain"] == large["vm_chain"]
    # ... zone rules and guard filters are written once, shared by every guest ...
    assert small["zone"] == large["zone"] and large["zone_chains"] == 1
    assert small["guard_chains"] == large["guard_chains"]
    # ... and what grows is data: map elements and set members
    assert (small["dispatch"], large["dispatch"]) == (3, 300)
    assert large["zone_set"] >= 1


def test_mark_fields_do_not_overlap_and_fill_the_mark() -> None:
    import itertools

    from zonewall.compiler import nftexpr as x

    fields = [x.SRC_NIC_MASK, x.DST_NIC_MASK, x.SPARE_BIT, x.GUARD_ACCEPT_BIT, x.IN_ACCEPT_BIT, x.OUT_ACCEPT_BIT]
    assert all(a & b == 0 for a, b in itertools.combinations(fields, 2))
    assert x.DST_NIC_MASK == x.SRC_NIC_MASK << x.DST_NIC_SHIFT
    assert x.MAX_NICS_PER_NODE >= 10_000  # a large node's guests all get an index


def test_the_node_plan_is_a_pure_function_of_the_policy_and_node() -> None:
    """Two plans of the same policy give equal node plans (hashable, piece by piece);
    a change to one VM's rules changes that VM's chains and nothing else of the node."""
    from zonewall.compiler.plan import Plan
    from zonewall.policy.loader import load_policy_text

    text = (ROOT / "examples" / "three-tier" / "policy" / "policy.yaml").read_text()
    first, again = (Plan(load_policy_text(text), timezone="UTC").node("node1") for _ in range(2))
    assert first == again and hash(first) == hash(again)
    vm = first.vm_chains[0].vm
    changed_text = text.replace(f"  {vm}:\n", f"  {vm}:\n    default: {{in: reject}}\n", 1)
    changed = Plan(load_policy_text(changed_text), timezone="UTC").node("node1")
    differing = [a.name for a, b in zip(first.vm_chains, changed.vm_chains) if a != b]
    assert differing == [f"vm:{vm} in"], differing
    assert (first.shared, first.networks, first.host_in, first.forwards) == (changed.shared, changed.networks, changed.host_in, changed.forwards)
