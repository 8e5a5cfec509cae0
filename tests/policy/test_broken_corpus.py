"""The broken-policy corpus: each case is rejected with exactly the expected problems.

Every case in tests/policy/broken/ (see its README.md) must make `load_policy` raise
PolicyError -- never another exception type -- listing exactly the lines of its
`.expect` file: the position (file:line:col), the offending key and the message.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy, load_policy_text

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(
    p.name for p in BROKEN.iterdir() if (p.is_file() and p.suffix in (".yaml", ".yml")) or p.is_dir()
)


def expect_file(case: str) -> Path:
    path = BROKEN / case
    return BROKEN / f"{path.stem if path.is_file() else path.name}.expect"


def expected_lines(case: str) -> list[str]:
    lines = expect_file(case).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def rejection(load, *args) -> PolicyError:  # type: ignore[no-untyped-def]
    """The PolicyError that `load(*args)` raises; any other outcome fails the test."""
    try:
        load(*args)
    except PolicyError as exc:
        return exc
    except Exception:
        pytest.fail(f"the loader crashed instead of reporting a PolicyError:\n{traceback.format_exc()}")
    pytest.fail("the broken policy was accepted")


def test_corpus_is_complete() -> None:
    assert len(CASES) >= 45
    missing = [case for case in CASES if not expect_file(case).exists()]
    assert not missing, f"cases without a .expect file: {missing}"
    stray = sorted(
        p.name for p in BROKEN.glob("*.expect") if not any(expect_file(case) == p for case in CASES)
    )
    assert not stray, f".expect files without a case: {stray}"


@pytest.mark.parametrize("case", CASES)
def test_broken_policy_is_rejected_at_the_right_place(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)  # single files display as NAME.yaml, directories relative to NAME/
    error = rejection(load_policy, case)
    got = [str(problem) for problem in error.problems]
    assert got == expected_lines(case)
    # the exception text is the same list, so a CLI printing it shows the same lines
    assert str(error).splitlines() == got


@pytest.mark.parametrize("case", CASES)
def test_positions_point_into_the_files(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    base = BROKEN / case if (BROKEN / case).is_dir() else BROKEN
    for problem in rejection(load_policy, case).problems:
        assert problem.loc is not None, problem
        assert problem.loc.line >= 1 and problem.loc.col >= 1, problem
        source = (base / problem.loc.file).read_bytes()
        lines = source.split(b"\n")
        assert problem.loc.line <= len(lines), problem


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


TEXT_CASES = [case for case in CASES if (BROKEN / case).is_file() and _is_utf8((BROKEN / case).read_bytes())]


@pytest.mark.parametrize("case", TEXT_CASES)
def test_load_policy_text_reports_the_same(case: str) -> None:
    """The API entry point (an uploaded text) reports exactly what the file loader does."""
    text = (BROKEN / case).read_text(encoding="utf-8")
    error = rejection(load_policy_text, text, case)
    assert [str(problem) for problem in error.problems] == expected_lines(case)


def test_problems_serialise_to_json() -> None:
    """`Problem.to_json` (the API/CLI --json form) carries the same position and text."""
    error = rejection(load_policy_text, (BROKEN / "port-70000.yaml").read_text(), "port-70000.yaml")
    (problem,) = error.problems
    assert problem.to_json() == {
        "file": "port-70000.yaml",
        "line": problem.loc.line,
        "col": problem.loc.col,
        "key": "zones.dmz.rules[0].udp[0]",
        "message": "port 70000 is out of range (expected 1-65535)",
    }
