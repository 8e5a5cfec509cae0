"""Project-wide test setup: the `kernel` marker, unique namespaces, and the CI guard.

Kernel tests are the point of this project (the fake backends only mirror what the
kernel was measured to do), so they are never silently skipped where it matters:

* not root                          -> kernel tests FAIL (everywhere);
* root, but namespaces or nftables
  do not work                       -> FAIL when $CI is set, skip on a dev machine.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.labtools import pid_alive
from zonewall.lab.postgres import TemporaryPostgres, remove_orphans

NETNS_DIR = "/run/netns"
_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: needs root, network namespaces and nftables (always run in CI)")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove `zwt-<pid>-...` namespaces and PostgreSQL servers left by test processes
    that no longer exist."""
    remove_orphans()
    if os.geteuid() != 0 or not os.path.isdir(NETNS_DIR):
        return
    for name in os.listdir(NETNS_DIR):
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == "zwt" and parts[1].isdigit() and not pid_alive(int(parts[1])):
            _ip("netns", "delete", name)
        # lab clusters of tests (tests/labtools.py): zwl-t<pid>x<n>-...
        if len(parts) >= 3 and parts[0] == "zwl" and parts[1].startswith("t") and "x" in parts[1]:
            pid = parts[1][1:].split("x")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                _ip("netns", "delete", name)


@functools.cache
def kernel_problem() -> str | None:
    """Why kernel tests cannot run here, or None. Probed once per test process."""
    if os.geteuid() != 0:
        return "kernel tests need root (they create network namespaces and load nftables)"
    name = f"zwt-{os.getpid()}-probe"
    try:
        created = _ip("netns", "add", name)
        if created.returncode != 0:
            return f"cannot create a network namespace: {created.stderr.strip()}"
        probe = subprocess.run(
            ["ip", "netns", "exec", name, "nft", "add", "table", "inet", "zwprobe"],
            capture_output=True, text=True, timeout=30,
        )
        if probe.returncode != 0:
            return f"nftables does not work in a namespace: {probe.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"kernel probe failed: {exc}"
    finally:
        _ip("netns", "delete", name)
    return None


@pytest.fixture(autouse=True)
def _kernel_guard(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kernel") is None:
        return
    problem = kernel_problem()
    if problem is None:
        return
    if os.geteuid() != 0 or os.environ.get("CI"):
        pytest.fail(f"kernel test cannot run: {problem}", pytrace=False)
    pytest.skip(f"kernel test skipped outside CI: {problem}")


def new_netns_name() -> str:
    """`zwt-<pid>-<n>`: unique across xdist workers (pid) and within one (n)."""
    return f"zwt-{os.getpid()}-{next(_counter)}"


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], str]]:
    """`netns_factory()` creates a fresh namespace (loopback up) and returns its name;
    every namespace it created is deleted at teardown."""
    created: list[str] = []

    def make() -> str:
        name = new_netns_name()
        result = _ip("netns", "add", name)
        if result.returncode != 0:
            pytest.fail(f"ip netns add {name}: {result.stderr.strip()}", pytrace=False)
        created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in created:
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                _ip("netns", "delete", name)


@pytest.fixture
def netns_name(netns_factory: Callable[[], str]) -> str:
    """A freshly created, uniquely named namespace (`zwt-<pid>-<n>`), deleted afterwards."""
    return netns_factory()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL server of this test process (Debian's package, loopback only).

    It fails, never skips, when PostgreSQL cannot start: the controller's tests run
    against it as well as against SQLite (tests/controller/conftest.py)."""
    with TemporaryPostgres() as server:
        yield server
