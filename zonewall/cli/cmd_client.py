"""Client verbs against a controller: push, pull, status, revisions, rollback, nodes.

They find the controller and the token through a profile file, the environment and
flags (zonewall/client/profile.py). Exit status: 0 done; 1 refused or failed (a
rejected policy, a conflict, nodes not in sync for `status`); 2 bad usage. A failed
call is one line (reads: through the root group, cli/user_errors.py; writes print a
refused policy's file:line:col lines first).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..client.api import Api, ClientError
from ..client.profile import ProfileError, resolve
from .root import app, console, err

PROFILE = typer.Option(None, "--profile", envvar="ZONEWALL_PROFILE", help="profile of the client file (~/.config/zonewall/client.toml)")
URL = typer.Option(None, "--controller", help="the controller's URL (else $ZONEWALL_CONTROLLER, the profile, http://127.0.0.1:9440)")
TOKEN = typer.Option(None, "--token", help="an API token (else $ZONEWALL_TOKEN, the profile)")
TOKEN_FILE = typer.Option(None, "--token-file", help="read the token from this file (mode 600)")
CA = typer.Option(None, "--ca", help="CA certificate of the controller (else $ZONEWALL_CA, the profile)")
JSON = typer.Option(False, "--json", help="the API's answer as JSON")


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")


def connect(profile: str | None, url: str | None, token: str | None, token_file: Path | None, ca: Path | None) -> Api:
    try:
        return Api(resolve(profile, url, token, token_file, ca))
    except (ProfileError, ClientError) as exc:
        fail(exc, code=2)
        raise AssertionError from None  # fail() raised


def fail(exc: Exception, code: int = 1) -> None:
    for problem in getattr(exc, "problems", []):
        sys.stderr.write(f"{problem}\n")  # file:line:col lines, as `zonewall check` prints them
    err.print(f"[red]error[/red]: {exc}", highlight=False)
    raise typer.Exit(code)


def emit(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=1, sort_keys=True) + "\n")


def show_preview(answer: dict[str, Any], action: str) -> None:
    from ..analysis.render import print_diff_json

    changed = answer["documents"]
    for kind in ("added", "modified", "removed"):
        for name in changed[kind]:
            console.print(f"  {kind:<8} {name}", highlight=False)
    print_diff_json(console, answer["diff"])
    console.print(f"{action} against revision {answer['base_revision']}", highlight=False)


def confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        err.print("not asking without a terminal: add --yes to commit (or --dry-run to only look)")
        raise typer.Exit(2)
    if not typer.confirm(question, default=False):
        err.print("nothing committed")
        raise typer.Exit(1)


def committed(answer: dict[str, Any]) -> None:
    revision = answer["revision"]
    flows = len((revision.get("diff") or {}).get("flows", []))
    if answer["created"]:
        console.print(f"[green]revision {revision['number']}[/green] committed ({flows} flow(s) changed); the agents apply it now")
    else:
        console.print(f"nothing new: identical to revision {revision['number']}")


@app.command()
def push(
    directory: Path = typer.Argument(..., help="the policy directory (every *.yaml under it; names kept)"),
    message: str = typer.Option("", "--message", "-m", help="why: recorded in the revision"),
    yes: bool = typer.Option(False, "--yes", "-y", help="commit without asking"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would change, commit nothing"),
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA, as_json: bool = JSON,
) -> None:
    """Upload a policy directory as a new revision: shows the semantic diff, asks, commits."""
    from ..policy.documents import read_directory
    from ..policy.errors import PolicyError

    try:
        documents = read_directory(directory)
    except PolicyError as exc:
        fail(ClientError(str(exc.problems[0]) if exc.problems else str(exc)), code=2)
    body = {"documents": documents, "message": message}
    with connect(profile, url, token, token_file, ca) as api:
        try:
            answer = api.call("PUT", "/policy", params={"dry_run": "true"}, json=body)
            if answer["identical"]:
                if as_json:
                    emit(answer)
                else:
                    console.print(f"nothing to push: {directory} equals revision {answer['base_revision']}")
                return
            if as_json and (dry_run or not yes):
                emit(answer)
                if dry_run:
                    return
            elif not as_json:
                show_preview(answer, "would commit" if dry_run else "to commit")
            if dry_run:
                return
            confirm(yes, f"commit these changes as revision {answer['base_revision'] + 1}?")
            result = api.call("PUT", "/policy", json={**body, "base_revision": answer["base_revision"]})
        except ClientError as exc:
            if exc.status == 409:
                exc = ClientError(f"{exc}; someone committed since the preview: run push again to see their change in the diff", status=409)
            fail(exc)
    emit(result) if as_json else committed(result)


@app.command()
def pull(
    directory: Path = typer.Argument(..., help="where to write the documents (created if missing)"),
    revision: int | None = typer.Option(None, "--revision", help="an older revision (default: the current one)"),
    prune: bool = typer.Option(False, "--prune", help="also delete policy files here that the revision does not have"),
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA,
) -> None:
    """Write the controller's documents into a directory (e.g. your git checkout)."""
    from ..policy.documents import document_name_problem, write_documents

    with connect(profile, url, token, token_file, ca) as api:
        if revision is None:
            answer = api.call("GET", "/policy")
            number, documents = answer["revision"], answer["documents"]
        else:
            answer = api.call("GET", f"/revisions/{revision}")
            number, documents = answer["number"], answer["documents"]
    for name in documents:
        if document_name_problem(name):  # never write outside the directory
            fail(ClientError(f"the controller sent a document named {name!r}: refused"))
    directory.mkdir(parents=True, exist_ok=True)
    changed = [n for n in sorted(documents) if not (directory / n).is_file() or (directory / n).read_text() != documents[n]]
    write_documents(documents, directory)
    extra = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                   if p.suffix in (".yaml", ".yml") and p.is_file() and ".git" not in p.parts and str(p.relative_to(directory)) not in documents)
    for name in extra:
        if prune:
            (directory / name).unlink()
    console.print(f"revision {number}: {len(documents)} document(s), {len(changed)} written" + (f": {', '.join(changed)}" if changed else ""), highlight=False)
    if extra:
        console.print(("deleted" if prune else "not on the controller (kept; --prune deletes)") + ": " + ", ".join(extra), highlight=False)


def node_table(nodes: list[dict[str, Any]]) -> Table:
    table = Table(header_style="bold")
    for column in ("node", "agent", "state", "applied", "in sync", "drift repairs", "last contact", "last error"):
        table.add_column(column, overflow="fold")
    for n in nodes:
        table.add_row(
            n["name"], "registered" if n["registered"] else "[red]never seen[/red]",
            f"[green]{n['state']}[/green]" if n["state"] == "ok" else f"[red]{n['state']}[/red]",
            str(n["applied_revision"] if n["applied_revision"] is not None else "-"),
            "[green]yes[/green]" if n["in_sync"] else "[red]no[/red]", str(n["drift_repairs"]),
            _when(n.get("last_contact")), (n.get("last_error") or "")[:200],
        )
    return table


@app.command()
def status(
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA, as_json: bool = JSON,
) -> None:
    """The current revision, each node's applied revision, drift repairs and errors (exit 1 unless all in sync)."""
    with connect(profile, url, token, token_file, ca) as api:
        nodes = api.call("GET", "/nodes")
        history = api.call("GET", "/revisions", params={"limit": 1})
        follow = api.call("GET", "/gitops")
    current = history[0] if history else None
    wanted = [n for n in nodes if n["in_policy"]]
    in_sync = all(n["in_sync"] for n in wanted)
    if as_json:
        emit({"current_revision": current, "nodes": nodes, "gitops": follow, "in_sync": in_sync})
    else:
        if current:
            console.print(f"revision {current['number']} by {current['author']} at {_when(current['created_at'])}: {current['message'] or '-'}", highlight=False)
        else:
            console.print("no policy yet (zonewall push DIR)")
        if follow.get("enabled"):
            state = follow.get("state", "?")
            console.print(f"following {follow['repository']} {follow['branch']}: {state}"
                          + (f" at {follow['last_commit'][:12]}" if follow.get("last_commit") else "")
                          + (f"; refused {follow['refused_commit'][:12]}: {follow['error']}" if follow.get("refused_commit") else ""), highlight=False)
        console.print(node_table(nodes))
        console.print(f"{sum(n['in_sync'] for n in wanted)} of {len(wanted)} node(s) in sync")
    raise typer.Exit(0 if in_sync else 1)


@app.command()
def nodes(
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA, as_json: bool = JSON,
) -> None:
    """The inventory: every registered agent and every host of the policy."""
    with connect(profile, url, token, token_file, ca) as api:
        found = api.call("GET", "/nodes")
    if as_json:
        emit(found)
        return
    table = Table(header_style="bold")
    for column in ("node", "in policy", "agent version", "hostname", "last contact", "applied", "state", "taps"):
        table.add_column(column, overflow="fold")
    for n in found:
        table.add_row(n["name"], "yes" if n["in_policy"] else "no", n.get("agent_version") or "-", n.get("hostname") or "-",
                      _when(n.get("last_contact")), str(n["applied_revision"] if n["applied_revision"] is not None else "-"),
                      n["state"], str(len(n.get("taps") or {})))
    console.print(table)


@app.command()
def revisions(
    number: int | None = typer.Argument(None, help="show this revision with its semantic diff"),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    before: int | None = typer.Option(None, "--before", help="only revisions older than this (paging)"),
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA, as_json: bool = JSON,
) -> None:
    """The policy's history, newest first (or one revision and its diff)."""
    from ..analysis.render import print_diff_json

    with connect(profile, url, token, token_file, ca) as api:
        if number is not None:
            found = api.call("GET", f"/revisions/{number}", params={"documents": "false"})
        else:
            params: dict[str, Any] = {"limit": limit}
            if before is not None:
                params["before"] = before
            found = api.call("GET", "/revisions", params=params)
    if as_json:
        emit(found)
        return
    if number is not None:
        console.print(f"revision {found['number']} ({found['kind']}) by {found['author']} at {_when(found['created_at'])}: {found['message'] or '-'}", highlight=False)
        if found.get("change"):
            console.print(f"change: {json.dumps(found['change'], sort_keys=True)}", highlight=False)
        if found.get("diff"):
            print_diff_json(console, found["diff"])
        else:
            console.print(found.get("diff_error") or "diff not computed yet")
        return
    table = Table(header_style="bold")
    for column in ("revision", "time (UTC)", "author", "kind", "flows changed", "message"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(str(r["number"]), _when(r["created_at"]), r["author"], r["kind"],
                      "-" if r["flows_changed"] is None else str(r["flows_changed"]), r["message"] or "")
    console.print(table)
    if found and found[-1]["number"] > 1:
        err.print(f"older: --before {found[-1]['number']}")


@app.command()
def rollback(
    number: int = typer.Argument(..., help="the revision whose documents become current again"),
    message: str = typer.Option("", "--message", "-m"),
    yes: bool = typer.Option(False, "--yes", "-y", help="commit without asking"),
    profile: str | None = PROFILE, url: str | None = URL, token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE, ca: Path | None = CA, as_json: bool = JSON,
) -> None:
    """Make revision N's documents current again (a new revision): shows the diff, asks, commits."""
    with connect(profile, url, token, token_file, ca) as api:
        try:
            answer = api.call("POST", f"/revisions/{number}/rollback", params={"dry_run": "true"}, json={"message": message})
            if answer["base_revision"] == number:
                err.print(f"revision {number} is the current revision: nothing to roll back")
                raise typer.Exit(1)
            if not as_json:
                show_preview(answer, f"rollback to revision {number}")
            confirm(yes, f"roll back to revision {number} (as revision {answer['base_revision'] + 1})?")
            result = api.call("POST", f"/revisions/{number}/rollback", json={"message": message})
        except ClientError as exc:
            fail(exc)
    emit(result) if as_json else committed(result)
