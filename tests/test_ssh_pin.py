"""Pinning a host's SSH host key at enrolment, against the lab's OpenSSH
servers: through the API (an engine with its fencing service) and the CLI,
and the engine's key that every lab host lets in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import require
from helpers import bearer
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.fencing.sshaccess import engine_key
from hostpower.inventory_file import load_document
from hostpower.lab import ssh as lab_ssh
from hostpower.lab.runner import RunningLab
from hostpower.model.sshkey import fingerprint
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.users import Users
from labkit import SMALL, load_yaml, require_lab_tools, start

pytestmark = pytest.mark.lab
HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))


@dataclass
class World:
    lab: RunningLab
    settings: Settings
    ctx: EngineContext
    api: TestClient
    admin: dict[str, str]
    ids: dict[str, int]

    def host(self, name: str):  # type: ignore[no-untyped-def]
        with self.ctx.db.session() as s:
            return Inventory(s, self.ctx.box).find_host(name)

    def unpin(self, name: str) -> None:
        with self.ctx.db.session() as s:
            inv = Inventory(s, self.ctx.box)
            h = inv.find_host(name)
            inv.update_host(h.id, ssh=replace(h.ssh, host_key=""))

    def pin(self, name: str, **body: str) -> object:
        return self.api.post(f"/api/hosts/{self.ids[name]}/ssh/pin", headers=self.admin,
                             json=body or None)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOSTPOWER_HOME": str(self.settings.home),
               "HOSTPOWER_DB_URL": self.settings.db_url}
        return subprocess.run([HOSTPOWER, *args], env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_lab_tools()
    require(lab_ssh.available(), "the lab's SSH servers need Debian's openssh-server "
                                 "(scripts/install-system-deps.sh installs it)")
    lab, settings = start(tmp_path_factory.mktemp("pin"), load_yaml(SMALL))
    ctx = EngineContext.open(settings)
    try:
        with ctx.db.session() as s:
            load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s),
                          lab.inventory_document())
            Users(s).add("root", "admin", "admin-password")
        with TestClient(create_app(ctx, EngineRuntime(ctx, monitor=False))) as api:
            admin = bearer(api, "root", "admin-password")
            ids = {h["name"]: h["id"] for h in api.get("/api/hosts", headers=admin).json()}
            yield World(lab, settings, ctx, api, admin, ids)
    finally:
        ctx.close()
        lab.stop()


@pytest.fixture
def w(world: World) -> Iterator[World]:
    yield world
    assert world.lab.ssh is not None
    for name in ("k1-a", "k1-b"):
        world.lab.lab.fault(name, "ssh_down", clear=True)
        world.lab.ssh.wait_ready(name)


def test_ssh_pin_every_lab_host_lets_the_engine_key_in(w: World) -> None:
    key = engine_key(w.settings.ssh_dir)
    assert w.lab.ssh is not None
    for name in ("k1-a", "k1-b"):
        authorized = (w.lab.run_dir / "ssh" / name / "authorized_keys").read_text()
        assert authorized.rstrip().endswith(key.public)
        assert authorized.startswith('command="') and ",restrict " in authorized
        # The lab's inventory document carries each host's key pinned.
        assert w.host(name).ssh.host_key == w.lab.ssh.host_key(name)
    shown = w.cli("ssh-key")
    assert shown.returncode == 0 and shown.stdout == key.public + "\n"
    assert w.cli("ssh-key", "--fingerprint").stdout.strip() == key.fingerprint


def test_ssh_pin_through_the_api_fetches_the_key_once_and_checks_a_given_fingerprint(
        w: World) -> None:
    assert w.lab.ssh is not None
    real = w.lab.ssh.host_key("k1-a")
    w.unpin("k1-a")
    r = w.pin("k1-a", fingerprint="SHA256:not-the-one")
    assert r.status_code == 409 and r.json()["field"] == "fingerprint"  # type: ignore[attr-defined]
    assert fingerprint(real) in r.json()["detail"]  # type: ignore[attr-defined]
    assert w.host("k1-a").ssh.host_key == ""  # nothing pinned
    r = w.pin("k1-a", fingerprint=fingerprint(real))
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert r.json() == {"port": 22, "user": "root", "host_key": real,  # type: ignore[attr-defined]
                        "fingerprint": fingerprint(real)}
    assert w.host("k1-a").ssh.host_key == real
    w.unpin("k1-a")
    assert w.pin("k1-a").status_code == 200  # type: ignore[attr-defined]
    with w.ctx.db.session() as s:
        audit = [e.message for e in Events(s).query(kind="audit.write")]
    assert f"root pinned the SSH host key of host k1-a ({fingerprint(real)})" in audit


def test_ssh_pin_refused_ssh_and_no_ssh_access_are_errors(w: World) -> None:
    w.lab.lab.fault("k1-b", "ssh_down")
    r = w.pin("k1-b")
    assert r.status_code == 502, r.text  # type: ignore[attr-defined]
    assert "refused" in r.json()["detail"]  # type: ignore[attr-defined]
    with w.ctx.db.session() as s:
        inv = Inventory(s, w.ctx.box)
        h = inv.find_host("k1-b")
        inv.update_host(h.id, ssh=replace(h.ssh, port=None))
    try:
        r = w.pin("k1-b")
        assert (r.status_code, r.json()["field"]) == (400, "ssh.port")  # type: ignore[attr-defined]
    finally:
        with w.ctx.db.session() as s:
            inv = Inventory(s, w.ctx.box)
            h = inv.find_host("k1-b")
            inv.update_host(h.id, ssh=replace(h.ssh, port=22))


def test_ssh_pin_through_the_cli(w: World) -> None:
    assert w.lab.ssh is not None
    real = w.lab.ssh.host_key("k1-b")
    w.unpin("k1-b")
    unconfirmed = w.cli("host", "ssh-pin", "k1-b")
    assert unconfirmed.returncode == 2 and "--yes or --fingerprint" in unconfirmed.stderr
    wrong = w.cli("host", "ssh-pin", "k1-b", "--fingerprint", "SHA256:nope")
    assert wrong.returncode == 2 and "nothing pinned" in wrong.stderr
    assert w.host("k1-b").ssh.host_key == ""
    done = w.cli("host", "ssh-pin", "k1-b", "--fingerprint", fingerprint(real))
    assert done.returncode == 0, done.stderr
    assert f"offers ssh-ed25519 key {fingerprint(real)}" in done.stdout
    assert w.host("k1-b").ssh.host_key == real
    again = w.cli("host", "ssh-pin", "k1-b", "--yes")
    assert again.returncode == 0 and "already pinned" in again.stdout
    with w.ctx.db.session() as s:
        assert [e.details for e in Events(s).query(kind="ssh.pinned")][-1] == {
            "fingerprint": fingerprint(real)}
