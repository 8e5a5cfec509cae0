"""A throwaway PostgreSQL server for tests and benchmarks (Debian's `postgresql` package).

`initdb` in a temporary directory, owned by the `postgres` user when we are root
(PostgreSQL refuses to run as root), listening on 127.0.0.1 only, on a free port, with
its Unix socket in the same directory. Trust authentication is safe there: nothing
but this machine's loopback reaches it, and everything is removed at `stop`.

It fails loudly (PostgresError) when the server cannot be had: tests that need it
must fail rather than skip.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_ROOTS = (Path("/usr/lib/postgresql"),)  # Debian: /usr/lib/postgresql/<major>/bin


PREFIX = "zonewall-pg-"  # + the owning process id: see remove_orphans


class PostgresError(RuntimeError):
    pass


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (tests use it for what dead test processes left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans() -> list[Path]:
    """Stop and remove the servers of processes that died without stopping theirs."""
    removed = []
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = directory.name[len(PREFIX):].split("-")[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        server = TemporaryPostgres.__new__(TemporaryPostgres)
        server.directory, server._as_postgres = directory, os.geteuid() == 0
        try:
            server._bin = server_bin()
        except PostgresError:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            server.stop()
        removed.append(directory)
    return removed


def server_bin() -> Path:
    """The newest installed server's bin directory."""
    versions: list[tuple[int, Path]] = []
    for root in SERVER_ROOTS:
        for candidate in root.glob("*/bin/initdb") if root.is_dir() else ():
            if candidate.parent.name == "bin" and candidate.parent.parent.name.isdigit():
                versions.append((int(candidate.parent.parent.name), candidate.parent))
    if not versions:
        raise PostgresError("PostgreSQL's server is not installed (Debian package `postgresql`; `make deps` installs it)")
    return max(versions)[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPostgres:
    """`with TemporaryPostgres() as pg: url = pg.create_database()`."""

    def __init__(self, *, durable: bool = False) -> None:
        # Tests do not need a commit to survive a power loss: without fsync the suite
        # runs several times faster. Benchmarks ask for the durable default.
        self.durable = durable
        self.directory: Path | None = None
        self.port = 0
        self._bin = server_bin()
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0

    # -- life cycle -----------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            output = getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or ""
            raise PostgresError(f"{' '.join(argv[:2])} failed: {exc}\n{output}") from None

    def start(self) -> TemporaryPostgres:
        self.directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        if self._as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("no `postgres` user: is Debian's postgresql package installed?") from None
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        data = self.directory / "data"
        self._run(str(self._bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        options = ["-p {port}", f"-k {self.directory}", "-c listen_addresses=127.0.0.1", "-c max_connections=400"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for _attempt in range(5):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            try:
                self._run(str(self._bin / "pg_ctl"), "-D", str(data), "-l", str(self.directory / "server.log"), "-w", "-t", "60",
                          "-o", " ".join(options).format(port=self.port), "start")
                return self
            except PostgresError:
                log = self.directory / "server.log"
                if "could not bind" not in (log.read_text() if log.exists() else ""):
                    raise PostgresError(f"PostgreSQL did not start: {log.read_text() if log.exists() else 'no log'}") from None
        raise PostgresError("PostgreSQL found no free port")

    def stop(self) -> None:
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run(str(self._bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
            except PostgresError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin_sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as connection:
            connection.execute(statement)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = name or f"zw{os.getpid()}_{next(self._names)}"
        self.admin_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
