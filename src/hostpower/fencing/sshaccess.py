"""The engine's SSH access to hosts: its own key, pinning a host's key, and
running one command (soft fencing, fencing/softfencing.py).

* **The engine's key** is an Ed25519 key created at first need under
  HOSTPOWER_HOME (`ssh/engine_ed25519`, mode 0600 from its first byte; the
  public part beside it in `engine_ed25519.pub`). Its public line is what an
  operator puts in `authorized_keys` on each host (`hostpower ssh-key`,
  `GET /api/ssh/public-key`). Several engines sharing a database share it,
  like the CA and the secret key (docs/high-availability.md). The private
  key is read from the file into memory only: never in argv, logs, events
  or API answers.
* **Host keys are pinned at enrolment**, never trusted on first use at
  fencing time: `fetch_host_key` reads the key a host offers (once, when an
  operator pins it, and shows its fingerprint), and `run_command` trusts
  exactly the stored key, through a known_hosts list built in memory. No
  file of the machine (~/.ssh/config, ~/.ssh/known_hosts, an ssh-agent) is
  consulted.

Every failure is an SshFailure whose `kind` says what went wrong
(refused, unreachable, timeout, auth_failed, host_key_mismatch,
not_pinned, protocol) and whose message says it for a person.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hostpower.model import sshkey
from hostpower.model.errors import HostpowerError

KEY_FILE = "engine_ed25519"
KEY_COMMENT = "hostpower-engine"
# Host key algorithms in the order a host's key is asked for when it is
# pinned (a host with several keys gives its Ed25519 one); never certificates.
PIN_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256")
# What the engine's client keeps of a command's output (for events).
OUTPUT_LIMIT = 2000


class SshKeyError(HostpowerError):
    """The engine's SSH key file is unusable (cannot be created, readable by
    others, not a key)."""


class SshFailure(HostpowerError):
    """Connecting or running the command over SSH failed."""

    def __init__(self, kind: str, message: str, seen: str | None = None,
                 expected: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.seen = seen          # fingerprint the host offered (host_key_mismatch)
        self.expected = expected  # fingerprint pinned for it


# -- the engine's key --------------------------------------------------------------------

@dataclass(frozen=True)
class EngineKey:
    path: Path
    public: str   # "ssh-ed25519 AAAA... hostpower-engine": one authorized_keys line

    @property
    def fingerprint(self) -> str:
        return sshkey.fingerprint(self.public)

    def private(self) -> asyncssh.SSHKey:
        """The private key, read from its file now (0600, checked)."""
        return asyncssh.import_private_key(_read_private(self.path))


def engine_key(ssh_dir: Path) -> EngineKey:
    """The engine's SSH key, created at first need. Two engines starting at
    once never write two keys: the key is written to a temporary file and
    linked into place, which fails if another got there first."""
    path = ssh_dir / KEY_FILE
    if not path.exists():
        try:
            _create(path)
        except OSError as exc:
            raise SshKeyError(f"cannot create the engine's SSH key {path}: "
                              f"{exc.strerror or exc}") from None
    private = serialization.load_ssh_private_key(_read_private(path), None)
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise SshKeyError(f"{path} is not an Ed25519 key")
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {KEY_COMMENT}"
    pub = path.with_name(path.name + ".pub")
    try:
        if not pub.exists() or pub.read_text().strip() != line:
            pub.write_text(line + "\n")
    except OSError:
        pass  # the .pub file is a convenience; the private key is what counts
    return EngineKey(path, line)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: 0600 from the first byte
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another engine created it meanwhile: use theirs
    finally:
        tmp.unlink(missing_ok=True)


def _read_private(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SshKeyError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return path.read_bytes()


# -- talking to a host ---------------------------------------------------------------------

@dataclass(frozen=True)
class CommandResult:
    exit_status: int | None
    stdout: str
    stderr: str
    seconds: float


class _PinnedClient(asyncssh.SSHClient):
    """Remembers the key a host offered when it is not the pinned one."""

    def __init__(self) -> None:
        self.seen: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.seen = key
        return False


def _common_options() -> dict[str, object]:
    """Nothing of the machine's SSH setup: no config file, no agent, no
    default keys, no other way to log in than the engine's key."""
    return {"config": None, "agent_path": None, "agent_forwarding": False,
            "password": None, "kbdint_auth": False, "gss_auth": False, "gss_kex": False,
            "x509_trusted_certs": None, "preferred_auth": "publickey",
            "ignore_encrypted": True}


async def run_command(address: str, port: int, user: str, pinned_host_key: str,
                      key: EngineKey, command: str, timeout: float) -> CommandResult:
    """Connect as `user` with the engine's key, trusting only the pinned host
    key, and run `command`; the whole within `timeout` seconds."""
    if not pinned_host_key:
        raise SshFailure("not_pinned", f"no SSH host key is pinned for {address}: pin it "
                                       f"first (hostpower host ssh-pin)")
    pinned = asyncssh.import_public_key(pinned_host_key)
    client = _PinnedClient()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            async with asyncssh.connect(
                    address, port, username=user, client_factory=lambda: client,
                    known_hosts=([pinned], [], []), client_keys=[key.private()],
                    connect_timeout=timeout, login_timeout=timeout,
                    **_common_options()) as conn:  # type: ignore[arg-type]
                done = await conn.run(command, check=False, stdin=asyncssh.DEVNULL)
    except SshFailure:
        raise
    except Exception as exc:
        raise _failure(exc, address, port, user, pinned_host_key, client, timeout) from None
    return CommandResult(done.exit_status, _text(done.stdout), _text(done.stderr),
                         time.monotonic() - started)


async def fetch_host_key(address: str, port: int, timeout: float) -> str:
    """The host key `address:port` offers now (for pinning), as one line."""
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(
                address, port, server_host_key_algs=list(PIN_ALGORITHMS), config=None)
    except Exception as exc:
        raise _failure(exc, address, port, None, "", None, timeout) from None
    if key is None:
        raise SshFailure("protocol", f"{address}:{port} presented no host key")
    return sshkey.host_key(key.export_public_key("openssh").decode())


def _failure(exc: BaseException, address: str, port: int, user: str | None, pinned: str,
             client: _PinnedClient | None, timeout: float) -> SshFailure:
    where = f"{address}:{port}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) or (
            client is not None and client.seen is not None):
        seen = (sshkey.fingerprint(client.seen.export_public_key("openssh").decode())
                if client is not None and client.seen is not None else None)
        expected = sshkey.fingerprint(pinned) if pinned else None
        return SshFailure("host_key_mismatch",
                          f"host key mismatch at {where}: it offered {seen or 'another key'}, "
                          f"{expected} is pinned; not connecting (re-pin only if the host "
                          f"was reinstalled)", seen=seen, expected=expected)
    if isinstance(exc, asyncssh.KeyExchangeFailed) and pinned:
        expected = sshkey.fingerprint(pinned)
        kind = pinned.split()[0]
        return SshFailure("host_key_mismatch",
                          f"host key mismatch at {where}: it offers no {kind} key, "
                          f"{expected} is pinned ({exc.reason})", expected=expected)
    if isinstance(exc, asyncssh.PermissionDenied):
        return SshFailure("auth_failed",
                          f"{where} refused the engine's key for user {user} (is it in that "
                          f"user's authorized_keys? `hostpower ssh-key` prints it)")
    if isinstance(exc, ConnectionRefusedError):
        return SshFailure("refused", f"SSH connection to {where} refused")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return SshFailure("timeout", f"SSH to {where} did not finish within {timeout:g} s")
    if isinstance(exc, asyncssh.Error):
        return SshFailure("protocol", f"SSH to {where} failed: {exc.reason}")
    if isinstance(exc, OSError):
        return SshFailure("unreachable",
                          f"cannot reach {where}: {exc.strerror or type(exc).__name__}")
    return SshFailure("protocol", f"SSH to {where} failed: {type(exc).__name__}: {exc}")


def _text(data: object) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
    return text[-OUTPUT_LIMIT:]
