"""Named network namespaces and the links between them, for kernel tests.

Design choices (why, not what):

* Topology changes go through the ``ip`` binary (``ip -n NS ...``).  It costs
  ~2 ms a call, is exactly what an operator would type when debugging a failed
  test, and keeps namespaces compatible with ``ip netns``.  pyroute2 0.9 builds
  namespace sockets by forking a child process, which is slower than ``ip`` and
  fragile inside a threaded pytest worker.  For bulk work use :func:`ip_batch`
  (one process for many commands).
* Anything that must happen *inside* a namespace from Python (sockets,
  ``/proc/sys/net`` writes) goes through :func:`zonewall.netns.run_in_netns`
  (why a fresh thread, and what it inherits: see that module).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

# one implementation of "run this inside a namespace" (zonewall/netns.py), re-exported
# here for the lab and its tests
from ..netns import NETNS_DIR, netns_socket, run_in_netns

__all__ = ["netns_socket", "run_in_netns"]  # and everything defined below
IFNAMSIZ = 15  # usable characters in a Linux interface name

T = TypeVar("T")

# Applied to every namespace made by create_netns(tune=True):
# - DAD off: IPv6 addresses (including link-local ones the kernel adds on link
#   up) are usable at once instead of ~1-2 s later; `nodad` alone only covers
#   addresses we add.
# - ICMP error rate limits off: `reject` rules send ICMP errors, and the kernel
#   rate-limits them per peer (burst ~6, then 1/s) and globally.  A probe matrix
#   that hits the same reject many times would otherwise see "blocked" where the
#   truth is "refused".
LAB_SYSCTLS: dict[str, str | int] = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv6.icmp.ratelimit": "0",
    "net.ipv4.icmp_msgs_per_sec": "100000",
    "net.ipv4.icmp_msgs_burst": "100000",
}


class NetnsError(RuntimeError):
    """An ``ip``/namespace operation failed; carries the command and stderr."""

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.cmd)!r} failed ({returncode}): {self.stderr}")


# --------------------------------------------------------------------------- ip(8)


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NS] ARGS...`` and return stdout; raise :class:`NetnsError`."""
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return _run(argv, check=check)


def ip_batch(commands: Iterable[str], *, ns: str | None = None, force: bool = False) -> None:
    """Run many ``ip`` commands (one per line, without the ``ip``) in one process.

    ``force=True`` keeps going after a failing line (used for best-effort cleanup).
    """
    lines = [c.strip() for c in commands if c.strip()]
    if not lines:
        return
    argv = ["ip"] + (["-n", ns] if ns else []) + (["-force"] if force else []) + ["-batch", "-"]
    _run(argv, input="\n".join(lines) + "\n", check=not force)


def exec_in_netns(
    ns: str, argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a program inside ``ns`` (``ip netns exec``), e.g. ``nft -f -``."""
    full = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(full, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(full, proc.returncode, proc.stderr)
    return proc


# --------------------------------------------------------------------- namespaces


def _check_ns_name(name: str) -> None:
    # The name becomes a file under /run/netns: no path tricks.
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid namespace name {name!r}")


def netns_path(name: str) -> str:
    _check_ns_name(name)
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def list_netns(prefix: str = "") -> list[str]:
    """Names under /run/netns starting with ``prefix`` (sorted)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def create_netns(name: str, *, tune: bool = True) -> None:
    """Create namespace ``name`` with ``lo`` up; ``tune`` applies :data:`LAB_SYSCTLS`.

    Raises :class:`NetnsError` if it already exists (a stale namespace from a
    crashed run should be removed with :func:`delete_all`, not silently reused).
    """
    _check_ns_name(name)
    ip("netns", "add", name)
    try:
        ip("link", "set", "dev", "lo", "up", ns=name)
        if tune:
            set_sysctls(name, LAB_SYSCTLS, missing_ok=True)
    except BaseException:
        delete_netns(name)
        raise


def delete_netns(name: str, *, flush_links: bool = False) -> None:
    """Remove namespace ``name``; no error if it does not exist.

    Unmounting is enough when nothing else holds the namespace: the kernel then
    destroys it and its interfaces (veth peers elsewhere included) shortly
    after, asynchronously and in batches (~2 ms per namespace).  A leaked socket
    or thread inside it keeps it alive, though, and with it the peers of its
    veths.  ``flush_links=True`` deletes every interface explicitly first, which
    is immune to such leaks but costs ~15-30 ms per link (each deletion waits
    for an RCU grace period), so it is opt-in.
    """
    if not netns_exists(name):
        return
    if flush_links:
        try:
            links = json.loads(ip("-j", "link", "show", ns=name) or "[]")
        except (NetnsError, json.JSONDecodeError):
            links = []
        names = [link["ifname"] for link in links if link.get("ifname") and link["ifname"] != "lo"]
        ip_batch((f"link del dev {n}" for n in names), ns=name, force=True)
    try:
        ip("netns", "del", name)
    except NetnsError:
        if netns_exists(name):  # a concurrent delete_all may have won the race
            raise


def delete_all(prefix: str, *, flush_links: bool = False) -> list[str]:
    """Delete every namespace whose name starts with ``prefix`` (crash recovery).

    Returns the names that were removed.  An empty prefix is refused: it would
    wipe namespaces that belong to other users of the machine.
    """
    if not prefix:
        raise ValueError("delete_all needs a non-empty prefix")
    removed = []
    for name in list_netns(prefix):
        delete_netns(name, flush_links=flush_links)
        removed.append(name)
    return removed


class NetnsGroup:
    """Namespaces created through it are all deleted on ``close()``/``__exit__``.

    Lets a test or lab build step always clean up, even on failure halfway.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, name: str, *, tune: bool = True) -> str:
        create_netns(name, tune=tune)
        self.names.append(name)
        return name

    def close(self) -> None:
        errors: list[BaseException] = []
        for name in reversed(self.names):
            try:
                delete_netns(name)
            except BaseException as exc:  # noqa: BLE001 - keep deleting the rest
                errors.append(exc)
        self.names.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> NetnsGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------- running in netns


# ------------------------------------------------------------------------ sysctls


def _sysctl_path(key: str) -> str:
    # "net.ipv4.ip_forward" or "net/ipv4/ip_forward"; the slash form is needed
    # when a component (an interface name) itself contains a dot.
    rel = key if "/" in key else key.replace(".", "/")
    return "/proc/sys/" + rel.lstrip("/")


def set_sysctls(ns: str, values: dict[str, str | int], *, missing_ok: bool = False) -> None:
    """Write several sysctls in ``ns`` in one namespace switch.

    /proc/sys/net resolves to the namespace of the *writing thread*, which is
    why this runs through :func:`run_in_netns` and not ``open()`` here.
    """

    def write_all() -> None:
        for key, value in values.items():
            try:
                with open(_sysctl_path(key), "w") as f:
                    f.write(f"{value}\n")
            except FileNotFoundError:
                if not missing_ok:
                    raise FileNotFoundError(
                        f"sysctl {key} does not exist in namespace {ns} "
                        "(bridge-nf-* need br_netfilter, nf_conntrack_* need conntrack)"
                    ) from None

    run_in_netns(ns, write_all)


def set_sysctl(ns: str, key: str, value: str | int) -> None:
    set_sysctls(ns, {key: value})


def get_sysctl(ns: str, key: str) -> str:
    def read() -> str:
        with open(_sysctl_path(key)) as f:
            return f.read().strip()

    return run_in_netns(ns, read)


def enable_forwarding(ns: str, *, v4: bool = True, v6: bool = True) -> None:
    values: dict[str, str | int] = {}
    if v4:
        values["net.ipv4.ip_forward"] = 1
    if v6:
        values["net.ipv6.conf.all.forwarding"] = 1
    set_sysctls(ns, values)


def ensure_neighbour_capacity(entries: int) -> bool:
    """Raise the neighbour tables' thresholds so that `entries` fit; True if raised.

    The kernel sizes them in the initial namespace only and every namespace shares
    them: a lab of 40 guests probing each other needs ~2,000 ARP entries, past the
    default 1,024 the kernel drops resolutions ("neighbor table overflow!") and
    probes time out as if the firewall had blocked them. Only ever raised."""
    raised = False
    for family in ("ipv4", "ipv6"):
        base = Path(f"/proc/sys/net/{family}/neigh/default")
        try:
            current = int((base / "gc_thresh3").read_text())
        except (OSError, ValueError):
            continue
        if current >= entries:
            continue
        wanted = 1 << max(entries - 1, 1).bit_length()
        for name, value in (("gc_thresh3", wanted), ("gc_thresh2", wanted // 2), ("gc_thresh1", wanted // 8)):
            try:
                (base / name).write_text(f"{max(value, int((base / name).read_text()))}\n")
                raised = True
            except (OSError, ValueError):
                pass
    return raised


def enable_bridge_netfilter(ns: str, *, v4: bool = True, v6: bool = True, arp: bool = False) -> None:
    """Send bridged frames through the inet hooks in ``ns`` (br_netfilter)."""
    set_sysctls(
        ns,
        {
            "net.bridge.bridge-nf-call-iptables": int(v4),
            "net.bridge.bridge-nf-call-ip6tables": int(v6),
            "net.bridge.bridge-nf-call-arptables": int(arp),
        },
    )


# -------------------------------------------------------------------------- links


def _check_ifname(ifname: str) -> None:
    if not ifname or len(ifname) > IFNAMSIZ or "/" in ifname or any(c.isspace() for c in ifname):
        raise ValueError(f"invalid interface name {ifname!r} (1..{IFNAMSIZ} chars, no '/' or spaces)")


def add_veth(
    ns_a: str | None,
    if_a: str,
    ns_b: str | None,
    if_b: str,
    *,
    mac_a: str | None = None,
    mac_b: str | None = None,
    up: bool = True,
) -> None:
    """Create a veth pair with end ``if_a`` in ``ns_a`` and ``if_b`` in ``ns_b``.

    ``None`` means the caller's (initial) namespace.  The peer is created
    directly in its namespace, so no interface ever appears on the host.
    """
    _check_ifname(if_a)
    _check_ifname(if_b)
    cmd = ["link", "add", if_a]
    if mac_a:
        cmd += ["address", mac_a]
    cmd += ["type", "veth", "peer", "name", if_b]
    if mac_b:
        cmd += ["address", mac_b]
    if ns_b:
        cmd += ["netns", ns_b]
    ip(*cmd, ns=ns_a)
    if up:
        link_up(ns_a, if_a)
        link_up(ns_b, if_b)


def add_bridge(ns: str | None, name: str, *, mac: str | None = None, mcast_snooping: bool = False, up: bool = True) -> None:
    """Create a bridge (STP off, so ports forward as soon as they are up).

    Multicast snooping is off by default: without a querier it can make IPv6
    neighbour discovery depend on the order of MLD joins and port attachment.
    """
    _check_ifname(name)
    cmd = ["link", "add", name]
    if mac:
        cmd += ["address", mac]
    cmd += ["type", "bridge", "stp_state", "0", "mcast_snooping", "1" if mcast_snooping else "0"]
    ip(*cmd, ns=ns)
    if up:
        link_up(ns, name)


def set_master(ns: str | None, ifname: str, bridge: str) -> None:
    """Attach ``ifname`` as a port of ``bridge`` (both in ``ns``)."""
    ip("link", "set", "dev", ifname, "master", bridge, ns=ns)


def set_mac(ns: str | None, ifname: str, mac: str) -> None:
    ip("link", "set", "dev", ifname, "address", mac, ns=ns)


def link_up(ns: str | None, ifname: str) -> None:
    ip("link", "set", "dev", ifname, "up", ns=ns)


def link_down(ns: str | None, ifname: str) -> None:
    ip("link", "set", "dev", ifname, "down", ns=ns)


def delete_link(ns: str | None, ifname: str) -> None:
    ip("link", "del", "dev", ifname, ns=ns)


def get_mac(ns: str | None, ifname: str) -> str:
    info = json.loads(ip("-j", "link", "show", "dev", ifname, ns=ns))
    return str(info[0]["address"])


# ---------------------------------------------------------------- addresses/routes


def _is_v6(addr: str) -> bool:
    return ":" in addr


def add_address(ns: str | None, ifname: str, cidr: str) -> None:
    """Add ``cidr`` (e.g. ``10.0.0.1/24`` or ``fd00::1/64``) to ``ifname``.

    IPv6 addresses get ``nodad`` so they are usable immediately (DAD would
    otherwise keep them tentative, unbindable and unusable as a source for ~1 s).
    """
    ipaddress.ip_interface(cidr)  # validate early with a clear error
    cmd = ["addr", "add", cidr, "dev", ifname]
    if _is_v6(cidr):
        cmd.append("nodad")
    ip(*cmd, ns=ns)


def add_route(
    ns: str | None,
    dst: str,
    *,
    via: str | None = None,
    dev: str | None = None,
    family: int | None = None,
) -> None:
    """Add a route; ``dst`` may be ``"default"``.

    The family (``-4``/``-6``) comes from ``dst``, else ``via``, else ``family``
    (4 or 6) — ``ip route add default dev X`` alone would mean IPv4.
    """
    if via is None and dev is None:
        raise ValueError("add_route needs via= and/or dev=")
    if family is None:
        probe = dst if dst != "default" else via
        family = 6 if probe and _is_v6(probe) else 4
    cmd = [f"-{family}", "route", "add", dst]
    if via:
        cmd += ["via", via]
    if dev:
        cmd += ["dev", dev]
    ip(*cmd, ns=ns)


def add_default_route(ns: str | None, via: str, *, dev: str | None = None) -> None:
    add_route(ns, "default", via=via, dev=dev)
