"""A full disk or a read-only HOSTPOWER_HOME: writes answer 503 naming the
cause and store nothing, reads and monitoring go on, and writes work again
once the disk has room. The home is a small tmpfs the test mounts (root).

A file system cannot be remounted read-only under a process that holds
files open for writing (the kernel does it on I/O errors, userspace cannot),
so the read-only case starts the engine on a home that is already read-only,
as a service whose unit forgot ReadWritePaths= would find it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import free_port, wait_until
from apikit import ServedApp
from conftest import require
from hostpower.context import EngineContext
from hostpower.model.inventory import HostStatus
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import HostInput, Inventory
from hostpower.store.users import Users
from servekit import running_engine

FILLER_CHUNK = b"\0" * (1 << 20)


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """HOSTPOWER_HOME on a 24 MiB tmpfs of its own."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(home)],
                   check=True, timeout=30)
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False, timeout=30)


def fill(disk: Path) -> Path:
    """Write a file until the file system has no room left (bounded by its size)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        for _ in range(64):  # 64 MiB > the tmpfs
            try:
                f.write(FILLER_CHUNK)
                f.flush()
            except OSError:
                break
    return filler


def engine_on(home: Path) -> EngineContext:
    ctx = EngineContext.open(Settings(home=home, db_url=f"sqlite:///{home / 'hostpower.db'}"))
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center("dc1")
        cluster = inv.add_cluster("c1", dc.id)
        # An agent nobody answers for, on loopback: the monitor has work to do.
        inv.add_host(HostInput(name="h1", address="127.0.0.1", cluster_id=cluster.id,
                               status=HostStatus.UP, agent_port=free_port()))
        store = ConfigStore(s)
        for key, value in {"HostHeartbeatIntervalInSec": "1", "HostHeartbeatTimeoutInSec": "1",
                           "TimeoutToResetHostInSeconds": "2"}.items():
            store.set(key, value)
    return ctx


def writes_until_refused(app: ServedApp, admin: dict[str, str], prefix: str) -> tuple[list[str], dict]:
    """Create data centers (64 KiB descriptions) until one is refused; returns
    the names stored and the refusal. Bounded: 200 tries."""
    stored = []
    for n in range(200):
        name = f"{prefix}{n}"
        r = app.request("POST", "/api/datacenters", admin,
                        json={"name": name, "description": "x" * 65536})
        if r.status_code == 201:
            stored.append(name)
            continue
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"]
        return stored, r.json()
    raise AssertionError("200 writes went through on a full disk")


def test_storage_full_disk_answers_503_while_reads_and_monitoring_go_on(small_home: Path) -> None:
    ctx = engine_on(small_home)
    runtime = EngineRuntime(ctx)
    try:
        with ServedApp(ctx, runtime) as app:
            admin = app.admin_headers()
            names_before = {d["name"] for d in app.request("GET", "/api/datacenters", admin).json()}

            filler = fill(small_home)
            stored, refusal = writes_until_refused(app, admin, "full")
            assert "database or disk is full" in refusal["detail"], refusal
            # Reads and monitoring go on.
            assert app.request("GET", "/api/health", {}).status_code == 200
            hosts = app.request("GET", "/api/hosts", admin)
            assert hosts.status_code == 200 and [h["name"] for h in hosts.json()] == ["h1"]
            assert runtime.monitor is not None and runtime.monitor.running

            filler.unlink()
            r = app.request("POST", "/api/datacenters", admin, json={"name": "after-full"})
            assert r.status_code == 201, r.text
            # The monitor's findings are written again: h1's agent never answers.
            wait_until(lambda: app.request("GET", "/api/hosts", admin).json()[0]["status"]
                       in ("connecting", "non_responsive"), 20, "h1 to leave up")
            listed = {d["name"] for d in app.request("GET", "/api/datacenters", admin).json()}
            assert listed == names_before | set(stored) | {"after-full"}  # nothing half-written

    finally:
        ctx.close()


def test_storage_read_only_home_answers_503_for_writes_and_serves_reads(small_home: Path) -> None:
    ctx = engine_on(small_home)  # prepared while writable: database, key, users
    with ServedApp(ctx, EngineRuntime(ctx)) as app:
        admin = app.admin_headers()  # a token issued while the home was writable
    ctx.close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_home)], check=True, timeout=30)
    ctx = EngineContext.open(Settings(home=small_home,
                                      db_url=f"sqlite:///{small_home / 'hostpower.db'}"))
    runtime = EngineRuntime(ctx, monitor=True)
    try:
        with ServedApp(ctx, runtime) as app:
            login = app.request("POST", "/api/auth/token", {}, json={
                "username": "root", "password": "admin-password"})
            assert login.status_code == 503 and "readonly" in login.json()["detail"], login.text
            assert app.request("GET", "/api/health", {}).status_code == 200
            hosts = app.request("GET", "/api/hosts", admin)
            assert hosts.status_code == 200 and [h["name"] for h in hosts.json()] == ["h1"]
            r = app.request("POST", "/api/datacenters", admin, json={"name": "dc2"})
            assert r.status_code == 503 and "readonly" in r.json()["detail"], r.text
            assert [d["name"] for d in app.request("GET", "/api/datacenters", admin).json()] \
                == ["dc1"]
            assert runtime.monitor is not None
            wait_until(lambda: runtime.monitor is not None and runtime.monitor.liveness, 10,
                       "the monitor to heartbeat h1")
            assert runtime.monitor.running
    finally:
        ctx.close()


def test_storage_serve_on_a_read_only_home_serves_reads_and_refuses_writes(
        small_home: Path, tmp_path: Path) -> None:
    """The same through `hostpower serve` itself: it starts (without joining the
    engines, which would be a write), says why, and answers as above."""
    ctx = engine_on(small_home)
    with ctx.db.session() as s:
        token, _ = Users(s).issue_token(Users(s).add("root", "admin", "admin-password"))
    ctx.close()
    env = {**os.environ, "HOSTPOWER_HOME": str(small_home)}
    env.pop("HOSTPOWER_DB_URL", None)
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    admin = {"Authorization": f"Bearer {token}"}
    with running_engine(env, url, log, "--plain-http"):
        pass  # the engine ran here before (its CA and certificates exist)
    subprocess.run(["mount", "-o", "remount,ro", str(small_home)], check=True, timeout=30)
    with running_engine(env, url, log, "--plain-http"):
        hosts = httpx.get(f"{url}/api/hosts", headers=admin, timeout=30)
        assert hosts.status_code == 200 and [h["name"] for h in hosts.json()] == ["h1"]
        r = httpx.post(f"{url}/api/datacenters", headers=admin, json={"name": "dc2"}, timeout=30)
        assert r.status_code == 503 and "readonly" in r.json()["detail"], r.text
    assert "read-only file system: serving reads only" in log.read_text()

