"""`zonewall apply` as an operator uses it, against a real kernel (a namespace).

Bad input gets a precise error and changes nothing; a ruleset that would lock
everyone out of ssh is refused unless forced; `--confirm` reverts on its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash, readback_hash

ROOT = Path(__file__).resolve().parents[2]
THREE_TIER = ROOT / "examples" / "three-tier" / "policy"
BROKEN = ROOT / "tests" / "policy" / "broken"
TABLES = [("inet", "zonewall"), ("bridge", "zonewall")]
runner = CliRunner()

LOCKOUT = """
version: 1
settings: {host_default: {in: drop}}
hosts: {node1: {address: 192.168.100.11}}
"""
OPEN_SSH = """
version: 1
settings: {host_default: {in: drop}}
hosts: {node1: {address: 192.168.100.11}}
host_rules:
  - {direction: in, action: accept, from: 192.168.100.0/24, service: ssh}
"""


def kernel_state(ns: str) -> str:
    """Changes with any change to our tables, even the same rules re-created."""
    with LibNftBackend(netns=ns) as backend:
        return readback_hash(backend, TABLES)


def kernel_content(ns: str) -> str:
    """What our tables contain (a reverted ruleset has the content it had)."""
    with LibNftBackend(netns=ns) as backend:
        return listing_hash(backend, TABLES)


def apply(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["apply", *args])
    return result.exit_code, result.output


def broken_cases() -> list[Path]:
    return sorted(p for p in BROKEN.iterdir() if p.suffix == ".yaml" or p.is_dir())


@pytest.mark.kernel
def test_every_broken_policy_is_refused_and_changes_nothing(netns_name: str) -> None:
    code, output = apply(str(THREE_TIER), "--host", "node1", "--netns", netns_name)
    assert code == 0, output
    before = kernel_state(netns_name)
    cases = broken_cases()
    assert len(cases) >= 40
    for case in cases:
        code, output = apply(str(case), "--host", "node1", "--netns", netns_name)
        expected = [line for line in (case.with_suffix(".expect") if case.is_file() else Path(str(case) + ".expect")).read_text().splitlines() if line and not line.startswith("#")]
        assert code == 1, f"{case.name}: {output}"
        assert "nothing was applied" in output, case.name
        shown = output.replace(f"{case.parent}/", "")  # the CLI names files as given; .expect relative
        assert all(line in shown for line in expected), f"{case.name}: {output}"
        assert kernel_state(netns_name) == before, f"{case.name} changed the running ruleset"


@pytest.mark.kernel
def test_unknown_host_is_refused(netns_name: str) -> None:
    code, output = apply(str(THREE_TIER), "--host", "node9", "--netns", netns_name)
    assert code == 1 and "node9" in output
    with LibNftBackend(netns=netns_name) as backend:
        assert backend.list_tables() == []


@pytest.mark.kernel
def test_a_ruleset_that_cuts_ssh_is_refused_unless_forced(tmp_path: Path, netns_name: str) -> None:
    (tmp_path / "lockout.yaml").write_text(LOCKOUT)
    (tmp_path / "ok.yaml").write_text(OPEN_SSH)
    code, output = apply(str(tmp_path / "ok.yaml"), "--host", "node1", "--netns", netns_name)
    assert code == 0, output
    before = kernel_state(netns_name)
    code, output = apply(str(tmp_path / "lockout.yaml"), "--host", "node1", "--netns", netns_name)
    assert code == 1 and "refused" in output and "ssh" in output
    assert kernel_state(netns_name) == before
    code, output = apply(str(tmp_path / "lockout.yaml"), "--host", "node1", "--netns", netns_name, "--force")
    assert code == 0, output
    assert kernel_state(netns_name) != before


@pytest.mark.kernel
def test_confirm_window_reverts_unless_confirmed(tmp_path: Path, netns_name: str) -> None:
    (tmp_path / "ok.yaml").write_text(OPEN_SSH)
    state_dir = tmp_path / "state"
    assert apply(str(tmp_path / "ok.yaml"), "--host", "node1", "--netns", netns_name)[0] == 0
    first = kernel_content(netns_name)

    # not confirmed: back to the first ruleset on its own
    code, output = apply(str(THREE_TIER), "--host", "node1", "--netns", netns_name, "--confirm", "1.5", "--state-dir", str(state_dir), "--json")
    assert code == 0, output
    assert kernel_content(netns_name) != first
    deadline = time.time() + 15
    while kernel_content(netns_name) != first and time.time() < deadline:
        time.sleep(0.2)
    assert kernel_content(netns_name) == first

    # confirmed: stays
    code, output = apply(str(THREE_TIER), "--host", "node1", "--netns", netns_name, "--confirm", "1.5", "--state-dir", str(state_dir), "--json")
    assert code == 0, output
    second = kernel_content(netns_name)
    result = runner.invoke(app, ["confirm", "--host", "node1", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    time.sleep(3)
    assert kernel_content(netns_name) == second
