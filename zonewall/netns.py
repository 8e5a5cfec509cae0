"""Running code inside a named network namespace: the one way zonewall does it.

setns(CLONE_NEWNET) moves only the calling thread, so the rest of the process never
changes namespace. A socket belongs to the namespace it was created in for its whole
life, so only its creation has to happen on the moved thread; it can be used from any
thread afterwards. Threads and subprocesses started from a moved thread inherit its
namespace: keep what runs there short and start no long-lived workers from it.

Two ways to use it: `run_in_netns` for a short call on a fresh thread (sockets,
/proc/sys/net writes), or `enter_netns` on a thread of your own that stays in the
namespace for its life (the libnftables worker in dataplane/backend.py).

This module is on the ground floor: the dataplane, the agent, the controller and the
lab all use it, and it imports nothing of zonewall.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

NETNS_DIR = "/run/netns"  # where `ip netns add` mounts named namespaces
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetnsNotFound(FileNotFoundError):
    """A named network namespace that does not exist (a user error, not a crash; still the
    FileNotFoundError that callers catch as OSError)."""


def enter_netns(name: str) -> None:
    """Move the calling thread (only it: setns is per thread) into netns `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(f"no network namespace named {name!r} (ip netns list)") from None
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` in namespace ``name`` (None: here, on this thread).

    With a name, a fresh thread enters the namespace, runs ``fn`` and exits right after,
    dropping its namespace reference; the caller's thread is never moved. Returns the
    result or re-raises the exception, whatever it was, in the caller.
    """
    if name is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(name)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def netns_socket(name: str | None, family: int, type: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ``name`` (usable from any thread)."""
    return run_in_netns(name, socket.socket, family, type, proto)
