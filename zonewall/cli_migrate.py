"""`zonewall migrate VM --to NODE`: live-migrate a VM's rules and connections (docs/migration.md)."""

from __future__ import annotations

import json

import typer
from rich.console import Console


def register(app: typer.Typer, console: Console, err: Console) -> None:
    @app.command()
    def migrate(
        vm: str = typer.Argument(..., help="the VM to move"),
        to: str = typer.Option(..., "--to", help="the target node"),
        lab: str = typer.Option("zw", "--lab", help="the lab whose guest moves (zonewall lab up --name)"),
        no_state: bool = typer.Option(False, "--no-state", help="do not transfer conntrack entries (established connections break)"),
        as_json: bool = typer.Option(False, "--json", help="the orchestrator's report as JSON"),
    ) -> None:
        """Move VM to NODE: rules first, connections with it, the old node cleaned last.

        In the lab: prepares the target, copies the VM's conntrack entries, moves the
        guest's veth to the target's bridge, copies again, records the new host in the
        lab's policy and cleans the source. Exit 1 on failure (the VM stays filtered
        where it runs)."""
        from .controller.edits import ChangeError
        from .controller.migrate import MigrationError
        from .lab.cluster import LabError, LabState
        from .lab.migrate import lab_documents, lab_migrate
        from .policy.errors import PolicyError

        try:
            state = LabState.load(lab)
            report = lab_migrate(state, lab_documents(state), vm, to, transfer_state=not no_state)
        except (ChangeError, LabError, PolicyError) as exc:
            err.print(f"migrate: {exc}")
            raise typer.Exit(1) from None
        except MigrationError as exc:
            err.print(f"migrate: failed at {exc.step}: {exc}")
            err.print(json.dumps(exc.report, default=str))
            raise typer.Exit(1) from None
        if as_json:
            console.print_json(json.dumps(report, default=str))
            return
        entries = next((s.get("entries") for s in report.get("steps", []) if str(s.get("step", "")).startswith("export")), 0)
        console.print(f"{vm}: {report['from']} -> {report['to']} in {report['seconds'] * 1000:.0f} ms "
                      f"({entries} conntrack entries copied, guest switched in {report['switch_seconds'] * 1000:.0f} ms)")
