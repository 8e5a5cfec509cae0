"""The one place the conformance harness reads `zonewall trace --json`.

The analyzer's JSON may gain or rename a field while the shared evaluation plan lands
(issue 13); the harness reads only what this adapter returns, so such a change is
absorbed here and nowhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from zonewall.cli import app


class TraceRefused(Exception):
    """trace refused the question (exit 2): the flow cannot be asked of zonewall."""


@dataclass(frozen=True)
class TraceAnswer:
    verdict: str  # accept | drop | reject | depends
    src: str  # the addresses zonewall traced (they may differ from the ones asked)
    dst: str
    deciding: tuple[str, ...] = ()  # policy file:line of the rule deciding each case
    stages: tuple[str, ...] = ()  # "stage: action rule" of each case's deciding stage
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def delivered(self) -> bool:
        return self.verdict == "accept"


def _decided(case: dict[str, Any]) -> dict[str, Any]:
    return case.get("decided_by") or {}


def read_trace(doc: dict[str, Any]) -> TraceAnswer:
    flow = doc.get("flow", {})
    cases = doc.get("cases", [])
    return TraceAnswer(
        verdict=str(doc["verdict"]),
        src=str(flow.get("src")),
        dst=str(flow.get("dst")),
        deciding=tuple(str(_decided(c)["where"]) for c in cases if _decided(c).get("where")),
        stages=tuple(f"{_decided(c).get('stage')}: {_decided(c).get('action')} {_decided(c).get('rule')}" for c in cases if _decided(c)),
        notes=tuple(str(n) for n in doc.get("notes", [])),
    )


def _message(text: str) -> str:
    """The error text without rich's box drawing (typer frames usage errors)."""
    words = re.sub(r"[\u2500-\u257f]", " ", text).split()
    return " ".join(words) or "trace refused the flow"


def run_trace(policy: Path, source: str, target: str, flow: list[str]) -> TraceAnswer:
    """`zonewall trace POLICY --from SOURCE --to TARGET FLOW... --json`."""
    result = CliRunner().invoke(app, ["trace", str(policy), "--from", source, "--to", target, *flow, "--json"])
    if result.exit_code == 2:
        raise TraceRefused(_message(result.stderr or result.output))
    if result.exit_code not in (0, 1):
        raise RuntimeError(f"trace crashed (exit {result.exit_code}): {result.output}") from result.exception
    return read_trace(json.loads(result.stdout))
