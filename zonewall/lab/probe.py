"""Real connection attempts between namespaces, in-process.

Every probe carries a fresh random token.  "delivered" means *our* listener
recorded that token (for ICMP echo: the echo reply carrying it came back), so a
handshake answered by something else (a SYN proxy, a stray service, a NAT to
the wrong place) never counts as delivery.

Verdicts:
  delivered  the token reached the listener (UDP: see ``reply`` for the way back)
  blocked    nothing came back within the timeout (or a local hook dropped it:
             EPERM), or a TCP handshake completed but the token never arrived
  refused    a TCP RST or an ICMP unreachable/prohibited error came back (for
             TCP, a connect() failing with EHOSTUNREACH/ENETUNREACH counts too:
             the errno cannot tell a local "no route" from a received ICMP)
  error      the probe itself could not run (bad source address, no route for
             a UDP/ICMP send, ...)

Sockets are created inside their namespace (:func:`netns_socket`) and then
used from ordinary threads, so hundreds of probes can run concurrently in one
process (:func:`run_probes`).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

from .netns import netns_socket

Verdict = Literal["delivered", "blocked", "refused", "error"]
Proto = Literal["tcp", "udp", "icmp"]

# Errors that mean "the network answered no": RST, ICMP unreachable, ICMP
# administratively prohibited (EHOSTUNREACH for v4 code 13, EACCES for v6).
_REFUSED_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EACCES,
    errno.EHOSTDOWN,
}

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


@dataclass
class ProbeResult:
    verdict: Verdict
    elapsed_ms: float
    detail: str
    proto: str
    src_ns: str
    dst_ns: str
    dst_addr: str
    port: int | None = None
    src_addr: str | None = None
    reply: bool | None = None  # UDP: reply reached the client; ICMP: echo reply seen
    seen_src: str | None = None  # source address as the listener saw it (NAT tests)

    @property
    def delivered(self) -> bool:
        return self.verdict == "delivered"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _new_token() -> bytes:
    return b"zw-" + secrets.token_hex(8).encode()


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err))


# ---------------------------------------------------------------------- listener


class Listener:
    """A TCP or UDP server in ``ns`` that records every token it receives.

    One listener serves any number of concurrent probes (each with its own
    token) from a single selector thread.  UDP datagrams are echoed back from
    the address they were sent to (IP_PKTINFO), so replies match the client's
    conntrack entry even when the listener is bound to the wildcard address.
    Binds to ``addr`` when it is local to ``ns``, else to the wildcard (e.g.
    ``addr`` is a DNAT'ed service address that never exists in ``ns``).
    """

    def __init__(self, ns: str, proto: Literal["tcp", "udp"], port: int, addr: str | None = None,
                 *, family: int | None = None) -> None:
        if proto not in ("tcp", "udp"):
            raise ValueError(f"listener proto must be tcp or udp, not {proto!r}")
        self.ns, self.proto, self.port = ns, proto, port
        self.family = _family(addr) if addr else (family or socket.AF_INET)
        v6 = self.family == socket.AF_INET6
        wildcard = "::" if v6 else "0.0.0.0"
        stype = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        self._sock = netns_socket(ns, self.family, stype)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6:  # let a v4 listener share the port number
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.bound_addr = addr or wildcard
            try:
                self._sock.bind((self.bound_addr, port))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL or not addr:
                    raise
                self.bound_addr = wildcard
                self._sock.bind((wildcard, port))
            if proto == "tcp":
                self._sock.listen(1024)
            elif v6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                self._sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._tokens: dict[bytes, str] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name=f"listener:{ns}:{proto}/{port}", daemon=True)
        self._thread.start()

    # -- public
    def wait_token(self, token: bytes, timeout: float) -> str | None:
        """Source address that delivered ``token``, or None after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: token in self._tokens, timeout=max(timeout, 0.0))
            return self._tokens.get(token)

    def seen(self, token: bytes) -> str | None:
        with self._cond:
            return self._tokens.get(token)

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals
    def _record(self, data: bytes, peer: str) -> None:
        token = data.strip()
        if token:
            with self._cond:
                self._tokens[token] = peer
                self._cond.notify_all()

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "main")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        conns: dict[socket.socket, tuple[bytearray, str]] = {}
        try:
            while not self._stop:
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "wake":
                        return
                    if key.data == "main" and self.proto == "tcp":
                        self._accept(sel, conns)
                    elif key.data == "main":
                        self._datagram()
                    else:
                        self._read_conn(sel, conns, key.fileobj)  # type: ignore[arg-type]
        finally:
            for c in conns:
                c.close()
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, conns: dict[socket.socket, tuple[bytearray, str]]) -> None:
        try:
            conn, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        conn.setblocking(False)
        conns[conn] = (bytearray(), peer[0])
        sel.register(conn, selectors.EVENT_READ, "conn")

    def _read_conn(self, sel: selectors.BaseSelector, conns: dict[socket.socket, tuple[bytearray, str]],
                   conn: socket.socket) -> None:
        buf, peer = conns[conn]
        try:
            chunk = conn.recv(256)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        # The client sends "<token>\n"; stop at newline, EOF or a silly length.
        if b"\n" in buf or not chunk or len(buf) > 128:
            self._record(bytes(buf.split(b"\n", 1)[0]), peer)
            sel.unregister(conn)
            del conns[conn]
            conn.close()

    def _datagram(self) -> None:
        try:
            data, anc, _flags, peer = self._sock.recvmsg(2048, socket.CMSG_SPACE(64))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. a queued ICMP error for an earlier reply
        self._record(data, peer[0])
        cmsgs = []
        for level, ctype, cdata in anc:
            if level == socket.IPPROTO_IP and ctype == _IP_PKTINFO:
                # in_pktinfo{ifindex, spec_dst, addr}: reply *from* addr (the
                # destination the client used), on whatever interface routes.
                cmsgs.append((level, ctype, struct.pack("=i4s4s", 0, cdata[8:12], b"\0" * 4)))
            elif level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_PKTINFO:
                cmsgs.append((level, ctype, cdata[:16] + struct.pack("=I", 0)))
        try:
            self._sock.sendmsg([data], cmsgs, 0, peer)
        except OSError:
            pass  # the reply path being blocked is what reply=False reports


class ListenerPool:
    """Shares listeners between probes: one per (ns, proto, addr, port)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[tuple[str, str, str, int], Listener] = {}

    def get(self, ns: str, proto: Literal["tcp", "udp"], port: int, addr: str) -> Listener:
        key = (ns, proto, addr, port)
        with self._lock:
            lst = self._listeners.get(key)
            if lst is None:
                lst = self._listeners[key] = Listener(ns, proto, port, addr)
            return lst

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
        for lst in listeners:
            lst.close()

    def __enter__(self) -> ListenerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Borrow:
    """A listener from ``pool``, or a private one closed on exit."""

    def __init__(self, pool: ListenerPool | None, ns: str, proto: Literal["tcp", "udp"], port: int, addr: str) -> None:
        self.own = pool is None
        self.listener = Listener(ns, proto, port, addr) if pool is None else pool.get(ns, proto, port, addr)

    def __enter__(self) -> Listener:
        return self.listener

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.listener.close()


def _send_failed(exc: OSError, make: Callable[[Verdict, str], ProbeResult]) -> ProbeResult:
    # A synchronous send() error on a fresh socket is always local: EPERM is a
    # drop in this namespace's output hook; anything else (no route, an
    # unreachable/prohibit route) is lab configuration, not a network answer.
    if exc.errno == errno.EPERM:
        return make("blocked", "send: EPERM (dropped by a local output hook)")
    return make("error", f"send: {_errname(exc.errno)} (local)")


def _client_socket(ns: str, family: int, stype: int, proto: int, src_addr: str | None) -> socket.socket:
    sock = netns_socket(ns, family, stype, proto)
    if src_addr:
        try:
            sock.bind((src_addr, 0))
        except BaseException:
            sock.close()
            raise
    return sock


# --------------------------------------------------------------------------- TCP


def probe_tcp(src_ns: str, dst_ns: str, dst_addr: str, port: int, *, src_addr: str | None = None,
              timeout: float = 1.0, pool: ListenerPool | None = None,
              landing: tuple[str, int] | None = None) -> ProbeResult:
    """Connect from ``src_ns`` to a listener in ``dst_ns`` and send a token."""

    def result(verdict: Verdict, t0: float, detail: str, seen: str | None = None) -> ProbeResult:
        return ProbeResult(verdict, round((time.perf_counter() - t0) * 1000, 2), detail, "tcp",
                           src_ns, dst_ns, dst_addr, port, src_addr, None, seen)

    token = _new_token()
    t0 = time.perf_counter()
    try:
        with _Borrow(pool, dst_ns, "tcp", *(landing[::-1] if landing else (port, dst_addr))) as lst:
            sock = _client_socket(src_ns, _family(dst_addr), socket.SOCK_STREAM, 0, src_addr)
            with sock:
                sock.settimeout(timeout)
                t0 = time.perf_counter()  # measure the network, not the setup
                try:
                    sock.connect((dst_addr, port))
                except TimeoutError:
                    return result("blocked", t0, "connect timed out (SYN or SYN-ACK dropped)")
                except OSError as exc:
                    if exc.errno in _REFUSED_ERRNOS:
                        return result("refused", t0, f"connect: {_errname(exc.errno)}")
                    return result("error", t0, f"connect: {exc}")
                try:
                    sock.sendall(token + b"\n")
                except OSError as exc:
                    return result("refused", t0, f"send after connect: {_errname(exc.errno)}")
                remaining = max(timeout - (time.perf_counter() - t0), 0.2)
                seen = lst.wait_token(token, remaining)
                if seen is None:
                    return result("blocked", t0, "handshake completed but the listener never "
                                  "received the token (answered by something else, or data dropped)")
                return result("delivered", t0, "listener received token", seen)
    except OSError as exc:
        return result("error", t0, f"setup: {exc}")


# --------------------------------------------------------------------------- UDP


def probe_udp(src_ns: str, dst_ns: str, dst_addr: str, port: int, *, src_addr: str | None = None,
              timeout: float = 1.0, pool: ListenerPool | None = None,
              landing: tuple[str, int] | None = None) -> ProbeResult:
    """Send a token datagram; delivered if the listener got it, ``reply`` if its echo came back.

    When the token arrives but the echo does not, the probe takes the full
    timeout (it cannot know sooner that no reply is coming).
    """

    def result(verdict: Verdict, t0: float, detail: str, reply: bool | None = None,
               seen: str | None = None) -> ProbeResult:
        return ProbeResult(verdict, round((time.perf_counter() - t0) * 1000, 2), detail, "udp",
                           src_ns, dst_ns, dst_addr, port, src_addr, reply, seen)

    token = _new_token()
    t0 = time.perf_counter()
    try:
        with _Borrow(pool, dst_ns, "udp", *(landing[::-1] if landing else (port, dst_addr))) as lst:
            sock = _client_socket(src_ns, _family(dst_addr), socket.SOCK_DGRAM, 0, src_addr)
            with sock:
                # connect() so ICMP errors for this flow surface as recv() errors.
                sock.connect((dst_addr, port))
                t0 = time.perf_counter()
                deadline = t0 + timeout
                try:
                    sock.send(token)
                except OSError as exc:
                    return _send_failed(exc, lambda v, d: result(v, t0, d))
                error: int | None = None
                while (left := deadline - time.perf_counter()) > 0:
                    sock.settimeout(left)
                    try:
                        if sock.recv(2048) == token:
                            return result("delivered", t0, "listener received token; reply came back",
                                          True, lst.seen(token))
                    except TimeoutError:
                        break
                    except OSError as exc:
                        error = exc.errno
                        break
                seen = lst.seen(token)
                if seen is not None:
                    why = f"reply failed: {_errname(error)}" if error else "no reply within timeout"
                    return result("delivered", t0, f"listener received token; {why}", False, seen)
                if error in _REFUSED_ERRNOS:
                    return result("refused", t0, f"ICMP error: {_errname(error)}", False)
                if error is not None:
                    return result("error", t0, f"recv: {_errname(error)}", False)
                return result("blocked", t0, "token not received within timeout", False)
    except OSError as exc:
        return result("error", t0, f"setup: {exc}")


# -------------------------------------------------------------------------- ICMP

# name -> (IPv4 type, IPv6 type); None where the family has no such message.
ICMP_TYPES: dict[str, tuple[int | None, int | None]] = {
    "echo-request": (8, 128),
    "timestamp-request": (13, None),
    "router-solicitation": (10, 133),
}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
_UNREACH: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_body(family: int, packet: bytes) -> bytes:
    # IPv4 raw sockets return the IP header, IPv6 raw sockets do not.
    if family == socket.AF_INET and packet:
        return packet[(packet[0] & 0x0F) * 4:]
    return packet


def _embedded_icmp(family: int, body: bytes) -> bytes:
    """The ICMP header of the offending packet quoted inside an ICMP error."""
    inner = body[8:]
    if family == socket.AF_INET:
        if len(inner) < 20 or inner[9] != socket.IPPROTO_ICMP:
            return b""
        return inner[(inner[0] & 0x0F) * 4:]
    if len(inner) < 40 or inner[6] != socket.IPPROTO_ICMPV6:
        return b""  # extension headers in the quote are not worth handling here
    return inner[40:]


def _drain_for(sock: socket.socket, family: int, icmp_type: int, token: bytes, timeout: float) -> bool:
    """True if ``sock`` received an ICMP message of ``icmp_type`` carrying ``token``."""
    deadline = time.perf_counter() + timeout
    while True:
        # settimeout(0.0) makes recv non-blocking: a final sweep of what queued.
        sock.settimeout(max(deadline - time.perf_counter(), 0.0))
        try:
            body = _icmp_body(family, sock.recv(65535))
        except (BlockingIOError, TimeoutError):
            return False
        if body and body[0] == icmp_type and token in body:
            return True


def probe_icmp(src_ns: str, dst_ns: str, dst_addr: str, icmp_type: str | int = "echo-request", *,
               src_addr: str | None = None, timeout: float = 1.0) -> ProbeResult:
    """Send one ICMP message (raw socket) from ``src_ns`` to ``dst_addr``.

    Echo requests are delivered when the matching echo reply (same id, seq and
    token) comes back; ``detail`` says whether the request at least reached
    ``dst_ns`` (seen by a raw socket there).  Other types are delivered when a
    raw socket in ``dst_ns`` sees them.  A matching ICMP unreachable means refused.
    """
    family = _family(dst_addr)
    v4 = family == socket.AF_INET
    if isinstance(icmp_type, str):
        if icmp_type not in ICMP_TYPES:
            raise ValueError(f"unknown ICMP type {icmp_type!r}; known: {sorted(ICMP_TYPES)}")
        mtype = ICMP_TYPES[icmp_type][0 if v4 else 1]
        if mtype is None:
            raise ValueError(f"{icmp_type} has no IPv{'4' if v4 else '6'} form")
    else:
        mtype = icmp_type
    echo = mtype == (8 if v4 else 128)
    ipproto = socket.IPPROTO_ICMP if v4 else socket.IPPROTO_ICMPV6

    def result(verdict: Verdict, t0: float, detail: str, reply: bool | None = None) -> ProbeResult:
        return ProbeResult(verdict, round((time.perf_counter() - t0) * 1000, 2), detail, "icmp",
                           src_ns, dst_ns, dst_addr, None, src_addr, reply, None)

    token = _new_token()
    ident, seq = struct.unpack("!HH", os.urandom(4))
    header = struct.pack("!BBHHH", mtype, 0, 0, ident, seq)
    packet = header + token
    if v4:  # the kernel fills in ICMPv6 checksums itself (RFC 3542), not ICMPv4 ones
        packet = header[:2] + struct.pack("!H", _inet_checksum(packet)) + header[4:] + token
    t0 = time.perf_counter()
    try:
        observer = netns_socket(dst_ns, family, socket.SOCK_RAW, ipproto)
        with observer, _client_socket(src_ns, family, socket.SOCK_RAW, ipproto, src_addr) as sock:
            t0 = time.perf_counter()
            try:
                sock.sendto(packet, (dst_addr, 0))
            except OSError as exc:
                return _send_failed(exc, lambda v, d: result(v, t0, d))
            if not echo:
                if _drain_for(observer, family, mtype, token, timeout):
                    return result("delivered", t0, f"type {mtype} seen in {dst_ns}")
                return result("blocked", t0, f"type {mtype} not seen in {dst_ns} within timeout")
            deadline = t0 + timeout
            while (left := deadline - time.perf_counter()) > 0:
                sock.settimeout(left)
                try:
                    body = _icmp_body(family, sock.recv(65535))
                except TimeoutError:
                    break
                if len(body) < 8:
                    continue
                if body[0] == _ECHO_REPLY[family] and body[4:8] == header[4:8] and token in body:
                    return result("delivered", t0, "echo reply received", True)
                if body[0] == _UNREACH[family]:
                    quoted = _embedded_icmp(family, body)
                    if quoted[:1] == bytes([mtype]) and quoted[4:8] == header[4:8]:
                        return result("refused", t0, f"ICMP unreachable code {body[1]}", False)
            arrived = _drain_for(observer, family, mtype, token, 0)
            where = "request reached" if arrived else "request never reached"
            return result("blocked", t0, f"no echo reply within timeout; {where} {dst_ns}", False)
    except OSError as exc:
        return result("error", t0, f"setup: {exc}")


# ------------------------------------------------------------------- many probes


@dataclass(frozen=True)
class ProbeSpec:
    proto: Proto
    src_ns: str
    dst_ns: str
    dst_addr: str
    port: int | None = None  # required for tcp/udp
    src_addr: str | None = None
    timeout: float = 1.0
    icmp_type: str | int = "echo-request"
    # where the listener waits when the packet lands elsewhere than it is sent
    # (a port forward: the VM's address and port, in dst_ns)
    landing: tuple[str, int] | None = None


def run_probe(spec: ProbeSpec, pool: ListenerPool | None = None) -> ProbeResult:
    if spec.proto == "icmp":
        return probe_icmp(spec.src_ns, spec.dst_ns, spec.dst_addr, spec.icmp_type,
                          src_addr=spec.src_addr, timeout=spec.timeout)
    if spec.port is None:
        raise ValueError(f"{spec.proto} probe needs a port")
    fn = probe_tcp if spec.proto == "tcp" else probe_udp if spec.proto == "udp" else None
    if fn is None:
        raise ValueError(f"unknown proto {spec.proto!r}")
    return fn(spec.src_ns, spec.dst_ns, spec.dst_addr, spec.port, src_addr=spec.src_addr,
              timeout=spec.timeout, pool=pool, landing=spec.landing)


def run_probes(specs: Iterable[ProbeSpec], *, max_workers: int = 128,
               pool: ListenerPool | None = None, on_done: Callable[[ProbeResult], None] | None = None) -> list[ProbeResult]:
    """Run probes concurrently; results come back in the order of ``specs``.

    Blocked probes each hold a worker for their whole timeout, so the wall time
    is roughly ``ceil(blocked / max_workers) * timeout``.  Listeners are shared
    through ``pool`` (a private one, closed at the end, if not given). Every
    listener of ``specs`` is open at once: for many targets and ports, run them in
    batches (lab.probing does, within the open-file limit). ``on_done`` is called
    with each result as it comes (progress).
    """
    todo: Sequence[ProbeSpec] = list(specs)
    if not todo:
        return []
    own = pool is None
    pool = pool or ListenerPool()
    try:
        # Create listeners up front, serially: bind errors surface once and the
        # probe threads start on a ready network.
        for s in todo:
            if s.proto in ("tcp", "udp") and s.port is not None:
                address, port = s.landing or (s.dst_addr, s.port)
                pool.get(s.dst_ns, s.proto, port, address)
        def one(spec: ProbeSpec) -> ProbeResult:
            result = run_probe(spec, pool)
            if on_done is not None:
                on_done(result)
            return result

        with ThreadPoolExecutor(max_workers=min(max_workers, len(todo)), thread_name_prefix="probe") as ex:
            return list(ex.map(one, todo))
    finally:
        if own:
            pool.close()
