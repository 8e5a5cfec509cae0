"""Golden files: every example and test scenario compiles to the ruleset kept beside it.

Each scenario directory holds its policy and `expected/<host>.nft` (the readable
rendering of exactly what is loaded). A change to the compiler shows up as a diff
of these files; after reviewing it, regenerate them with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from zonewall.compiler import ir
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import render_nft
from zonewall.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
# schedules convert to UTC with the offset in force at compile time: fix it
COMPILE_TIME = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def scenarios() -> list[tuple[Path, Path]]:
    """(policy path, expected directory) for every example and scenario."""
    out = [(d / "policy", d / "expected") for d in sorted((ROOT / "examples").iterdir()) if (d / "policy").is_dir()]
    out += [(d, d / "expected") for d in sorted((ROOT / "tests" / "scenarios").iterdir()) if d.is_dir()]
    return out


def cases() -> list[tuple[Path, Path, str]]:
    return [(policy, expected, host) for policy, expected in scenarios() for host in sorted(load_policy(policy).doc.hosts)]


def compiled(policy: Path, host: str) -> ir.Ruleset:
    return compile_node(load_policy(policy), host, now=COMPILE_TIME, timezone="UTC")


@pytest.mark.parametrize("policy, expected, host", cases(), ids=lambda v: v.parent.name if isinstance(v, Path) and v.name in ("policy", "expected") else str(v.name) if isinstance(v, Path) else v)
def test_compiles_to_golden_ruleset(policy: Path, expected: Path, host: str) -> None:
    text = render_nft(compiled(policy, host))
    golden = expected / f"{host}.nft"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}: run with UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text()


def test_output_is_byte_identical_across_processes() -> None:
    """Same input, byte-identical JSON, whatever the hash seed of the process."""
    program = (
        "import sys; from datetime import datetime, timezone;"
        "from zonewall.compiler import ir; from zonewall.compiler.node import compile_node;"
        "from zonewall.policy.loader import load_policy;"
        "p = load_policy(sys.argv[1]);"
        "now = datetime(2026, 1, 15, 12, tzinfo=timezone.utc);"
        "sys.stdout.write(''.join(ir.dumps(ir.to_json(compile_node(p, h, now=now, timezone='UTC'))) for h in sorted(p.doc.hosts)))"
    )
    outputs = set()
    for seed in ("1", "2", "12345"):
        for policy, _ in scenarios():
            env = {**os.environ, "PYTHONHASHSEED": seed}
            result = subprocess.run([sys.executable, "-c", program, str(policy)], capture_output=True, text=True, env=env, check=True)
            outputs.add((str(policy), result.stdout))
    assert len(outputs) == len(scenarios())


@pytest.mark.kernel
@pytest.mark.parametrize("policy, expected, host", cases(), ids=lambda v: v.parent.name if isinstance(v, Path) and v.name in ("policy", "expected") else str(v.name) if isinstance(v, Path) else v)
def test_golden_ruleset_loads_into_the_kernel(policy: Path, expected: Path, host: str, netns_name: str) -> None:
    from zonewall.dataplane.apply import apply_ruleset
    from zonewall.dataplane.backend import LibNftBackend

    with LibNftBackend(netns=netns_name) as backend:
        result = apply_ruleset(backend, compiled(policy, host))
    assert result.mode == "full"
    json.dumps(result.snapshot.to_json())


@pytest.mark.kernel
@pytest.mark.parametrize("policy, expected, host", cases(), ids=lambda v: v.parent.name if isinstance(v, Path) and v.name in ("policy", "expected") else str(v.name) if isinstance(v, Path) else v)
def test_nft_text_loads_with_nft_f(policy: Path, expected: Path, host: str, netns_name: str) -> None:
    """`zonewall compile --format nft` is for operators to read and load: `nft -f` takes it.
    (A tap named `tap:1` once made chain names nft cannot parse.)"""
    text = render_nft(compiled(policy, host))
    loaded = subprocess.run(["ip", "netns", "exec", netns_name, "nft", "-f", "-"], input=text, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
