"""`zonewall lint --kind/--object/--baseline`: working on part of a large report, and
accepting known findings so CI fails only on new ones (issue 19: 8,050 findings at
500 VMs and no filter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.analysis.test_lint import policy
from zonewall.cli import app

BODY = """\
groups:
  spare: [10.9.9.0/24]
zones:
  web:
    rules:
      - {id: https, direction: in, action: accept, tcp: 443}
      - {id: https-again, direction: in, action: accept, tcp: 443}
vms:
  web1:
    host: node1
    zone: web
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules:
      - {id: ssh-world, direction: in, action: accept, tcp: 22}
      - {id: ssh-again, direction: in, action: accept, tcp: 22}
"""


def lint(directory: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["lint", str(directory), "--json", *args])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def write(tmp_path: Path, body: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "policy.yaml").write_text(policy(body))
    return tmp_path


def kinds(document: dict[str, Any]) -> set[str]:
    return {f["kind"] for f in document["findings"]}


def test_filters_by_kind_and_by_object(tmp_path: Path) -> None:
    directory = write(tmp_path, BODY)
    _, everything = lint(directory)
    assert {"shadowed", "unused", "management-exposure"} <= kinds(everything)
    code, only_unused = lint(directory, "--kind", "unused")
    assert kinds(only_unused) == {"unused"} and code == 0  # info only: no warning left
    _, about_group = lint(directory, "--object", "group:spare")
    assert [f["object"] for f in about_group["findings"]] == ["group:spare"]
    _, about_vm = lint(directory, "--object", "vm:web1")
    assert {f["rule"] for f in about_vm["findings"]} >= {"ssh-again"} and all(f["owner"] == "web1" for f in about_vm["findings"])
    _, about_rule = lint(directory, "--object", "https-again")
    assert [f["rule"] for f in about_rule["findings"]] == ["https-again"]
    assert lint(directory, "--object", "nothing-here")[1]["findings"] == []


def test_a_baseline_hides_accepted_findings_and_reports_new_and_fixed_ones(tmp_path: Path) -> None:
    directory = write(tmp_path / "p", BODY)
    accepted = tmp_path / "lint-baseline.json"
    code, written = lint(directory, "--write-baseline", str(accepted))
    assert code == 0 and written["findings"]
    code, again = lint(directory, "--baseline", str(accepted))
    assert code == 0 and again["findings"] == [] and again["baseline"]["accepted"] == len(written["findings"])

    # lines move and a new problem appears: only the new one is shown, and it fails
    moved = BODY.replace("zones:\n", "# a comment that moves every line\n\nzones:\n")
    moved = moved.replace("      - {id: ssh-again, direction: in, action: accept, tcp: 22}\n",
                          "      - {id: ssh-again, direction: in, action: accept, tcp: 22}\n      - {id: rdp-world, direction: in, action: accept, tcp: 3389}\n")
    write(tmp_path / "p", moved)
    code, new = lint(directory, "--baseline", str(accepted))
    assert code == 1 and {f["rule"] for f in new["findings"]} == {"rdp-world"}

    # a fixed finding leaves a stale entry, named so the baseline can be trimmed
    fixed = moved.replace("      - {id: https-again, direction: in, action: accept, tcp: 443}\n", "")
    write(tmp_path / "p", fixed)
    _, trimmed = lint(directory, "--baseline", str(accepted))
    assert any(entry.split("|")[1] == "https-again" for entry in trimmed["baseline"]["stale"])


def test_bad_kinds_and_baselines_are_one_line_errors(tmp_path: Path) -> None:
    directory = write(tmp_path / "p", BODY)
    result = CliRunner().invoke(app, ["lint", str(directory), "--kind", "nope"])
    assert result.exit_code == 2 and "unknown kind nope" in result.output
    broken = tmp_path / "baseline.json"
    broken.write_text('{"version": 9}')
    result = CliRunner().invoke(app, ["lint", str(directory), "--baseline", str(broken)])
    assert result.exit_code == 2 and "not a lint baseline" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["lint", str(directory), "--baseline", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read the baseline" in result.output
