"""The `zonewall` command: check, compile, apply, confirm, trace/reach/diff/lint, the lab verbs,
serve/agent/token (central management), the demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .policy.errors import PolicyError
from .policy.loader import load_policy
from .compiler.schedule import local_timezone
from .policy.resolve import Policy

from .cli_errors import ZonewallGroup  # noqa: E402 - every user error one line (cli_errors.py)

app = typer.Typer(help="zonewall: zone-based stateful nftables firewall for VM clusters", no_args_is_help=True, add_completion=False, cls=ZonewallGroup)
lab_app = typer.Typer(help="A virtual cluster of network namespaces built from a policy", no_args_is_help=True)
app.add_typer(lab_app, name="lab")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _emit_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=1, sort_keys=True) + "\n")


def _warn_not_enforced(policy: Policy) -> None:
    from .compiler.coverage import not_enforced

    for note in not_enforced(policy):
        sys.stderr.write(f"warning: {note}\n")


def _load(policy: Path, as_json: bool = False) -> Policy:
    from .cli_progress import phase

    try:
        with phase(err, f"loading {policy}"):
            loaded = load_policy(policy)
    except PolicyError as exc:
        if as_json:
            _emit_json({"ok": False, "problems": [p.to_json() for p in exc.problems]})
        else:
            for problem in exc.problems:  # plain lines: editors and grep read file:line:col
                sys.stderr.write(f"{problem}\n")
            err.print(f"[red]rejected[/red]: {len(exc.problems)} problem(s); nothing was applied")
        raise typer.Exit(1) from None
    if not as_json:
        _warn_not_enforced(loaded)
    return loaded


@app.command()
def check(policy: Path = typer.Argument(..., help="policy file or directory"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a policy: every problem with file:line:col; exit 1 if any."""
    loaded = _load(policy, as_json)
    summary = {
        "hosts": len(loaded.doc.hosts),
        "networks": len(loaded.doc.networks),
        "zones": len(loaded.doc.zones),
        "vms": len(loaded.doc.vms),
        "rules": len(loaded.rules),
        "groups": len(loaded.doc.groups),
    }
    if as_json:
        from .compiler.coverage import not_enforced

        _emit_json({"ok": True, "problems": [], "summary": summary, "not_enforced": not_enforced(loaded)})
    else:
        console.print("[green]ok[/green]: " + ", ".join(f"{v} {k}" for k, v in summary.items()))


@app.command(name="compile")
def compile_cmd(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    host: str = typer.Option(..., "--host", help="node to compile for"),
    fmt: str = typer.Option("nft", "--format", help="nft (readable) or json (libnftables)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write to a file instead of stdout"),
) -> None:
    """Compile the policy into one node's nftables ruleset."""
    from .compiler import ir
    from .compiler.node import UnknownNode, compile_node

    loaded = _load(policy)
    if fmt not in ("nft", "json"):
        err.print("--format must be nft or json")
        raise typer.Exit(2)
    from .cli_progress import phase

    try:
        with phase(err, f"compiling {host}"):
            ruleset = compile_node(loaded, host, timezone=local_timezone())
    except UnknownNode as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    if fmt == "json":
        text = ir.dumps(ir.to_json(ruleset), pretty=True)
    else:
        from .compiler.render import render_nft

        text = render_nft(ruleset)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def apply(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    host: str = typer.Option(..., "--host", help="the node this runs on"),
    confirm: Optional[float] = typer.Option(None, "--confirm", help="revert automatically unless confirmed within SECONDS"),
    force: bool = typer.Option(False, "--force", help="apply even if it would lock everyone out of ssh"),
    netns_name: Optional[str] = typer.Option(None, "--netns", help="apply inside this named network namespace"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="where pending reverts are kept"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Apply one node's ruleset atomically (zonewall's tables only)."""
    from .analysis.lockout import lockout_problem
    from .compiler.node import UnknownNode, compile_node
    from .dataplane.apply import VerifyError, apply_ruleset
    from .dataplane.backend import LibNftBackend, NftError
    from .dataplane.confirm import arm_revert

    loaded = _load(policy, as_json)
    try:
        ruleset = compile_node(loaded, host, timezone=local_timezone())
    except UnknownNode as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    problem = lockout_problem(loaded, host)
    if problem and not force:
        err.print(f"[red]refused[/red]: {problem}", markup=True, highlight=False)
        raise typer.Exit(1)
    try:
        with LibNftBackend(netns=netns_name) as backend:
            result = apply_ruleset(backend, ruleset)
    except (NftError, VerifyError) as exc:
        err.print(f"[red]apply failed[/red], the previous ruleset is still in place: {exc}", highlight=False)
        raise typer.Exit(1) from None
    report = {"host": host, "mode": result.mode, "fingerprint": result.fingerprint, "readback": result.readback_hash, "commands": result.commands}
    if confirm is not None:
        armed = arm_revert(result.snapshot, node=host, timeout=confirm, state_dir=state_dir, netns=netns_name)
        report["revert_deadline"] = armed.deadline
    if as_json:
        _emit_json(report)
    else:
        console.print(f"[green]applied[/green] on {host} ({result.mode}, {result.commands} commands), fingerprint {result.fingerprint[:12]}")
    if confirm is not None and not as_json:
        _wait_for_confirmation(host, confirm, state_dir)


def _wait_for_confirmation(host: str, seconds: float, state_dir: Optional[Path]) -> None:
    """Interactive confirm: Enter keeps the ruleset; no answer (or a dead ssh) reverts."""
    import select

    from .dataplane.confirm import confirm_pending

    hint = f"zonewall confirm --host {host}" + (f" --state-dir {state_dir}" if state_dir else "")
    if not sys.stdin.isatty():
        console.print(f"it reverts in {seconds:g}s unless you run: {hint}")
        return
    console.print(f"press Enter within {seconds:g}s to keep it (or run `{hint}`); otherwise it reverts")
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready and sys.stdin.readline() != "" and confirm_pending(host, state_dir=state_dir):
        console.print("[green]confirmed[/green]")
    else:
        console.print("not confirmed: the previous ruleset is being restored")


@app.command(name="confirm")
def confirm_cmd(
    host: str = typer.Option(..., "--host"),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir"),
) -> None:
    """Keep a ruleset applied with --confirm (cancel its automatic revert)."""
    from .dataplane.confirm import confirm_pending, last_revert

    if confirm_pending(host, state_dir=state_dir):
        console.print(f"[green]confirmed[/green] on {host}")
        return
    last = last_revert(host, state_dir=state_dir)
    err.print(f"nothing pending on {host}" + (" (it was already reverted)" if last else ""))
    raise typer.Exit(1)


# ---------------------------------------------------------------------------- lab


@lab_app.command("up")
def lab_up_cmd(
    policy: Path = typer.Argument(...),
    name: str = typer.Option("zw", "--name"),
    no_apply: bool = typer.Option(False, "--no-apply", help="build the cluster but apply no ruleset"),
) -> None:
    """Build one namespace per node and VM plus `outside`, and apply the policy."""
    from .cli_progress import progress
    from .lab.cluster import LabError, lab_up

    _load(policy)
    try:
        with progress(err, f"lab {name}: guests and nodes") as tick:
            state = lab_up(str(policy), name, apply=not no_apply, progress=tick)
    except LabError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    console.print(f"lab [bold]{name}[/bold] up: {len(state.nodes)} nodes, {len(state.vms)} VMs, outside = {state.outside}")


@lab_app.command("apply")
def lab_apply_cmd(policy: Optional[Path] = typer.Argument(None), name: str = typer.Option("zw", "--name")) -> None:
    """Re-apply the lab's policy (or another one) on every lab node."""
    from .lab.cluster import LabState, apply_policy

    state = LabState.load(name)
    results = apply_policy(state, _load(policy) if policy else None)
    for node, result in results.items():
        console.print(f"{node}: {result.mode}, {result.commands} commands")


@lab_app.command("down")
def lab_down_cmd(name: str = typer.Option("zw", "--name")) -> None:
    """Remove every namespace of the lab (also after a crash)."""
    from .lab.cluster import lab_down

    removed = lab_down(name)
    console.print(f"removed {len(removed)} namespaces")


@lab_app.command("probe")
def lab_probe_cmd(
    source: str = typer.Option(..., "--from", help="vm:NAME, host:NODE or outside:ADDR"),
    target: str = typer.Option(..., "--to", help="vm:NAME, host:NODE or outside:ADDR"),
    tcp: Optional[int] = typer.Option(None, "--tcp"),
    udp: Optional[int] = typer.Option(None, "--udp"),
    icmp: Optional[str] = typer.Option(None, "--icmp", help="ICMP type (echo-request)"),
    family: Optional[str] = typer.Option(None, "--family", help="ipv4 or ipv6"),
    timeout: float = typer.Option(1.0, "--timeout"),
    name: str = typer.Option("zw", "--name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One real connection attempt: delivered, blocked or refused (exit 0 if delivered, 3 if not)."""
    from .lab.cluster import LabError, LabState
    from .lab.probing import Service, probe

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
        _emit_json(result.to_dict())
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
    from .cli_progress import progress
    from .lab.cluster import LabState
    from .lab.probing import reachability_matrix
    from .lab.report import print_matrix

    if family not in ("ipv4", "ipv6"):
        err.print("--family must be ipv4 or ipv6")
        raise typer.Exit(2)
    state = LabState.load(name)
    with progress(err, f"probing ({family})") as tick:
        matrix = reachability_matrix(state, load_policy(state.policy), family, timeout, sources=sources or None,  # type: ignore[arg-type]
                                     targets=targets or None, services=services or None, concurrency=concurrency, progress=tick)
    if as_json:
        _emit_json(matrix)
    else:
        print_matrix(console, matrix, title=f"measured reachability ({family})")


def _load_for_analysis(policy: Path, as_json: bool) -> Policy:
    """_load, but a rejected policy exits 2: for `diff`, 1 means 'different'."""
    try:
        return _load(policy, as_json)
    except typer.Exit as exc:
        raise typer.Exit(2) from exc


from .cli_analysis import register as _register_analysis  # noqa: E402

_register_analysis(app, _load_for_analysis, console, err, _emit_json)

from .cli_import import register as _register_import  # noqa: E402

_register_import(app)

from .cli_server import register as _register_server  # noqa: E402

_register_server(app, console, err)

from .cli_logs import register as _register_logs  # noqa: E402

_register_logs(app, console, err)

from .cli_migrate import register as _register_migrate  # noqa: E402

_register_migrate(app, console, err)

from .cli_client import register as _register_client  # noqa: E402

_register_client(app, console, err)

from .cli_shell import register as _register_shell  # noqa: E402

_register_shell(app)


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="leave the lab up afterwards"),
    example: str = typer.Option("three-tier", "--example", help="a bundled example (three-tier, nas-isolation, microsegmentation) or an example directory"),
    name: str = typer.Option("demo", "--name", help="the lab's name (its namespaces are zwl-NAME-*)"),
    libvirt: bool = typer.Option(False, "--libvirt", help="real QEMU guests under one libvirtd per node instead of namespaces (TCP services; boots take 15-90 s)"),
) -> None:
    """Bring up the lab from an example, apply, show measured vs expected reachability."""
    from .lab.demo import find_example, run_demo

    try:
        directory = find_example(example)
    except FileNotFoundError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if libvirt:
        from .lab.guestdemo import run_libvirt_demo

        raise typer.Exit(run_libvirt_demo(console, directory, keep, name))
    raise typer.Exit(run_demo(console, directory, keep, name))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
