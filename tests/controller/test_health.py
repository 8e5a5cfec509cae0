"""/healthz and /readyz: open to anyone, /readyz says 503 when the database is gone."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from zonewall.controller.replica import Controller


def test_health_and_readiness(client: TestClient, controller: Controller) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "revisions": "ok"}
    working = controller.sessions
    try:  # the database stops answering
        from sqlalchemy import create_engine

        controller.sessions = sessionmaker(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}))
        broken = client.get("/readyz")
        assert broken.status_code == 503 and broken.json()["checks"]["database"].startswith("error")
        assert client.get("/healthz").status_code == 200  # alive all the same: no restart loop for a database outage
    finally:
        controller.sessions = working
    assert client.get("/readyz").status_code == 200
