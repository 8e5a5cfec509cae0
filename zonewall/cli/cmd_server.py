"""Central management verbs: `serve` (controller), `agent` (node), `token` (API tokens)."""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import time
from pathlib import Path

import typer

from ..service.config import config_option
from .root import app, console, err

token_app = typer.Typer(help="API tokens of the controller (admin, viewer, per-node agent)", no_args_is_help=True)
app.add_typer(token_app, name="token")


def sessions(db: str | None, data_dir: Path | None):
    from ..controller.store.db import open_database, resolve_url

    return open_database(resolve_url(db, data_dir))


@app.command()
def serve(
    config: Path | None = config_option("/etc/zonewall/controller.yaml"),
    db: str | None = typer.Option(None, "--db", help="SQLAlchemy database URL (default: SQLite in --data-dir)"),
    listen: list[str] = typer.Option(["127.0.0.1:9440"], "--listen", help="ADDR:PORT (repeatable; ADDR:PORT@NETNS listens inside a named netns)"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="serve HTTPS with this certificate (PEM)"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="the certificate's private key (PEM)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="where the SQLite database lives (default /var/lib/zonewall/controller)"),
    access_log: bool = typer.Option(False, "--access-log", help="log every request"),
    max_body_mib: int = typer.Option(80, "--max-body-mib", min=1, help="largest API request body (a whole policy upload), MiB"),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.5, help="seconds a client has to send a whole request head"),
    max_connections: int = typer.Option(0, "--max-connections", min=0, help="open client connections at most; the longest idle are closed for new ones (0: the open-file limit minus a reserve)"),
    login_rate: float = typer.Option(20.0, "--login-rate", min=1, help="login attempts per minute and client address"),
    write_rate: float = typer.Option(120.0, "--write-rate", min=1, help="policy writes per minute and client address"),
    git_repo: str | None = typer.Option(None, "--git-repo", help="follow this git repository (URL or path): each new commit becomes a revision"),
    git_branch: str = typer.Option("main", "--git-branch", help="the branch to follow"),
    git_path: str = typer.Option("", "--git-path", help="the policy directory inside the repository"),
    git_interval: float = typer.Option(15.0, "--git-interval", min=1.0, help="seconds between two fetches (POST /api/v1/gitops/sync fetches at once)"),
) -> None:
    """Run the controller: REST API (OpenAPI at /docs), policy revisions, node inventory."""
    from ..controller.connections import ConnectionLimits
    from ..controller.gitops import GitSource
    from ..controller.limits import MIB, RequestLimits
    from ..controller.server import parse_listen
    from ..controller.server import serve as run_server
    from ..controller.store.db import DEFAULT_DATA_DIR, resolve_url

    if bool(tls_cert) != bool(tls_key):
        err.print("--tls-cert and --tls-key go together")
        raise typer.Exit(2)
    try:
        listens = [parse_listen(text) for text in listen]
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    gitops = (GitSource(git_repo, git_branch, git_path, git_interval), (data_dir or DEFAULT_DATA_DIR) / "gitops") if git_repo else None
    run_server(resolve_url(db, data_dir), listens, str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None, access_log,
               RequestLimits(max_body=max_body_mib * MIB, login_per_minute=login_rate, writes_per_minute=write_rate),
               ConnectionLimits(header_timeout=header_timeout, max_connections=max_connections), gitops=gitops)


@app.command()
def agent(
    config: Path | None = config_option("/etc/zonewall/agent.yaml"),
    controller: list[str] = typer.Option(..., "--controller", help="a controller's URL, e.g. https://ctl1.example:9440; repeat it or give a comma-separated list for replicas (the agent fails over between them)"),
    host: str = typer.Option(..., "--host", help="this node's name in the policy"),
    token: str | None = typer.Option(None, "--token", envvar="ZONEWALL_TOKEN", help="the node's agent token (or $ZONEWALL_TOKEN)"),
    token_file: Path | None = typer.Option(None, "--token-file", help="read the token from this file"),
    state_dir: Path = typer.Option(Path("/var/lib/zonewall/agent"), "--state-dir", help="last applied state and the hook socket"),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate that signed the controller's certificate"),
    netns_name: str | None = typer.Option(None, "--netns", help="manage nftables in this named netns (default: the agent's own)"),
    verify_interval: float = typer.Option(5.0, "--verify-interval", help="seconds between readback checks (besides nft monitor)"),
    counter_interval: float = typer.Option(5.0, "--counter-interval", envvar="ZONEWALL_COUNTER_INTERVAL", help="seconds between two readings of the rule counters"),
    log_buffer: int = typer.Option(100_000, "--log-buffer", envvar="ZONEWALL_LOG_BUFFER", help="packet log records kept on disk while the controller is away (oldest dropped first)"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run a node agent: follow the controller, apply, repair drift, keep the last state."""
    from ..agent.daemon import Agent, AgentConfig
    from ..service.logs import setup_logging

    setup_logging(f"agent[{host}]", verbose)
    secret = token_file.read_text().strip() if token_file else token
    if not secret:
        err.print("give the agent token: --token, --token-file or $ZONEWALL_TOKEN")
        raise typer.Exit(2)
    if ca is not None and not ca.is_file():
        err.print(f"--ca {ca}: no such file")
        raise typer.Exit(2)
    from ..agent.client import parse_controllers

    try:
        controllers = parse_controllers(controller)
    except ValueError as exc:
        err.print(f"--controller: {exc}")
        raise typer.Exit(2) from None
    agent_config = AgentConfig(controllers, host, secret, state_dir, str(ca) if ca else None, netns_name, verify_interval,
                         counter_interval=counter_interval, log_buffer=log_buffer)
    daemon = Agent(agent_config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: daemon.stop())
    # `kill -USR1` writes every thread's stack to stderr (the journal): an agent that
    # stopped turning can be diagnosed where it runs, without a debugger
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError):  # a stderr without a file descriptor (run in-process by tests): no dumps
        pass
    notifier = systemd_notifier(daemon, verify_interval)
    try:
        daemon.run()
    finally:
        notifier.stop()


def systemd_notifier(daemon, verify_interval: float):
    """READY=1 once a ruleset is applied (restored from disk or the controller's),
    the watchdog fed while the main loop turns (it wakes every --verify-interval)."""
    from ..service.sdnotify import ServiceNotifier

    def status() -> str:
        state, error = daemon.enforcer.state, daemon.enforcer.last_error
        applied = f"revision {state.revision} applied" if state else "waiting for a first ruleset"
        return f"{applied}; error: {error}" if error else applied

    stall = max(60.0, 4 * verify_interval)  # an apply of a large ruleset takes a while
    return ServiceNotifier(ready=lambda: daemon.enforcer.state is not None, alive=lambda: time.monotonic() - daemon.last_turn < stall,
                           status=status).start()


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="admin, viewer or agent"),
    node: str | None = typer.Option(None, "--node", help="agent tokens: the node"),
    name: str | None = typer.Option(None, "--name", help="a label (default: the role, or agent-NODE)"),
    db: str | None = typer.Option(None, "--db"),
    data_dir: Path | None = typer.Option(None, "--data-dir"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a token in the controller's database; prints the secret once."""
    from ..controller.store.tokens import TokenError, create_token

    try:
        row, secret = create_token(sessions(db, data_dir), role, name, node)
    except TokenError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps({"id": row.id, "name": row.name, "role": row.role, "node": row.node, "token": secret}) + "\n")
    else:
        sys.stdout.write(secret + "\n")  # alone on stdout: `TOKEN=$(zonewall token create ...)`
        err.print(f"token {row.id} ({row.name}, {row.role}{' for ' + row.node if row.node else ''}) created; the secret is not shown again")


@token_app.command("list")
def token_list(db: str | None = typer.Option(None, "--db"), data_dir: Path | None = typer.Option(None, "--data-dir")) -> None:
    """List tokens (never their secrets)."""
    from ..controller.store.tokens import list_tokens

    for row in list_tokens(sessions(db, data_dir)):
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        console.print(f"{row.id:>4}  {row.role:<7} {row.node or '-':<12} {row.name:<24} {status}")


@token_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(...), db: str | None = typer.Option(None, "--db"), data_dir: Path | None = typer.Option(None, "--data-dir")) -> None:
    """Revoke a token by its id."""
    from ..controller.store.tokens import revoke_token

    if not revoke_token(sessions(db, data_dir), token_id):
        err.print(f"no active token {token_id}")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")
