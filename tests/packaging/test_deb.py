"""`make deb`'s package, installed on this machine and purged afterwards.

Checked: its files (the virtualenv under /opt/zonewall that runs without the
checkout, /usr/bin/zonewall, the units, the conffiles, the libvirt hook), its
maintainer scripts (the system user, nothing started, purge removes state, config
and user), its units (`systemd-analyze verify`), and the controller started as its
unit starts it (the zonewall user, /etc/zonewall/controller.yaml) telling a notify
socket READY=1 once /readyz answers.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.packaging.conftest import LOCK, ROOT

pytestmark = pytest.mark.kernel  # root: installs a package on this machine
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "-y", "-q"]
UNITS = ("zonewall-agent.service", "zonewall-controller.service")


def dpkg_status(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else "not-installed"


@pytest.fixture(scope="module")
def deb(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run([str(ROOT / "tools/build-deb"), str(wheel), str(LOCK), str(out)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.strip().splitlines()[-1])


def apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(APT + list(args), capture_output=True, text=True, timeout=900, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def test_package_files_and_metadata(deb: Path) -> None:
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Depends: .*libnftables1", info, re.M) and "Package: zonewall" in info
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./lib/systemd/system/zonewall-agent.service", "./lib/systemd/system/zonewall-controller.service", "./etc/zonewall/agent.yaml",
                 "./etc/zonewall/controller.yaml", "./etc/libvirt/hooks/qemu.d/zonewall", "./opt/zonewall/bin/zonewall", "./usr/bin/zonewall -> /opt/zonewall/bin/zonewall",
                 "./usr/share/doc/zonewall/copyright", "site-packages/zonewall/controller/web/templates/login.html"):
        assert path in listing, path
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"conffiles" in control and b"postinst" in control and b"postrm" in control


def test_install_run_and_purge(deb: Path) -> None:
    """One test (the steps depend on each other, and xdist must not split them)."""
    assert dpkg_status("zonewall").split()[-1:] != ["installed"], "zonewall is installed on this machine already: the test would purge it"
    try:
        result = apt("install", "--no-install-recommends", str(deb))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        check_installed_files()
        check_documented_libvirt_node_steps()
        check_controller_as_its_unit_runs_it()
    finally:
        purged = apt("purge", "zonewall")
    assert purged.returncode == 0, purged.stderr
    check_purged()


def check_installed_files() -> None:
    # files in place; the virtualenv's scripts point at /opt/zonewall, never at the build directory
    assert Path("/usr/bin/zonewall").resolve() == Path("/opt/zonewall/bin/zonewall")
    first = Path("/opt/zonewall/bin/zonewall").read_text().splitlines()[0]
    assert first == "#!/opt/zonewall/bin/python", first
    version = subprocess.run(["/usr/bin/zonewall", "--version"], capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert version.stdout.strip() == "zonewall 0.1.0", version
    # maintainer scripts: a system user for the controller, config readable by it only
    user = pwd.getpwnam("zonewall")
    assert user.pw_uid < 1000 and user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert oct(os.stat("/etc/zonewall").st_mode & 0o777) == "0o750"
    conffiles = Path("/var/lib/dpkg/info/zonewall.conffiles").read_text().split()
    assert "/etc/zonewall/agent.yaml" in conffiles and "/etc/zonewall/controller.yaml" in conffiles
    hook = Path("/etc/libvirt/hooks/qemu.d/zonewall")
    assert os.access(hook, os.X_OK) and hook.read_text().startswith("#!/usr/bin/python3\n")
    # units: systemd's own checker
    verify = subprocess.run(["systemd-analyze", "verify", *(f"/lib/systemd/system/{unit}" for unit in UNITS)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    for unit in UNITS:
        text = Path(f"/lib/systemd/system/{unit}").read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text and "--config /etc/zonewall/" in text
    # the agent's config file is what the unit's command reads: every key a known option
    check = subprocess.run(["/usr/bin/zonewall", "agent", "--config", "/etc/zonewall/agent.yaml", "--help"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def documented_steps(heading: str) -> str:
    """The first shell block under `heading` in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index(heading):]
    return section[section.index("```sh") + 5: section.index("```", section.index("```sh") + 5)]


def check_documented_libvirt_node_steps() -> None:
    """docs/operations.md's libvirt node, step by step where this machine allows it (no
    systemd as PID 1, no controller): every file and unit it names is what the package
    installed, the token step runs, and the agent takes the documented config."""
    steps = documented_steps("### A libvirt node")
    for path in set(re.findall(r"(/etc/[\w/.-]+)", steps)) - {"/etc/zonewall/agent.token", "/etc/zonewall/ca.pem"}:
        assert os.path.exists(path), f"docs/operations.md names {path}, the package has no such file"
    for unit in set(re.findall(r"systemctl (?:enable --now|restart) (zonewall-[\w-]+)", steps)):
        assert Path(f"/lib/systemd/system/{unit}.service").is_file(), unit
    assert "apt install ./zonewall_" in steps
    data = Path(tempfile.mkdtemp(prefix="zonewall-doc-"))
    try:
        token = subprocess.run(["/usr/bin/zonewall", "token", "create", "--role", "agent", "--node", "node1", "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=120)
        assert token.returncode == 0 and len(token.stdout.strip()) > 20, token.stderr
        config = Path("/etc/zonewall/agent.yaml").read_text()
        for key in ("controller:", "host:", "token-file: /etc/zonewall/agent.token"):
            assert key in config, key  # what the steps tell the operator to edit, and where the token goes
    finally:
        subprocess.run(["rm", "-rf", str(data)])


def check_controller_as_its_unit_runs_it() -> None:
    """ExecStart of zonewall-controller.service as User=zonewall, with a notify socket as
    systemd gives it: READY=1 comes, /readyz answers, then STOPPING=1 at SIGTERM."""
    unit = Path("/lib/systemd/system/zonewall-controller.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()  # type: ignore[union-attr]
    data = Path(tempfile.mkdtemp(prefix="zonewall-deb-ctl-"))
    os.chown(data, pwd.getpwnam("zonewall").pw_uid, pwd.getpwnam("zonewall").pw_gid)
    notify_path = str(data / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    os.chmod(notify_path, 0o777)
    listener.settimeout(60)
    argv = ["/usr/sbin/runuser", "-u", "zonewall", "--", *exec_start, "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                               env={"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"})
    try:
        assert process.stdout is not None
        url = re.search(r"listening on (\S+)", process.stdout.readline()).group(1)  # type: ignore[union-attr]
        messages: list[str] = []
        deadline = time.monotonic() + 60
        while not any("READY=1" in m for m in messages) or not any("WATCHDOG=1" in m for m in messages):
            assert time.monotonic() < deadline, messages
            messages.append(listener.recv(4096).decode())
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        process.terminate()
        process.wait(timeout=30)
        listener.settimeout(5)
        while "STOPPING=1" not in messages[-1]:  # watchdog pings may be queued before it
            messages.append(listener.recv(4096).decode())
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()
        subprocess.run(["rm", "-rf", str(data)])


def check_purged() -> None:
    assert dpkg_status("zonewall") in ("not-installed", "unknown ok not-installed"), dpkg_status("zonewall")
    for path in ("/opt/zonewall", "/etc/zonewall", "/var/lib/zonewall", "/usr/bin/zonewall", "/lib/systemd/system/zonewall-agent.service"):
        assert not os.path.lexists(path), path
    with pytest.raises(KeyError):
        pwd.getpwnam("zonewall")
