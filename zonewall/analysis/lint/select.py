"""Which lint findings an operator asked to see: by kind, by object, minus a baseline.

A large policy has thousands of findings (8,050 at 500 VMs); an operator works on a
few kinds or one VM at a time, and accepts the findings they decided to keep in a
baseline file kept beside the policy, so CI fails only on new ones.

A finding's identity in a baseline leaves out its line number and its message, which
change when unrelated lines move: kind, rule id, object, owner and the ids of the
related rules. Rules without an explicit id are named by file and line
(`policy:42`), so a baseline is only as stable as the ids it names: give rules ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .report import KINDS, Finding

BASELINE_VERSION = 1


def unknown_kinds(kinds: Iterable[str]) -> list[str]:
    return [kind for kind in kinds if kind not in KINDS]


def about(finding: Finding, name: str) -> bool:
    """The finding concerns `name`: a rule id, a definition (`group:admins`), an owner
    (a VM, zone or network name, or `vm:web1`/`zone:dmz`), or a file (`vms/web.yaml`)."""
    owner = f"{finding.level}:{finding.owner}" if finding.level and finding.owner else None
    file = finding.where.rpartition(":")[0] if finding.where else None
    return name in (finding.rule, finding.object, finding.owner, owner, file, finding.where)


def identity(finding: Finding) -> str:
    related = ",".join(sorted(r.rule for r in finding.related))
    return "|".join((finding.kind, finding.rule or "", finding.object or "", finding.owner or "", related))


@dataclass(frozen=True)
class Selection:
    shown: list[Finding]
    accepted: int  # hidden by the baseline
    stale: list[str]  # baseline entries no finding matches any more (fixed: drop them)


def select(findings: list[Finding], kinds: Iterable[str] = (), objects: Iterable[str] = (), baseline: set[str] | None = None) -> Selection:
    wanted_kinds, wanted_objects = set(kinds), list(objects)
    chosen = [f for f in findings
              if (not wanted_kinds or f.kind in wanted_kinds) and (not wanted_objects or any(about(f, name) for name in wanted_objects))]
    if baseline is None:
        return Selection(chosen, 0, [])
    seen = {identity(f) for f in findings}
    shown = [f for f in chosen if identity(f) not in baseline]
    return Selection(shown, len(chosen) - len(shown), sorted(baseline - seen))


class BaselineError(ValueError):
    pass


def read_baseline(path: Path) -> set[str]:
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc.strerror})") from None
    except ValueError as exc:
        raise BaselineError(f"{path}: not a lint baseline (not JSON: {exc})") from None
    entries = document.get("accepted") if isinstance(document, dict) and document.get("version") == BASELINE_VERSION else None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise BaselineError(f"{path}: not a lint baseline (expected {{\"version\": {BASELINE_VERSION}, \"accepted\": [...]}}; write one with --write-baseline)")
    return set(entries)


def write_baseline(path: Path, findings: Iterable[Finding]) -> int:
    entries = sorted({identity(f) for f in findings})
    path.write_text(json.dumps({"version": BASELINE_VERSION, "accepted": entries}, indent=1) + "\n")
    return len(entries)
