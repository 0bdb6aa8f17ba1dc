"""The engine's SSH access to hosts, without a lab: host key and user checks
(model/sshkey.py), the engine's own key (fencing/sshaccess.py), the SSH
fields of a host in the store, the inventory file and the API, and the
configuration keys of soft fencing."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient

from conftest import require
from helpers import bearer
from hostpower.api.app import create_app
from hostpower.config import REGISTRY, Config
from hostpower.context import EngineContext
from hostpower.fencing.escalation import Verdict
from hostpower.fencing.softfencing import SoftFencing
from hostpower.fencing.sshaccess import KEY_FILE, SshKeyError, engine_key
from hostpower.inventory_file import load_document
from hostpower.model import sshkey
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import Host, HostStatus, SshAccess
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import HostInput, Inventory
from hostpower.store.users import Users


def public_line(key: object, comment: str = "") -> str:
    text = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{text} {comment}".strip()


ED25519 = public_line(ed25519.Ed25519PrivateKey.generate(), "root@h1")
ECDSA = public_line(ec.generate_private_key(ec.SECP256R1()))
RSA = public_line(rsa.generate_private_key(65537, 2048))


def ssh_keygen_fingerprint(tmp_path: Path, line: str) -> str:
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (Debian's openssh-client)")
    pub = tmp_path / "key.pub"
    pub.write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return out.split()[1]


# -- host keys and users -------------------------------------------------------------------

# Keys are made at import: ids name them, so parallel workers collect the same tests.
@pytest.mark.parametrize("line", [ED25519, ECDSA, RSA], ids=["ed25519", "ecdsa", "rsa"])
def test_ssh_host_key_is_normalized_and_fingerprinted_as_openssh_does(
        tmp_path: Path, line: str) -> None:
    key = sshkey.host_key(f"  {line}  ")
    assert key == " ".join(line.split()[:2])  # the comment is dropped
    assert sshkey.fingerprint(key) == ssh_keygen_fingerprint(tmp_path, line)
    assert sshkey.host_key("") == ""  # nothing pinned


@pytest.mark.parametrize("text, message", [
    ("ssh-dss AAAAB3NzaC1kc3M=", "is not one of"),
    ("ssh-ed25519", "must read '<type> <base64 key>'"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    ("ssh-rsa " + ED25519.split()[1], "not a ssh-rsa key"),
    (ED25519 + "\n" + RSA, "one line"),
    ("ssh-ed25519 " + "A" * 20000, "one line"),
], ids=["dss", "no-key", "not-base64", "type-mismatch", "two-lines", "too-long"])
def test_ssh_host_key_refuses_what_is_not_one_public_key(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        sshkey.host_key(text)
    assert refused.value.field == "ssh.host_key"
    assert message in refused.value.message


@pytest.mark.parametrize("user, ok", [
    ("root", True), ("hostpower", True), ("svc_fence.1", True), ("_x-y", True),
    ("-oProxyCommand=sh", False), ("", False), ("a b", False), ("x" * 33, False),
    ("root\n", False), ("1abc", False),
])
def test_ssh_user_is_a_plain_user_name(user: str, ok: bool) -> None:
    if ok:
        assert sshkey.user(user) == user
    else:
        with pytest.raises(ValidationError) as refused:
            sshkey.user(user)
        assert refused.value.field == "ssh.user"


# -- the engine's key ---------------------------------------------------------------------

def test_ssh_engine_key_is_created_once_private_and_0600(tmp_path: Path) -> None:
    ssh_dir = tmp_path / "home" / "ssh"
    key = engine_key(ssh_dir)
    private = ssh_dir / KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert key.public.startswith("ssh-ed25519 ") and key.public.endswith(" hostpower-engine")
    assert "PRIVATE" not in key.public
    assert (ssh_dir / f"{KEY_FILE}.pub").read_text() == key.public + "\n"
    assert key.fingerprint == ssh_keygen_fingerprint(tmp_path, key.public)
    assert engine_key(ssh_dir) == key  # the same key from then on
    assert key.private().export_public_key("openssh").decode().split()[:2] == \
        key.public.split()[:2]


def test_ssh_engine_key_of_concurrent_first_uses_is_one_key(tmp_path: Path) -> None:
    found: list[str] = []
    gate = threading.Barrier(8)

    def use() -> None:
        gate.wait()
        found.append(engine_key(tmp_path / "ssh").public)
    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(p.name for p in (tmp_path / "ssh").iterdir()) == [KEY_FILE, f"{KEY_FILE}.pub"]


def test_ssh_engine_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    engine_key(tmp_path / "ssh")
    os.chmod(tmp_path / "ssh" / KEY_FILE, 0o640)
    with pytest.raises(SshKeyError, match="readable by others .* chmod 600"):
        engine_key(tmp_path / "ssh")


# -- configuration ----------------------------------------------------------------------------

def test_ssh_soft_fencing_configuration_keys() -> None:
    config = Config()
    assert config["SshSoftFencingCommand"] == "systemctl restart hostpower-agent"
    assert config["SshSoftFencingTimeoutInSec"] == 30
    key = REGISTRY["SshSoftFencingCommand"]
    assert key.canonical("  /usr/bin/systemctl restart hostpower-agent ") == \
        "/usr/bin/systemctl restart hostpower-agent"
    for bad in ("", "   ", "systemctl restart a\nreboot", "x" * 1025):
        with pytest.raises(ValidationError) as refused:
            key.canonical(bad)
        assert refused.value.field == "SshSoftFencingCommand"


# -- the store and the inventory file ---------------------------------------------------------

def _cluster(inv: Inventory) -> int:
    dc = inv.add_data_center("dc")
    return inv.add_cluster("c", dc.id).id


def test_ssh_access_of_a_host_is_stored_checked_and_kept(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        cid = _cluster(inv)
        plain = inv.add_host(HostInput("h0", "10.0.0.1", cid))
        assert plain.ssh == SshAccess() and not plain.ssh.configured
        host = inv.add_host(HostInput("h1", "10.0.0.2", cid,
                                      ssh=SshAccess(22, "hostpower", ED25519)))
        assert host.ssh == SshAccess(22, "hostpower", " ".join(ED25519.split()[:2]))
        moved = inv.update_host(host.id, address="10.0.0.3")
        assert moved.ssh == host.ssh  # other updates keep it
    for bad, field in ((SshAccess(0), "ssh.port"), (SshAccess(22, "-oX=y"), "ssh.user"),
                       (SshAccess(22, "root", "ssh-ed25519 ###"), "ssh.host_key")):
        with pytest.raises(ValidationError) as refused:
            with ctx.db.session() as s:
                Inventory(s, ctx.box).update_host(host.id, ssh=bad)
        assert refused.value.field == field
    with ctx.db.session() as s:
        assert Inventory(s, ctx.box).host(host.id).ssh == host.ssh  # nothing stored


def _document(ssh: object, n: int = 1) -> dict:  # type: ignore[type-arg]
    return {"data_centers": [{"name": f"dc{n}", "clusters": [{"name": f"c{n}", "hosts": [
        {"name": f"h{n}", "address": f"10.0.0.{n}", "ssh": ssh}]}]}]}


def test_ssh_access_in_the_inventory_file(sqlite_ctx: EngineContext) -> None:
    ctx = sqlite_ctx
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box), ConfigStore(s),
                      _document({"port": 2222, "host_key": ECDSA}))
        host = Inventory(s, ctx.box).find_host("h1")
    assert host.ssh == SshAccess(2222, "root", ECDSA)
    for ssh, field in (({"port": 22, "host_key": "ssh-ed25519 x"}, "ssh.host_key"),
                       ({"port": 22, "password": "x"}, "ssh.password"),
                       ({"port": 70000}, "ssh.port")):
        with pytest.raises(ValidationError) as refused:
            with ctx.db.session() as s:
                load_document(Inventory(s, ctx.box), ConfigStore(s), _document(ssh, 2))
        assert refused.value.field == f"data_centers[0].clusters[0].hosts[0].{field}"


# -- the API ----------------------------------------------------------------------------------

@pytest.fixture
def api(sqlite_ctx: EngineContext):  # type: ignore[no-untyped-def]
    with sqlite_ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
        Users(s).add("watcher", "viewer", "viewer-password")
    with TestClient(create_app(sqlite_ctx)) as client:
        yield client


def test_ssh_public_key_is_shown_to_every_user_and_is_the_engine_key(
        api: TestClient, sqlite_ctx: EngineContext) -> None:
    assert api.get("/api/ssh/public-key").status_code == 401
    r = api.get("/api/ssh/public-key", headers=bearer(api, "watcher", "viewer-password"))
    assert r.status_code == 200, r.text
    key = engine_key(sqlite_ctx.settings.ssh_dir)
    assert r.json() == {"public_key": key.public, "fingerprint": key.fingerprint}
    private = (sqlite_ctx.settings.ssh_dir / KEY_FILE).read_text()
    assert private.split("\n")[1] not in r.text  # not a line of the private key


def test_ssh_fields_of_a_host_through_the_api(api: TestClient) -> None:
    admin = bearer(api, "root", "admin-password")
    dc = api.post("/api/datacenters", json={"name": "dc"}, headers=admin).json()
    c = api.post("/api/clusters", json={"name": "c", "data_center": {"id": dc["id"]}},
                 headers=admin).json()
    r = api.post("/api/hosts", headers=admin, json={
        "name": "h1", "address": "10.0.0.1", "cluster": {"id": c["id"]}})
    assert r.json()["ssh"] == {"port": None, "user": "root", "host_key": None,
                               "fingerprint": None}
    href = r.json()["href"]
    r = api.put(href, headers=admin, json={"ssh": {"port": 22, "host_key": ED25519}})
    assert r.status_code == 200, r.text
    pinned = " ".join(ED25519.split()[:2])
    assert r.json()["ssh"] == {"port": 22, "user": "root", "host_key": pinned,
                               "fingerprint": sshkey.fingerprint(pinned)}
    r = api.put(href, headers=admin, json={"ssh": {"port": 2222, "user": "fence"}})
    assert r.json()["ssh"]["host_key"] == pinned  # omitted: kept
    assert (r.json()["ssh"]["port"], r.json()["ssh"]["user"]) == (2222, "fence")
    for body, status, field in (
            ({"port": 0}, 422, "ssh.port"), ({"port": 22, "user": "-oProxyCommand=x"}, 400,
                                             "ssh.user"),
            ({"port": 22, "host_key": "ssh-rsa AAAA"}, 400, "ssh.host_key"),
            ({"port": 22, "fingerprint": "x"}, 422, "ssh.fingerprint")):
        r = api.put(href, headers=admin, json={"ssh": body})
        assert (r.status_code, r.json()["field"]) == (status, field), r.text
    r = api.put(href, headers=admin, json={"ssh": {"port": 2222, "user": "fence",
                                                   "host_key": ""}})
    assert r.json()["ssh"]["host_key"] is None  # unpinned
    # Pinning fetches the key over SSH: only an engine with its fencing service does.
    r = api.post(f"{href}/ssh/pin", headers=admin)
    assert r.status_code == 503, r.text


# -- the precaution itself ----------------------------------------------------------------------

class _NoStatus:
    gateway = None

    async def status(self, host_id: int) -> object:
        raise AssertionError("no PM status for a host without SSH access")


def test_soft_fencing_passes_a_host_without_ssh_access_on_untouched(tmp_path: Path) -> None:
    precaution = SoftFencing(_NoStatus(), None, tmp_path / "ssh")  # type: ignore[arg-type]
    host = Host(1, "h1", "10.0.0.1", 1, HostStatus.NON_RESPONSIVE)
    step = asyncio.run(precaution.consider(host, Config()))
    assert step.verdict is Verdict.PROCEED
    assert not (tmp_path / "ssh").exists()  # not even the engine's key was needed
    assert replace(host.ssh, port=22).configured


class _Gateway:
    def __init__(self) -> None:
        self.events: list = []  # type: ignore[type-arg]
        self._listeners: list = []  # type: ignore[type-arg]

    def on_event(self, callback):  # type: ignore[no-untyped-def]
        self._listeners.append(callback)

    def check_may_act(self) -> None:
        pass

    async def emit(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append(event)
        for listener in self._listeners:
            listener(event)


class _Service:
    def __init__(self) -> None:
        self.gateway = _Gateway()
        self.statuses = 0

    async def status(self, host_id: int):  # type: ignore[no-untyped-def]
        from hostpower.fencing.power import PowerResult
        from hostpower.model.power import FenceAction, Outcome
        self.statuses += 1
        return PowerResult(FenceAction.STATUS, Outcome.ON)


def test_soft_fencing_is_tried_once_until_the_host_is_up_again(tmp_path: Path) -> None:
    """oVirt's rule: one attempt per period of silence. A host that stays
    non-responsive (a later precaution spared it, or hard fencing failed) is
    not soft-fenced again at each escalation, only once it was seen up."""
    from hostpower.model.events import Event, Severity
    from helpers import closed_port

    service = _Service()
    precaution = SoftFencing(service, None, tmp_path / "ssh")  # type: ignore[arg-type]
    host = Host(7, "h7", "127.0.0.1", 1, HostStatus.NON_RESPONSIVE,
                ssh=SshAccess(closed_port(), "root", " ".join(ED25519.split()[:2])))

    def consider() -> list[str]:
        seen = len(service.gateway.events)
        step = asyncio.run(precaution.consider(host, Config()))
        assert step.verdict is Verdict.PROCEED
        return [e.kind for e in service.gateway.events[seen:]]

    assert consider() == ["soft_fencing.started", "soft_fencing.failed"]
    assert service.gateway.events[-1].details == {"reason": "refused"}
    assert consider() == [] and service.statuses == 1  # not again, not even a PM status
    asyncio.run(service.gateway.emit(Event(Severity.INFO, "host.status", "h7 answers again: up",
                                           host_id=7, details={"status": "up"})))
    assert consider() == ["soft_fencing.started", "soft_fencing.failed"]
