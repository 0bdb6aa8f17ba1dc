"""`hostpower serve` as a real subprocess on a loopback address, for tests.

`running_engine` starts it, waits until /api/health answers and always stops
it; over https the client verifies the engine's certificate like an operator's
would (`engine_ca` for an engine-issued one). `run_hostpower` runs any other
command (or a `serve` expected to be refused) to its end, bounded.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

HOSTPOWER = [str(Path(sys.executable).with_name("hostpower"))]




def engine_ca(home: Path) -> ssl.SSLContext:
    """Trusts exactly the CA of the engine whose HOSTPOWER_HOME is `home`."""
    return ssl.create_default_context(cafile=str(home / "pki" / "ca.crt"))


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path,
                 verify: ssl.SSLContext | bool = True, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"engine exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError as exc:
            last = exc
            time.sleep(0.1)
    pytest.fail(f"engine did not answer {url}/api/health within {timeout:g} s "
                f"(last error: {last}): {log.read_text()}")


def run_hostpower(env: dict[str, str], *args: str, timeout: float = 60,
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(HOSTPOWER + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash: the engine cleans nothing up."""
    proc.kill()
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def running_engine(env: dict[str, str], url: str, log: Path, *options: str,
                   bind: str | None = None, verify: ssl.SSLContext | bool | None = None,
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`hostpower serve --bind HOST:PORT OPTIONS` answering at `url`, stopped on exit.

    The bind address is the URL's unless `bind` says otherwise. `verify`
    defaults, for https, to the CA of the engine (HOSTPOWER_HOME in `env`),
    read once the engine has created it."""
    parsed = httpx.URL(url)
    bind = bind or f"{parsed.host}:{parsed.port}"
    with log.open("a") as out:
        proc = subprocess.Popen(HOSTPOWER + ["serve", "--bind", bind, *options], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        if verify is None:
            verify = (_engine_ca_once_created(Path(env["HOSTPOWER_HOME"]), proc, log)
                      if parsed.scheme == "https" else True)
        wait_healthy(url, proc, log, verify)
        yield proc
    finally:
        stop(proc)


def _engine_ca_once_created(home: Path, proc: subprocess.Popen[bytes], log: Path,
                            timeout: float = 30) -> ssl.SSLContext:
    """The engine creates its CA on first start (atomically: a file that exists is whole)."""
    ca_file = home / "pki" / "ca.crt"
    deadline = time.monotonic() + timeout
    while not ca_file.exists():
        if proc.poll() is not None:
            pytest.fail(f"engine exited with {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"engine made no CA at {ca_file} within {timeout:g} s: {log.read_text()}")
        time.sleep(0.05)
    return engine_ca(home)


class NotifySocket:
    """What systemd's manager is to a `Type=notify` service: a datagram socket
    whose path goes into the service's NOTIFY_SOCKET; `expect` waits for a
    message (e.g. "READY=1") among those received."""

    def __init__(self, path: Path) -> None:
        import socket

        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def env(self, env: dict[str, str], watchdog_usec: int | None = None) -> dict[str, str]:
        extra = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            extra["WATCHDOG_USEC"] = str(watchdog_usec)
        return {**env, **extra}

    def expect(self, message: str, timeout: float = 30) -> float:
        """Wait until `message` arrives; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while message not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {message!r} within {timeout:g} s (received {self.received})")
            self.sock.settimeout(left)
            try:
                self.received += self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
        return time.monotonic()

    def close(self) -> None:
        self.sock.close()
