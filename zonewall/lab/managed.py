"""A lab cluster managed centrally: a controller process and one agent per node.

The controller runs in the host namespace and listens twice: on 127.0.0.1 (for the
caller: tests, the demo, the benchmark) and on the lab's `outside` namespace at the
uplink peer address, where each node's agent reaches it over the node's uplink and
through the node's own firewall, as on a real cluster. Agents run inside their
node's namespace (`ip netns exec`) with a state directory of their own.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from ..controller.store.db import default_url, open_database
from ..controller.store.tokens import create_token
from ..policy.documents import read_directory
from .cluster import UPLINK_PEER_V4, LabState

AGENT_PORT = 9440  # zonewall's port; the anti-lockout rules already open it


class ManagedLabError(RuntimeError):
    pass


def terminate(process: subprocess.Popen[Any]) -> None:
    """SIGTERM (agents leave their rules in place, the controller closes its sockets), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _zonewall(*args: str) -> list[str]:
    return [sys.executable, "-m", "zonewall.cli", *args]


@dataclass
class ControllerProcess:
    data_dir: Path
    process: subprocess.Popen[str]
    url: str  # in the caller's namespace
    agent_url: str | None  # inside the lab, for agents

    def stop(self) -> None:
        terminate(self.process)


def start_controller(data_dir: Path, lab: LabState | None = None, *, timeout: float = 30.0, db_url: str | None = None,
                     agent_port: int = AGENT_PORT, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> ControllerProcess:
    """`zonewall serve` on 127.0.0.1 (a free port) and, with a lab, inside its outside netns
    on `agent_port`; on SQLite in `data_dir`, or on `db_url` (replicas share one); `extra`:
    more `serve` options (e.g. --git-repo)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = _zonewall("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *extra)
    if db_url is not None:
        argv += ["--db", db_url]
    if lab is not None:
        argv += ["--listen", f"{UPLINK_PEER_V4}:{agent_port}@{lab.outside}"]
    with open(data_dir / "controller.log", "a") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ, **(env or {})))
    # a thread reads stdout: select() on the pipe would miss lines already buffered
    lines: queue.Queue[str] = queue.Queue()
    def pump(stdout: IO[str]) -> None:
        for line in stdout:
            lines.put(line)

    assert process.stdout is not None  # stdout=PIPE
    threading.Thread(target=pump, args=(process.stdout,), daemon=True).start()
    urls: list[str] = []
    deadline = time.monotonic() + timeout
    wanted = 2 if lab is not None else 1
    while len(urls) < wanted:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise ManagedLabError(f"the controller did not start; see {data_dir / 'controller.log'}")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if "listening on " in line:
            urls.append(line.split("listening on ", 1)[1].split()[0])
    url = urls[0]
    _wait_http(url, deadline)
    return ControllerProcess(data_dir, process, url, urls[1] if lab is not None else None)


def _wait_http(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/openapi.json", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise ManagedLabError(f"the controller at {url} does not answer")


@dataclass
class AgentProcess:
    node: str
    process: subprocess.Popen[bytes]
    state_dir: Path

    def stop(self) -> None:
        terminate(self.process)


def start_agent(node: str, netns_name: str, controller_url: str, token: str, state_dir: Path, *, verify_interval: float = 5.0,
                env: dict[str, str] | None = None) -> AgentProcess:
    """An agent in the node's namespace; `controller_url` may be a comma list of replicas."""
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = ["ip", "netns", "exec", netns_name] + _zonewall(
        "agent", "--controller", controller_url, "--host", node, "--state-dir", str(state_dir), "--verify-interval", str(verify_interval),
    )
    env = dict(os.environ, **(env or {}), ZONEWALL_TOKEN=token)  # not on the command line, where ps shows it
    with open(state_dir / "agent.log", "a") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    return AgentProcess(node, process, state_dir)


@dataclass
class ManagedLab:
    """The controller(s), their admin API client and the agents of one lab.

    With `db_url` and `replicas` > 1, several controllers share that database (the
    high-availability setup); each listens for agents on its own port of the outside
    (9440, 9441, ...) and every agent is given all of them."""

    lab: LabState
    data_dir: Path
    controller: ControllerProcess | None = None  # the first controller (the one `api` talks to by default)
    admin_token: str = ""
    agent_tokens: dict[str, str] = field(default_factory=dict)
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    db_url: str | None = None
    replicas: int = 1
    controllers: list[ControllerProcess | None] = field(default_factory=list)
    controller_env: dict[str, str] = field(default_factory=dict)
    agent_dirs: dict[str, Path] = field(default_factory=dict)  # node -> state directory (default: DATA/agents/NODE)
    agent_env: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> extra environment (e.g. LIBVIRT_DEFAULT_URI)
    serve_args: tuple[str, ...] = ()  # more `zonewall serve` options

    def start(self, *, verify_interval: float = 5.0) -> ManagedLab:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sessions = open_database(self.db_url or default_url(self.data_dir))
        self.admin_token = create_token(sessions, "admin", "lab-admin")[1]
        for node in self.lab.nodes:
            self.agent_tokens[node] = create_token(sessions, "agent", node=node)[1]
        sessions.kw["bind"].dispose()
        self.controllers = [None] * self.replicas
        for index in range(self.replicas):
            self.start_controller(index)
        for node in sorted(self.lab.nodes):
            self.start_agent(node, verify_interval=verify_interval)
        return self

    def start_controller(self, index: int = 0) -> ControllerProcess:
        directory = self.data_dir if index == 0 else self.data_dir / f"controller{index}"
        process = start_controller(directory, self.lab, db_url=self.db_url, agent_port=AGENT_PORT + index, env=self.controller_env,
                                   extra=self.serve_args)
        if not self.controllers:
            self.controllers = [None] * self.replicas
        self.controllers[index] = process
        if index == 0:
            self.controller = process
        return process

    def stop_controller(self, index: int = 0) -> None:
        process = self.controllers[index] if self.controllers else self.controller
        if process is not None:
            process.stop()

    def kill_controller(self, index: int) -> None:
        """kill -9: no goodbye, its connections reset, its request half done."""
        process = self.controllers[index]
        if process is not None:
            process.process.kill()
            process.process.wait()

    def agent_urls(self) -> str:
        """Every controller's address for agents, as the comma list `--controller` takes."""
        return ",".join(f"http://{UPLINK_PEER_V4}:{AGENT_PORT + index}" for index in range(self.replicas))

    def start_agent(self, node: str, *, verify_interval: float = 5.0) -> AgentProcess:
        assert self.controller is not None and self.controller.agent_url is not None
        agent = start_agent(node, self.lab.nodes[node], self.agent_urls(), self.agent_tokens[node], self.agent_dirs.get(node, self.data_dir / "agents" / node),
                            verify_interval=verify_interval, env=self.agent_env.get(node))
        self.agents[node] = agent
        return agent

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for process in self.controllers or [self.controller]:
            if process is not None:
                process.stop()

    # -- the API as the admin ----------------------------------------------------------

    def api(self, method: str, path: str, *, via: int = 0, headers: dict[str, str] | None = None, timeout: float = 60.0,
            **kwargs: Any) -> httpx.Response:
        process = self.controllers[via] if self.controllers else self.controller
        assert process is not None
        headers = {"Authorization": f"Bearer {self.admin_token}", **(headers or {})}
        return httpx.request(method, process.url + "/api/v1" + path, headers=headers, timeout=timeout, **kwargs)

    def upload(self, policy: Path, message: str = "upload") -> dict[str, Any]:
        response = self.api("PUT", "/policy", json={"documents": read_directory(policy), "message": message})
        if response.status_code not in (200, 201):
            raise ManagedLabError(f"upload refused ({response.status_code}): {response.text}")
        return response.json()

    def wait_converged(self, revision: int, timeout: float = 30.0, *, via: int = 0) -> list[dict[str, Any]]:
        """Until every node of the policy reports `revision` applied without error."""
        deadline = time.monotonic() + timeout
        nodes: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            nodes = self.api("GET", "/nodes", via=via).json()
            if nodes and all(n["applied_revision"] == revision and n["state"] in ("ok", "degraded") for n in nodes if n["in_policy"]):
                return nodes
            time.sleep(0.05)
        raise ManagedLabError(f"nodes did not converge on revision {revision} in {timeout:g}s: {nodes}")
