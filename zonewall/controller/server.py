"""`zonewall serve`: the controller process (uvicorn, one worker).

Listening sockets are bound here, not by uvicorn, for two reasons: `--listen` may
be given several times, and an address may name a network namespace
(`ADDR:PORT@NETNS`) so that one controller in the host namespace also answers
inside a lab's `outside` namespace, where the agents of the lab's nodes reach it
over their uplinks like real nodes would. A socket belongs to the namespace it was
created in for its whole life, so only its creation has to happen there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from ..netns import run_in_netns
from ..service.logs import setup_logging
from ..service.sdnotify import ServiceNotifier, notify
from .app import create_app
from .connections import ConnectionLimits, guarded_protocol
from .limits import RequestLimits
from .replica import build_controller

DEFAULT_PORT = 9440
log = logging.getLogger("zonewall.controller")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    netns: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (f" in netns {self.netns}" if self.netns else "")


def parse_listen(text: str) -> Listen:
    """`ADDR:PORT`, `[V6]:PORT`, optionally `@NETNS`; ValueError with the reason."""
    address, _, netns = text.partition("@")
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = address.rpartition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"--listen {text!r}: expected ADDRESS:PORT, [IPV6]:PORT, optionally @NETNS (e.g. 127.0.0.1:9440)") from None
    if netns is not None and netns != "" and ("/" in netns or netns in (".", "..")):
        raise ValueError(f"--listen {text!r}: {netns!r} is not a namespace name")
    return Listen(host, port, netns or None)


def _make_socket(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # TCP by name: asyncio sets TCP_NODELAY only on connections accepted from a
    # socket whose proto is 6, and without it uvicorn's separate header and body
    # writes wait for the client's delayed ACK: ~44 ms per answer on a kept-alive
    # connection (every agent's long-poll and status report), 1 ms with it
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((listen.host, listen.port))
    sock.listen(1024)
    return sock


def bind(listen: Listen) -> socket.socket:
    return run_in_netns(listen.netns, _make_socket, listen)


class _Server(uvicorn.Server):
    """uvicorn's server, telling systemd (Type=notify) when it serves and that its
    event loop still turns: a heartbeat task on the loop feeds the watchdog, so a
    blocked loop gets the controller restarted."""

    beat = 0.0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(1.0)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # here, not after run(): uvicorn re-raises SIGTERM once it has shut down
        notify("STOPPING=1", "STATUS=stopping")
        await super().shutdown(sockets=sockets)

    def status(self) -> str:
        return "serving" if self.started else "starting"


def serve(db_url: str, listens: list[Listen], tls_cert: str | None = None, tls_key: str | None = None, access_log: bool = False,
          request_limits: RequestLimits = RequestLimits(), connection_limits: ConnectionLimits = ConnectionLimits(),
          gitops: tuple[Any, Any] | None = None) -> None:
    """`gitops`: (gitops.GitSource, its working directory) to follow a git branch."""
    setup_logging("controller")
    controller = build_controller(db_url)  # the database is migrated before READY=1
    if gitops is not None:
        from .gitops import GitFollower

        controller.gitops = GitFollower(controller, *gitops)
    app = create_app(controller, request_limits)
    sockets = [bind(listen) for listen in listens]
    config = uvicorn.Config(
        app, ssl_certfile=tls_cert, ssl_keyfile=tls_key, access_log=access_log, log_level="info",
        log_config=None,  # uvicorn's lines go through our handler (journald priorities under systemd)
        timeout_graceful_shutdown=1,  # long-polls would otherwise hold a stop for their whole wait
        http=guarded_protocol(connection_limits),  # header timeout, connection cap (connections.py)
        timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024,  # idle between requests; a request head's size
    )
    scheme = "https" if tls_cert else "http"
    for listen, sock in zip(listens, sockets):
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        # one parseable line per socket: tests and the demo read the chosen port from it
        sys.stdout.write(f"zonewall controller listening on {scheme}://{shown}:{port}" + (f" (netns {listen.netns})" if listen.netns else "") + "\n")
    sys.stdout.flush()
    if not tls_cert and any(not ipaddress.ip_address(listen.host).is_loopback and listen.netns is None for listen in listens):
        log.warning("listening beyond loopback without TLS: tokens cross the network in clear text (--tls-cert/--tls-key)")
    server = _Server(config)
    notifier = ServiceNotifier(ready=lambda: server.started, alive=lambda: time.monotonic() - server.beat < 30.0, status=server.status).start()
    try:
        server.run(sockets=sockets)
    finally:
        notifier.stop()
