"""Guest NIC -> tap: explicit name, libvirt's fe: MAC, virsh domiflist, the default."""

from __future__ import annotations

import json
from collections.abc import Callable

from zonewall.agent.discovery import (
    compile_inputs,
    discover_taps,
    libvirt_lister,
    parse_domiflist,
    tap_mac,
    taps_report,
    with_taps,
)
from zonewall.compiler import ir
from zonewall.compiler.node import compile_node
from zonewall.policy.loader import load_policy_text

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr0, subnets: [10.0.0.0/24]}}
vms:
  web1: {host: node1, nics: [{network: lan, mac: "52:54:00:00:01:01", ips: [10.0.0.10]}]}
  app1: {host: node1, nics: [{network: lan, mac: "52:54:00:00:02:01", ips: [10.0.0.20]}]}
  db1: {host: node1, nics: [{network: lan, mac: "52:54:00:00:03:01", ips: [10.0.0.30], tap: tap103i0}]}
  misc: {host: node1, nics: [{network: lan, mac: "52:54:00:00:04:01", ips: [10.0.0.40]}]}
"""

DOMIFLIST = """ Interface   Type     Source   Model    MAC
-------------------------------------------------------
 vnet7       bridge   vmbr0    virtio   52:54:00:00:02:01
 -           network  default  virtio   52:54:00:99:99:99
"""


def test_tap_mac_is_the_guest_mac_with_fe_first() -> None:
    assert tap_mac("52:54:00:AB:cd:01") == "fe:54:00:ab:cd:01"


def test_parse_domiflist() -> None:
    assert parse_domiflist(DOMIFLIST) == {"52:54:00:00:02:01": "vnet7"}


def test_discovery_order_explicit_mac_libvirt_default() -> None:
    policy = load_policy_text(POLICY)
    links = {"fe:54:00:00:01:01": "vnet3", "fe:54:00:00:03:01": "vnet9"}
    asked: list[str] = []

    def virsh(domain: str) -> dict[str, str] | None:
        asked.append(domain)
        return parse_domiflist(DOMIFLIST) if domain == "app1" else None

    found = discover_taps(policy, "node1", links, virsh)
    assert taps_report(found) == {
        "app1/0": "vnet7 (libvirt)",
        "db1/0": "tap103i0 (explicit)",  # an explicit tap: wins over a MAC match
        "misc/0": "misci0 (default)",
        "web1/0": "vnet3 (mac)",
    }
    assert sorted(asked) == ["app1", "misc"]  # virsh only where the MAC did not tell


def test_the_ruleset_uses_the_discovered_taps() -> None:
    policy = load_policy_text(POLICY)
    found = discover_taps(policy, "node1", {"fe:54:00:00:01:01": "vnet3"}, lambda domain: None)
    text = json.dumps(ir.to_json(compile_node(with_taps(policy, found), "node1", timezone="UTC")))
    assert '"vnet3"' in text and '"web1i0"' not in text and '"tap103i0"' in text
    assert with_taps(policy, discover_taps(policy, "node1", {}, lambda domain: None)) is policy  # nothing found: unchanged


def fake_virsh(listed: str | None, calls: list[tuple[str, ...]]) -> Callable[..., str | None]:
    """virsh answering `list --name` with `listed` (None: libvirt does not answer)."""

    def run(*argv: str) -> str | None:
        calls.append(argv)
        return listed if argv[0] == "list" else DOMIFLIST

    return run


def test_libvirt_is_asked_only_about_running_domains() -> None:
    policy = load_policy_text(POLICY)
    calls: list[tuple[str, ...]] = []
    found = discover_taps(policy, "node1", {}, libvirt_lister(fake_virsh("app1\nother\n", calls)))
    assert found[("app1", 0)].how == "libvirt" and found[("web1", 0)].how == "default"  # web1 is not running: nothing asked
    assert calls == [("list", "--name"), ("domiflist", "app1")]  # one listing per pass, then the running guest only


def test_without_libvirt_one_question_per_pass() -> None:
    policy = load_policy_text(POLICY)
    calls: list[tuple[str, ...]] = []
    found = discover_taps(policy, "node1", {}, libvirt_lister(fake_virsh(None, calls)))
    assert calls == [("list", "--name")]  # libvirt does not answer: no virsh per guest
    assert {f.how for f in found.values()} == {"explicit", "default"}


def test_compile_inputs_follow_the_timezone_offset() -> None:
    assert compile_inputs(timezone=lambda: "UTC") == compile_inputs(timezone=lambda: "UTC")  # nothing changed: equal
    assert compile_inputs(timezone=lambda: "UTC") != compile_inputs(timezone=lambda: "Asia/Tokyo")  # another offset
