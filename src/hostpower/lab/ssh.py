"""A real SSH server on every simulated host: OpenSSH's sshd, one per host.

Why OpenSSH (Debian's openssh-server, installed by
scripts/install-system-deps.sh) and not an asyncssh server: production hosts
run OpenSSH, and the engine's client is asyncssh. A lab server built on the
same library as the client would hide exactly the disagreements soft fencing
has to survive in the field (host key algorithm negotiation against a server
with its own preferences, OpenSSH's public key authentication and forced
commands, its exit statuses and disconnects). And sshd is a process of its
own in the host's namespace, like on a real host: a hung agent (SIGSTOP)
leaves it answering, a host that loses power loses it too.

Each host's sshd:

* listens on the host's front address inside its namespace, port 22
  (loopback mode, without namespaces: port 2222 of its 127.x address);
* has a host key of its own, created once under the lab's directory
  (`lab/ssh/<host>/ssh_host_ed25519_key`) and kept across lab runs, like a
  real host's; the lab knows its public part, so the lab's inventory document
  carries it pinned (`ssh.host_key`);
* lets in only the engine's key (HOSTPOWER_HOME/ssh/engine_ed25519.pub, the
  same home the lab shares with the engine, like the CA), as root in
  namespace mode (the current user in loopback mode), with a forced command:
  every command the engine sends goes to lab/sshcommand.py, which hands it
  to this module over a Unix socket. `systemctl restart hostpower-agent`
  then really restarts that host's agent (`Lab.restart_agent`: a hung agent
  is killed and a new one started, same boot id); other commands answer 127;
* stops when its host loses power and starts again when it boots; the fault
  `ssh_down` stops it while the host runs (SSH refused).

Everything it starts is stopped on lab stop; it binds only lab addresses.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hostpower.lab.errors import LabError
from hostpower.lab.instances import MARKER
from hostpower.lab.processes import signal_group, stop_groups
from hostpower.lab.supervisor import Lab
from hostpower.lab.topology import LabHost
from hostpower.model import sshkey

SSHD = "/usr/sbin/sshd"
PORT_NAMESPACED = 22
PORT_LOOPBACK = 2222
COMMAND_SCRIPT = Path(__file__).with_name("sshcommand.py")
AGENT_SERVICE = ("hostpower-agent", "hostpower-agent.service")


def available() -> bool:
    return os.access(SSHD, os.X_OK)


@dataclass
class _Server:
    host: LabHost
    dir: Path
    host_key: str                       # "ssh-ed25519 AAAA..."
    process: subprocess.Popen[bytes] | None = None
    down: bool = False                  # the ssh_down fault
    timer: threading.Timer | None = None
    commands: int = 0


class LabSsh:
    def __init__(self, lab: Lab, engine_public_key: str, socket_path: Path,
                 log: Callable[[str], None] = lambda msg: None) -> None:
        self.lab = lab
        self.topo = lab.topo
        self.engine_public_key = engine_public_key
        self.socket_path = socket_path
        self.log = log
        self.port = PORT_NAMESPACED if self.topo.namespaced else PORT_LOOPBACK
        self.user = "root" if self.topo.namespaced else pwd.getpwuid(os.geteuid()).pw_name
        self.base = lab.run_dir / "ssh"
        self._lock = threading.RLock()
        self._stopping = False
        self._servers: dict[str, _Server] = {}
        self._socket_server: socketserver.ThreadingUnixStreamServer | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "LabSsh":
        if not available():
            raise LabError(f"{SSHD} is missing: install openssh-server "
                           f"(scripts/install-system-deps.sh)")
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for h in self.topo.hosts:
            directory = self.base / h.name
            directory.mkdir(exist_ok=True, mode=0o700)
            self._servers[h.name] = _Server(h, directory, _host_key(directory))
            self._write_config(self._servers[h.name])
        if os.geteuid() == 0:
            # sshd (as root) insists on its privilege separation directory,
            # which Debian's ssh unit creates; the lab runs sshd itself.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._serve_commands()
        self.lab.ssh = self
        self.lab.add_listener(self._on_lab_event)
        try:
            with self._lock:
                for server in self._servers.values():
                    if self._powered(server.host):
                        self._start_server(server)
            deadline = time.monotonic() + timeout
            for server in self._servers.values():
                if server.process is not None:
                    self._wait_listening(server, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs = []
            for server in self._servers.values():
                if server.timer is not None:
                    server.timer.cancel()
                if server.process is not None:
                    procs.append(server.process)
                    server.process = None
        stop_groups(procs)
        if self._socket_server is not None:
            self._socket_server.shutdown()
            self._socket_server.server_close()
            self._socket_server = None
        self.socket_path.unlink(missing_ok=True)
        if self.lab.ssh is self:
            self.lab.ssh = None

    # -- what the lab and the engine see ------------------------------------------------------

    def access(self, host: str) -> dict[str, Any]:
        """The host's SSH access for the inventory document, its key pinned."""
        server = self._servers[host]
        return {"port": self.port, "user": self.user, "host_key": server.host_key}

    def host_key(self, host: str) -> str:
        return self._servers[host].host_key

    def status(self, host: str) -> dict[str, Any]:
        with self._lock:
            server = self._servers.get(host)
            if server is None:
                return {}
            state = ("down" if server.down else
                     "running" if server.process is not None and server.process.poll() is None
                     else "stopped")
            return {"state": state, "address": server.host.front_address, "port": self.port,
                    "user": self.user, "fingerprint": sshkey.fingerprint(server.host_key),
                    "commands": server.commands}

    def set_down(self, host: str, down: bool) -> None:
        """The fault ssh_down: the host's sshd stopped (SSH refused) or back."""
        with self._lock:
            server = self._servers[host]
            server.down = down
            if down:
                self._stop_server(server)
            elif self._powered(server.host) and server.process is None:
                self._start_server(server)

    def wait_ready(self, host: str, timeout: float = 10.0) -> None:
        """Until the host's sshd (if it should run) accepts connections."""
        self._wait_listening(self._servers[host], time.monotonic() + timeout)

    # -- sshd processes --------------------------------------------------------------------

    def _write_config(self, server: _Server) -> None:
        h = server.host
        forced = " ".join(shlex.quote(str(p)) for p in (
            sys.executable, "-I", COMMAND_SCRIPT, self.socket_path, h.name))
        forced = forced.replace("\\", "\\\\").replace('"', '\\"')
        _write(server.dir / "authorized_keys",
               f'command="{forced}",restrict {self.engine_public_key}\n', 0o600)
        _write(server.dir / "sshd_config", "\n".join([
            f"# hostpower lab: the SSH server of {h.name}",
            f"ListenAddress {h.front_address}:{self.port}",
            f"HostKey {server.dir / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {server.dir / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            # The lab's files live under a test's temporary directory: /tmp
            # is world-writable, which StrictModes refuses.
            "StrictModes no",
            "PermitTTY no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]), 0o600)

    def _start_server(self, server: _Server) -> None:
        """With the lock held."""
        if self._stopping or server.down or server.process is not None:
            return
        h = server.host
        log = (self.lab.run_dir / f"sshd-{h.name}.log").open("ab")
        ns = (["ip", "netns", "exec", self.topo.instance.host_ns(h.index)]
              if self.topo.namespaced else [])
        server.process = subprocess.Popen(
            ns + [SSHD, "-D", "-e", "-f", str(server.dir / "sshd_config"),
                  "-o", f"PidFile={self._pid_file(h)}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=self.lab.child_env)
        log.close()

    def _pid_file(self, host: LabHost) -> Path:
        """In the lab instance's directory when there is one: sshd clears its
        environment, so its command line is how `lab cleanup` finds the
        sshd of a crashed lab (instances.py)."""
        marker = (self.lab.child_env or {}).get(MARKER)
        return Path(marker) / f"sshd-{host.name}.pid" if marker else self.base / host.name / "sshd.pid"

    def _stop_server(self, server: _Server) -> None:
        """With the lock held: gone at once, as when the power is cut."""
        if server.timer is not None:
            server.timer.cancel()
            server.timer = None
        proc, server.process = server.process, None
        if proc is not None:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)

    def _wait_listening(self, server: _Server, deadline: float) -> None:
        h = server.host
        while time.monotonic() < deadline:
            proc = server.process
            if proc is None:
                return
            if proc.poll() is not None:
                raise LabError(f"sshd of {h.name} exited "
                               f"(see {self.lab.run_dir / ('sshd-' + h.name + '.log')})")
            try:
                with socket.create_connection((h.front_address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise LabError(f"sshd of {h.name} did not start listening in time")

    def _powered(self, host: LabHost) -> bool:
        return self.lab.power.host_power(host) == "on"

    def _on_lab_event(self, event: dict[str, Any]) -> None:
        """Power drives the SSH server as it drives the agent: off kills it,
        on starts it after the boot delay."""
        if event.get("event") != "host_power":
            return
        server = self._servers.get(str(event.get("host")))
        if server is None:
            return
        with self._lock:
            if not self._powered(server.host):
                self._stop_server(server)
            elif server.process is None and server.timer is None and not self._stopping:
                server.timer = threading.Timer(self.topo.boot_delay, self._boot, args=(server,))
                server.timer.daemon = True
                server.timer.start()

    def _boot(self, server: _Server) -> None:
        with self._lock:
            server.timer = None
            if self._powered(server.host):
                self._start_server(server)

    # -- the commands the engine sends -----------------------------------------------------

    def _serve_commands(self) -> None:
        ssh = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    request = json.loads(self.rfile.readline() or b"{}")
                    code, out, err = ssh.run(str(request.get("host")),
                                             str(request.get("command", "")))
                except ValueError:
                    code, out, err = 2, "", "lab: bad request\n"
                self.wfile.write((json.dumps({"exit": code, "stdout": out, "stderr": err})
                                  + "\n").encode())

        self.socket_path.unlink(missing_ok=True)
        server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        server.daemon_threads = True
        os.chmod(self.socket_path, 0o600)
        self._socket_server = server
        threading.Thread(target=server.serve_forever, name="lab-ssh-commands",
                         daemon=True).start()

    def run(self, host: str, command: str) -> tuple[int, str, str]:
        """What the simulated host does with one SSH command: (exit, stdout, stderr)."""
        with self._lock:
            server = self._servers.get(host)
            if server is None:
                return 1, "", f"lab: no host {host!r}\n"
            server.commands += 1
        words = command.split()
        self.log(f"lab: {host}: ssh command {command!r}")
        if len(words) == 3 and words[:2] == ["systemctl", "restart"] and words[2] in AGENT_SERVICE:
            try:
                self.lab.restart_agent(host)
            except LabError as exc:
                return 1, "", f"Job for hostpower-agent.service failed: {exc}\n"
            return 0, "", ""
        if words == ["hostname"]:
            return 0, f"{host}\n", ""
        return 127, "", (f"lab: {command!r} is not available on a simulated host (it knows "
                         f"`systemctl restart hostpower-agent` and `hostname`)\n")


def _host_key(directory: Path) -> str:
    """The host's key, created once (a real host keeps its key across boots)."""
    path = directory / "ssh_host_ed25519_key"
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        _write(path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()).decode(), 0o600)
    private = serialization.load_ssh_private_key(path.read_bytes(), None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return sshkey.host_key(public)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
