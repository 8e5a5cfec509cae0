"""Lint findings as a rich table."""

from __future__ import annotations

from typing import Any

from .report import LintReport


def lint_table(report: LintReport, *, title: str | None = None, related_limit: int = 3, limit: int | None = None) -> Any:
    """The findings as a rich Table: kind, where (file:line), rule id (or the object),
    message (+ the related rules). `limit`: show the first findings only (the caption
    says how many are left out)."""
    from rich.table import Table
    from rich.text import Text

    counts = {k: n for k, n in report.counts().items() if n}
    caption = ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else "no findings"
    shown_findings = report.findings if limit is None else report.findings[:limit]
    if len(shown_findings) < len(report.findings):
        caption += f" ({len(report.findings) - len(shown_findings)} not shown)"
    table = Table(title=title or "zonewall lint", caption=caption, show_lines=False, expand=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("where", no_wrap=True, style="cyan")
    table.add_column("rule", no_wrap=True)
    table.add_column("message", overflow="fold")
    for finding in shown_findings:
        style = "yellow" if finding.severity == "warning" else "dim"
        message = Text(finding.message)
        if finding.related and finding.kind not in _RELATED_IN_MESSAGE:
            shown = ", ".join(r.text() for r in finding.related[:related_limit])
            more = len(finding.related) - related_limit
            if more > 0:
                shown += f" and {more} more"
            message.append(f"\n  {_related_label(finding.kind)}: {shown}", style="dim")
        table.add_row(Text(finding.kind, style=style), finding.where or "", finding.rule or finding.object or "", message)
    return table

_RELATED_IN_MESSAGE = ("shadowed", "conflict")  # their message names the rules already

def _related_label(kind: str) -> str:
    return {
        "shadowed": "covered by",
        "partly-shadowed": "covered by",
        "redundant": "decided instead by",
        "conflict": "earlier rule",
    }.get(kind, "related")
