"""Connections that cannot starve a real `zonewall serve` (loopback only, bounded).

Before: 300 idle connections against `ulimit -n 256` made every new request time out
("Too many open files"), no token needed; a half-sent request head was kept forever.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from zonewall.lab.managed import terminate

HEADER_TIMEOUT = 2.0


@pytest.fixture
def tight_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A controller whose process may open 256 files, as in the finding; (url, viewer token)."""
    made = subprocess.run([sys.executable, "-m", "zonewall.cli", "token", "create", "--role", "viewer", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    token = made.stdout.strip().split()[-1]
    argv = ["prlimit", "--nofile=256:256", sys.executable, "-m", "zonewall.cli", "serve", "--data-dir", str(tmp_path),
            "--listen", "127.0.0.1:0", "--header-timeout", str(HEADER_TIMEOUT)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "w"), text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=60)
        assert "listening on " in line, line
        url = line.split("listening on ", 1)[1].split()[0]
        yield url, token
    finally:
        terminate(process)


def hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_idle_connections_do_not_starve_normal_requests(tight_server: tuple[str, str]) -> None:
    url, token = tight_server
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(hostport(url), timeout=5))
        answered = 0
        started = time.monotonic()
        with httpx.Client(timeout=10.0) as client:
            for _ in range(20):
                response = client.get(url + "/api/v1/revisions", headers={"authorization": f"Bearer {token}"})
                assert response.status_code == 200, response.text
                answered += 1
        assert answered == 20
        assert time.monotonic() - started < 30
    finally:
        for sock in idle:
            sock.close()


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (fails past `limit`)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"still open after {limit} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_silent_connection_is_closed(tight_server: tuple[str, str]) -> None:
    url, _ = tight_server
    with socket.create_connection(hostport(url)) as sock:
        assert closed_after(sock, HEADER_TIMEOUT + 5) >= HEADER_TIMEOUT - 0.5


def test_a_trickled_request_head_is_not_given_more_time(tight_server: tuple[str, str]) -> None:
    url, _ = tight_server
    with socket.create_connection(hostport(url)) as sock:
        sock.sendall(b"GET /api/v1/revisions HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = threading.Event()

        def trickle() -> None:
            while not closed.is_set() and time.monotonic() - started < HEADER_TIMEOUT + 5:
                try:
                    sock.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.3)

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        took = closed_after(sock, HEADER_TIMEOUT + 5)
        closed.set()
        assert took < HEADER_TIMEOUT + 2


def test_a_complete_request_is_answered(tight_server: tuple[str, str]) -> None:
    """The control: a well-formed request on a raw socket is not cut."""
    url, token = tight_server
    with socket.create_connection(hostport(url), timeout=10) as sock:
        sock.sendall(f"GET /api/v1/revisions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
