"""The root of the `zonewall` command: the typer app every command module registers
on, the two consoles, and what several commands share (loading a policy, JSON out)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from ..gcpause import collector_paused
from ..policy.errors import PolicyError
from ..policy.loader import load_policy
from ..policy.resolve import Policy
from .user_errors import ZonewallGroup

app = typer.Typer(help="zonewall: zone-based stateful nftables firewall for VM clusters", no_args_is_help=True, add_completion=False, cls=ZonewallGroup)
lab_app = typer.Typer(help="A virtual cluster of network namespaces built from a policy", no_args_is_help=True)
app.add_typer(lab_app, name="lab")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def emit_json(document: object) -> None:
    # (a tree without cycles: a collection while it is written walks everything a
    # large analysis left alive for nothing, once per ~25 % more objects)
    with collector_paused():
        sys.stdout.write(json.dumps(document, indent=1, sort_keys=True) + "\n")


def warn_not_enforced(policy: Policy) -> None:
    from ..compiler.coverage import not_enforced

    for note in not_enforced(policy):
        sys.stderr.write(f"warning: {note}\n")


def load(policy: Path, as_json: bool = False) -> Policy:
    from .progress import phase

    try:
        with phase(err, f"loading {policy}"):
            loaded = load_policy(policy)
    except PolicyError as exc:
        if as_json:
            emit_json({"ok": False, "problems": [p.to_json() for p in exc.problems]})
        else:
            for problem in exc.problems:  # plain lines: editors and grep read file:line:col
                sys.stderr.write(f"{problem}\n")
            err.print(f"[red]rejected[/red]: {len(exc.problems)} problem(s); nothing was applied")
        raise typer.Exit(1) from None
    if not as_json:
        warn_not_enforced(loaded)
    return loaded


def load_for_analysis(policy: Path, as_json: bool) -> Policy:
    """load, but a rejected policy exits 2: for `diff`, 1 means 'different'."""
    try:
        return load(policy, as_json)
    except typer.Exit as exc:
        raise typer.Exit(2) from exc

