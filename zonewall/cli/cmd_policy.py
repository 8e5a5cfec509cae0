"""`zonewall check`, `compile`, `apply`, `confirm`: a policy on this node."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..compiler.schedule import local_timezone
from .root import app, console, emit_json, err, load


@app.command()
def check(policy: Path = typer.Argument(..., help="policy file or directory"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a policy: every problem with file:line:col; exit 1 if any."""
    loaded = load(policy, as_json)
    summary = {
        "hosts": len(loaded.doc.hosts),
        "networks": len(loaded.doc.networks),
        "zones": len(loaded.doc.zones),
        "vms": len(loaded.doc.vms),
        "rules": len(loaded.rules),
        "groups": len(loaded.doc.groups),
    }
    if as_json:
        from ..compiler.coverage import not_enforced

        emit_json({"ok": True, "problems": [], "summary": summary, "not_enforced": not_enforced(loaded)})
    else:
        console.print("[green]ok[/green]: " + ", ".join(f"{v} {k}" for k, v in summary.items()))


@app.command(name="compile")
def compile_cmd(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    host: str = typer.Option(..., "--host", help="node to compile for"),
    fmt: str = typer.Option("nft", "--format", help="nft (readable) or json (libnftables)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write to a file instead of stdout"),
) -> None:
    """Compile the policy into one node's nftables ruleset."""
    from ..compiler import ir
    from ..compiler.node import UnknownNode, compile_node

    loaded = load(policy)
    if fmt not in ("nft", "json"):
        err.print("--format must be nft or json")
        raise typer.Exit(2)
    from .progress import phase

    try:
        with phase(err, f"compiling {host}"):
            ruleset = compile_node(loaded, host, timezone=local_timezone())
    except UnknownNode as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    if fmt == "json":
        text = ir.dumps(ir.to_json(ruleset), pretty=True)
    else:
        from ..compiler.render import render_nft

        text = render_nft(ruleset)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def apply(
    policy: Path = typer.Argument(..., help="policy file or directory"),
    host: str = typer.Option(..., "--host", help="the node this runs on"),
    confirm: float | None = typer.Option(None, "--confirm", help="revert automatically unless confirmed within SECONDS"),
    force: bool = typer.Option(False, "--force", help="apply even if it would lock everyone out of ssh"),
    netns_name: str | None = typer.Option(None, "--netns", help="apply inside this named network namespace"),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="where pending reverts are kept"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Apply one node's ruleset atomically (zonewall's tables only)."""
    from ..analysis.lockout import lockout_problem
    from ..compiler.node import UnknownNode, compile_node
    from ..dataplane.apply import VerifyError, apply_ruleset
    from ..dataplane.backend import LibNftBackend, NftError
    from ..dataplane.confirm import arm_revert

    loaded = load(policy, as_json)
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
        emit_json(report)
    else:
        console.print(f"[green]applied[/green] on {host} ({result.mode}, {result.commands} commands), fingerprint {result.fingerprint[:12]}")
    if confirm is not None and not as_json:
        _wait_for_confirmation(host, confirm, state_dir)


def _wait_for_confirmation(host: str, seconds: float, state_dir: Path | None) -> None:
    """Interactive confirm: Enter keeps the ruleset; no answer (or a dead ssh) reverts."""
    import select

    from ..dataplane.confirm import confirm_pending

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
    state_dir: Path | None = typer.Option(None, "--state-dir"),
) -> None:
    """Keep a ruleset applied with --confirm (cancel its automatic revert)."""
    from ..dataplane.confirm import confirm_pending, last_revert

    if confirm_pending(host, state_dir=state_dir):
        console.print(f"[green]confirmed[/green] on {host}")
        return
    last = last_revert(host, state_dir=state_dir)
    err.print(f"nothing pending on {host}" + (" (it was already reverted)" if last else ""))
    raise typer.Exit(1)
