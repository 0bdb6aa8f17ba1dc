"""oVirt's REST API v4 (/ovirt-engine) driven by oVirt's own Python SDK,
ovirt-engine-sdk-python, unchanged, against a served engine: what a script
written for oVirt sees. No lab: the hosts' device is the real fence_dummy
run by the engine (chain `engine`), as in test_fence_api.py; the restart
through a chain of proxies against the lab's BMCs is test_ovirt_lab.py.

Every write made through the SDK is checked through the native API too:
the two APIs read and write the same inventory and must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import os
import subprocess

import httpx
import ovirtsdk4 as sdk
from ovirtsdk4 import types
import pytest
from sqlalchemy import update

from apikit import ServedApp
from helpers import bearer, dummy_host, free_port
from servekit import HOSTPOWER, running_engine
from test_fence_api import FAST_CONFIG, require_fence_dummy
from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.tables import TokenRow
from hostpower.store.users import Users

SECRET = "Dummy-BMC-Secret-pw"
AGENT_SECRET = "Ovirt-Added-Agent-pw"
USERS = {"root": ("admin", "admin-password"), "watcher": ("viewer", "viewer-password"),
         "typo": ("admin", "typo-password")}


@dataclass
class Engine:
    url: str
    ctx: EngineContext
    power: dict[str, Path]

    @property
    def api_url(self) -> str:
        return f"{self.url}/ovirt-engine/api"

    def connect(self, user: str = "root", password: str | None = None) -> sdk.Connection:
        return sdk.Connection(url=self.api_url, username=f"{user}@internal",
                              password=password or USERS[user][1], insecure=True, timeout=120)

    def native(self, method: str, path: str, user: str = "root", **kwargs: Any) -> Any:
        headers = bearer(httpx, user, USERS[user][1], self.url)
        r = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def host_id(self, name: str) -> str:
        return str(next(h["id"] for h in self.native("GET", "/api/hosts") if h["name"] == name))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """east-1 and east-2 (cluster east, dc1), west-1 (cluster west, dc2): fence_dummy
    devices switched by the engine; the engine's API served for real."""
    require_fence_dummy()
    power = {n: tmp_path / f"{n}.power" for n in ("east-1", "east-2", "west-1")}
    for path in power.values():
        path.write_text("on")
    doc = {"config": FAST_CONFIG, "data_centers": [
        {"name": "dc1", "clusters": [{"name": "east", "hosts": [
            dummy_host("east-1", "127.0.0.21", power["east-1"], SECRET),
            dummy_host("east-2", "127.0.0.22", power["east-2"], SECRET)]}]},
        {"name": "dc2", "clusters": [{"name": "west", "hosts": [
            dummy_host("west-1", "127.0.0.23", power["west-1"], SECRET)]}]}]}
    ctx = EngineContext.open(Settings(home=tmp_path / "home",
                                      db_url=f"sqlite:///{tmp_path / 'engine.db'}"))
    try:
        with ctx.db.session() as s:
            load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s), doc)
            for name, (role, password) in USERS.items():
                Users(s).add(name, role, password)
        with ServedApp(ctx, EngineRuntime(ctx, monitor=False)) as served:
            yield Engine(served.url, ctx, power)
    finally:
        ctx.close()


# -- connecting -------------------------------------------------------------------------------

def test_ovirt_sdk_connects_and_reads_the_api_root(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.test(raise_exception=True) is True
        api = conn.system_service().get()
    assert api.product_info.name == "hostpower"
    assert (api.product_info.version.major, api.product_info.version.minor) == (4, 5)
    assert api.summary.hosts.total == 3


def test_ovirt_sdk_over_https_trusts_the_engine_ca_only(tmp_path: Path) -> None:
    """`hostpower serve` itself, over its own TLS: the SDK verifies the engine's
    certificate with the engine CA file, and refuses the engine without it."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPOWER_")}
    env["HOSTPOWER_HOME"] = str(home)
    added = subprocess.run(HOSTPOWER + ["user", "add", "alice", "--role", "viewer"], env=env,
                           input="alice-password\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    url = f"https://127.0.0.1:{free_port()}"
    with running_engine(env, url, tmp_path / "engine.log"):
        conn = sdk.Connection(url=f"{url}/ovirt-engine/api", username="alice@internal",
                              password="alice-password", ca_file=str(home / "pki" / "ca.crt"),
                              timeout=60)
        assert conn.test(raise_exception=True) is True
        assert conn.system_service().get().product_info.name == "hostpower"
        conn.close()
        other_ca = tmp_path / "other-ca.crt"  # a CA that did not issue the engine's certificate
        other_ca.write_bytes(_self_signed_ca())
        stranger = sdk.Connection(url=f"{url}/ovirt-engine/api", username="alice@internal",
                                  password="alice-password", ca_file=str(other_ca), timeout=60)
        with pytest.raises(sdk.Error) as raised:
            stranger.test(raise_exception=True)
        assert "SSL certificate OpenSSL verify result" in str(raised.value)
        stranger.close(logout=False)


def _self_signed_ca() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the engine CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_ovirt_wrong_password_is_refused_with_the_sdks_auth_error(engine: Engine) -> None:
    conn = engine.connect("typo", "not-the-password")
    with pytest.raises(sdk.AuthError) as raised:
        conn.test(raise_exception=True)
    assert "access_denied" in str(raised.value)
    assert "wrong user name or password" in str(raised.value)
    conn.close(logout=False)
    with engine.ctx.db.session() as s:
        [failed] = Events(s).query(kind="auth.login_failed")
    assert failed.user == "typo" and failed.details["via"] == "ovirt-sso"


def test_ovirt_an_expired_token_makes_the_sdk_log_in_again(engine: Engine) -> None:
    conn = engine.connect()
    first = conn.authenticate()
    assert len(conn.system_service().hosts_service().list()) == 3
    with engine.ctx.db.session() as s:  # the token expires, as after 12 hours
        s.execute(update(TokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    r = httpx.get(f"{engine.api_url}/hosts", headers={"Authorization": f"Bearer {first}"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "<fault>" in r.text
    # The SDK sees the 401, gets a new token from the SSO service and retries.
    assert len(conn.system_service().hosts_service().list()) == 3
    second = conn.authenticate()
    assert second != first
    conn.close()  # logout=True: the SSO logout revokes the token
    r = httpx.get(f"{engine.url}/api/hosts", headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 401
    with engine.ctx.db.session() as s:
        kinds = [e.kind for e in Events(s).query(user="root")]
    assert kinds.count("auth.login") == 2 and kinds.count("auth.logout") == 1


# -- hosts --------------------------------------------------------------------------------------

def test_ovirt_hosts_are_listed_and_found_by_name_search(engine: Engine) -> None:
    with engine.connect() as conn:
        hosts = conn.system_service().hosts_service()
        assert sorted(h.name for h in hosts.list()) == ["east-1", "east-2", "west-1"]
        assert sorted(h.name for h in hosts.list(search="name=east-*")) == ["east-1", "east-2"]
        [west] = hosts.list(search="name=west-1")
        assert west.id == engine.host_id("west-1")  # ids are text, as oVirt's
        assert west.status is types.HostStatus.MAINTENANCE
        assert west.address == "127.0.0.23"
        assert conn.follow_link(west.cluster).name == "west"
        assert [a.type for a in conn.follow_link(west.agents)] == ["dummy"]
        assert [h.name for h in hosts.list(search="name=EAST-2", case_sensitive=False)] == [
            "east-2"]
        assert [h.name for h in hosts.list(search="cluster=east and name!=east-1")] == [
            "east-2"]
        assert hosts.list(search="name=nothing*") == []
        with pytest.raises(sdk.Error) as raised:
            hosts.list(search="name=east-1 sortby name")
        assert raised.value.code == 400
        assert "search: 'sortby' is not served" in str(raised.value)
        with pytest.raises(sdk.NotFoundError):
            hosts.host_service("999").get()


def test_ovirt_pm_proxies_reordered_through_the_sdk_and_the_native_api_agrees(
        engine: Engine) -> None:
    hid = engine.host_id("east-1")
    engine.native("PUT", f"/api/hosts/{hid}/power_management", json={
        "enabled": True, "automatic_pm_enabled": True, "kdump_detection": True,
        "pm_proxies": [{"type": "cluster"}, {"type": "engine"}, {"type": "host", "host": "west-1"},
                       {"type": "dc"}]})
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        pm = service.get().power_management
        # engine and named hosts are hostpower's: an oVirt client sees the oVirt types only.
        assert [p.type for p in pm.pm_proxies] == [types.PmProxyType.CLUSTER,
                                                   types.PmProxyType.DC]
        assert (pm.enabled, pm.automatic_pm_enabled, pm.kdump_detection) == (True, True, True)
        updated = service.update(types.Host(power_management=types.PowerManagement(
            automatic_pm_enabled=False, kdump_detection=False,
            pm_proxies=[types.PmProxy(type=types.PmProxyType.DC),
                        types.PmProxy(type=types.PmProxyType.CLUSTER),
                        types.PmProxy(type=types.PmProxyType.OTHER_DC)])))
        assert [p.type.value for p in updated.power_management.pm_proxies] == [
            "dc", "cluster", "other_dc"]
        assert updated.power_management.automatic_pm_enabled is False
    native = engine.native("GET", f"/api/hosts/{hid}")["power_management"]
    # The oVirt entries took the oVirt entries' places; engine and west-1 stayed put.
    assert [(p["type"], p["host"]) for p in native["pm_proxies"]] == [
        ("dc", None), ("engine", None), ("host", "west-1"), ("cluster", None), ("other_dc", None)]
    assert (native["enabled"], native["automatic_pm_enabled"], native["kdump_detection"]) == (
        True, False, False)


def test_ovirt_bad_power_management_updates_are_refused_naming_the_field(
        engine: Engine) -> None:
    hid = engine.host_id("east-1")
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        with pytest.raises(sdk.Error) as raised:
            service.update(types.Host(power_management=types.PowerManagement(pm_proxies=[
                types.PmProxy(type=types.PmProxyType.DC),
                types.PmProxy(type=types.PmProxyType.DC)])))
        assert raised.value.code == 400
        assert "power_management.pm_proxies" in str(raised.value)
        with pytest.raises(sdk.Error) as raised:
            service.update(types.Host(name="renamed"))
        assert "host.name: is not changed through the oVirt API" in str(raised.value)
        auth = {"Authorization": f"Bearer {conn.authenticate()}"}
        for bad, detail in (
                (b"<host><power_management>", "host: the body is not valid XML"),
                (b'<!DOCTYPE host [<!ENTITY x "y">]><host><name>&x;</name></host>',
                 "host: a document type declaration (DTD) is not accepted"),
                (b"<agent/>", "host: expected a <host> element, got <agent>"),
                (b"<host><power_management><enabled>maybe</enabled></power_management></host>",
                 "power_management.enabled: must be true or false")):
            r = httpx.put(f"{engine.api_url}/hosts/{hid}", headers=auth, content=bad)
            assert r.status_code == 400, r.text
            assert f"<detail>{detail}" in r.text.replace("&lt;", "<").replace("&gt;", ">")
    assert engine.native("GET", f"/api/hosts/{hid}")["name"] == "east-1"


# -- fence agents ----------------------------------------------------------------------------

def test_ovirt_fence_agents_added_updated_removed_and_the_password_never_answered(
        engine: Engine) -> None:
    hid = engine.host_id("east-2")
    with engine.connect() as conn:
        agents = conn.system_service().hosts_service().host_service(hid).fence_agents_service()
        added = agents.add(types.Agent(
            type="ipmilan", address="10.20.0.7", port=623, username="admin",
            password=AGENT_SECRET, order=1,
            options=[types.Option(name="lanplus", value="1")]))
        assert added.password is None
        assert (added.type, added.address, added.port, added.order) == ("ipmilan", "10.20.0.7",
                                                                         623, 1)
        assert added.concurrent is True  # the host's fence_dummy agent has order 1 too
        assert [(o.name, o.value) for o in added.options] == [("lanplus", "1")]
        listed = {a.id: a for a in agents.list()}
        assert len(listed) == 2 and listed[added.id].username == "admin"

        one = agents.agent_service(added.id)
        changed = one.update(types.Agent(username="operator", order=2,
                                         options=[types.Option(name="lanplus", value="1"),
                                                  types.Option(name="privlvl", value="operator")]))
        assert (changed.username, changed.order, changed.concurrent) == ("operator", 2, False)
        assert changed.address == "10.20.0.7"  # what was not sent is kept
        for path in (f"/hosts/{hid}/fenceagents", f"/hosts/{hid}/fenceagents/{added.id}"):
            for accept in ("application/xml", "application/json"):
                r = httpx.get(f"{engine.api_url}{path}", headers={
                    "Authorization": f"Bearer {conn.authenticate()}", "Accept": accept})
                assert r.status_code == 200 and AGENT_SECRET not in r.text
                assert "password" not in r.text

        native = {a["id"]: a for a in engine.native("GET", f"/api/hosts/{hid}/fenceagents")}
        mine = native[int(added.id)]
        assert (mine["username"], mine["order"], mine["password_set"]) == ("operator", 2, True)
        assert [o["name"] for o in mine["options"]] == ["lanplus", "privlvl"]

        one.remove()
        assert [a.type for a in agents.list()] == ["dummy"]
        with pytest.raises(sdk.NotFoundError):
            one.get()
        with pytest.raises(sdk.Error) as raised:
            agents.add(types.Agent(type="ipmilan"))
        assert "agent.address: is required" in str(raised.value)
    assert len(engine.native("GET", f"/api/hosts/{hid}/fenceagents")) == 1


# -- fencing ----------------------------------------------------------------------------------

def test_ovirt_fence_status_answers_the_power_state(engine: Engine) -> None:
    hid = engine.host_id("east-1")
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        assert service.fence(fence_type="status").status is types.PowerManagementStatus.ON
        engine.power["east-1"].write_text("off")
        assert service.fence(fence_type="status").status is types.PowerManagementStatus.OFF
        with pytest.raises(sdk.Error) as raised:
            service.fence(fence_type="reboot")
        assert "action.fence_type: 'reboot' is not one of status, start" in str(raised.value)


def test_ovirt_fence_restart_waits_for_the_flow_like_ovirt(engine: Engine) -> None:
    hid = engine.host_id("east-1")
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        pm = service.fence(fence_type="restart")
        assert pm.status is types.PowerManagementStatus.ON  # verified on at the flow's end
    [op] = engine.native("GET", f"/api/operations?host={hid}")
    assert (op["action"], op["state"], op["requested_by"]) == ("restart", "succeeded", "root")
    assert [s["name"] for s in op["steps"]] == ["check", "stop", "verify_off", "start",
                                                "verify_on"]
    assert engine.power["east-1"].read_text() == "on"


def test_ovirt_manual_fence_clears_the_host_state(engine: Engine) -> None:
    hid = engine.host_id("west-1")
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        assert service.fence(fence_type="manual") is None  # complete, no power state
        assert service.get().status is types.HostStatus.DOWN
    events = engine.native("GET", f"/api/events?host={hid}")
    assert any(e["kind"] == "fence.manual" and e["user"] == "root" for e in events)


def test_ovirt_fence_failures_are_ovirts_faults(engine: Engine) -> None:
    """east-2's chain is its cluster alone, whose other host is in maintenance:
    no proxy is eligible. A status answers oVirt's failed action, a restart
    fails after its check; the SDK raises both, with the reason."""
    hid = engine.host_id("east-2")
    engine.native("PUT", f"/api/hosts/{hid}/power_management",
                  json={"enabled": True, "pm_proxies": [{"type": "cluster"}]})
    with engine.connect() as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        with pytest.raises(sdk.Error) as raised:
            service.fence(fence_type="status")
        assert "HTTP response code is 200" in str(raised.value)  # oVirt's failed action
        assert 'Fault reason is "Operation Failed"' in str(raised.value)
        assert "failed on every proxy of chain cluster: no eligible proxy" in str(raised.value)
        with pytest.raises(sdk.Error) as raised:
            service.fence(fence_type="restart")
        assert raised.value.code == 400
        [op] = engine.native("GET", f"/api/operations?host={hid}")
        assert op["state"] == "failed"
        assert f"operation {op['id']} (restart) failed: {op['message']}" in str(raised.value)
    assert engine.power["east-2"].read_text() == "on"


def test_ovirt_fence_async_answers_pending_with_the_operation(engine: Engine) -> None:
    hid = engine.host_id("east-2")
    with engine.connect() as conn:
        r = httpx.post(f"{engine.api_url}/hosts/{hid}/fence", headers={
            "Authorization": f"Bearer {conn.authenticate()}", "Content-Type": "application/xml"},
            content=b"<action><fence_type>stop</fence_type><async>true</async></action>")
    assert r.status_code == 202, r.text
    assert "<status>pending</status>" in r.text
    op_id = r.text.split('<action id="')[1].split('"')[0]
    assert f'href="/api/operations/{op_id}"' in r.text


def test_ovirt_a_viewer_reads_and_asks_a_status_but_cannot_fence_or_update(
        engine: Engine) -> None:
    hid = engine.host_id("east-1")
    with engine.connect("watcher") as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        assert service.fence(fence_type="status").status is types.PowerManagementStatus.ON
        with pytest.raises(sdk.AuthError) as raised:
            service.fence(fence_type="restart")
        assert raised.value.code == 403
        assert "role viewer: admin role required" in str(raised.value)
        with pytest.raises(sdk.AuthError):
            service.update(types.Host(power_management=types.PowerManagement(enabled=False)))
        with pytest.raises(sdk.AuthError):
            service.fence_agents_service().add(types.Agent(type="ipmilan", address="10.0.0.9"))
    assert engine.native("GET", f"/api/operations?host={hid}") == []
    assert engine.power["east-1"].read_text() == "on"


# -- clusters and data centers -----------------------------------------------------------

def test_ovirt_cluster_fencing_policy_read_and_updated(engine: Engine) -> None:
    with engine.connect() as conn:
        clusters = conn.system_service().clusters_service()
        [east] = clusters.list(search="name=east")
        policy = east.fencing_policy
        assert policy.enabled is True
        assert (policy.skip_if_connectivity_broken.enabled,
                policy.skip_if_connectivity_broken.threshold) == (True, 50)
        assert policy.skip_if_sd_active.enabled is False
        service = clusters.cluster_service(east.id)
        updated = service.update(types.Cluster(fencing_policy=types.FencingPolicy(
            skip_if_connectivity_broken=types.SkipIfConnectivityBroken(threshold=70),
            skip_if_sd_active=types.SkipIfSdActive(enabled=True))))
        assert updated.fencing_policy.skip_if_connectivity_broken.threshold == 70
        assert updated.fencing_policy.enabled is True  # not sent: kept
        with pytest.raises(sdk.Error) as raised:
            service.update(types.Cluster(fencing_policy=types.FencingPolicy(
                skip_if_connectivity_broken=types.SkipIfConnectivityBroken(threshold=101))))
        assert "skip_if_connectivity_broken.threshold" in str(raised.value)
        dc = conn.follow_link(east.data_center)
        assert dc.name == "dc1"
        assert [c.name for c in conn.system_service().data_centers_service()
                .data_center_service(dc.id).clusters_service().list()] == ["east"]
        assert sorted(d.name for d in conn.system_service().data_centers_service().list()) == [
            "dc1", "dc2"]
    native = engine.native("GET", f"/api/clusters/{east.id}")["fencing_policy"]
    assert native == {"enabled": True, "skip_if_connectivity_broken": {
        "enabled": True, "threshold": 70}, "skip_if_sd_active": {"enabled": True}}


def test_ovirt_what_is_not_served_is_a_fault_the_sdk_understands(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(sdk.NotFoundError) as raised:
        conn.system_service().vms_service().list()
    assert "not served by hostpower's oVirt API" in str(raised.value)


# -- JSON ---------------------------------------------------------------------------------

def test_ovirt_json_answers_as_ovirt_writes_them(engine: Engine) -> None:
    r = httpx.post(f"{engine.url}/ovirt-engine/sso/oauth/token", headers={
        "Accept": "application/json"}, data={"grant_type": "password", "scope": "ovirt-app-api",
                                             "username": "root@internal",
                                             "password": "admin-password"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    token = r.json()
    assert token["token_type"] == "bearer" and int(token["exp"]) > 0
    auth = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}

    hosts = httpx.get(f"{engine.api_url}/hosts", params={"search": "name=west-1"},
                      headers=auth).json()
    [west] = hosts["host"]
    assert (west["name"], west["status"], west["port"]) == ("west-1", "maintenance", str(
        west["port"]))
    assert west["power_management"]["enabled"] == "true"  # oVirt's JSON: values as text
    assert west["href"] == f"/ovirt-engine/api/hosts/{west['id']}"
    assert {"rel": "fenceagents", "href": f"{west['href']}/fenceagents"} in west["link"]
    assert west["actions"]["link"] == [{"href": f"{west['href']}/fence", "rel": "fence"}]

    r = httpx.put(f"{engine.api_url}/hosts/{west['id']}", headers={
        **auth, "Content-Type": "application/json"}, json={"power_management": {
            "pm_proxies": {"pm_proxy": [{"type": "other_dc"}, {"type": "cluster"}]}}})
    assert r.status_code == 200, r.text
    assert r.json()["power_management"]["pm_proxies"] == {"pm_proxy": [{"type": "other_dc"},
                                                                       {"type": "cluster"}]}
    r = httpx.post(f"{engine.api_url}/hosts/{west['id']}/fence", headers={
        **auth, "Content-Type": "application/json"}, json={"fence_type": "status"})
    assert r.json()["power_management"] == {"status": "on"}
    assert r.json()["status"] == "complete"

    r = httpx.get(f"{engine.api_url}/hosts/12345", headers=auth)
    assert r.status_code == 404
    assert r.json() == {"reason": "Not Found", "detail": "host 12345 not found"}
    r = httpx.post(f"{engine.url}/ovirt-engine/sso/oauth/token", data={
        "grant_type": "password", "scope": "ovirt-app-api", "username": "root",
        "password": "nope"})
    assert r.status_code == 400
    assert r.json()["error"] == "access_denied"
