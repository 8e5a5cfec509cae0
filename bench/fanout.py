#!/usr/bin/env python3
"""Fan-out benchmark: how fast a change reaches every agent, through several controllers.

Simulated agents speak the real protocol over HTTP/1.1 keep-alive connections (one
per agent, hand-written on asyncio streams so that the simulator's own CPU stays
small next to the controllers'): register, long-poll `GET /nodes/N/desired?after=R&wait=25`,
and after every new revision `PUT /nodes/N/status` with it applied, then long-poll
again, exactly as `zonewall agent` does (minus the kernel). Each agent talks to the
controller a real agent with the same node name would start with
(zonewall.agent.client.first_choice), so the agents spread over the controllers.

Per scenario: a fresh database (PostgreSQL from Debian's package, durable settings,
loopback; or SQLite), one agent token per node, the three-tier example uploaded,
the controllers started as `zonewall serve` processes, the agents connected and
settled. Then --changes times one zone rule is added through the API, round robin
over the controllers; the time from sending the request to the moment each agent
has the new revision's answer is recorded (every agent, every change). Controller
CPU (user+system of the `serve` processes, and of PostgreSQL's) is read from /proc
around each change, from the request until every agent's status report was
answered; memory is each controller's RSS and peak RSS at the end.

The scenarios run side by side in one run: 1,000 agents on three controllers on
PostgreSQL, and 200 and 1,000 agents on one controller (PostgreSQL, and SQLite),
so their ratios hold even on a loaded machine. Results: a table on stdout, JSON
with --json FILE. Run: .venv/bin/python bench/fanout.py [--changes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zonewall.agent.client import first_choice
from zonewall.controller.store.db import (
    default_url,
    open_database,
    utcnow,
)
from zonewall.controller.store.models import TokenRow
from zonewall.controller.store.tokens import PREFIX, hash_secret
from zonewall.lab.managed import ControllerProcess, start_controller
from zonewall.lab.postgres import TemporaryPostgres
from zonewall.policy.documents import read_directory

THREE_TIER = Path(__file__).resolve().parents[1] / "examples" / "three-tier" / "policy"
LONG_POLL = 25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    agents: int
    controllers: int
    database: str  # postgresql | sqlite

    @property
    def label(self) -> str:
        return f"{self.agents} agents, {self.controllers} controller{'s' if self.controllers > 1 else ''}, {self.database}"


SCENARIOS = [Scenario(1000, 3, "postgresql"), Scenario(200, 1, "postgresql"), Scenario(1000, 1, "postgresql"), Scenario(1000, 1, "sqlite")]


# -- one simulated agent --------------------------------------------------------------------


class Connection:
    """A keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        for attempt in range(3):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            payload = b"" if body is None else json.dumps(body).encode()
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
            try:
                writer.write(head.encode() + payload)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed")
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                return int(status_line.split()[1]), await reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                self._streams = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


@dataclass
class Fleet:
    received: dict[int, dict[str, float]] = field(default_factory=dict)  # revision -> node -> when
    reported: dict[int, int] = field(default_factory=dict)  # revision -> status reports answered
    errors: list[str] = field(default_factory=list)
    stop: bool = False


async def simulated_agent(node: str, url: str, token: str, fleet: Fleet) -> None:
    connection = Connection(url, token)
    base = f"/api/v1/nodes/{node}"
    cursor = 0
    try:
        status, _ = await connection.request("POST", f"{base}/register", {"agent_version": "bench", "hostname": node})
        if status != 200:
            fleet.errors.append(f"{node}: register {status}")
            return
        while not fleet.stop:
            status, body = await connection.request("GET", f"{base}/desired?after={cursor}&wait={LONG_POLL}&protocol=2")
            now = time.monotonic()
            if status != 200:
                fleet.errors.append(f"{node}: desired {status}")
                await asyncio.sleep(1)
                continue
            answer = json.loads(body)
            if not answer["changed"]:
                continue
            cursor = answer["revision"]
            fleet.received.setdefault(cursor, {})[node] = now
            status, _ = await connection.request("PUT", f"{base}/status", {"applied_revision": cursor, "state": "ok",
                                                                           "fingerprint": answer["content_hash"][:16]})
            fleet.reported[cursor] = fleet.reported.get(cursor, 0) + 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        if not fleet.stop:
            fleet.errors.append(f"{node}: {type(exc).__name__}: {exc}")
    finally:
        connection.close()


# -- measuring --------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def postgres_cpu(server: TemporaryPostgres | None) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster with the backends it reaped
    (cutime/cstime) plus the live ones, so a backend that exits between two readings
    still counts."""
    if server is None or server.directory is None:
        return 0.0
    master = int((server.directory / "data" / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return total + cpu_seconds(children)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


# -- one scenario -----------------------------------------------------------------------------


def make_tokens(url: str, nodes: list[str]) -> tuple[str, dict[str, str]]:
    """An admin token and one agent token per node, in one transaction."""
    import secrets

    sessions = open_database(url)
    secrets_by_node = {node: PREFIX + secrets.token_urlsafe(32) for node in nodes}
    admin = PREFIX + secrets.token_urlsafe(32)
    with sessions() as session, session.begin():
        session.add(TokenRow(name="bench-admin", role="admin", node=None, secret_hash=hash_secret(admin), created_at=utcnow()))
        session.add_all(TokenRow(name=f"agent-{node}", role="agent", node=node, secret_hash=hash_secret(secret), created_at=utcnow())
                        for node, secret in secrets_by_node.items())
    sessions.kw["bind"].dispose()  # type: ignore[union-attr]
    return admin, secrets_by_node


async def run_scenario(scenario: Scenario, changes: int, server: TemporaryPostgres | None, workdir: Path) -> dict[str, Any]:
    import httpx

    if scenario.database == "postgresql":
        assert server is not None
        url = server.create_database()
    else:
        url = default_url(workdir)
    nodes = [f"node{i:04d}" for i in range(1, scenario.agents + 1)]
    admin, tokens = make_tokens(url, nodes)
    controllers: list[ControllerProcess] = [start_controller(workdir / f"ctl{i}", db_url=url) for i in range(scenario.controllers)]
    fleet = Fleet()
    tasks: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"}, timeout=120) as api:
            upload = await api.put(controllers[0].url + "/api/v1/policy", json={"documents": read_directory(THREE_TIER), "message": "bench"})
            upload.raise_for_status()
            revision = upload.json()["revision"]["number"]
            for node in nodes:
                url_for = controllers[first_choice(node, scenario.controllers)].url
                tasks.append(asyncio.create_task(simulated_agent(node, url_for, tokens[node], fleet)))
            await wait_for(lambda: fleet.reported.get(revision, 0) >= len(nodes), 180, "agents settling")
            await asyncio.sleep(2.0)  # every agent back in its long-poll
            pids = [c.process.pid for c in controllers]
            pg = server if scenario.database == "postgresql" else None
            latencies: list[float] = []
            api_seconds: list[float] = []
            cpu: list[float] = []
            pg_cpu: list[float] = []
            for change in range(1, changes + 1):
                via = controllers[change % len(controllers)]
                cpu_before, pg_before = cpu_seconds(pids), postgres_cpu(pg)
                rule = {"id": f"bench-{change}", "direction": "in", "action": "accept", "tcp": 20000 + change}
                sent = time.monotonic()
                response = await api.post(via.url + "/api/v1/zones/db/rules", json={"rule": rule, "message": f"bench {change}"})
                answered = time.monotonic()
                response.raise_for_status()
                revision = response.json()["revision"]["number"]
                await wait_for(lambda: len(fleet.received.get(revision, {})) >= len(nodes), 120, f"revision {revision} everywhere")
                await wait_for(lambda: fleet.reported.get(revision, 0) >= len(nodes), 120, f"revision {revision} reported")
                cpu.append(cpu_seconds(pids) - cpu_before)
                pg_cpu.append(postgres_cpu(pg) - pg_before)
                latencies.extend(at - sent for at in fleet.received[revision].values())
                api_seconds.append(answered - sent)
                await asyncio.sleep(1.0)
            memory = [memory_mib(pid) for pid in pids]
    finally:
        fleet.stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for controller in controllers:
            controller.stop()
        if scenario.database == "postgresql" and server is not None:
            server.drop_database(url)
    return {
        "scenario": scenario.label, "agents": scenario.agents, "controllers": scenario.controllers, "database": scenario.database,
        "changes": changes, "samples": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1), "p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1), "max_ms": round(max(latencies) * 1000, 1),
        "api_ms_median": round(statistics.median(api_seconds) * 1000, 1),
        "controller_cpu_s_per_change": round(statistics.median(cpu), 3),
        "controller_cpu_ms_per_agent": round(statistics.median(cpu) * 1000 / scenario.agents, 2),
        "postgres_cpu_s_per_change": round(statistics.median(pg_cpu), 3) if scenario.database == "postgresql" else None,
        "controller_rss_mib": [round(rss) for rss, _ in memory], "controller_peak_rss_mib": [round(peak) for _, peak in memory],
        "errors": fleet.errors[:5], "error_count": len(fleet.errors),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [("scenario", "p50 ms", "p90 ms", "p99 ms", "max ms", "API ms", "ctl CPU s/change", "ms/agent", "PG CPU s", "RSS MiB (peak)")]
    for r in results:
        rss = ", ".join(f"{now} ({peak})" for now, peak in zip(r["controller_rss_mib"], r["controller_peak_rss_mib"]))
        rows.append((r["scenario"], str(r["p50_ms"]), str(r["p90_ms"]), str(r["p99_ms"]), str(r["max_ms"]), str(r["api_ms_median"]),
                     str(r["controller_cpu_s_per_change"]), str(r["controller_cpu_ms_per_agent"]),
                     "-" if r["postgres_cpu_s_per_change"] is None else str(r["postgres_cpu_s_per_change"]), rss))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--only", type=int, action="append", help="run only scenario N (1-based, repeatable)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # a thousand connections each side
    scenarios = [SCENARIOS[n - 1] for n in args.only] if args.only else SCENARIOS
    results = []
    with TemporaryPostgres(durable=True) as server, tempfile.TemporaryDirectory(prefix="zonewall-fanout-") as tmp:
        for index, scenario in enumerate(scenarios):
            print(f"[{index + 1}/{len(scenarios)}] {scenario.label} ...", file=sys.stderr, flush=True)
            workdir = Path(tmp) / f"s{index}"
            workdir.mkdir()
            results.append(asyncio.run(run_scenario(scenario, args.changes, server, workdir)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
