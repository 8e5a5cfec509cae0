"""Lab clusters for kernel tests: unique names, always torn down.

Lab names are `t<pid>x<n>`, so tests can run in parallel, and a lab left by a
crashed test process is recognised (its pid is dead) and removed at session start.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zonewall.lab.cluster import LabState, lab_down, lab_up
from zonewall.lab.managed import ManagedLab
from zonewall.lab.postgres import pid_alive  # noqa: F401 - tests/conftest.py takes it from here
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

_counter = itertools.count()


def unique_lab_name() -> str:
    name = f"t{os.getpid()}x{next(_counter)}"
    assert len(name) <= 16, name  # lab names are at most 16 characters
    return name


@contextmanager
def running_lab(policy_path: str | Path, *, apply: bool = True) -> Iterator[tuple[LabState, Policy]]:
    name = unique_lab_name()
    try:
        state = lab_up(str(policy_path), name, apply=apply)
        yield state, load_policy(policy_path)
    finally:
        lab_down(name)


def write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    directory = tmp_path / "policy"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


@contextmanager
def managed_lab(policy_dir: Path, prefix: str, env: dict[str, str] | None = None, *, db_url: str | None = None, replicas: int = 1,
                controller_env: dict[str, str] | None = None, serve_args: tuple[str, ...] = ()) -> Iterator[ManagedLab]:
    """A lab of `policy_dir` with a controller (or `replicas` of them on `db_url`) and one
    agent per node; the policy is uploaded through the API (revision 1) and applied on
    every node. `env` is set for the agents (they inherit it) and restored afterwards;
    `serve_args` go to `zonewall serve`."""
    name = unique_lab_name()
    state = lab_up(str(policy_dir), name, apply=False)  # every rule comes through the controller
    lab = ManagedLab(state, Path(tempfile.mkdtemp(prefix=prefix)), db_url=db_url, replicas=replicas, controller_env=controller_env or {},
                     serve_args=serve_args)
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        lab.start(verify_interval=2.0)
        lab.wait_converged(lab.upload(policy_dir, "initial")["revision"]["number"])
        yield lab
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        lab.stop()
        lab_down(name)


def until(check: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll `check` until it returns something true (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout}s"
        time.sleep(0.05)
