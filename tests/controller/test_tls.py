"""HTTPS when certificates are given; the agent's client verifies the controller."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.controller.live import three_tier_documents
from zonewall.agent.client import ControllerClient, ControllerUnavailable
from zonewall.controller.store.db import open_database
from zonewall.controller.store.tokens import create_token


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_controller_and_a_verifying_agent_client(tmp_path: Path, db_url: str) -> None:
    cert, key = self_signed(tmp_path)
    sessions = open_database(db_url)
    admin = create_token(sessions, "admin")[1]
    agent = create_token(sessions, "agent", node="node1")[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "zonewall.cli", "serve", "--db", db_url, "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("zonewall controller listening on https://127.0.0.1:"), line
        url = line.split("listening on ", 1)[1].strip()
        trust = ssl.create_default_context(cafile=str(cert))
        for _ in range(100):
            try:
                httpx.get(url + "/openapi.json", verify=trust, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        headers = {"Authorization": f"Bearer {admin}"}
        assert httpx.put(url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=headers, verify=trust).status_code == 201
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/api/v1/policy", headers=headers)  # not signed by a CA the system trusts
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http") + "/api/v1/policy", headers=headers)  # no clear text on a TLS port

        trusting = ControllerClient(url, agent, "node1", ca=str(cert))
        answer = trusting.desired(None, 0)
        assert answer.changed and answer.revision == 1
        trusting.close()
        untrusting = ControllerClient(url, agent, "node1")
        with pytest.raises(ControllerUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            untrusting.desired(None, 0)
        untrusting.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
        sessions.kw["bind"].dispose()
