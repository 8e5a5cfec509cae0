"""Issue 18's policy-level constructs with real packets, each positive case beside
its negative one, and trace (the analyzer, on the same plan) predicting each:

* a security group referenced by a VM opens its port; the same port on a VM that
  does not reference it stays closed;
* an enable switch: a VM with `firewall: false` is reached on a port its default
  drops; the same VM with the switch on is not;
* a rule scoped to one NIC (`nic: net0`) opens the port through that NIC, not
  through the VM's other NIC;
* a host rule scoped to an interface (`interface: [eth0]`) opens the node's port
  on its uplink; one scoped to another interface does not;
* reject answers UDP with an ICMP unreachable (the probe sees `refused`), drop is
  silent (`blocked`), at the node from outside, where the node routes the error
  (between two guests of a bridged network the node has no address to send one
  from: there reject acts as drop, docs/policy-guide.md);
* ICMP codes: `echo-request/0` lets a ping with code 0 through, the same ping with
  code 5 is dropped (raw ICMP from the guest's namespace);
* log levels: a rule's level, a VM's default logged at its `log` level, drop
  rules logged by `settings.log.rules` at the settings' level, and an accept rule
  not logged.
"""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.dataplane.nflog import LogRecord, NflogReader
from zonewall.lab.probe import run_probes
from zonewall.lab.probing import Service, endpoint, probe_spec

pytestmark = pytest.mark.kernel

GROUP = 7
POLICY = """\
version: 1
settings:
  default: {in: drop, out: accept}
  host_default: {in: drop, out: accept}
  log: {denied: false, rules: [drop], level: notice, group: 7, rate: 100/second, burst: 200}
hosts:
  node1: {address: [192.168.118.11], uplink: eth0}
host_rules:
  - {id: on-uplink, direction: in, action: accept, tcp: 7100, interface: [eth0]}
  - {id: on-other, direction: in, action: accept, tcp: 7101, interface: [vmbr9]}
  - {id: host-reject, direction: in, action: reject, udp: 7201}
  - {id: host-drop, direction: in, action: drop, udp: 7202}
networks:
  lan: {bridge: vmbr1, subnets: [10.118.1.0/24]}
  lan2: {bridge: vmbr2, subnets: [10.118.2.0/24]}
security_groups:
  web:
    rules:
      - {id: web-8080, direction: in, action: accept, tcp: 8080}
vms:
  client:
    host: node1
    nics: [{network: lan, ips: [10.118.1.10]}]
  client2:
    host: node1
    nics: [{network: lan2, ips: [10.118.2.10]}]
  server:
    host: node1
    log: {in: info}
    nics:
      - {network: lan, ips: [10.118.1.20], name: net0}
      - {network: lan2, ips: [10.118.2.20], name: net1}
    rules:
      - {security_group: web}
      - {id: net0-only, direction: in, action: accept, tcp: 9090, nic: [net0]}
      - {id: ping-code0, direction: in, action: accept, icmp: [echo-request/0]}
      - {id: debug-drop, direction: in, action: drop, tcp: 7003, log: debug}
      - {id: quiet-accept, direction: in, action: accept, tcp: 7004}
      - {id: plain-drop, direction: in, action: drop, tcp: 7006}
  plain:
    host: node1
    nics: [{network: lan, ips: [10.118.1.30]}]
  open1:
    host: node1
    firewall: false
    nics: [{network: lan, ips: [10.118.1.40]}]
"""
OUTSIDE = "outside:192.168.118.50"

# (from, to, service, delivered?, what it shows)
FLOWS = [
    ("vm:client", "vm:server", Service("tcp", 8080), True, "the security group referenced by server"),
    ("vm:client", "vm:plain", Service("tcp", 8080), False, "plain does not reference it"),
    ("vm:client", "vm:open1", Service("tcp", 7000), True, "open1's firewall is off"),
    ("vm:client", "vm:plain", Service("tcp", 7000), False, "plain's is on: its default drops"),
    ("vm:client", "vm:server@lan", Service("tcp", 9090), True, "the rule of NIC net0, through net0"),
    ("vm:client2", "vm:server@lan2", Service("tcp", 9090), False, "not through net1"),
    ("vm:client2", "vm:server@lan2", Service("tcp", 8080), True, "the unscoped group through net1"),
    (OUTSIDE, "host:node1", Service("tcp", 7100), True, "a host rule on the uplink"),
    (OUTSIDE, "host:node1", Service("tcp", 7101), False, "a host rule on vmbr9 only"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(write_policy(tmp_path_factory.mktemp("constructs"), POLICY)) as lab:
        yield lab


def _probe(state, policy, source: str, target: str, service: Service, timeout: float):
    src = endpoint(state, policy, source, "ipv4", role="source")
    dst = endpoint(state, policy, target, "ipv4", role="target", peer=src.ref)
    return probe_spec(src, dst, service, timeout)


def test_groups_switches_and_scopes_with_real_packets_and_trace(lab) -> None:
    state, policy = lab
    analyzer = Analyzer(policy)
    predicted = [trace(analyzer, source, target, FlowSpec(service.proto, service.port)).verdict for source, target, service, _e, _w in FLOWS]
    results = run_probes([_probe(state, policy, s, t, svc, 3.0 if expected else 0.8) for s, t, svc, expected, _w in FLOWS], max_workers=16)
    problems = []
    for (source, target, service, expected, why), verdict, result in zip(FLOWS, predicted, results):
        if (verdict == "accept") != expected or result.delivered != expected:
            problems.append(f"{source} -> {target} {service}: expected {'delivered' if expected else 'blocked'} ({why}); trace {verdict}, probe {result.verdict} ({result.detail})")
    assert not problems, "\n".join(problems)


def test_reject_answers_udp_with_icmp_unreachable_and_drop_is_silent(lab) -> None:
    state, policy = lab
    rejected, dropped = run_probes([_probe(state, policy, OUTSIDE, "host:node1", Service("udp", port), 1.0) for port in (7201, 7202)])
    assert rejected.verdict == "refused", rejected  # an ICMP error came back
    assert dropped.verdict == "blocked", dropped  # nothing came back


PING = textwrap.dedent("""\
    import socket, struct, sys, time
    def csum(b):
        s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
        return ~s & 0xffff
    code, dst = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); sock.settimeout(0.3)
    head = struct.pack('!BBHHH', 8, code, 0, 0x1818, 1) + b'zonewall'
    packet = head[:2] + struct.pack('!H', csum(head)) + head[4:]
    deadline = time.time() + 2
    while time.time() < deadline:
        sock.sendto(packet, (dst, 0))
        try:
            while True:
                data, (src, _) = sock.recvfrom(2048)
                icmp = data[(data[0] & 15) * 4:]
                if src == dst and icmp[0] == 0 and icmp[4:6] == b'\\x18\\x18':
                    print('reply'); sys.exit(0)
        except socket.timeout:
            pass
    print('none')
""")


def _ping_with_code(state, vm: str, address: str, code: int) -> str:
    done = subprocess.run(["ip", "netns", "exec", state.vms[vm], "python3", "-c", PING, str(code), address],
                          capture_output=True, text=True, timeout=20, check=True)
    return done.stdout.strip()


def test_an_icmp_code_is_allowed_and_another_code_of_the_type_is_dropped(lab) -> None:
    state, policy = lab
    analyzer = Analyzer(policy)
    assert _ping_with_code(state, "client", "10.118.1.20", 0) == "reply"
    assert _ping_with_code(state, "client", "10.118.1.20", 5) == "none"
    # the analyzer reads the rule as type 8 code 0 only: a ping (code 0) is accepted
    assert trace(analyzer, "vm:client", "vm:server", FlowSpec("icmp")).verdict == "accept"


def _record(reader: NflogReader, port: int) -> LogRecord | None:
    return next((r for r in reader.history if r.proto == "tcp" and r.dport == port and r.dst == "10.118.1.20"), None)


def test_log_levels_travel_with_the_records(lab) -> None:
    state, policy = lab
    with NflogReader(GROUP, netns=state.nodes["node1"]) as reader:
        time.sleep(0.2)
        run_probes([_probe(state, policy, "vm:client", "vm:server", Service("tcp", port), 0.8 if port != 7004 else 2.0) for port in (7003, 7005, 7006, 7004)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_record(reader, port) for port in (7003, 7005, 7006)):
            reader.wait_for(lambda r: False, timeout=0.2)  # read what came into history
        debug, default, by_settings = (_record(reader, port) for port in (7003, 7005, 7006))
        seen = [r.prefix for r in reader.history]
        assert debug is not None and debug.rule_id == "debug-drop" and debug.log_level == "debug", seen  # the rule's own level
        assert default is not None and default.rule_id == "default-in" and default.log_level == "info", seen  # server's log: {in: info}
        assert by_settings is not None and by_settings.rule_id == "plain-drop" and by_settings.log_level == "notice", seen  # settings.log.rules
        assert not any(r.dport == 7004 and r.proto == "tcp" for r in reader.history), seen  # an accept: not in settings.log.rules
