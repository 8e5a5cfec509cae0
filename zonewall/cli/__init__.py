"""The `zonewall` command (typer + rich), one module per group of commands.

`root.py` holds the app they all register on; importing a command module registers its
commands, so the order below is the order of `zonewall --help`."""

from . import cmd_policy, cmd_lab, cmd_analysis, cmd_import, cmd_server, cmd_logs, cmd_migrate, cmd_client, cmd_shell, cmd_demo  # noqa: F401, I001 - registers the commands, in this order
from .root import app

__all__ = ["app", "main"]


def main() -> None:
    app()
