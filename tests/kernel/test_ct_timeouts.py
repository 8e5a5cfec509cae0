"""Conntrack timeouts with real packets: `ct timeout` objects bound to guest traffic.

A client sends one UDP datagram to a server on another guest and then stays idle;
the server answers from the same socket after a delay. While the conntrack entry
lives, the answer is a reply of the client's connection and passes; once the
configured `udp` timeout (the unreplied state) has run out, it is a new connection
towards the client, which its default `in: drop` refuses. The global timeout is 4s;
the `quick` zone overrides it with 1s for its VMs only: a client in `plain` (no
override) keeps the global 4s.

The objects are created as nft text (libnftables 1.0.6 drops their policy given as
JSON): the listing must hold the policies, and a changed timeout is a new object
while the old one is collected.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab import netns
from zonewall.policy.loader import load_policy

POLICY = """
version: 1
settings:
  conntrack: {timeouts: {udp: 4, udp_stream: 30, tcp_established: 600}}
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.9.0.0/24]}}
zones:
  quick: {conntrack: {timeouts: {udp: 1}}}
  plain: {}
vms:
  server:
    host: node1
    nics: [{network: lan, ips: [10.9.0.20]}]
    rules: [{id: udp-in, direction: in, action: accept, udp: 5999}]
  fast: {host: node1, zone: quick, nics: [{network: lan, ips: [10.9.0.10]}]}
  slow: {host: node1, zone: plain, nics: [{network: lan, ips: [10.9.0.11]}]}
"""
SERVER, PORT = "10.9.0.20", 5999
CLIENTS = {"fast": "10.9.0.10", "slow": "10.9.0.11"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = write_policy(tmp_path_factory.mktemp("ctt"), POLICY)
    with running_lab(path) as (state, policy):
        yield state, policy, path


def late_reply(state, client: str, delay: float) -> bool:
    """Client -> server one datagram, idle `delay` seconds, server answers: did it arrive?"""
    server = netns.netns_socket(state.vms["server"], socket.AF_INET, socket.SOCK_DGRAM)
    sender = netns.netns_socket(state.vms[client], socket.AF_INET, socket.SOCK_DGRAM)
    with server, sender:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((SERVER, PORT))
        server.settimeout(2.0)
        sender.bind((CLIENTS[client], 0))
        sender.settimeout(1.0)
        sender.sendto(b"hello", (SERVER, PORT))
        _, peer = server.recvfrom(100)  # the request itself must pass (udp-in)
        time.sleep(delay)
        server.sendto(b"late answer", peer)
        try:
            return sender.recvfrom(100)[0] == b"late answer"
        except TimeoutError:
            return False


def listed_timeouts(state) -> dict[str, dict]:
    out = netns.exec_in_netns(state.nodes["node1"], ["nft", "-j", "list", "table", "inet", "zonewall"]).stdout
    return {o["ct timeout"]["name"]: o["ct timeout"] for o in json.loads(out)["nftables"] if "ct timeout" in o}


@pytest.mark.kernel
def test_objects_hold_their_policies(lab):
    state, policy, _ = lab
    table = compile_node(policy, "node1", timezone="UTC").table("inet", "zonewall")
    listed = listed_timeouts(state)
    assert set(listed) == {t.name for t in table.timeouts} and len(listed) == 3  # global udp + tcp, quick's udp
    for timeout in table.timeouts:
        assert listed[timeout.name]["protocol"] == timeout.protocol
        assert listed[timeout.name]["policy"] == dict(timeout.policy)  # not dropped on the way in


@pytest.mark.kernel
def test_reply_before_the_timeout_passes(lab):
    state, _, _ = lab
    assert late_reply(state, "fast", 0.2)
    assert late_reply(state, "slow", 2.0)


@pytest.mark.kernel
def test_zone_override_expires_its_vms_only(lab):
    state, _, _ = lab
    assert not late_reply(state, "fast", 2.0), "quick zone: 1s udp timeout, the reply after 2s must be dropped"
    assert late_reply(state, "slow", 2.0), "plain zone keeps the global 4s"


@pytest.mark.kernel
def test_global_timeout_expires(lab):
    state, _, _ = lab
    assert not late_reply(state, "slow", 5.5), "global 4s udp timeout: the reply after 5.5s must be dropped"


@pytest.mark.kernel
def test_changed_timeout_is_a_new_object_and_the_old_is_collected(lab, tmp_path):
    state, policy, path = lab
    old = compile_node(policy, "node1", timezone="UTC")
    changed = load_policy(write_policy(tmp_path, POLICY.replace("udp: 4,", "udp: 1,")))
    new = compile_node(changed, "node1", timezone="UTC")
    old_names = {t.name for t in old.table("inet", "zonewall").timeouts}
    new_names = {t.name for t in new.table("inet", "zonewall").timeouts}
    assert old_names != new_names
    with LibNftBackend(state.nodes["node1"]) as backend:
        try:
            result = apply_ruleset(backend, new, previous=old)  # the incremental path
            assert result.mode == "incremental", result.notes
            assert set(listed_timeouts(state)) == new_names
            assert not late_reply(state, "slow", 2.0), "the new global 1s timeout applies"
            again = apply_ruleset(backend, new, previous=new)
            assert again.mode == "unchanged" and again.readback_hash == result.readback_hash
        finally:
            result = apply_ruleset(backend, old)  # the full path back
            assert result.mode == "full"
    assert set(listed_timeouts(state)) == old_names
    assert late_reply(state, "slow", 2.0)
