"""Builds shared by the packaging tests: the wheel, once per test process."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # pip builds in the source tree (build/, *.egg-info): two test processes building at once
    # race on those files, so builds of one checkout take turns.
    lock_path = Path("/tmp") / f"zonewall-wheel-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                               "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"pip wheel failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    (built,) = out.glob("zonewall-*.whl")
    return built
