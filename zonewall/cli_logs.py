"""`zonewall logs`: search the controller's packet log records (GET /api/v1/logs)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console


def register(app: typer.Typer, console: Console, err: Console) -> None:
    @app.command()
    def logs(
        controller: str = typer.Option("http://127.0.0.1:9440", "--controller", envvar="ZONEWALL_CONTROLLER", help="the controller's URL"),
        token: Optional[str] = typer.Option(None, "--token", envvar="ZONEWALL_TOKEN", help="an admin or viewer token (or $ZONEWALL_TOKEN)"),
        token_file: Optional[Path] = typer.Option(None, "--token-file"),
        ca: Optional[Path] = typer.Option(None, "--ca", help="CA certificate of the controller"),
        vm: Optional[str] = typer.Option(None, "--vm"),
        zone: Optional[str] = typer.Option(None, "--zone"),
        node: Optional[str] = typer.Option(None, "--node"),
        address: Optional[str] = typer.Option(None, "--address", help="source or destination in this address or CIDR"),
        src: Optional[str] = typer.Option(None, "--src", help="source address or CIDR"),
        dst: Optional[str] = typer.Option(None, "--dst", help="destination address or CIDR"),
        port: Optional[int] = typer.Option(None, "--port", help="destination port"),
        proto: Optional[str] = typer.Option(None, "--proto"),
        verdict: Optional[str] = typer.Option(None, "--verdict", help="drop, reject, accept"),
        rule: Optional[str] = typer.Option(None, "--rule", help="rule id"),
        since: Optional[str] = typer.Option(None, "--since", help="epoch seconds or ISO time"),
        until: Optional[str] = typer.Option(None, "--until"),
        text: Optional[str] = typer.Option(None, "--grep", "-q", help="free text"),
        limit: int = typer.Option(50, "--limit", min=1, max=1000),
        cursor: Optional[str] = typer.Option(None, "--cursor", help="the next-page cursor printed by a previous call"),
        as_json: bool = typer.Option(False, "--json", help="the API's answer as JSON"),
    ) -> None:
        """Search packet log records (denied packets): newest first, filters combine."""
        import httpx

        from .agent.client import tls_verify

        secret = token_file.read_text().strip() if token_file else token
        if not secret:
            err.print("give a token: --token, --token-file or $ZONEWALL_TOKEN")
            raise typer.Exit(2)
        params: dict[str, Any] = {k: v for k, v in {
            "vm": vm, "zone": zone, "node": node, "address": address, "src": src, "dst": dst, "port": port, "proto": proto,
            "verdict": verdict, "rule": rule, "since": since, "until": until, "q": text, "limit": limit, "cursor": cursor,
        }.items() if v is not None}
        try:
            response = httpx.get(controller.rstrip("/") + "/api/v1/logs", params=params, headers={"Authorization": f"Bearer {secret}"},
                                 verify=tls_verify(str(ca) if ca else None), timeout=30.0)
        except httpx.HTTPError as exc:
            err.print(f"controller unreachable: {exc}")
            raise typer.Exit(1) from None
        if response.status_code != 200:
            err.print(f"refused ({response.status_code}): {response.text[:500]}")
            raise typer.Exit(1)
        body = response.json()
        if as_json:
            typer.echo(json.dumps(body))
            return
        for r in body["records"]:
            when = datetime.fromtimestamp(r["time"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
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
