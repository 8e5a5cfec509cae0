"""The NFLOG prefix of zonewall's log statements: built here, parsed here.

    zw|node|scope|direction|rule|verdict|level

The compiler writes it (`build`), the agent's NFLOG reader reads it back from every
record (`parse`, dataplane/nflog.py); nothing else spells the format. `scope` is
the VM for VM-specific rules and defaults, `zone:NAME`, `global`, `sg:NAME`,
`host`, `net:NAME`, `guard:FILTER` or `state` (invalid packets); for shared chains
the record's mark tells the NIC (and so the VM) the packet belonged to. `level` is
the log level (issue 18: syslog's names, policy/model.py LOG_LEVELS); a prefix
without it (a ruleset compiled before levels existed) parses with level None.
The kernel keeps 127 bytes of a prefix: a long rule id may cut the verdict or the
level off (parsed as None).
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX_MAX_BYTES = 127
VERDICTS = ("accept", "drop", "reject")


class LogPrefix(NamedTuple):
    node: str | None
    scope: str | None
    direction: str | None
    rule_id: str | None
    verdict: str | None
    level: str | None


NONE = LogPrefix(None, None, None, None, None, None)


def build(node: str, scope: str, direction: str, rule_id: str, verdict: str, level: str | None = None) -> str:
    text = f"zw|{node}|{scope}|{direction}|{rule_id}|{verdict}" + (f"|{level}" if level else "")
    return text.encode()[:PREFIX_MAX_BYTES].decode(errors="ignore")


def parse(prefix: str) -> LogPrefix:
    """A prefix's fields; all None for a prefix that is not zonewall's.

    Scopes never contain `|` (names are [a-z0-9_-], scopes add `:`), rule ids neither."""
    parts = prefix.split("|")
    if len(parts) < 5 or parts[0] != "zw":
        return NONE
    node, scope, direction, rule_id = parts[1:5]
    verdict = parts[5] if len(parts) > 5 and parts[5] in VERDICTS else None
    level = parts[6] if len(parts) > 6 and parts[6] else None
    return LogPrefix(node, scope, direction, rule_id, verdict, level)
