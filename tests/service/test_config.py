"""Config files: every long option of `serve` and `agent` is a key; flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.service.config import option_keys, read_config

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
PACKAGED = Path(__file__).resolve().parents[2] / "zonewall" / "service" / "etc"


@pytest.mark.parametrize("command", ["serve", "agent"])
def test_every_option_is_a_config_key(command: str, tmp_path: Path) -> None:
    """Also the options added later by anyone: the keys are read from the command."""
    cmd = COMMANDS[command]
    longs = {opt[2:] for p in cmd.params for opt in getattr(p, "opts", []) if opt.startswith("--") and opt not in ("--config", "--help")}
    assert longs and set(option_keys(cmd)) == longs
    for key in longs:
        (tmp_path / "one.yaml").write_text(yaml.safe_dump({key: None}))
        assert read_config(tmp_path / "one.yaml", cmd) == {}  # known (a null value sets nothing)


@pytest.mark.parametrize("command", ["serve", "agent"])
def test_packaged_config_files_use_known_keys(command: str) -> None:
    path = PACKAGED / ("controller.yaml" if command == "serve" else "agent.yaml")
    assert read_config(path, COMMANDS[command])  # raises on an unknown key


def run_agent(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, Any]:
    seen: dict[str, Any] = {}

    class Stub:
        def __init__(self, config: Any) -> None:
            seen["config"] = config
            self.config = config

        def stop(self) -> None: ...

        def run(self) -> None: ...

    monkeypatch.setattr("zonewall.agent.daemon.Agent", Stub)
    monkeypatch.delenv("ZONEWALL_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["agent", *args])
    return result.exit_code, result.output, seen.get("config")


def test_file_gives_defaults_and_flags_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("controller: [https://a.example:9440, https://b.example:9440]\nhost: node7\ntoken: secret\nverify-interval: 7\n"
                      "state_dir: /tmp/zw-agent-state\n")
    code, output, seen = run_agent(monkeypatch, "--config", str(config), "--verify-interval", "9")
    assert code == 0, output
    assert seen.controllers == ("https://a.example:9440", "https://b.example:9440") and seen.node == "node7"
    assert seen.verify_interval == 9.0  # the flag
    assert str(seen.state_dir) == "/tmp/zw-agent-state"  # underscores work too
    code, output, seen = run_agent(monkeypatch, "--config", str(config), "--host", "node8")
    assert seen.node == "node8" and seen.verify_interval == 7.0


@pytest.mark.parametrize(("text", "message"), [
    ("host: x\nverify-intervall: 3\n", "agent.yaml:2: unknown key 'verify-intervall'"),
    ("- host\n", "expected a mapping of option names to values"),
    ("host: [x\n", "not valid YAML"),
    ("host: {a: 1}\n", "agent.yaml:1: host: expected one value"),
])
def test_bad_config_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    code, output, seen = run_agent(monkeypatch, "--config", str(config))
    assert code == 2 and seen is None
    squeezed = "".join(output.replace("│", "").split())  # rich wraps the message in a box
    assert "".join(message.split()) in squeezed, output


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output, _ = run_agent(monkeypatch, "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in output
