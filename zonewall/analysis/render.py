"""Rich output of trace, reach and diff: readable at a glance."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .diff import DiffResult
from .reach import Reach, row_json
from .trace import TraceResult, _case_json

COLOR = {"accept": "green", "drop": "red", "reject": "red", "depends": "yellow", "opened": "green", "closed": "red", "changed": "yellow", "pass": "green"}


def _verdict(text: str) -> str:
    return f"[{COLOR.get(text, 'white')}]{text}[/]"


def _rule(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "-"
    where = f" ({decision['where']})" if decision.get("where") else ""
    return f"{decision['rule']}{where}"


def print_trace(console: Console, result: TraceResult) -> None:
    flow = result.to_json()["flow"]
    console.print(
        f"[bold]{flow['from']}[/] ({flow['src']}) -> [bold]{flow['to']}[/] ({flow['dst']}) "
        f"{flow['protocol']} {flow['family']}: {_verdict(result.verdict)}"
    )
    for title, cases in (("", result.cases), ("over the rate limit: ", result.over_rate)):
        for case in cases:
            data = _case_json(case)
            if len(result.cases) > 1 or title or data["when"] != "always":
                console.print(f"  {title}{_verdict(data['verdict'])} when {data['when']}" + (f", source ports {data['sport']}" if len(result.cases) > 1 else ""))
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            for column in ("stage", "outcome", "rule", "where"):
                table.add_column(column)
            for stage in data["stages"]:
                table.add_row(stage["stage"], _verdict(stage["action"]), stage["rule"], stage.get("where", "built-in"))
            console.print(table)
            decided = data["decided_by"]
            if decided and decided.get("text"):
                console.print(f"  decided by [bold]{decided['rule']}[/] at {decided.get('where', '?')}: {decided['text']}", markup=True, highlight=False)
    for note in result.notes:
        console.print(f"  [yellow]note[/]: {note}")


def print_reach(console: Console, results: list[Reach]) -> None:
    for result in results:
        arrow = "can reach" if result.direction == "to" else "reachable from"
        title = f"{'who ' + arrow + ' ' if result.direction == 'to' else ''}{result.label}" if result.direction == "to" else f"what {result.label} can reach"
        table = Table(title=title, header_style="bold")
        for column in ("peers", "services", "family", "when", "opened by" if result.direction == "to" else "allowed by", "peer side"):
            table.add_column(column, overflow="fold")
        for row in result.rows:
            data = row_json(row, result.labels[id(row)])
            peers = data["peers"]
            shown = ", ".join(peers[:8]) + (f" (+{len(peers) - 8} more)" if len(peers) > 8 else "")
            table.add_row(
                f"{row.peer_kind}: {shown}",
                ", ".join(data["services"]),
                "/".join(f.replace("ipv", "v") for f in data["families"]),
                data["when"],
                _rule(data["rule"]),
                _rule(data["peer_rule"]),
            )
        if not result.rows:
            table.add_row("(nothing)", "", "", "", "", "")
        console.print(table)
        for note in result.notes:
            console.print(f"[dim]note: {note}[/]")


def print_diff(console: Console, result: DiffResult) -> None:
    print_diff_json(console, result.to_json())


def print_diff_json(console: Console, data: dict[str, Any]) -> None:
    """A diff as `zonewall diff --json` gives it (also what the controller stores per revision)."""
    if data["identical"]:
        console.print("[green]no difference[/]: both policies treat every flow alike")
        return
    if data["flows"]:
        table = Table(title="flows treated differently", header_style="bold")
        for column in ("change", "from", "to", "services", "when", "old", "new"):
            table.add_column(column, overflow="fold")
        for row in data["flows"]:
            table.add_row(
                _verdict(row["change"]),
                _side_text(row["from"]),
                _side_text(row["to"]),
                ", ".join(row["services"]),
                row["when"],
                f"{row['old']['verdict']} by {_rule(row['old']['decided_by'])}",
                f"{row['new']['verdict']} by {_rule(row['new']['decided_by'])}",
            )
        console.print(table)
    for change in data["endpoints"]:
        console.print(f"endpoint {change['endpoint']}: {change['change']}")
    for note in data["notes"]:
        console.print(f"[dim]note: {note}[/]")


def _side_text(entries: list[str], shown: int = 8) -> str:
    """A row's side for the table: its first endpoints and zones, then what it
    excludes (`!vm:web7`, analysis/rowsides.py), each cut short with a count."""
    kept = [e for e in entries if not e.startswith("!")]
    excluded = [e[1:] for e in entries if e.startswith("!")]
    text = ", ".join(kept[:shown]) + (f" (+{len(kept) - shown})" if len(kept) > shown else "")
    if excluded:
        text += " except " + ", ".join(excluded[:shown]) + (f" (+{len(excluded) - shown})" if len(excluded) > shown else "")
    return text
