"""`zonewall migrate VM --to NODE`: live-migrate a VM's rules and connections (docs/migration.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .root import app, console, err


def _summary(vm: str, report: dict[str, Any]) -> str:
    entries = next((s.get("entries") for s in report.get("steps", []) if str(s.get("step", "")).startswith("export")), 0)
    return (f"{vm}: {report['from']} -> {report['to']} in {report['seconds'] * 1000:.0f} ms "
            f"({entries} conntrack entries copied, guest switched in {report['switch_seconds'] * 1000:.0f} ms)"
            + (f", revision {report['revision']}" if report.get("revision") else ""))


@app.command()
def migrate(
    vm: str = typer.Argument(..., help="the VM to move"),
    to: str = typer.Option(..., "--to", help="the target node"),
    lab: str = typer.Option("zw", "--lab", help="the lab whose guest moves (zonewall lab up --name); without --controller"),
    controller: str | None = typer.Option(None, "--controller", envvar="ZONEWALL_CONTROLLER", help="migrate through this controller's API"),
    token: str | None = typer.Option(None, "--token", envvar="ZONEWALL_TOKEN", help="an admin token (or $ZONEWALL_TOKEN)"),
    token_file: Path | None = typer.Option(None, "--token-file"),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate of the controller"),
    switch_timeout: float = typer.Option(300.0, "--switch-timeout", help="seconds the controller waits for the hypervisor to move the guest"),
    no_state: bool = typer.Option(False, "--no-state", help="do not transfer conntrack entries (established connections break)"),
    as_json: bool = typer.Option(False, "--json", help="the orchestrator's report as JSON"),
) -> None:
    """Move VM to NODE: rules first, connections with it, the old node cleaned last.

    With --controller: POST /api/v1/vms/VM/migrate; the controller prepares the
    target, copies the VM's conntrack entries and waits for the hypervisor to move
    the guest (start `virsh migrate` meanwhile; the libvirt hook on the target
    tells the agent it arrived), copies again, records the move as a revision and
    cleans the source. Without it, in the lab: the same sequence run directly in
    the node namespaces, the guest's veth moved to the target's bridge. Exit 1 on
    failure (the VM stays filtered where it runs)."""
    if controller or token or token_file:
        report = _through_api(vm, to, controller or "http://127.0.0.1:9440", token_file.read_text().strip() if token_file else token,
                              ca, not no_state, switch_timeout)
    else:
        report = _in_lab(vm, to, lab, not no_state)
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        console.print(_summary(vm, report))


def _through_api(vm: str, to: str, url: str, secret: str | None, ca: Path | None, state: bool, switch_timeout: float) -> dict[str, Any]:
    import httpx

    from ..service.tls import tls_verify

    if not secret:
        err.print("give an admin token: --token, --token-file or $ZONEWALL_TOKEN")
        raise typer.Exit(2)
    try:
        response = httpx.post(f"{url.rstrip('/')}/api/v1/vms/{vm}/migrate", json={"to": to, "state": state, "switch_timeout": switch_timeout},
                              headers={"Authorization": f"Bearer {secret}"}, verify=tls_verify(str(ca) if ca else None),
                              timeout=switch_timeout + 300.0)
    except httpx.HTTPError as exc:
        err.print(f"migrate: controller unreachable: {exc}")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:500]
        if isinstance(detail, dict):
            err.print(f"migrate: failed at {detail.get('step')}: {detail.get('error')} (the VM is filtered on {detail.get('where')})")
            err.print(json.dumps(detail.get("report"), default=str))
        else:
            err.print(f"migrate: refused ({response.status_code}): {detail}")
        raise typer.Exit(1)
    return response.json()


def _in_lab(vm: str, to: str, lab: str, state_transfer: bool) -> dict[str, Any]:
    from ..controller.migrate import MigrationError
    from ..lab.cluster import LabError, LabState
    from ..lab.migrate import lab_documents, lab_migrate
    from ..policy.edits import ChangeError
    from ..policy.errors import PolicyError

    try:
        state = LabState.load(lab)
        return lab_migrate(state, lab_documents(state), vm, to, transfer_state=state_transfer)
    except (ChangeError, LabError, PolicyError) as exc:
        err.print(f"migrate: {exc}")
        raise typer.Exit(1) from None
    except MigrationError as exc:
        err.print(f"migrate: failed at {exc.step}: {exc}")
        err.print(json.dumps(exc.report, default=str))
        raise typer.Exit(1) from None
