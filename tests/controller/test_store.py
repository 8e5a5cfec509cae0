"""Migrations, the token CLI, `serve` options, document names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from typer.testing import CliRunner

from zonewall.cli import app
from zonewall.controller.server import Listen, parse_listen
from zonewall.controller.store.db import SCHEMA_SCRIPTS, default_url, make_engine, open_database, upgrade
from zonewall.controller.store.tokens import authenticate
from zonewall.policy.documents import document_name_problem, read_directory

runner = CliRunner()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(SCHEMA_SCRIPTS))
    return str(ScriptDirectory.from_config(config).get_current_head())


def test_migrations_create_the_schema_and_are_idempotent(db_url: str) -> None:
    open_database(db_url).kw["bind"].dispose()  # type: ignore[union-attr]
    engine = make_engine(db_url)
    upgrade(engine)  # a second start: nothing to do, nothing fails
    tables = set(inspect(engine).get_table_names())
    assert {"revisions", "tokens", "nodes", "node_logs", "alembic_version", "log_records", "log_batches", "log_stats", "rule_counters",
            "diff_jobs", "idempotency_keys", "revision_floor", "log_rollup", "revision_diffs"} <= tables
    with engine.connect() as connection:
        assert connection.exec_driver_sql("select version_num from alembic_version").scalar() == head_revision()
    engine.dispose()


def test_token_cli_creates_a_working_hashed_token(db_url: str) -> None:
    result = runner.invoke(app, ["token", "create", "--role", "agent", "--node", "node1", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout.strip().splitlines()[-1])
    sessions = open_database(db_url)
    principal = authenticate(sessions, created["token"])
    assert principal is not None and (principal.role, principal.node) == ("agent", "node1")
    with sessions() as session:
        stored = session.connection().exec_driver_sql("select secret_hash from tokens").scalars().all()
    assert created["token"] not in stored and len(stored) == 1
    listed = runner.invoke(app, ["token", "list", "--db", db_url])
    assert "agent-node1" in listed.stdout and created["token"] not in listed.stdout
    assert runner.invoke(app, ["token", "revoke", str(created["id"]), "--db", db_url]).exit_code == 0
    assert authenticate(sessions, created["token"]) is None
    sessions.kw["bind"].dispose()  # type: ignore[union-attr]


def test_the_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "create", "--role", "admin", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    secret = json.loads(result.stdout.strip().splitlines()[-1])["token"]
    assert (tmp_path / "zonewall.db").is_file() and secret.encode() not in (tmp_path / "zonewall.db").read_bytes()
    assert authenticate(open_database(default_url(tmp_path)), secret) is not None


def test_token_cli_refuses_bad_roles(tmp_path: Path) -> None:
    assert runner.invoke(app, ["token", "create", "--role", "agent", "--data-dir", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["token", "create", "--role", "superuser", "--data-dir", str(tmp_path)]).exit_code == 2


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9440") == Listen("127.0.0.1", 9440)
    assert parse_listen("[::1]:9441") == Listen("::1", 9441)
    assert parse_listen("169.254.0.1:9440@zwl-demo-out") == Listen("169.254.0.1", 9440, "zwl-demo-out")
    for bad in ("localhost:9440", "127.0.0.1", "1.2.3.4:99999", "1.2.3.4:80@../x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem")])
    assert result.exit_code == 2


def test_document_names() -> None:
    assert document_name_problem("zones.yaml") is None and document_name_problem("vms/web.yml") is None
    for bad in ("../x.yaml", "/x.yaml", ".x.yaml", "x.txt", "a//b.yaml", "a/./b.yaml"):
        assert document_name_problem(bad), bad


def test_read_directory_keeps_relative_names(tmp_path: Path) -> None:
    (tmp_path / "vms").mkdir()
    (tmp_path / "base.yaml").write_text("version: 1\n")
    (tmp_path / "vms" / "web.yaml").write_text("vms: {}\n")
    assert read_directory(tmp_path) == {"base.yaml": "version: 1\n", "vms/web.yaml": "vms: {}\n"}
