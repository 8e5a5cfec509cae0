"""Every user error of the `zonewall` command is one clear line, never a traceback.

The root command group catches the errors that mean "your input or your setup is
wrong" (a lab that is not up, a namespace that does not exist, a refused policy, an
unreachable controller, ...) wherever they come from in a command, prints them as
one line (a refused policy: its `file:line:col` lines, then one line) and exits 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..client.api import ClientError
    from ..client.profile import ProfileError
    from ..controller.gitops import GitError
    from ..dataplane.apply import VerifyError
    from ..dataplane.backend import NftError
    from ..importers.report import ImportFailure
    from ..lab.cluster import LabError
    from ..lab.managed import ManagedLabError
    from ..lab.netns import NetnsError
    from ..netns import NetnsNotFound
    from ..policy.edits import ChangeError
    from ..policy.errors import PolicyError

    return (ClientError, ProfileError, ChangeError, GitError, VerifyError, NetnsNotFound, NftError, ImportFailure, LabError,
            ManagedLabError, NetnsError, PolicyError, PermissionError, FileNotFoundError)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


class ZonewallGroup(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            from ..policy.errors import PolicyError

            if isinstance(exc, PolicyError):
                for problem in exc.problems:
                    sys.stderr.write(f"{problem}\n")
                sys.stderr.write(f"rejected: {len(exc.problems)} problem(s); nothing was applied\n")
            else:
                sys.stderr.write(f"error: {one_line(exc)}\n")
            raise typer.Exit(1) from None
