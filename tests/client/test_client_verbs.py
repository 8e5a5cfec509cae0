"""The client verbs against a real controller (uvicorn on 127.0.0.1, HTTP), configured
by flags, the environment and a profile file. Every user error is one line, never a
traceback. (With agents and kernels: tests/kernel/test_gitops_lab.py.)"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.controller.live import THREE_TIER, LiveController, live_controller
from zonewall.cli import app

runner = CliRunner()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveController]:
    with live_controller(tmp_path / "ctl") as found:
        yield found


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    target = tmp_path / "policy"
    target.mkdir()
    (target / "policy.yaml").write_text((THREE_TIER / "policy.yaml").read_text())
    return target


def zw(live: LiveController, *args: str, who: str = "admin", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    environment = {"ZONEWALL_CONTROLLER": live.url, "ZONEWALL_TOKEN": getattr(live.tokens, who), "ZONEWALL_CONFIG": "/nonexistent/client.toml", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=environment)
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


def revision_numbers(live: LiveController) -> list[int]:
    return [r["number"] for r in httpx.get(live.url + "/api/v1/revisions", headers=live.tokens.header("admin")).json()]


def test_push_commits_with_yes_and_then_has_nothing_to_push(live: LiveController, policy: Path) -> None:
    code, out, _ = zw(live, "push", str(policy), "--yes", "-m", "initial")
    assert code == 0 and "revision 1" in out and "committed" in out, out
    assert revision_numbers(live) == [1]
    code, out, _ = zw(live, "push", str(policy), "--yes")
    assert code == 0 and "nothing to push" in out and revision_numbers(live) == [1]


def test_push_shows_the_diff_and_without_a_terminal_or_yes_commits_nothing(live: LiveController, policy: Path) -> None:
    zw(live, "push", str(policy), "--yes")
    text = (policy / "policy.yaml").read_text()
    (policy / "policy.yaml").write_text(text.replace("{id: web-https,", "{id: web-8443, direction: in, action: accept, tcp: 8443}\n      - {id: web-https,"))
    code, out, err = zw(live, "push", str(policy), "--dry-run")
    assert code == 0 and "opened" in out and "tcp 8443" in out and "modified policy.yaml" in " ".join(out.split())
    code, out, err = zw(live, "push", str(policy))  # CliRunner's stdin is no terminal
    assert code == 2 and "--yes" in err
    assert revision_numbers(live) == [1]
    code, out, _ = zw(live, "push", str(policy), "--yes", "--message", "partner")
    assert code == 0 and "revision 2" in out
    assert httpx.get(live.url + "/api/v1/revisions/2", headers=live.tokens.header("admin")).json()["message"] == "partner"


def test_push_asks_at_a_terminal_and_no_keeps_everything(live: LiveController, policy: Path) -> None:
    env = dict(os.environ, ZONEWALL_CONTROLLER=live.url, ZONEWALL_TOKEN=live.tokens.admin, ZONEWALL_CONFIG="/nonexistent", COLUMNS="200")
    for answer, revisions in ((b"n\n", []), (b"y\n", [1])):
        leader, follower = pty.openpty()
        process = subprocess.Popen([sys.executable, "-m", "zonewall.cli", "push", str(policy)], stdin=follower, stdout=follower, stderr=follower, env=env)
        os.close(follower)
        output = b""
        while b"[y/N]" not in output:
            chunk = os.read(leader, 4096)
            assert chunk, output
            output += chunk
        os.write(leader, answer)
        assert process.wait(timeout=60) == (1 if answer == b"n\n" else 0), output
        os.close(leader)
        assert b"commit these changes as revision 1?" in output and b"vm:web1" in output
        assert revision_numbers(live) == revisions


def test_an_invalid_policy_is_refused_with_file_line_col_and_nothing_changes(live: LiveController, policy: Path) -> None:
    zw(live, "push", str(policy), "--yes")
    (policy / "policy.yaml").write_text((policy / "policy.yaml").read_text().replace("service: postgres}", "service: postgress}"))
    code, out, err = zw(live, "push", str(policy), "--yes")
    assert code == 1 and "policy.yaml:" in err and "postgress" in err and "2 problem(s)" in err
    assert revision_numbers(live) == [1]


def test_pull_writes_the_documents_and_keeps_foreign_files_unless_pruned(live: LiveController, policy: Path, tmp_path: Path) -> None:
    zw(live, "push", str(policy), "--yes")
    target = tmp_path / "checkout"
    (target / "old").mkdir(parents=True)
    (target / "old" / "gone.yaml").write_text("version: 1\n")
    code, out, _ = zw(live, "pull", str(target))
    assert code == 0 and (target / "policy.yaml").read_text() == (policy / "policy.yaml").read_text()
    assert "old/gone.yaml" in out and (target / "old" / "gone.yaml").exists()
    code, out, _ = zw(live, "pull", str(target), "--prune")
    assert code == 0 and not (target / "old" / "gone.yaml").exists() and "0 written" in out


def test_status_revisions_nodes_and_rollback(live: LiveController, policy: Path) -> None:
    zw(live, "push", str(policy), "--yes", "-m", "first")
    rule = {"id": "partner-8443", "direction": "in", "action": "accept", "from": "203.0.113.10", "tcp": 8443}
    httpx.post(live.url + "/api/v1/vms/web1/rules", json={"rule": rule, "message": "partner"}, headers=live.tokens.header("admin"))
    code, out, _ = zw(live, "status", who="viewer")
    assert code == 1 and "revision 2" in out and "0 of 2 node(s) in sync" in out  # no agent has applied anything
    code, out, _ = zw(live, "nodes", who="viewer")
    assert code == 0 and "node1" in out and "node2" in out
    code, out, err = zw(live, "revisions")
    assert code == 0 and "partner" in out and "first" in out
    code, out, _ = zw(live, "revisions", "2")
    assert code == 0 and "opened" in out and "tcp 8443" in out
    code, out, err = zw(live, "rollback", "2", "--yes")
    assert code == 1 and "current revision" in err
    code, out, _ = zw(live, "rollback", "1", "--yes", "-m", "undo partner")
    assert code == 0 and "revision 3" in out and "closed" in out
    assert revision_numbers(live) == [3, 2, 1]
    code, _, err = zw(live, "rollback", "1", "--yes", who="viewer")
    assert code == 1 and "refused" in err


def test_a_profile_file_with_a_token_file(live: LiveController, policy: Path, tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text(live.tokens.admin + "\n")
    token.chmod(0o600)
    config = tmp_path / "client.toml"
    config.write_text(f'[profiles.lab]\nurl = "{live.url}"\ntoken_file = "{token}"\n')
    env = {"ZONEWALL_CONFIG": str(config)}
    result = runner.invoke(app, ["push", str(policy), "--yes", "--profile", "lab"], env=env)
    assert result.exit_code == 0 and "revision 1" in result.stdout, result.output
    token.chmod(0o644)
    result = runner.invoke(app, ["status", "--profile", "lab"], env=env)
    assert result.exit_code == 2 and "readable by others" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["status", "--profile", "nosuch"], env=env)
    assert result.exit_code == 2 and "no profile 'nosuch'" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["status"], "unreachable"),
    (["push", "/nonexistent/policy", "--yes"], "no such file"),
])
def test_user_errors_are_one_line(args: list[str], words: str) -> None:
    result = runner.invoke(app, args, env={"ZONEWALL_CONTROLLER": "http://127.0.0.1:9", "ZONEWALL_TOKEN": "zw_x", "ZONEWALL_CONFIG": "/nonexistent"})
    assert result.exit_code in (1, 2) and words in result.stderr, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_version_and_completion() -> None:
    from zonewall.cli.cmd_shell import zonewall_version

    assert runner.invoke(app, ["--version"]).stdout.strip() == f"zonewall {zonewall_version()}"
    script = runner.invoke(app, ["completion", "bash"]).stdout
    assert "_ZONEWALL_COMPLETE=complete_bash" in script
    installed = Path(sys.executable).parent / "zonewall"  # the script a shell completes (its name makes the variable)
    done = subprocess.run([str(installed)], env=dict(os.environ, _ZONEWALL_COMPLETE="complete_bash", COMP_WORDS="zonewall pu", COMP_CWORD="1"),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["push", "pull"]
    assert runner.invoke(app, ["completion", "tcsh"]).exit_code == 2
