"""`zonewall lab up|apply|down|probe|matrix`: a virtual cluster of network namespaces."""

from __future__ import annotations

from pathlib import Path

import typer

from ..policy.loader import load_policy
from .root import console, emit_json, err, lab_app, load


@lab_app.command("up")
def lab_up_cmd(
    policy: Path = typer.Argument(...),
    name: str = typer.Option("zw", "--name"),
    no_apply: bool = typer.Option(False, "--no-apply", help="build the cluster but apply no ruleset"),
) -> None:
    """Build one namespace per node and VM plus `outside`, and apply the policy."""
    from ..lab.cluster import LabError, lab_up
    from .progress import progress

    load(policy)
    try:
        with progress(err, f"lab {name}: guests and nodes") as tick:
            state = lab_up(str(policy), name, apply=not no_apply, progress=tick)
    except LabError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    console.print(f"lab [bold]{name}[/bold] up: {len(state.nodes)} nodes, {len(state.vms)} VMs, outside = {state.outside}")


@lab_app.command("apply")
def lab_apply_cmd(policy: Path | None = typer.Argument(None), name: str = typer.Option("zw", "--name")) -> None:
    """Re-apply the lab's policy (or another one) on every lab node."""
    from ..lab.cluster import LabState, apply_policy

    state = LabState.load(name)
    results = apply_policy(state, load(policy) if policy else None)
    for node, result in results.items():
        console.print(f"{node}: {result.mode}, {result.commands} commands")


@lab_app.command("down")
def lab_down_cmd(name: str = typer.Option("zw", "--name")) -> None:
    """Remove every namespace of the lab (also after a crash)."""
    from ..lab.cluster import lab_down

    removed = lab_down(name)
    console.print(f"removed {len(removed)} namespaces")


@lab_app.command("probe")
def lab_probe_cmd(
    source: str = typer.Option(..., "--from", help="vm:NAME, host:NODE or outside:ADDR"),
    target: str = typer.Option(..., "--to", help="vm:NAME, host:NODE or outside:ADDR"),
    tcp: int | None = typer.Option(None, "--tcp"),
    udp: int | None = typer.Option(None, "--udp"),
    icmp: str | None = typer.Option(None, "--icmp", help="ICMP type (echo-request)"),
    family: str | None = typer.Option(None, "--family", help="ipv4 or ipv6"),
    timeout: float = typer.Option(1.0, "--timeout"),
    name: str = typer.Option("zw", "--name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One real connection attempt: delivered, blocked or refused (exit 0 if delivered, 3 if not)."""
    from ..lab.cluster import LabError, LabState
    from ..lab.probing import Service, probe

    chosen = [(p, v) for p, v in (("tcp", tcp), ("udp", udp), ("icmp", icmp)) if v is not None]
    if len(chosen) != 1:
        err.print("give exactly one of --tcp PORT, --udp PORT, --icmp TYPE")
        raise typer.Exit(2)
    proto, value = chosen[0]
    if proto == "icmp" and value != "echo-request":
        err.print("the lab probes ICMP with echo-request")
        raise typer.Exit(2)
    if family not in (None, "ipv4", "ipv6"):
        err.print("--family must be ipv4 or ipv6")
        raise typer.Exit(2)
    try:
        state = LabState.load(name)
        result = probe(state, load_policy(state.policy), source, target, Service(proto, None if proto == "icmp" else int(value)), family, timeout)  # type: ignore[arg-type]
    except LabError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if as_json:
        emit_json(result.to_dict())
    else:
        color = "green" if result.delivered else "red"
        console.print(f"{source} -> {target} {proto}/{value}: [{color}]{result.verdict}[/{color}] ({result.elapsed_ms:.1f} ms) {result.detail}")
    raise typer.Exit(0 if result.delivered else 3)


@lab_app.command("matrix")
def lab_matrix_cmd(
    name: str = typer.Option("zw", "--name"),
    family: str = typer.Option("ipv4", "--family"),
    sources: list[str] = typer.Option([], "--from", help="only these sources: vm:NAME, zone:NAME, mgmt, internet (repeatable)"),
    targets: list[str] = typer.Option([], "--to", help="only these targets: vm:NAME, host:NODE, zone:NAME (repeatable)"),
    services: list[str] = typer.Option([], "--service", help="only these services: tcp/PORT, udp/PORT, icmp (repeatable; default: every port the rules name)"),
    timeout: float = typer.Option(0.6, "--timeout", min=0.05, help="seconds a probe waits before it counts as blocked"),
    concurrency: int = typer.Option(64, "--concurrency", min=1, max=1024, help="probes at once (also bounded by the open-file limit)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Probe every source x target x service the policy mentions, with real packets."""
    from ..lab.cluster import LabState
    from ..lab.probing import reachability_matrix
    from ..lab.report import print_matrix
    from .progress import progress

    if family not in ("ipv4", "ipv6"):
        err.print("--family must be ipv4 or ipv6")
        raise typer.Exit(2)
    state = LabState.load(name)
    with progress(err, f"probing ({family})") as tick:
        matrix = reachability_matrix(state, load_policy(state.policy), family, timeout, sources=sources or None,  # type: ignore[arg-type]
                                     targets=targets or None, services=services or None, concurrency=concurrency, progress=tick)
    if as_json:
        emit_json(matrix)
    else:
        print_matrix(console, matrix, title=f"measured reachability ({family})")
