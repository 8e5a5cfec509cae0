"""Proxmox VE's own firewall-simulator tests, put to zonewall.

`../shared/pve-fwtester/` (read in place, never copied) holds pve-firewall's test
directories: what `/etc/pve/firewall` would hold, and a `tests` file of expectations
such as `{ from => 'vm100', to => 'host', dport => 22, action => 'ACCEPT' }`. Its
README describes the simulator's world; this module rebuilds that world for each
expectation as a zonewall import inventory, imports the directory with
`zonewall import proxmox`, asks `zonewall trace` (through trace_adapter) and
classifies the answer:

* expected         - zonewall agrees (ACCEPT vs DROP/REJECT; a DROP/REJECT swap is a note);
* wrong            - it disagrees; `opens` when Proxmox blocks and zonewall accepts;
* not expressible  - zonewall cannot be asked: the import refuses, trace refuses the
                     flow (an ICMP code, say), trace answers for other addresses than
                     asked, or the packet cannot exist (a unicast-typed multicast).

Nothing here knows which constructs zonewall lacks: every verdict and refusal comes
from the importer and trace, so a construct added later turns its expectations into
`expected` without a change here. `CONSTRUCTS` only names, for the table and
docs/migrating.md, what a refusal or a mismatch waits for.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from typer.testing import CliRunner

from zonewall.cli import app

from .trace_adapter import TraceAnswer, TraceRefused, run_trace

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "pve-fwtester"
COROSYNC = SHARED / "corosync.conf"
ZONES = ("host", "outside", "nfvm", "vm100", "ct200")  # what a line without from/to runs against
NODE = "proxself"
NODE_ADDRESSES = ("172.16.1.2", "172.16.2.2")  # ring0 and ring1 of proxself in corosync.conf
LOCAL_NETWORK = "172.16.1.0/24"
HOST_ADDRESS = "172.16.1.2"
DEFAULT_SOURCE, DEFAULT_DEST = "100.100.1.2", "100.200.3.4"
NO_PORT = 4711  # "no dport": a port no rule of the tests and no Proxmox built-in names
V6_PREFIX = int(ipaddress.IPv6Address("2001:db8:4::"))  # icmpv6 runs between these mapped addresses

# The simulator's guests (test/fwtester.pl): vmid -> (kind, [(nic, bridge, mac)], configured ip)
GUESTS: dict[int, tuple[str, list[tuple[str, str, str | None]], str | None]] = {
    100: ("vm", [("net0", "vmbr0", "0E:0B:38:B8:B3:21"), ("net1", "vmbr1", "0E:0B:38:B9:B4:21"), ("net2", "vmbr2", "0E:0B:38:BA:B4:21")], None),
    101: ("vm", [("net0", "vmbr0", "0E:0B:38:B8:B3:22")], None),
    110: ("vm", [("net0", "vmbr1", "0E:0B:38:B8:B4:21")], None),
    200: ("ct", [("net0", "vmbr0", "0E:18:24:41:2C:43")], "10.0.200.1/24"),
    201: ("ct", [("net0", "vmbr0", "0E:18:24:41:2C:44")], "10.0.200.2/24"),
    999: ("nfvm", [("net0", "vmbr0", None)], None),  # `nfvm`: a bridge port with no firewall
}

Status = Literal["expected", "wrong", "not expressible"]

# What a refusal or a mismatch waits for: (pattern on the reason, phase-2 construct).
# Only names things for the table and the docs; it decides nothing.
CONSTRUCTS: tuple[tuple[str, str], ...] = (
    (r"ICMP type .*(unreachable|prohibited|unknown|failed|redirect|zero|header|option|precedence|TOS)", "ICMP codes"),
    (r"cannot exist", "none: the test describes a packet that cannot exist"),
    (r"-i \S+.*host rules|interface", "interface-scoped host rules"),
    (r"multicast|broadcast", "trace to a node's multicast/broadcast address"),
    (r"another address|answered for", "trace from/to a given address of an endpoint"),
    (r"\(the reply\)", "none: zonewall is stricter, its guard filters are stateless (a guest cannot answer from an address its ipfilter forbids)"),
)


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Expectation:
    directory: str
    line: int
    text: str
    src_zone: str
    dst_zone: str
    action: str  # ACCEPT | DROP | REJECT
    proto: str = "tcp"  # tcp | udp | icmp | icmpv6
    dport: str | None = None
    source: str | None = None
    dest: str | None = None
    dsttype: str = "UNICAST"
    expanded: str | None = None  # "from" or "to" when the line left that zone open

    @property
    def id(self) -> str:
        zone = self.dst_zone if self.expanded == "to" else self.src_zone
        return f"{self.directory}:{self.line}" + (f" {self.expanded}={zone}" if self.expanded else "")

    @property
    def family(self) -> int:
        return 6 if self.proto == "icmpv6" else 4

    def packet(self) -> tuple[str, str]:
        """(source, destination) as the simulator picks them, in the traced family."""
        src = self.source or (HOST_ADDRESS if self.src_zone == "host" else DEFAULT_SOURCE)
        dst = self.dest or (HOST_ADDRESS if self.dst_zone == "host" else DEFAULT_DEST)
        return (mapped(src), mapped(dst)) if self.family == 6 else (src, dst)

    def describe(self) -> str:
        flow = f"{self.proto}/{self.dport if self.dport is not None else 'none'}"
        extra = "".join(f" {k}={v}" for k, v in (("source", self.source), ("dest", self.dest)) if v)
        extra += f" dsttype={self.dsttype}" if self.dsttype != "UNICAST" else ""
        return f"{self.src_zone} -> {self.dst_zone} {flow}{extra}: {self.action}"


def mapped(address: str) -> str:
    """An IPv4 address of the tests as the IPv6 address an icmpv6 expectation uses."""
    return str(ipaddress.IPv6Address(V6_PREFIX | int(ipaddress.IPv4Address(address))))


_PAIR = re.compile(r"(\w+)\s*=>\s*(?:'([^']*)'|(\d+))")


def read_expectations(shared: Path = SHARED) -> list[Expectation]:
    """Every expectation of every test directory, lines without from/to expanded over
    ZONES exactly as test/fwtester.pl runs them."""
    if not shared.is_dir():
        raise FileNotFoundError(f"{shared}: Proxmox VE's firewall tests are not there (../shared/pve-fwtester of the checkout)")
    out: list[Expectation] = []
    for directory in sorted(p for p in shared.iterdir() if p.is_dir() and p.name.startswith("test-")):
        for number, raw in enumerate((directory / "tests").read_text().splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _PAIR.finditer(line)}
            fields.pop("id", None)
            base = {"directory": directory.name, "line": number, "text": line, "action": fields.pop("action"),
                        "proto": fields.pop("proto", "tcp"), "dport": fields.pop("dport", None), "source": fields.pop("source", None),
                        "dest": fields.pop("dest", None), "dsttype": fields.pop("dsttype", "UNICAST")}
            src, dst = fields.pop("from", None), fields.pop("to", None)
            if fields:
                raise ValueError(f"{directory.name}/tests:{number}: keys this harness does not know: {sorted(fields)}")
            if src and dst:
                out.append(Expectation(src_zone=src, dst_zone=dst, **base))  # type: ignore[arg-type]
            elif src:
                out += [Expectation(src_zone=src, dst_zone=z, expanded="to", **base) for z in ZONES if z != src]  # type: ignore[arg-type]
            else:
                out += [Expectation(src_zone=z, dst_zone=dst, expanded="from", **base) for z in ZONES if z != dst]  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class End:
    """One end of a flow in the simulator's world."""

    kind: Literal["host", "outside", "nic"]
    vmid: int | None = None
    nic: str | None = None


def end_of(zone: str) -> End:
    if zone == "host":
        return End("host")
    if zone in ("outside", "vmbr0/eth0"):
        return End("outside")
    if zone == "nfvm":
        return End("nic", 999, "net0")
    found = re.fullmatch(r"(?:vm|ct)(\d+)(?:i(\d+))?", zone)
    if found and int(found.group(1)) in GUESTS:
        return End("nic", int(found.group(1)), f"net{found.group(2) or 0}")
    raise ValueError(f"zone {zone!r} is not one of the simulator's")


def world(flows: Iterable[tuple[End, str]], node_first: Iterable[str] = ()) -> dict[str, Any]:
    """The guest inventory (docs/migrating.md) of the simulator's world in which each
    (end, address) of `flows` owns that address. Bridges get a /32 (/128) subnet per
    address on them; a container keeps its configured `ip` (its ipfilter entry) and
    uses it too unless another NIC of this world uses that address."""
    owned: dict[tuple[int, str], list[str]] = {}
    node: list[str] = list(node_first)
    for end, address in flows:
        if end.kind == "nic":
            owned.setdefault((end.vmid, end.nic), [])  # type: ignore[arg-type]
            if address not in owned[(end.vmid, end.nic)]:  # type: ignore[index]
                owned[(end.vmid, end.nic)].append(address)  # type: ignore[index]
        elif end.kind == "host" and address not in node:
            node.append(address)
    node += [a for a in NODE_ADDRESSES if a not in node]
    used = {a for addresses in owned.values() for a in addresses}
    guests: dict[int, Any] = {}
    subnets: dict[str, list[str]] = {}
    for vmid, (kind, nics, configured) in GUESTS.items():
        entry: dict[str, Any] = {"node": NODE, "nics": {}}
        if kind == "nfvm":
            entry["name"] = "nfvm"
        for key, bridge, mac in nics:
            ips = list(owned.get((vmid, key), []))
            nic: dict[str, Any] = {"bridge": bridge}
            if mac:
                nic["mac"] = mac
            if configured:
                nic["ip"] = configured
                address = configured.split("/")[0]
                if address not in used:
                    ips.append(address)
            if kind == "nfvm":
                nic["firewall"] = False
            nic["ips"] = ips
            entry["nics"][key] = nic
            for ip in ips:
                subnets.setdefault(bridge, []).append(str(ipaddress.ip_network(ip)))
        guests[vmid] = entry
    return {
        "local_network": LOCAL_NETWORK,
        "nodes": {NODE: {"address": node, "uplink": "eth0"}},
        "bridges": {bridge: {"subnets": sorted(set(s))} for bridge, s in sorted(subnets.items())},
        "guests": guests,
    }


def world_of(expectation: Expectation) -> dict[str, Any]:
    src, dst = expectation.packet()
    return world([(end_of(expectation.src_zone), src), (end_of(expectation.dst_zone), dst)])


def trace_ref(end: End, address: str) -> str:
    if end.kind == "host":
        return f"host:{NODE}"
    if end.kind == "outside":
        return f"outside:{address}"
    return address  # a NIC's own address names that NIC


def trace_flow(expectation: Expectation) -> list[str]:
    if expectation.proto in ("icmp", "icmpv6"):
        flow = ["--icmp", str(expectation.dport if expectation.dport is not None else "echo-request")]
        return flow + (["--family", "ipv6"] if expectation.proto == "icmpv6" else [])
    port = expectation.dport if expectation.dport is not None else NO_PORT
    return [f"--{expectation.proto}", str(port)]


def impossible(expectation: Expectation) -> str | None:
    """Why the test's packet cannot exist (its dsttype contradicts its destination)."""
    _, dst = expectation.packet()
    multicast = ipaddress.ip_address(dst).is_multicast
    if multicast != (expectation.dsttype == "MULTICAST"):
        return f"dsttype {expectation.dsttype} with destination {dst}: such a packet cannot exist"
    return None


# --------------------------------------------------------------------------- import


@dataclass
class Imported:
    policy: Path | None
    items: list[dict[str, Any]]  # the import report
    refused: str | None = None  # why the import wrote nothing

    def items_at(self, where: str) -> list[dict[str, Any]]:
        file, _, line = where.rpartition(":")
        return [i for i in self.items if i["file"] == file and str(i["line"]) == line]


class Importer:
    """`zonewall import proxmox` per distinct world (identical inventories share one)."""

    def __init__(self, work: Path, shared: Path = SHARED) -> None:
        self.work, self.shared = work, shared
        self.cache: dict[tuple[str, str], Imported] = {}

    def __call__(self, directory: str, inventory: dict[str, Any]) -> Imported:
        text = yaml.safe_dump(inventory, sort_keys=True)
        key = (directory, text)
        if key not in self.cache:
            base = self.work / f"{directory}-{len(self.cache)}"
            base.mkdir(parents=True)
            (base / "inventory.yaml").write_text(text)
            args = ["import", "proxmox", str(self.shared / directory), "--inventory", str(base / "inventory.yaml"),
                    "--corosync", str(self.shared / "corosync.conf"), "-o", str(base / "policy"), "--json"]
            result = CliRunner().invoke(app, args)
            if result.exit_code == 0:
                self.cache[key] = Imported(base / "policy", json.loads(result.stdout)["items"])
            else:
                lines = (result.stderr or result.output).strip().splitlines()
                self.cache[key] = Imported(None, [], lines[-1] if lines else f"exit {result.exit_code}")
        return self.cache[key]


# --------------------------------------------------------------------------- classify


@dataclass
class Result:
    expectation: Expectation
    status: Status
    verdict: str | None = None  # zonewall's
    reason: str = ""
    construct: str | None = None
    note: str = ""

    @property
    def opens(self) -> bool:
        """Proxmox blocks, zonewall accepts: the one thing that must never happen."""
        return self.status == "wrong" and self.verdict == "accept"


def construct_for(reason: str) -> str | None:
    for pattern, construct in CONSTRUCTS:
        if re.search(pattern, reason, re.IGNORECASE):
            return construct
    return None


def _source_of(policy: Path, where: str) -> str | None:
    """The Proxmox line a translated rule came from (its `# from FILE:LINE` comment)."""
    file, _, line = where.rpartition(":")
    path = policy / file if not Path(file).is_absolute() else Path(file)
    if not path.is_file() or not line.isdigit():
        return None
    lines = path.read_text().splitlines()
    if int(line) > len(lines):
        return None
    found = re.search(r"# from (\S+:\d+)", lines[int(line) - 1])
    return found.group(1) if found else None


def explain(imported: Imported, answer: TraceAnswer) -> str:
    """Why zonewall disagrees, from the import report and the deciding rule's source."""
    assert imported.policy is not None
    reasons = []
    for where in answer.deciding:
        source = _source_of(imported.policy, where)
        if source is None:
            continue
        items = [i for i in imported.items_at(source) if i["severity"] != "note"]
        reasons += [f"{source}: {i['severity']}: {i['message']}" for i in items]
    replies = [stage for stage in answer.stages if "(the reply)" in stage]
    if not reasons and replies:
        reasons.append(f"trace judges the reply too, and {'; '.join(replies)}: zonewall's guard filters are stateless "
                       "(bridge family), while Proxmox's ipfilter runs after conntrack has accepted the reply")
    if not reasons:
        skipped = [i for i in imported.items if i["severity"] == "skipped" and i["line"]]
        reasons += [f"{i['file']}:{i['line']}: skipped: {i['message']}" for i in skipped]
    return "; ".join(reasons) or f"mm-unexplained ({'; '.join(answer.stages)})"


def classify(expectation: Expectation, importer: Importer) -> Result:
    why = impossible(expectation)
    if why:
        return Result(expectation, "not expressible", reason=why, construct=construct_for(why))
    imported = importer(expectation.directory, world_of(expectation))
    if imported.policy is None:
        reason = f"import refused: {imported.refused}"
        return Result(expectation, "not expressible", reason=reason, construct=construct_for(reason))
    src, dst = expectation.packet()
    src_end, dst_end = end_of(expectation.src_zone), end_of(expectation.dst_zone)
    try:
        answer = run_trace(imported.policy, trace_ref(src_end, src), trace_ref(dst_end, dst), trace_flow(expectation))
    except TraceRefused as exc:
        reason = f"trace refused: {exc}"
        return Result(expectation, "not expressible", reason=reason, construct=construct_for(reason))
    if (answer.src, answer.dst) != (src, dst):
        reason = f"trace answered for {answer.src} -> {answer.dst}, not {src} -> {dst}"
        return Result(expectation, "not expressible", answer.verdict, reason, construct_for(reason))
    expected_accept = expectation.action == "ACCEPT"
    if answer.delivered == expected_accept:
        note = ""
        if not expected_accept and answer.verdict.upper() != expectation.action:
            note = f"NOTE: {answer.verdict} where Proxmox says {expectation.action}"
        return Result(expectation, "expected", answer.verdict, note=note)
    reason = explain(imported, answer)
    return Result(expectation, "wrong", answer.verdict, reason, construct_for(reason))


def run_all(work: Path, shared: Path = SHARED) -> list[Result]:
    importer = Importer(work, shared)
    return [classify(e, importer) for e in read_expectations(shared)]


def plain_reports(work: Path, shared: Path = SHARED) -> dict[str, list[dict[str, Any]]]:
    """Each directory's import report in the plain world (no guest addresses but the
    containers'), as the README asks to print."""
    importer = Importer(work / "plain", shared)
    directories = sorted(p.name for p in shared.iterdir() if p.is_dir() and p.name.startswith("test-"))
    out = {}
    for directory in directories:
        imported = importer(directory, world([]))  # type: ignore[arg-type]
        out[directory] = imported.items if imported.policy is not None else [{"file": directory, "line": 0, "severity": "refused", "message": imported.refused}]
    return out


# --------------------------------------------------------------------------- the table


@dataclass
class Counts:
    expected: int = 0
    wrong: int = 0
    not_expressible: int = 0
    opens: int = 0
    notes: int = 0
    per_directory: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.expected + self.wrong + self.not_expressible


def count(results: list[Result]) -> Counts:
    counts = Counts()
    for result in results:
        row = counts.per_directory.setdefault(result.expectation.directory, [0, 0, 0, 0])
        index = {"expected": 0, "wrong": 1, "not expressible": 2}[result.status]
        row[index] += 1
        row[3] += result.opens
        if result.status == "expected":
            counts.expected += 1
            counts.notes += bool(result.note)
        elif result.status == "wrong":
            counts.wrong += 1
        else:
            counts.not_expressible += 1
        counts.opens += result.opens
    return counts


def table(results: list[Result], reports: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The conformance table: per directory, then every expectation not met, with why."""
    counts = count(results)
    lines = ["| directory | expected | wrong | not expressible | Proxmox blocks, zonewall accepts |", "|---|---|---|---|---|"]
    for directory, (ok, wrong, nx, opens) in sorted(counts.per_directory.items()):
        lines.append(f"| {directory} | {ok} | {wrong} | {nx} | {opens} |")
    lines.append(f"| **all {counts.total}** | **{counts.expected}** | **{counts.wrong}** | **{counts.not_expressible}** | **{counts.opens}** |")
    lines += ["", "Not met:", ""]
    for result in results:
        if result.status != "expected":
            construct = f" [waits for: {result.construct}]" if result.construct else ""
            lines.append(f"- {result.expectation.id} ({result.expectation.describe()}): {result.status}"
                         f"{' (zonewall: ' + result.verdict + ')' if result.verdict else ''}: {result.reason}{construct}")
    notes = [r for r in results if r.note]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {r.expectation.id} ({r.expectation.describe()}): {r.note}" for r in notes]
    for directory, items in sorted((reports or {}).items()):
        lines += ["", f"Import report of {directory} (plain world):"]
        lines += [f"  {i['file']}:{i['line']}: {i['severity']}: {i['message']}" for i in items] or ["  (nothing)"]
    return "\n".join(lines)


if __name__ == "__main__":  # the table, with each directory's import report: python -m tests.conformance.fwtester
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(table(run_all(Path(tmp)), plain_reports(Path(tmp))))
