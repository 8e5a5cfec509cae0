"""An imported nwfilter anti-spoofing composition drops forged frames in the lab.

The nwfilter XML of tests/importers/fixtures/libvirt/nwfilter (libvirt's anti-spoofing
filters and `tenant-clean`, composed the way libvirt's clean-traffic is) is imported
with domains written here: `guarded` uses tenant-clean, `free` uses no filter,
`target` listens. Hand-built frames (zonewall.lab.raw) go out of a sender's eth0 and a
sniffer on the target's eth0 decides. Each forged frame must arrive from `free` (so
it is deliverable and only the filter can stop it) and not from `guarded`; truthful
frames from `guarded` must arrive (the filter does not overblock).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.kernel.conftest import Lab, _kernel_check
from tests.labtools import unique_lab_name
from zonewall.cli import app
from zonewall.lab import raw
from zonewall.lab.cluster import lab_down, lab_up
from zonewall.policy.loader import load_policy

pytestmark = pytest.mark.kernel

FILTERS = Path(__file__).resolve().parents[1] / "importers" / "fixtures" / "libvirt" / "nwfilter"
FORGED_MAC, FORGED_IP4 = "52:54:00:66:66:66", "10.72.0.99"
GUESTS = {  # name: (mac, IPv4, IPv6, filterref)
    "guarded": ("52:54:00:72:00:0a", "10.72.0.10", "fd72::10", "tenant-clean"),
    "free": ("52:54:00:72:00:0b", "10.72.0.11", "fd72::11", None),
    "target": ("52:54:00:72:00:0c", "10.72.0.12", "fd72::12", None),
}


def _domain(name: str, mac: str, ip4: str, ip6: str, filterref: str | None) -> str:
    ref = f"<filterref filter='{filterref}'><parameter name='IP' value='{ip4}'/></filterref>" if filterref else ""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <devices>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='br-lab'/>
      <ip address='{ip4}' prefix='24'/>
      <ip address='{ip6}' prefix='64'/>
      {ref}
    </interface>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Guest:
    ns: str
    mac: str
    ip4: str
    ip6: str


@pytest.fixture(scope="module")
def guests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Guest]]:
    _kernel_check(request.config)
    source = tmp_path_factory.mktemp("libvirt-src")
    shutil.copytree(FILTERS, source / "nwfilter")
    (source / "qemu").mkdir()
    for name, (mac, ip4, ip6, ref) in GUESTS.items():
        (source / "qemu" / f"{name}.xml").write_text(_domain(name, mac, ip4, ip6, ref))
    out = tmp_path_factory.mktemp("libvirt-out") / "policy"
    result = CliRunner().invoke(app, ["import", "libvirt", str(source), "-o", str(out), "--host-address", "192.168.72.2"])
    assert result.exit_code == 0, result.output
    policy = load_policy(out)
    assert policy.nic_filters("guarded", 0)[-1] == "tenant-clean"  # the import kept the composition
    name = unique_lab_name()
    try:
        state = lab_up(str(out), name)
        lab = Lab(state, policy)
        yield {g: Guest(lab.vm_ns(g), *GUESTS[g][:3]) for g in GUESTS}
    finally:
        lab_down(name)


def _token() -> bytes:
    return b"zw-import-" + os.urandom(6).hex().encode()


def arrives(guests: dict[str, Guest], sender: str, frame: bytes, predicate: raw.Predicate, *, expect: bool) -> bool:
    with raw.Sniffer(guests["target"].ns, "eth0") as sniffer:
        raw.send_frame(guests[sender].ns, "eth0", frame)
        got = sniffer.wait_for(raw.incoming(predicate), timeout=1.5 if expect else 0.7)
    return got is not None


def _udp4(src_mac: str, src_ip: str, t: Guest) -> tuple[bytes, raw.Predicate]:
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=src_mac, dst_mac=t.mac, src_ip=src_ip, dst_ip=t.ip4, dport=9999, payload=token)
    return frame, raw.udp_payload_contains(token)


def test_truthful_frames_from_the_guarded_guest_arrive(guests: dict[str, Guest]) -> None:
    g, t = guests["guarded"], guests["target"]
    assert arrives(guests, "guarded", *_udp4(g.mac, g.ip4, t), expect=True), "IPv4 with the real MAC and IP"
    reply = raw.arp_frame(op="reply", src_mac=g.mac, sender_ip=g.ip4, target_ip=t.ip4, dst_mac=t.mac)
    assert arrives(guests, "guarded", reply, raw.arp_matching(op=2, sender_ip=g.ip4, sender_mac=g.mac), expect=True), "truthful ARP reply"
    token = _token()
    dhcp = raw.ipv4_udp_frame(src_mac=g.mac, dst_mac=raw.BROADCAST, src_ip="0.0.0.0", dst_ip="255.255.255.255", sport=68, dport=67, payload=token)
    assert arrives(guests, "guarded", dhcp, raw.udp_payload_contains(token), expect=True), "DHCP discovery (no-ip-spoofing's exception)"


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_source_ip_is_dropped(guests: dict[str, Guest], attacker: str) -> None:
    a, t = guests[attacker], guests["target"]
    for forged in (FORGED_IP4, guests["free" if attacker == "guarded" else "guarded"].ip4):
        frame, seen = _udp4(a.mac, forged, t)
        assert arrives(guests, attacker, frame, seen, expect=attacker == "free") == (attacker == "free"), f"{attacker} forged source {forged}"


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_source_mac_is_dropped(guests: dict[str, Guest], attacker: str) -> None:
    a, t = guests[attacker], guests["target"]
    frame, seen = _udp4(FORGED_MAC, a.ip4, t)
    assert arrives(guests, attacker, frame, seen, expect=attacker == "free") == (attacker == "free"), f"{attacker} forged MAC"


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_arp_is_dropped(guests: dict[str, Guest], attacker: str) -> None:
    a, t = guests[attacker], guests["target"]
    victim = guests["free" if attacker == "guarded" else "guarded"]
    steal_ip = raw.arp_frame(op="reply", src_mac=a.mac, sender_ip=victim.ip4, target_ip=t.ip4, dst_mac=t.mac)
    got = arrives(guests, attacker, steal_ip, raw.arp_matching(op=2, sender_ip=victim.ip4, sender_mac=a.mac), expect=attacker == "free")
    assert got == (attacker == "free"), f"{attacker} claimed {victim.ip4} (no-arp-ip-spoofing, translated from XML)"
    lie_mac = raw.arp_frame(op="reply", src_mac=a.mac, sender_mac=FORGED_MAC, sender_ip=a.ip4, target_ip=t.ip4, dst_mac=t.mac)
    got = arrives(guests, attacker, lie_mac, raw.arp_matching(op=2, sender_ip=a.ip4, sender_mac=FORGED_MAC), expect=attacker == "free")
    assert got == (attacker == "free"), f"{attacker} sent an ARP reply with sender MAC {FORGED_MAC} (no-arp-mac-spoofing)"


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_other_layer2_traffic_is_dropped(guests: dict[str, Guest], attacker: str) -> None:
    """tenant-clean ends with a root-chain drop at priority 1000, as libvirt's
    clean-traffic does: IPv6, even from the guest's own address, does not pass."""
    a, t = guests[attacker], guests["target"]
    token = _token()
    frame = raw.ipv6_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.ip6, dst_ip=t.ip6, dport=9999, payload=token)
    got = arrives(guests, attacker, frame, raw.udp_payload_contains(token), expect=attacker == "free")
    assert got == (attacker == "free"), f"{attacker} sent IPv6"
