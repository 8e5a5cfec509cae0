"""The wheel carries everything, and an install of it works outside the checkout.

A fresh virtualenv in a temporary directory gets the wheel (and the lock file's
exact dependencies); from a directory that is not the checkout, its `zonewall`
command prints its version, serves the controller (health, readiness, the
dashboard's pages from the packaged templates), creates tokens, and runs the demo
(the packaged example, a real lab, measured = expected).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.labtools import unique_lab_name
from tests.packaging.conftest import LOCK, ROOT
from zonewall.lab.cluster import lab_down
from zonewall.lab.managed import terminate


def tracked_package_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "zonewall"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.endswith(".pyc")]


def test_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in tracked_package_files() if path not in names]
    assert not missing, f"not in the wheel: {missing}"
    # what the issue found missing, by name
    for needed in ("zonewall/controller/web/templates/login.html", "zonewall/examples/three-tier/policy/policy.yaml",
                   "zonewall/agent/hooks/qemu", "zonewall/service/systemd/zonewall-agent.service", "zonewall/service/etc/agent.yaml"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_ranges_not_pins_and_the_lock_is_what_runs() -> None:
    """pyproject.toml gives ranges; the lock pins exactly what this test process imports."""
    import tomllib
    from importlib.metadata import distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        assert "==" not in requirement and "<" in requirement and ">=" in requirement, requirement
    locked = dict(line.split("==") for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith("#"))
    locked = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in locked.items()}
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in locked.items() if installed.get(name) != version}
    assert not wrong, f"the test environment differs from {LOCK.name} (locked, installed): {wrong}"
    unlocked = sorted(set(installed) - set(locked) - {"zonewall", "pip", "setuptools", "wheel"})
    assert not unlocked, f"installed but not in {LOCK.name} (make lock): {unlocked}"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel, far from the checkout; returns its bin/."""
    venv = tmp_path_factory.mktemp("fresh-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(LOCK), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=900)
    return venv / "bin"


def run(bin_dir: Path, *args: str, timeout: float = 60, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"COLUMNS": "400"}
    return subprocess.run([str(bin_dir / "zonewall"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or tempfile.gettempdir(), env=env)


def test_installed_command_is_the_installed_package(installed: Path) -> None:
    result = run(installed, "--version")
    assert result.returncode == 0 and result.stdout.strip() == "zonewall 0.1.0", result
    where = subprocess.run([str(installed / "python"), "-c", "import zonewall; print(zonewall.__file__)"], capture_output=True, text=True,
                           cwd=tempfile.gettempdir(), env={"PATH": os.environ["PATH"]}).stdout
    assert str(ROOT) not in where and str(installed.parent) in where


def test_installed_controller_serves_api_and_dashboard(installed: Path, tmp_path: Path) -> None:
    data = tmp_path / "ctl"
    token = run(installed, "token", "create", "--role", "admin", "--data-dir", str(data))
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    process = subprocess.Popen([str(installed / "zonewall"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tempfile.gettempdir(), env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"listening on (\S+)", line).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(url + "/readyz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "revisions": "ok"}
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        login = httpx.get(url + "/ui/login")
        assert login.status_code == 200 and "<form" in login.text  # the template is in the package (was: 500 TemplateNotFound)
        auth = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(url + "/api/v1/nodes", headers=auth).status_code == 200
        assert httpx.get(url + "/api/v1/nodes").status_code == 401  # health is open, the API is not
        session = httpx.Client(base_url=url, follow_redirects=False, headers={"Origin": url})
        csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/ui/login").text).group(1)  # type: ignore[union-attr]
        answer = session.post("/ui/login", data={"token": secret, "csrf": csrf})
        assert answer.status_code == 303
        overview = session.get("/ui/")
        assert overview.status_code == 200 and "zonewall" in overview.text
    finally:
        terminate(process)


@pytest.mark.kernel
def test_installed_demo_runs_anywhere(installed: Path) -> None:
    name = unique_lab_name()
    try:
        result = run(installed, "demo", "--name", name, timeout=600)
    finally:
        lab_down(name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "measured = expected" in result.stdout
    assert f"zonewall demo: {installed.parent}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/zonewall/examples/three-tier" in result.stdout  # the packaged example
