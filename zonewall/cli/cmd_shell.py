"""`zonewall --version` and `zonewall completion SHELL` (tab completion of commands,
options and choices for bash, zsh and fish)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import typer
from typer._completion_classes import completion_init

from .root import app

SHELLS = ("bash", "zsh", "fish")


def zonewall_version() -> str:
    try:
        return package_version("zonewall")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


# Typer registers its shell classes only with add_completion (which would add
# --install-completion, guessing the shell); the scripts printed below need them.
completion_init()


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"zonewall {zonewall_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="print the version and exit"),
) -> None:
    """zonewall: zone-based stateful nftables firewall for VM clusters"""


@app.command()
def completion(shell: str = typer.Argument(..., help="bash, zsh or fish")) -> None:
    """Print the shell's completion script: `eval "$(zonewall completion bash)"` (or put it in
    /etc/bash_completion.d/zonewall, ~/.zfunc/_zonewall, ~/.config/fish/completions/zonewall.fish)."""
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        typer.echo(f"error: unknown shell {shell!r} (expected one of {', '.join(SHELLS)})", err=True)
        raise typer.Exit(2)
    typer.echo(get_completion_script(prog_name="zonewall", complete_var="_ZONEWALL_COMPLETE", shell=shell))
