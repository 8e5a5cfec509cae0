"""`zonewall demo`: the lab, an example policy, measured against expected reachability."""

from __future__ import annotations

import typer

from .root import app, console, err


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="leave the lab up afterwards"),
    example: str = typer.Option("three-tier", "--example", help="a bundled example (three-tier, nas-isolation, microsegmentation) or an example directory"),
    name: str = typer.Option("demo", "--name", help="the lab's name (its namespaces are zwl-NAME-*)"),
    libvirt: bool = typer.Option(False, "--libvirt", help="real QEMU guests under one libvirtd per node instead of namespaces (TCP services; boots take 15-90 s)"),
) -> None:
    """Bring up the lab from an example, apply, show measured vs expected reachability."""
    from ..lab.demo import find_example, run_demo

    try:
        directory = find_example(example)
    except FileNotFoundError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if libvirt:
        from ..lab.guestdemo import run_libvirt_demo

        raise typer.Exit(run_libvirt_demo(console, directory, keep, name))
    raise typer.Exit(run_demo(console, directory, keep, name))
