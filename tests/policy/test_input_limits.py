"""Hostile documents get one clear error and bounded work, never a crash.

A 50 KB document nested 25,000 deep made libyaml's composer overflow the C stack
(`zonewall check` died with SIGSEGV, the controller with it); 300,000 unknown keys
took 70 s to explain one by one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import MAX_REPORTED, load_policy_text
from zonewall.policy.nesting import MAX_DEPTH, depth_bound

DEEP = {
    "flow": ("[" * 25_000 + "]" * 25_000, (1, MAX_DEPTH + 1)),
    "block": ("".join(" " * 2 * i + f"k{i}:\n" for i in range(200)) + " " * 400 + "x: 1\n", (MAX_DEPTH + 1, 2 * MAX_DEPTH + 1)),
    "compact": ("- " * 30_000 + "x\n", (1, 2 * MAX_DEPTH + 1)),
    "mixed": ("".join(" " * 2 * i + f"k{i}:\n" for i in range(30)) + " " * 60 + "v: " + "[" * 40 + "]" * 40 + "\n", (31, 64 + 33)),
    # more brackets than a thread stack is sized for: measured from events first
    "huge": ("[" * 600_000, (1, MAX_DEPTH + 1)),
}


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "deep.yaml")
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize("case", sorted(DEEP))
def test_too_deep_documents_are_refused_where_they_get_too_deep(case: str) -> None:
    text, position = DEEP[case]
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert f"nested more than {MAX_DEPTH} levels deep" in problems[0]
    if position is not None:
        line, col = position
        assert problems[0].startswith(f"deep.yaml:{line}:{col}: "), problems[0]


def test_depth_up_to_the_limit_is_only_judged_as_a_policy() -> None:
    """64 levels are legal YAML: the loader then says what is wrong with the policy."""
    text = "version: 1\nsettings:\n  management: " + "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2) + "\n"
    problems = problems_of(text)
    assert not any("nested" in problem for problem in problems), problems


def test_the_bound_is_never_below_the_real_depth() -> None:
    for text, _ in DEEP.values():
        assert depth_bound(text) > MAX_DEPTH
    assert depth_bound("version: 1\nvms:\n  a: {nics: [{ips: [1.2.3.4]}]}\n") < 200


def test_check_exits_with_an_error_line_not_a_signal(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 25_000 + "]" * 25_000)
    done = subprocess.run([sys.executable, "-m", "zonewall.cli", "check", str(deep)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    assert "nested more than 64 levels deep" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_flood_of_problems_is_reported_bounded() -> None:
    text = "version: 1\nsettings:\n" + "".join(f"  k{i}: 1\n" for i in range(5_000))
    problems = problems_of(text)
    assert len(problems) == MAX_REPORTED + 1
    assert problems[0].startswith("deep.yaml:3:3: settings.k0: unknown key `k0`")
    assert problems[-1] == f"... and {5_000 - MAX_REPORTED} more problems (the first {MAX_REPORTED} are listed; fix them and check again)"


def test_a_few_problems_are_all_reported() -> None:
    text = "version: 1\nsettings:\n" + "".join(f"  k{i}: 1\n" for i in range(3))
    assert len(problems_of(text)) == 3
