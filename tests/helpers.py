"""The small helpers every test module uses, in one place: loopback ports,
bounded waits, bearer tokens, and the fence_dummy host of the lab-less
engine tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` (a loopback address) at this moment."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def closed_port(address: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on: connections to it fail at once."""
    return free_port(address)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.05) -> T:
    """The first truthy value of `predicate()`, polled every `step` seconds;
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class _Poster(Protocol):
    def post(self, url: str, *, json: Any) -> Any: ...


def bearer(client: _Poster, user: str, password: str, base: str = "") -> dict[str, str]:
    """The Authorization header of a fresh token (a TestClient, httpx.Client or
    the httpx module with `base` as the engine's URL)."""
    r = client.post(f"{base}/api/auth/token", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def dummy_host(name: str, address: str, power: Path, password: str,
               **options: str) -> dict[str, Any]:
    """An inventory-file host in maintenance (the monitor leaves it alone),
    fenced through the engine by the real fence_dummy, whose device is the
    file `power` holding `on` or `off`."""
    return {
        "name": name, "address": address, "agent_port": closed_port(), "status": "maintenance",
        "power_management": {
            "enabled": True, "automatic_pm_enabled": False, "pm_proxies": "engine",
            "agents": [{"type": "dummy", "address": "10.99.0.1", "username": "admin",
                        "password": password,
                        "options": {"type": "file", "status_file": str(power), **options}}]}}
