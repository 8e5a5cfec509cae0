"""`zonewall logs`: search the controller's packet log records (GET /api/v1/logs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from .root import app, console, err


@app.command()
def logs(
    profile: str | None = typer.Option(None, "--profile", envvar="ZONEWALL_PROFILE", help="profile of the client file (~/.config/zonewall/client.toml)"),
    controller: str | None = typer.Option(None, "--controller", help="the controller's URL (else $ZONEWALL_CONTROLLER, the profile)"),
    token: str | None = typer.Option(None, "--token", help="an admin or viewer token (else $ZONEWALL_TOKEN, the profile)"),
    token_file: Path | None = typer.Option(None, "--token-file"),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate of the controller"),
    vm: str | None = typer.Option(None, "--vm"),
    zone: str | None = typer.Option(None, "--zone"),
    node: str | None = typer.Option(None, "--node"),
    address: str | None = typer.Option(None, "--address", help="source or destination in this address or CIDR"),
    src: str | None = typer.Option(None, "--src", help="source address or CIDR"),
    dst: str | None = typer.Option(None, "--dst", help="destination address or CIDR"),
    port: int | None = typer.Option(None, "--port", help="destination port"),
    proto: str | None = typer.Option(None, "--proto"),
    verdict: str | None = typer.Option(None, "--verdict", help="drop, reject, accept"),
    rule: str | None = typer.Option(None, "--rule", help="rule id"),
    since: str | None = typer.Option(None, "--since", help="epoch seconds or ISO time"),
    until: str | None = typer.Option(None, "--until"),
    text: str | None = typer.Option(None, "--grep", "-q", help="free text"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    cursor: str | None = typer.Option(None, "--cursor", help="the next-page cursor printed by a previous call"),
    as_json: bool = typer.Option(False, "--json", help="the API's answer as JSON"),
) -> None:
    """Search packet log records (denied packets): newest first, filters combine."""
    from ..client.api import Api
    from ..client.profile import resolve

    params: dict[str, Any] = {k: v for k, v in {
        "vm": vm, "zone": zone, "node": node, "address": address, "src": src, "dst": dst, "port": port, "proto": proto,
        "verdict": verdict, "rule": rule, "since": since, "until": until, "q": text, "limit": limit, "cursor": cursor,
    }.items() if v is not None}
    with Api(resolve(profile, controller, token, token_file, ca), timeout=30.0) as api:
        body = api.call("GET", "/logs", params=params)  # errors: one line (cli/user_errors.py)
    if as_json:
        typer.echo(json.dumps(body))
        return
    for r in body["records"]:
        when = datetime.fromtimestamp(r["time"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        port_text = f":{r['dport']}" if r.get("dport") is not None else ""
        extra = f" type {r['icmp_type']}" if r.get("icmp_type") is not None else ""
        console.print(
            f"{when} {r['node']} {r.get('vm') or '-'} {r.get('direction') or '-'} {r.get('verdict') or '-'} "
            f"{r.get('proto') or '-'}{extra} {r.get('src') or '-'} -> {r.get('dst') or '-'}{port_text} "
            f"rule {r.get('rule') or '-'} ({r.get('level') or '-'}{', zone ' + r['zone'] if r.get('zone') else ''})",
            highlight=False, markup=False,
        )
    if body.get("next"):
        err.print(f"more: --cursor {body['next']}")
