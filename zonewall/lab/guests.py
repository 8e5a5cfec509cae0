"""Real QEMU guests under libvirtd in the lab (tests, `zonewall demo --libvirt`).

Everything comes from Debian's packages at run time (qemu-system-x86, linux-image-amd64,
busybox-static, libvirt-daemon-system): no disk image. A guest boots Debian's kernel
directly with an initramfs made here from busybox and the virtio-net modules of that
kernel; its /init brings eth0 up with the address given on the kernel command line,
starts echo servers (`nc -ll -e cat`) on the TCP ports asked for, and runs a shell on
the serial port, which libvirt exposes as a unix socket (`Console`): tests type
commands inside the guest through it.

Each lab node gets its own libvirtd (and virtlogd) inside the node's network namespace
and a mount namespace of its own, in which /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/log/libvirt and /var/lib/zonewall/agent are the node's directories (libvirt's paths
are global: one libvirtd per mount namespace). The node's /etc/libvirt carries the
zonewall qemu hook as the package installs it (hooks/qemu.d/zonewall); the hook finds
the node's agent at its default socket, which the bind mount makes the node's own.
Clients (virsh, the agent's discovery) reach a node's libvirtd by its socket:
`qemu+unix:///system?socket=DIR/run/libvirt-sock` (`Hypervisor.uri`).

Guests are TCG (`<domain type='qemu'>`): KVM guests hang on these nested machines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GUEST_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net")
HOOK = Path(__file__).resolve().parent.parent / "agent" / "hooks" / "qemu"
AGENT_STATE = Path("/var/lib/zonewall/agent")  # where the hook looks for the agent's socket
LIBVIRT_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt", "log": "/var/log/libvirt", "cache": "/var/cache/libvirt",
                "agent": str(AGENT_STATE)}
QEMU_CONF = """\
# zonewall lab: QEMU as root without confinement (a lab node is a network namespace)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
"""
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod /lib/modules/$m.ko 2>/dev/null; done
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^zw\.$1=//p"; }
ip link set lo up
n=0
while ! ip link show eth0 >/dev/null 2>&1 && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
ip link set eth0 up
for a in $(arg ip | tr ',' ' '); do ip addr add $a dev eth0; done
[ -n "$(arg gw)" ] && ip route add default via $(arg gw)
[ -n "$(arg gw6)" ] && ip -6 route add default via $(arg gw6)
for p in $(arg ports | tr ',' ' '); do nc -ll -p $p -e /bin/cat & done
for t in $(arg connect | tr ',' ' '); do (while :; do nc -w 1 ${t%:*} ${t#*:} </dev/null; sleep 0.2; done) & done
echo "zonewall guest $(hostname) up"
exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
"""


class GuestError(RuntimeError):
    pass


def guest_kernel() -> tuple[Path, str]:
    """Debian's newest kernel image in /boot and its version (linux-image-amd64)."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise GuestError("no /boot/vmlinuz-*: install linux-image-amd64 (make deps does)")
    return kernels[-1], kernels[-1].name.removeprefix("vmlinuz-")


def build_initramfs(dest: Path) -> Path:
    """A gzip'd cpio with busybox, the virtio-net modules of the guest kernel and /init."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    _, version = guest_kernel()
    root = dest.parent / (dest.name + ".d")
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "lib/modules", "proc", "sys", "dev", "tmp", "etc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for module in GUEST_MODULES:
        path = subprocess.run(["modinfo", "-k", version, "-n", module], capture_output=True, text=True, check=True).stdout.strip()
        if path.endswith(".ko"):
            shutil.copy(path, root / "lib" / "modules" / f"{module}.ko")
        else:  # compressed modules: busybox insmod takes them uncompressed
            raise GuestError(f"{path}: a compressed module; the guest initramfs needs .ko files")
    (root / "init").write_text(INIT.replace("MODULES", " ".join(GUEST_MODULES)))
    (root / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
    with open(dest, "wb") as out:
        cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(files.encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or gz.wait() != 0:
            raise GuestError("building the guest initramfs failed (cpio, gzip)")
    shutil.rmtree(root)
    return dest


@dataclass
class GuestSpec:
    name: str
    mac: str
    bridge: str
    addresses: list[str]  # CIDR, as ip(8) takes them
    gateway: str | None = None
    gateway6: str | None = None
    ports: list[int] = field(default_factory=list)  # TCP echo servers
    connect: list[str] = field(default_factory=list)  # "IP:PORT": connection attempts from boot on, every 0.2 s
    memory_mib: int = 96


def domain_xml(spec: GuestSpec, kernel: Path, initrd: Path, console: Path) -> str:
    cmdline = " ".join([
        "console=ttyS0", "quiet", "panic=-1", f"hostname={spec.name}",
        f"zw.ip={','.join(spec.addresses)}", f"zw.ports={','.join(map(str, spec.ports))}", f"zw.connect={','.join(spec.connect)}",
        *([f"zw.gw={spec.gateway}"] if spec.gateway else []), *([f"zw.gw6={spec.gateway6}"] if spec.gateway6 else []),
    ])
    return f"""<domain type='qemu'>
  <name>{spec.name}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='bridge'>
      <source bridge='{spec.bridge}'/>
      <mac address='{spec.mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class Console:
    """The guest's serial shell over libvirt's unix socket: `run(cmd)` types a command
    and returns its output and exit status (markers around it; the echo of the typed
    line is dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._count = 0

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self._sock = sock
        return self._sock

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str]:
        sock = self._connect()
        self._count += 1
        tag = f"ZW{os.getpid()}x{self._count}"
        # the output lies between the two markers as printed (the terminal's echo of the
        # typed line shows them as `-start;` and `=$?`, never as printed)
        sock.sendall(f"stty -echo 2>/dev/null; echo {tag}-start; {command}; echo {tag}=$?\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf"{tag}-start\r?\n(.*?){tag}=(\d+)\r?\n".encode(), re.S)
        while not pattern.search(data):
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"{self.path}: no answer to {command!r} within {timeout:g}s: {data[-500:]!r}")
            sock.settimeout(min(left, 1.0))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise GuestError(f"{self.path}: the console closed")
            data += chunk
        found = pattern.search(data)
        assert found is not None
        output = found.group(1).decode(errors="replace").replace("\r", "")
        return int(found.group(2)), "\n".join(line for line in output.split("\n") if line.strip())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class Hypervisor:
    """One lab node's libvirtd (and virtlogd), in the node's network namespace."""

    node: str
    netns: str
    directory: Path
    pids: list[int] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.directory / 'run' / 'libvirt-sock'}"

    @property
    def agent_state(self) -> Path:
        """The agent's state directory (its hook socket), as the hook sees /var/lib/zonewall/agent."""
        return self.directory / "agent"

    def start(self, timeout: float = 60.0) -> Hypervisor:
        for name in LIBVIRT_DIRS:
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        etc = self.directory / "etc"
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
        (etc / "qemu.conf").write_text(QEMU_CONF)
        # two libvirtds on one machine must not look like one host (migration refuses that)
        with open(etc / "libvirtd.conf", "a") as conf:
            conf.write(f'\nhost_uuid = "{uuid.uuid5(uuid.NAMESPACE_DNS, self.netns)}"\n')
        for autostarted in ("qemu/networks/autostart", "qemu/autostart"):
            shutil.rmtree(etc / autostarted, ignore_errors=True)
        hooks = etc / "hooks" / "qemu.d"
        hooks.mkdir(parents=True, exist_ok=True)
        shutil.copy(HOOK, hooks / "zonewall")
        (hooks / "zonewall").chmod(0o755)
        for target in LIBVIRT_DIRS.values():
            Path(target).mkdir(parents=True, exist_ok=True)  # mount points
        binds = "; ".join(f"mount --bind {self.directory / name} {target}" for name, target in LIBVIRT_DIRS.items())
        with open(self.directory / "libvirtd.log", "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation", "private", "sh", "-c",
                                        # not daemonized: both stay in this process group (stop() ends it); pid files are global paths
                                        f"set -e; {binds}; /usr/sbin/virtlogd -p /run/libvirt/virtlogd.pid & "
                                        f"exec /usr/sbin/libvirtd -p /run/libvirt/libvirtd.pid"],
                                       stdout=log, stderr=log, start_new_session=True)
        self.pids.append(process.pid)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise GuestError(f"libvirtd of {self.node} exited ({process.returncode}); see {self.directory / 'libvirtd.log'}")
            if self.virsh("version", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise GuestError(f"libvirtd of {self.node} does not answer on {self.uri}")
            time.sleep(0.2)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise GuestError(f"virsh {' '.join(args)} on {self.node}: {result.stderr.strip()}")
        return result

    def create(self, spec: GuestSpec, kernel: Path, initrd: Path) -> Console:
        console = self.directory / "run" / f"{spec.name}.console"
        xml = self.directory / f"{spec.name}.xml"
        xml.write_text(domain_xml(spec, kernel, initrd, console))
        self.virsh("create", str(xml))
        return Console(console)

    def stop(self) -> None:
        """Destroy every guest, stop libvirtd and virtlogd (their whole process group)."""
        listed = self.virsh("list", "--name", check=False)
        for name in listed.stdout.split():
            self.virsh("destroy", name, check=False)
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids.clear()


def wait_booted(console: Console, timeout: float = 240.0) -> float:
    """Seconds until the guest's shell answers on its console (TCG boots take 15 s idle, minutes under load)."""
    started = time.monotonic()
    while True:
        try:
            code, out = console.run("ip -o -4 addr show eth0", timeout=5)
            if code == 0 and "inet " in out:
                return time.monotonic() - started
        except (OSError, GuestError):
            console.close()
        if time.monotonic() - started > timeout:
            raise GuestError(f"{console.path}: the guest did not boot within {timeout:g}s")
        time.sleep(1.0)


def tcp_echo(ns: str, address: str, port: int, timeout: float = 3.0, source: str | None = None) -> str:
    """From namespace `ns` (from `source` if given): connect, send a token, expect it
    back. delivered|refused|blocked."""
    from . import netns

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = netns.netns_socket(ns, family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    token = f"zw-{os.getpid()}-{time.monotonic_ns()}\n".encode()
    try:
        sock.connect((address, port))
        sock.sendall(token)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
        return "delivered" if data == token else "blocked"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "blocked"
    finally:
        sock.close()


def guest_specs_from(policy: Any, gateways: dict[str, list[str]], ports: list[int]) -> dict[str, GuestSpec]:
    """One single-NIC guest per VM of the policy (its first NIC), as the lab would build it."""
    import ipaddress

    specs: dict[str, GuestSpec] = {}
    for name, vm in sorted(policy.doc.vms.items()):
        nic = vm.nics[0]
        network = policy.doc.networks[nic.network]
        addresses = []
        for ip in nic.ips:
            address = ipaddress.ip_address(ip)
            subnet = next((s for s in network.subnets if address in ipaddress.ip_network(s)), None)
            addresses.append(f"{ip}/{ipaddress.ip_network(subnet).prefixlen if subnet else address.max_prefixlen}")
        gw = [ipaddress.ip_interface(g).ip for g in gateways.get(nic.network, [])]
        specs[name] = GuestSpec(name, nic.mac, network.bridge, addresses, next((str(g) for g in gw if g.version == 4), None),
                                next((str(g) for g in gw if g.version == 6), None), ports)
    return specs
