"""Guest ports as the kernel sees them come and go: netlink link events.

A hypervisor makes a guest's port when the guest starts (libvirt's vnetN, Proxmox's
tap<VMID>i<N> / veth<VMID>i<N>), attaches it to a bridge, and deletes it when the
guest stops; a live migration moves the guest's port to another node. The agent
listens to RTM_NEWLINK/RTM_DELLINK (rtnetlink's link group) and asks for a
re-discovery when a link appears, disappears, changes its bridge or its MAC, so the
ruleset names a new guest's port within one compile-and-apply, and a gone guest's
name leaves the maps before the hypervisor can give it to the next guest. Until a
port is named in the maps, frames of ports named like a guest's are dropped
(`settings.guest_ports`), so this is about getting the guest filtered *and working*
quickly, not about the guest being open meanwhile.

The socket is rtnetlink's own (agent/rtlinks.py reads the messages): one recv per burst, a
select with a timeout so stop() ends the thread, created inside the agent's
namespace (`--netns`) when it manages another one.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..netns import run_in_netns
from .rtlinks import Link, dump_links, links_in

log = logging.getLogger("zonewall.agent.links")
RTMGRP_LINK = 1


@dataclass(frozen=True)
class Port:
    name: str
    mac: str | None
    master: int | None  # the bridge's ifindex


def change(known: dict[int, Port], event: str, index: int, port: Port) -> str | None:
    """Update `known` with one event; the reason to re-discover, or None (nothing that
    matters changed: carrier, statistics, flags)."""
    before = known.get(index)
    if event == "RTM_DELLINK":
        # the bridge also sends DELLINK when a port leaves it (master set): the port stays
        if port.master is not None and before is not None and before.master == port.master:
            known[index] = Port(port.name, port.mac, None)
            return f"{port.name} left its bridge"
        known.pop(index, None)
        return f"{port.name} gone" if before is not None or port.name else None
    known[index] = port
    if before is None:
        return f"{port.name} appeared" + (" on a bridge" if port.master else "")
    if before.name != port.name:
        return f"{before.name} renamed {port.name}"
    if before.master != port.master:
        return f"{port.name} {'joined a bridge' if port.master else 'left its bridge'}"
    if before.mac != port.mac:
        return f"{port.name} changed its MAC"
    return None


class LinkWatch:
    """Calls `on_change(reason)` for every link event that can change a guest port.

    `run()` is the job (it returns when `stop` is set; the agent supervises it, so a
    failure reopens the socket); `start()`/`stop()` run it on a thread of its own."""

    def __init__(self, on_change: Callable[[str], None], *, netns: str | None = None, stop: threading.Event | None = None) -> None:
        self._on_change = on_change
        self._netns = netns
        self._stop = stop or threading.Event()
        self.known: dict[int, Port] = {}
        self.opened = threading.Event()  # the socket listens (tests wait on it)

    def _open(self) -> socket.socket:
        def create() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.bind((0, RTMGRP_LINK))
                # what exists now is no news (bound first: nothing falls between)
                self.known = {link.index: _port(link) for link in dump_links()}
            except BaseException:
                sock.close()
                raise
            return sock

        return run_in_netns(self._netns or None, create)

    def start(self) -> LinkWatch:
        threading.Thread(target=self.run, name="zonewall-links", daemon=True).start()
        self.opened.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        sock = self._open()
        self.opened.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([sock], [], [], 0.5)
                if not readable:
                    continue
                try:
                    data = sock.recv(1 << 20)
                except OSError as exc:  # ENOBUFS: events were lost; discover everything again
                    log.warning("link events lost (%s); re-discovering", exc)
                    self._on_change("link events lost")
                    continue
                reasons = []
                for link in links_in(data):
                    reason = change(self.known, link.event, link.index, _port(link))
                    if reason is not None:
                        reasons.append(reason)
                if reasons:
                    log.info("links: %s", "; ".join(reasons))
                    self._on_change("; ".join(reasons))
        finally:
            sock.close()


def _port(link: Link) -> Port:
    return Port(link.name, link.mac, link.master)
