"""zonewall names (`[a-z0-9][a-z0-9_-]{0,30}`) for things named otherwise in the source."""

from __future__ import annotations

import hashlib
import re

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")


def sanitize(text: str) -> str:
    """Lowercase, other characters to '-', at most 31 characters (a hash keeps long
    names apart). Deterministic: the same text always gives the same name."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "x"
    if not name[0].isalnum():
        name = "x" + name
    if len(name) > 31:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        name = name[:24].rstrip("-_") + "-" + digest
    return name


class Names:
    """Allocates unique zonewall names within one namespace (groups, filters, ...)."""

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self.taken: set[str] = set(reserved)
        self.by_key: dict[object, str] = {}

    def get(self, key: object, wanted: str) -> str:
        if key in self.by_key:
            return self.by_key[key]
        base = sanitize(wanted)
        name, n = base, 2
        while name in self.taken:
            suffix = f"-{n}"
            name = base[: 31 - len(suffix)] + suffix
            n += 1
        self.taken.add(name)
        self.by_key[key] = name
        return name
