"""`zonewall import proxmox|libvirt DIR -o OUT/`: bring an existing firewall into zonewall.

Exit status: 0 written (the report may list items); 1 with --strict when anything
could not be translated exactly (nothing is written), or when the translation does
not pass `zonewall check` (a bug: nothing is written); 2 for unreadable input or an
output directory that already holds policy files.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import typer

from ..importers.emit import Document, OutputExists, render, write_policy
from ..importers.report import ImportFailure, Report
from ..policy.errors import PolicyError
from ..policy.loader import load_policy
from .root import app

import_app = typer.Typer(help="Import a Proxmox VE firewall or libvirt nwfilter configuration as a zonewall policy", no_args_is_help=True)


def _finish(kind: str, build: Callable[[Report], dict[str, Document]], output: Path, strict: bool, force: bool, as_json: bool) -> None:
    from rich.console import Console

    from .progress import phase

    report = Report()
    progress_console = Console(stderr=True)
    try:
        with phase(progress_console, f"translating the {kind} configuration"):
            documents = build(report)
    except ImportFailure as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        sys.stderr.write(f"import failed: {len(exc.problems)} problem(s); nothing was written\n")
        raise typer.Exit(2) from None
    blocking = report.blocking
    with tempfile.TemporaryDirectory(prefix="zw-import-") as tmp:  # round trip before writing anything
        for name, document in documents.items():
            (Path(tmp) / name).write_text(render(document))
        try:
            with phase(progress_console, "checking the translation"):
                load_policy(Path(tmp))
        except PolicyError as exc:
            for found in exc.problems:
                sys.stderr.write(f"{found}\n")
            sys.stderr.write("internal error: the translated policy does not pass `zonewall check`; nothing was written\n")
            raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps({"ok": not (strict and blocking), "written": [] if strict and blocking else sorted(documents),
                                     "items": [i.to_json() for i in report.sorted()]}, indent=1, sort_keys=True) + "\n")
    else:
        for item in report.sorted():
            sys.stderr.write(f"{item}\n")
    if strict and blocking:
        if not as_json:
            sys.stderr.write(f"--strict: {len(blocking)} item(s) not translated exactly; nothing was written\n")
        raise typer.Exit(1)
    try:
        write_policy(output, documents, report.render(f"zonewall import {kind}: what was not translated exactly"), force=force)
    except OutputExists as exc:
        sys.stderr.write(f"{exc}\n")
        raise typer.Exit(2) from None
    if not as_json:
        counts = {s: sum(1 for i in report.items if i.severity == s) for s in ("skipped", "inexact", "note")}
        sys.stderr.write(f"wrote {len(documents)} file(s) to {output} ({', '.join(f'{n} {s}' for s, n in counts.items())}; see {output / 'import-report.txt'})\n")


@import_app.command("proxmox")
def proxmox(
    directory: Path = typer.Argument(..., help="/etc/pve (or a copy of it), or a directory of cluster.fw, host.fw or nodes/NODE/host.fw, VMID.fw, inventory.yaml"),
    output: Path = typer.Option(..., "-o", "--output", help="directory to write the policy into"),
    inventory: Path | None = typer.Option(None, "--inventory", help="guest inventory (default: DIR/inventory.yaml)"),
    corosync: Path | None = typer.Option(None, "--corosync", help="the cluster's corosync.conf (default: DIR/corosync.conf if present)"),
    local_network: str | None = typer.Option(None, "--local-network", help="Proxmox's local_network (the nodes' cluster subnet; each node derives it from its address, /etc/pve does not hold it)"),
    strict: bool = typer.Option(False, "--strict", help="fail, writing nothing, if anything is not translated exactly"),
    force: bool = typer.Option(False, "--force", help="write into a directory that already holds policy files"),
    as_json: bool = typer.Option(False, "--json", help="the report as JSON on stdout"),
    copy_groups: bool = typer.Option(False, "--copy-groups", help="copy each security group into every rule list that uses it (default: `security_groups` referenced where they mean the same everywhere)"),
) -> None:
    """Translate a Proxmox VE firewall configuration (datacenter, nodes, guests): /etc/pve itself
    (guests, NICs and nodes from its configs), or exported .fw files with an inventory."""
    from ..importers.proxmox.source import read_source
    from ..importers.proxmox.translate import translate

    _finish("proxmox", lambda report: translate(read_source(directory, inventory, report, corosync, local_network), report, map_groups=not copy_groups), output, strict, force, as_json)


@import_app.command("libvirt")
def libvirt(
    directory: Path = typer.Argument(..., help="directory of libvirt XML: nwfilter <filter>s, domain <domain>s, optionally <network>s"),
    output: Path = typer.Option(..., "-o", "--output", help="directory to write the policy into"),
    host: str = typer.Option("node1", "--host", help="the node these domains run on"),
    host_address: list[str] = typer.Option([], "--host-address", help="the node's address (repeatable)"),
    strict: bool = typer.Option(False, "--strict", help="fail, writing nothing, if anything is not translated exactly"),
    force: bool = typer.Option(False, "--force", help="write into a directory that already holds policy files"),
    as_json: bool = typer.Option(False, "--json", help="the report as JSON on stdout"),
) -> None:
    """Translate libvirt nwfilters and the domains' <interface> filterrefs."""
    from ..importers.libvirt.parse import read_directory
    from ..importers.libvirt.translate import translate

    _finish("libvirt", lambda report: translate(read_directory(directory, report), report, host=host, host_addresses=host_address), output, strict, force, as_json)


app.add_typer(import_app, name="import")
