"""The agent's memory on disk: the last state it applied successfully.

At start the agent restores from here before (and without) talking to the
controller, so a node whose controller is gone still gets its last rules back,
e.g. after a reboot or an `nft flush ruleset` while the agent was down.
Written atomically (temporary file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/zonewall/agent")
STATE_FILE = "applied.json"
FORMAT = 1


@dataclass
class AppliedState:
    node: str
    revision: int
    content_hash: str
    documents: dict[str, str]
    fingerprint: str  # compiler's ir.fingerprint of what was applied
    readback_hash: str  # the kernel's readback of our tables right after applying
    applied_at: float
    taps: dict[str, str] = field(default_factory=dict)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE

    def load(self, node: str) -> AppliedState | None:
        """The saved state, or None (none yet, another node's, or unreadable)."""
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if document.get("format") != FORMAT or document.get("state", {}).get("node") != node:
            return None
        try:
            return AppliedState(**document["state"])
        except TypeError:
            return None

    def save(self, state: AppliedState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump({"format": FORMAT, "state": asdict(state)}, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
