"""Read Proxmox VE firewall files (`cluster.fw`, `host.fw`, `<vmid>.fw`) with line numbers.

The grammar is pve-firewall's (PVE/Firewall.pm): sections `[OPTIONS]`, `[ALIASES]`,
`[IPSET name]`, `[RULES]`, `[group name]`; a rule is `[|]TYPE ACTION [options] [# comment]`
with TYPE `IN`, `OUT` or `GROUP` and ACTION `ACCEPT|DROP|REJECT`, `MACRO(ACTION)` or a
group name. Like pve-firewall, a line that does not parse is skipped; here it is
also reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..report import Report, Where

Kind = Literal["cluster", "host", "vm"]
SECTIONS: dict[str, tuple[str, ...]] = {
    "cluster": ("options", "aliases", "ipset", "rules", "group"),
    "host": ("options", "rules"),
    "vm": ("options", "aliases", "ipset", "rules"),
}
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog")
_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")
_HEADER = re.compile(r"^\[(\w+)(?:\s+(\S+))?\]\s*(?:#\s*(.*?)\s*)?$")
_RULE_OPTIONS = (
    ("iface", re.compile(r"^-i\s+(\S+)\s*")),
    ("proto", re.compile(r"^(?:-p|--?proto)\s+(\S+)\s*")),
    ("dport", re.compile(r"^--?dport\s+(\S+)\s*")),
    ("sport", re.compile(r"^--?sport\s+(\S+)\s*")),
    ("source", re.compile(r"^--?source\s+(\S+)\s*")),
    ("dest", re.compile(r"^--?dest\s+(\S+)\s*")),
    ("log", re.compile(r"^--?log\s+(" + "|".join(LOG_LEVELS) + r")\s*")),
    ("icmp_type", re.compile(r"^--?icmp-type\s+(\S+)\s*")),
)


@dataclass
class FwRule:
    where: Where
    enabled: bool
    type: str  # in | out | group | forward
    action: str  # ACCEPT | DROP | REJECT, or the group's name for GROUP
    macro: str | None = None
    iface: str | None = None
    proto: str | None = None
    dport: str | None = None
    sport: str | None = None
    source: str | None = None
    dest: str | None = None
    log: str | None = None
    icmp_type: str | None = None
    comment: str | None = None


@dataclass
class IpSetEntry:
    where: Where
    cidr: str
    nomatch: bool
    comment: str | None = None


@dataclass
class IpSet:
    name: str
    where: Where
    entries: list[IpSetEntry] = field(default_factory=list)
    comment: str | None = None


@dataclass
class Alias:
    name: str
    cidr: str
    where: Where
    comment: str | None = None


@dataclass
class Group:
    name: str
    where: Where
    rules: list[FwRule] = field(default_factory=list)
    comment: str | None = None


@dataclass
class FwFile:
    path: str  # as shown in reports and comments (relative to the import directory)
    kind: Kind
    options: dict[str, tuple[str, Where]] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    rules: list[FwRule] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)

    def option(self, name: str) -> str | None:
        found = self.options.get(name)
        return found[0] if found else None

    def option_where(self, name: str) -> Where:
        found = self.options.get(name)
        return found[1] if found else Where(self.path)


def parse_rule(text: str, where: Where) -> FwRule:
    """One rule line; ValueError says what is wrong."""
    line = text.strip()
    comment = None
    found = re.search(r"#\s*(.*?)\s*$", line)
    if found:
        comment = found.group(1) or None
        line = line[: found.start()].strip()
    enabled = not line.startswith("|")
    line = line.lstrip("|").strip()
    head = re.match(r"^(\S+)\s+(\S+)\s*", line)
    if not head:
        raise ValueError(f"cannot parse rule {text.strip()!r} (expected TYPE ACTION [options])")
    rule = FwRule(where, enabled, head.group(1).lower(), head.group(2), comment=comment)
    if rule.type not in ("in", "out", "group", "forward"):
        raise ValueError(f"unknown rule type {head.group(1)!r} (expected IN, OUT, FORWARD or GROUP)")
    if rule.type != "group":
        macro = re.match(r"^(\S+)\((ACCEPT|DROP|REJECT)\)$", rule.action)
        if macro:
            rule.macro, rule.action = macro.group(1), macro.group(2)
        elif rule.action not in ("ACCEPT", "DROP", "REJECT"):
            raise ValueError(f"unknown action {rule.action!r} (expected ACCEPT, DROP, REJECT or MACRO(ACTION))")
    rest = line[head.end():]
    while rest:
        for key, pattern in _RULE_OPTIONS:
            if rule.type == "group" and key != "iface":
                continue
            found = pattern.match(rest)
            if found:
                setattr(rule, key, found.group(1))
                rest = rest[found.end():]
                break
        else:
            raise ValueError(f"cannot parse rule parameters {rest!r}")
    return rule


# What pve-firewall (Perl) trims from a line: ASCII whitespace only.
_ASCII_SPACE = " \t\r\n\f\v"


def config_lines(text: str) -> list[str]:
    """The lines of a Proxmox config file as pve-firewall reads them: split at "\n"
    only (Perl's line reader), trimmed of ASCII whitespace only. Python's splitlines()
    also splits at U+2028, U+0085, \r, \f...: a comment holding one of those became a
    rule (`# no mail<U+2028>IN ACCEPT -p tcp -dport 3389` opened 3389)."""
    return [line.strip(_ASCII_SPACE) for line in text.split("\n")]


def parse_file(path: Path, shown: str, kind: Kind, report: Report) -> FwFile:
    fw = FwFile(shown, kind)
    section: str | None = None
    group: Group | None = None
    ipset: IpSet | None = None
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw_bytes.decode("utf-8", errors="replace")
        report.inexact(Where(shown), f"not UTF-8 ({exc.reason}); undecodable bytes replaced")
    for number, line in enumerate(config_lines(text), start=1):
        where = Where(shown, number)
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            name = header.group(1).lower()
            if name not in SECTIONS[kind]:
                report.skipped(where, f"section [{header.group(1)}] does not belong in a {kind} firewall file; its lines are ignored (as Proxmox does)")
                section = None
                continue
            section = name
            if name in ("ipset", "group"):
                if not header.group(2):
                    report.skipped(where, f"[{header.group(1)}] needs a name")
                    section = None
                    continue
                key = header.group(2).lower()
                if name == "ipset":
                    ipset = fw.ipsets[key] = IpSet(key, where, comment=header.group(3))
                else:
                    group = fw.groups[key] = Group(key, where, comment=header.group(3))
            continue
        if section is None:
            report.skipped(where, "line outside any known section; ignored (as Proxmox does)")
            continue
        if section == "options":
            found = _OPTION.match(line)
            if not found:
                report.skipped(where, f"cannot parse option {line!r} (expected name: value)")
            else:
                fw.options[found.group(1).lower()] = (found.group(2), where)
        elif section == "aliases":
            comment = None
            entry = line
            if "#" in line:
                line, comment = (part.strip() for part in line.split("#", 1))
            parts = line.split()
            if len(parts) != 2:
                report.skipped(where, f"cannot parse alias {entry.strip()!r} (expected NAME CIDR)")
            else:
                fw.aliases[parts[0].lower()] = Alias(parts[0].lower(), parts[1], where, comment or None)
        elif section == "ipset":
            assert ipset is not None
            comment = None
            entry = line
            if "#" in line:
                line, comment = (part.strip() for part in line.split("#", 1))
            found = re.match(r"^(!)?\s*(\S+)$", line)
            if not found:
                report.skipped(where, f"cannot parse IP set entry {entry.strip()!r}")
            else:
                ipset.entries.append(IpSetEntry(where, found.group(2), bool(found.group(1)), comment or None))
        else:
            try:
                rule = parse_rule(line, where)
            except ValueError as exc:
                report.skipped(where, f"{exc}; Proxmox skips this rule too")
                continue
            if section == "group":
                assert group is not None
                if rule.type == "group":
                    report.skipped(where, "a security group cannot contain GROUP rules; ignored")
                    continue
                group.rules.append(rule)
            else:
                fw.rules.append(rule)
    return fw
