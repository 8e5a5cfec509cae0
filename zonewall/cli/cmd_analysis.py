"""The analyzer's verbs: trace, reach, diff, lint (registered on the `zonewall` app).

Exit status: trace 0 when the flow is accepted, 1 when not; diff 0 when both
policies behave identically, 1 when they differ; lint 0 when there are no warnings;
2 for bad input everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from ..gcpause import collector_paused
from ..policy.resolve import Policy
from .root import app, console, emit_json, err, load_for_analysis


def parse_at(text: str | None, timezone: str) -> datetime | None:
    """`--at`: ISO 8601 (`2026-11-23T10:00`, `2026-11-23 10:00+01:00`) or `now`;
    without an offset, the node's timezone."""
    if text is None:
        return None
    if text == "now":
        return datetime.now(ZoneInfo(timezone))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected an ISO time such as 2026-11-23T10:00 (or now)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


def services_region(tcp: list[str], udp: list[str], icmp: list[str], proto: list[str]) -> object:
    """The packet space the --tcp/--udp/--icmp/--proto options select (None: all)."""
    from ..analysis import space as s
    from ..analysis.regions import matches_region
    from ..compiler.plan.rules import rule_matches
    from ..policy.model import Rule

    if not (tcp or udp or icmp or proto):
        return None
    try:
        rule = Rule(action="accept", tcp=tcp or None, udp=udp or None, icmp=icmp or None, proto=proto or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).splitlines()[-1]) from None
    from ..policy.model import PolicyDocument

    empty = Policy(PolicyDocument(version=1), None)  # a rule without peers needs no definitions
    region = matches_region(rule_matches(empty, rule), None)
    return s.coalesce(region)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@app.command()
def trace(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    source: str = typer.Option(..., "--from", help="vm:NAME[@NETWORK], host:NODE, outside:ADDR or an address"),
    target: str = typer.Option(..., "--to", help="vm:NAME[@NETWORK], host:NODE, outside:ADDR or an address"),
    tcp: int | None = typer.Option(None, "--tcp", help="destination port"),
    udp: int | None = typer.Option(None, "--udp", help="destination port"),
    sctp: int | None = typer.Option(None, "--sctp", help="destination port"),
    icmp: str | None = typer.Option(None, "--icmp", help="ICMP type name or number (echo-request)"),
    proto: str | None = typer.Option(None, "--proto", help="another IP protocol (esp, gre, 47, ...)"),
    sport: int | None = typer.Option(None, "--sport", help="source port (default: any ephemeral port)"),
    at: str | None = typer.Option(None, "--at", help="when (ISO time or now; default: every time of the week)"),
    family: str | None = typer.Option(None, "--family", help="ipv4 or ipv6 (default: from the addresses, else ipv4)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Would this connection get through, and which rule decides? (exit 0 accepted, 1 not)"""
    from ..analysis.engine import Analyzer
    from ..analysis.render import print_trace
    from ..analysis.trace import FlowSpec, TraceError
    from ..analysis.trace import trace as run_trace
    from ..compiler.schedule import local_timezone

    chosen = [(p, v) for p, v in (("tcp", tcp), ("udp", udp), ("sctp", sctp), ("icmp", icmp), ("proto", proto)) if v is not None]
    if len(chosen) != 1:
        err.print("give exactly one of --tcp, --udp, --sctp, --icmp, --proto")
        raise typer.Exit(2)
    if family not in (None, "ipv4", "ipv6"):
        err.print("--family must be ipv4 or ipv6")
        raise typer.Exit(2)
    kind, value = chosen[0]
    loaded = load_for_analysis(policy, as_json)
    timezone = local_timezone()
    moment = parse_at(at, timezone)
    flow = FlowSpec(
        proto=str(value) if kind == "proto" else kind,
        port=int(value) if kind in ("tcp", "udp", "sctp") else None,
        icmp_type=str(value) if kind == "icmp" else None,
        sport=sport,
        family=None if family is None else int(family[-1]),
        at=moment,
    )
    try:
        result = run_trace(Analyzer(loaded, now=moment, timezone=timezone), source, target, flow)
    except TraceError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        emit_json(result.to_json())
    else:
        print_trace(console, result)
    raise typer.Exit(0 if result.delivered else 1)


@app.command()
def reach(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    to: str | None = typer.Option(None, "--to", help="who can reach this (vm:, host:, zone:, group:, network:, address)"),
    source: str | None = typer.Option(None, "--from", help="what this can reach"),
    tcp: list[str] = typer.Option([], "--tcp", help="only these tcp ports (repeatable; ranges a-b)"),
    udp: list[str] = typer.Option([], "--udp"),
    icmp: list[str] = typer.Option([], "--icmp"),
    proto: list[str] = typer.Option([], "--proto"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Everything that can reach (or be reached from) an endpoint, and the rule that opens it."""
    from ..analysis.engine import Analyzer
    from ..analysis.reach import ReachError
    from ..analysis.reach import reach as run_reach
    from ..analysis.render import print_reach

    if (to is None) == (source is None):
        err.print("give exactly one of --to REF or --from REF")
        raise typer.Exit(2)
    loaded = load_for_analysis(policy, as_json)
    services = services_region(tcp, udp, icmp, proto)
    try:
        results = run_reach(Analyzer(loaded), to or source, "to" if to else "from", services)  # type: ignore[arg-type]
    except ReachError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        emit_json({"results": [r.to_json() for r in results]})
    else:
        print_reach(console, results)


@app.command()
def diff(
    old: Path = typer.Argument(..., help="the policy as it is (file or directory)"),
    new: Path = typer.Argument(..., help="the policy as proposed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The flows OLD and NEW treat differently (exit 0 identical, 1 different): a CI gate."""
    from ..analysis.diff import diff_policies
    from ..analysis.render import print_diff

    result = diff_policies(load_for_analysis(old, as_json), load_for_analysis(new, as_json))
    if as_json:
        emit_json(result.to_json())
    else:
        print_diff(console, result)
    raise typer.Exit(0 if result.identical else 1)


@app.command()
def lint(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    kind: list[str] = typer.Option([], "--kind", help="only findings of this kind (repeatable): dead, shadowed, partly-shadowed, redundant, conflict, management-exposure, empty-ref, unused"),
    about: list[str] = typer.Option([], "--object", help="only findings about this rule id, definition (group:admins), owner (web1, vm:web1, zone:dmz) or file (repeatable)"),
    baseline: Path | None = typer.Option(None, "--baseline", help="hide the findings accepted in this file (written by --write-baseline); exit 1 only on new warnings"),
    write_baseline: Path | None = typer.Option(None, "--write-baseline", help="accept every finding shown: write them to this file"),
    as_json: bool = typer.Option(False, "--json"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="processes to lint with (default: one per CPU, for policies of 1,000 VMs or more; the findings are the same)"),
) -> None:
    """Dead, redundant and conflicting rules, unused definitions, risky openings (exit 1 on warnings)."""
    from ..analysis.engine import Analyzer
    from ..analysis.lint import LintReport, lint_table
    from ..analysis.lint import lint as run_lint
    from ..analysis.lint.select import BaselineError, read_baseline, select, unknown_kinds
    from ..analysis.lint.select import write_baseline as write_accepted

    wrong = unknown_kinds(kind)
    if wrong:
        raise typer.BadParameter(f"unknown kind {', '.join(wrong)} (expected one of: dead, shadowed, partly-shadowed, redundant, conflict, management-exposure, empty-ref, unused)", param_hint="--kind")
    try:
        accepted = read_baseline(baseline) if baseline is not None else None
    except BaselineError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    analyzer = Analyzer(load_for_analysis(policy, as_json))
    with err.status("linting every chain", spinner="dots") if err.is_terminal and not as_json else _nothing():
        report = run_lint(analyzer, jobs=jobs)
    chosen = select(report.findings, kind, about, accepted)
    if write_baseline is not None:
        count = write_accepted(write_baseline, chosen.shown)
        err.print(f"{count} findings accepted in {write_baseline}")
    shown = LintReport(chosen.shown)
    with collector_paused():  # (~157,000 findings at 10,000 VMs: full collections while they were made walked the whole analysis)
        document = shown.to_json()
    if accepted is not None:
        document["baseline"] = {"accepted": chosen.accepted, "stale": chosen.stale}
    if as_json:
        emit_json(document)
    else:
        console.print(lint_table(shown))
        if accepted is not None:
            console.print(f"{chosen.accepted} findings accepted by {baseline}" + (f"; {len(chosen.stale)} entries of it no longer found (fixed: remove them)" if chosen.stale else ""))
    warnings = [f for f in chosen.shown if f.severity in ("warning", "error")]
    raise typer.Exit(1 if warnings and write_baseline is None else 0)
