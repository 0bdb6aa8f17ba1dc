"""The REST API as a client sees it: auth and roles, resources, bad input
refused with the field named and nothing stored, secrets never returned."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from helpers import bearer
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.users import Users

SECRET = "Very-Secret-BMC-pw"


@pytest.fixture
def api(ctx):  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
        Users(s).add("watcher", "viewer", "viewer-password")
    with TestClient(create_app(ctx)) as client:
        yield client


def configure(ctx: EngineContext, **values: object) -> None:
    """Store configuration values (e.g. small login thresholds) as an operator would."""
    with ctx.db.session() as s:
        for name, value in values.items():
            ConfigStore(s).set(name, str(value))


NO_BACKOFF = {"LoginFailureBackoffInMs": 0}


@pytest.fixture
def admin(api: TestClient) -> dict[str, str]:
    return bearer(api, "root", "admin-password")


@pytest.fixture
def viewer(api: TestClient) -> dict[str, str]:
    return bearer(api, "watcher", "viewer-password")


@pytest.fixture
def world(api: TestClient, admin):  # type: ignore[no-untyped-def]
    dc = api.post("/api/datacenters", json={"name": "dc1"}, headers=admin).json()
    dc2 = api.post("/api/datacenters", json={"name": "dc2"}, headers=admin).json()
    c1 = api.post("/api/clusters", json={"name": "c1", "data_center": {"id": dc["id"]}}, headers=admin).json()
    c2 = api.post("/api/clusters", json={"name": "c2", "data_center": {"id": dc2["id"]}}, headers=admin).json()
    hosts = {}
    for name, addr, cl in (("h1", "10.0.0.1", c1), ("h2", "10.0.0.2", c1), ("h3", "10.0.0.3", c2)):
        r = api.post("/api/hosts", json={"name": name, "address": addr, "cluster": {"id": cl["id"]},
                                          "status": "up"}, headers=admin)
        assert r.status_code == 201, r.text
        hosts[name] = r.json()
    return {"dc": dc, "c1": c1, "c2": c2, **hosts}


# -- authentication ---------------------------------------------------------------

def test_only_health_answers_without_a_token(api: TestClient) -> None:
    assert api.get("/api/health").json()["status"] == "ok"
    for path in ("/api/hosts", "/api/datacenters", "/api/clusters", "/api/config",
                 "/api/capabilities"):
        r = api.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/api/hosts", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_wrong_password_gets_no_token(api: TestClient) -> None:
    configure(api.app.state.ctx, **NO_BACKOFF)  # type: ignore[attr-defined]
    r = api.post("/api/auth/token", json={"username": "root", "password": "wrong"})
    assert r.status_code == 401
    assert r.json()["detail"] == "wrong user name or password"
    r = api.post("/api/auth/token", json={"username": "ghost", "password": "wrong"})
    assert r.status_code == 401


def test_viewers_read_and_admins_write(api: TestClient, admin, viewer, world) -> None:  # type: ignore[no-untyped-def]
    assert api.get("/api/hosts", headers=viewer).status_code == 200
    r = api.post("/api/datacenters", json={"name": "dc9"}, headers=viewer)
    assert r.status_code == 403
    assert "admin role required" in r.json()["detail"]
    assert api.put("/api/config/FenceStopStatusRetries", json={"value": "3"}, headers=viewer).status_code == 403
    assert api.delete(f"/api/hosts/{world['h3']['id']}", headers=viewer).status_code == 403
    assert [d["name"] for d in api.get("/api/datacenters", headers=admin).json()] == ["dc1", "dc2"]


def test_revoked_token_stops_working(api: TestClient, admin) -> None:  # type: ignore[no-untyped-def]
    assert api.delete("/api/auth/token", headers=admin).status_code == 204
    assert api.get("/api/hosts", headers=admin).status_code == 401
    # Revoking it again, or without any token, is not a logout either.
    for headers in (admin, {}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        r = api.delete("/api/auth/token", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"]


# -- who did it: every write is audited -------------------------------------------------

def audit_events(api: TestClient) -> list:  # type: ignore[type-arg]
    with api.app.state.ctx.db.session() as s:  # type: ignore[attr-defined]
        return Events(s).query(kind="audit.write")


def test_every_write_is_audited_with_its_user_and_address(api: TestClient, admin, world, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    h1 = world["h1"]
    agent = api.post(f"/api/hosts/{h1['id']}/fenceagents", headers=admin, json={
        "type": "ipmilan", "address": "10.1.0.1", "password": SECRET}).json()
    writes = [
        api.put(f"/api/hosts/{h1['id']}", headers=admin, json={"port": 8443}),
        api.put(f"/api/hosts/{h1['id']}/power_management", headers=admin,
                json={"enabled": True, "pm_proxies": [{"type": "dc"}]}),
        api.put(f"/api/hosts/{h1['id']}/fenceagents/{agent['id']}", headers=admin,
                json={"type": "ipmilan", "address": "10.1.0.2", "password": SECRET}),
        api.delete(f"/api/hosts/{h1['id']}/fenceagents/{agent['id']}", headers=admin),
        api.put(f"/api/clusters/{world['c2']['id']}", headers=admin, json={"description": "x"}),
        api.delete(f"/api/hosts/{world['h3']['id']}", headers=admin),
        api.put("/api/config/FenceStopStatusRetries", headers=admin, json={"value": "4"}),
    ]
    assert [r.status_code for r in writes] == [200, 200, 200, 204, 200, 204, 200]
    events = audit_events(api)
    assert [e.message for e in events] == [
        "root added data center dc1", "root added data center dc2",
        "root added cluster c1", "root added cluster c2",
        "root added host h1", "root added host h2", "root added host h3",
        "root added fence agent 1 (ipmilan@10.1.0.1) to host h1",
        "root updated host h1",
        "root updated the power management of host h1",
        "root updated fence agent 1 (ipmilan@10.1.0.2) of host h1",
        "root deleted fence agent 1 (ipmilan@10.1.0.2) of host h1",
        "root updated cluster c2",
        "root deleted host h3",
        "root set FenceStopStatusRetries to '4'",
    ]
    assert {(e.user, e.severity.value) for e in events} == {("root", "info")}
    deleted = events[-2]
    assert (deleted.host_id, deleted.host_name) == (world["h3"]["id"], "h3")
    assert deleted.details == {"method": "DELETE", "path": f"/api/hosts/{world['h3']['id']}",
                               "address": "testclient", "via": "bearer"}
    # The events API shows the user and filters by it; no body, no password anywhere.
    listed = api.get("/api/events", params={"user": "root", "host": "h1"}, headers=admin)
    assert [e["message"] for e in listed.json() if e["kind"] == "audit.write"][:1] == [
        "root added host h1"]
    assert {e["user"] for e in listed.json()} == {"root"}
    assert SECRET not in listed.text and SECRET not in caplog.text
    assert "root deleted host h3" in caplog.text  # logged once committed


def test_a_refused_write_leaves_no_audit_event(api: TestClient, admin, viewer, world) -> None:  # type: ignore[no-untyped-def]
    before = [e.message for e in audit_events(api)]
    h1 = world["h1"]
    refused = [
        api.post("/api/hosts", headers=admin, json={"name": "h9", "address": "10.0.0.1",
                                                    "cluster": {"id": world["c1"]["id"]}}),
        api.put(f"/api/hosts/{h1['id']}", headers=admin, json={"port": 70000}),
        api.delete(f"/api/clusters/{world['c1']['id']}", headers=admin),
        api.delete("/api/hosts/999", headers=admin),
        api.put("/api/config/FenceStopStatusRetries", headers=admin, json={"value": "many"}),
        api.post(f"/api/hosts/{h1['id']}/fenceagents", headers=admin,
                 json={"type": "ipmilan", "address": "10.1.0.1", "password": SECRET + "\n"}),
        api.post("/api/datacenters", headers=admin, json={"name": "dc9", "colour": "red"}),
        api.post("/api/datacenters", headers=viewer, json={"name": "dc9"}),
        api.post("/api/datacenters", json={"name": "dc9"}),
    ]
    assert [r.status_code for r in refused] == [409, 422, 409, 404, 400, 400, 422, 403, 401]
    assert [e.message for e in audit_events(api)] == before


def test_every_write_route_is_audited() -> None:
    """A new admin write route cannot forget its audit: it must depend on
    audited_admin (logins, logouts and power requests have events of their own)."""
    from fastapi.routing import APIRoute

    from hostpower.api import (
        routes_fence, routes_hosts, routes_inventory, routes_session, routes_ssh, routes_system,
    )
    from hostpower.api.audit import audited_admin

    def depends_on(dependant, call) -> bool:  # type: ignore[no-untyped-def]
        return dependant.call is call or any(depends_on(d, call) for d in dependant.dependencies)

    own_events = {"/api/auth/token", "/api/session", "/api/hosts/{host_id}/fence",
                  "/api/hosts/{host_id}/fenceagents/test"}
    routes = [r for m in (routes_fence, routes_hosts, routes_inventory, routes_session,
                          routes_ssh, routes_system) for r in m.router.routes]
    writes = [r for r in routes if isinstance(r, APIRoute)
              and r.methods & {"POST", "PUT", "PATCH", "DELETE"} and r.path not in own_events]
    assert len(writes) == 15
    assert [r.path for r in writes if not depends_on(r.dependant, audited_admin)] == []


# -- resources --------------------------------------------------------------------

def test_host_power_management_and_effective_chain(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    h1 = world["h1"]
    pm = {"enabled": True, "automatic_pm_enabled": False, "kdump_detection": True,
          "pm_proxies": [{"type": "host", "host": "h3"}, {"type": "dc"}]}
    r = api.put(f"/api/hosts/{h1['id']}", json={"power_management": pm}, headers=admin)
    assert r.status_code == 200, r.text
    body = api.get(f"/api/hosts/{h1['id']}", headers=admin).json()
    assert body["cluster"]["name"] == "c1"
    assert body["power_management"]["pm_proxies"] == [
        {"type": "host", "host": "h3"}, {"type": "dc", "host": None}]
    assert [(p["type"], p["host"], p["implicit"]) for p in body["power_management"]["effective_pm_proxies"]] == [
        ("host", "h3", False), ("dc", None, False), ("engine", None, True), ("cluster", None, True)]
    assert body["power_management"]["automatic_pm_enabled"] is False


def test_a_host_without_a_chain_shows_the_default(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    pm = api.get(f"/api/hosts/{world['h2']['id']}/power_management", headers=admin).json()
    assert pm["pm_proxies"] == []
    assert [(p["type"], p["implicit"]) for p in pm["effective_pm_proxies"]] == [
        ("cluster", True), ("dc", True), ("engine", True)]


def test_fence_agents_never_return_the_password(api: TestClient, admin, world, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    hid = world["h1"]["id"]
    r = api.post(f"/api/hosts/{hid}/fenceagents", headers=admin, json={
        "type": "ipmilan", "address": "10.1.0.1", "port": 623, "username": "admin",
        "password": SECRET, "options": [{"name": "lanplus", "value": "1"}]})
    assert r.status_code == 201, r.text
    agent = r.json()
    assert agent["password_set"] is True and "password" not in agent
    second = api.post(f"/api/hosts/{hid}/fenceagents", headers=admin, json={
        "type": "ipmilan", "address": "10.1.0.2", "order": agent["order"]}).json()
    assert second["concurrent"] is True
    listing = api.get(f"/api/hosts/{hid}/fenceagents", headers=admin)
    assert [a["concurrent"] for a in listing.json()] == [True, True]
    # Update without a password keeps it; the value never comes back anywhere.
    r = api.put(f"/api/hosts/{hid}/fenceagents/{agent['id']}", headers=admin, json={
        "type": "ipmilan", "address": "10.1.0.9", "port": 624, "username": "admin"})
    assert r.json()["password_set"] is True and r.json()["address"] == "10.1.0.9"
    everything = " ".join([listing.text, r.text, api.get("/api/hosts", headers=admin).text,
                           caplog.text])
    assert SECRET not in everything


def test_encrypted_options_are_write_only(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    r = api.post(f"/api/hosts/{world['h1']['id']}/fenceagents", headers=admin, json={
        "type": "apc_snmp", "address": "10.1.0.5", "encrypt_options": True,
        "options": [{"name": "community", "value": "hidden-community"}]})
    assert r.status_code == 201
    assert r.json()["options"] == [{"name": "community", "value": None}]
    assert "hidden-community" not in r.text


def test_config_through_the_api(api: TestClient, admin) -> None:  # type: ignore[no-untyped-def]
    items = {i["name"]: i for i in api.get("/api/config", headers=admin).json()}
    assert items["FenceStopStatusRetries"]["default"] == "18"
    assert items["FenceProxyDefaultPreferences"]["description"]
    r = api.put("/api/config/fenceproxydefaultpreferences", json={"value": "DC, engine"}, headers=admin)
    assert r.json()["value"] == "dc,engine"
    r = api.put("/api/config/FenceStopStatusRetries", json={"value": "many"}, headers=admin)
    assert r.status_code == 400
    assert r.json()["field"] == "FenceStopStatusRetries"
    assert api.get("/api/config/FenceStopStatusRetries", headers=admin).json()["value"] == "18"
    assert api.get("/api/config/NoSuchKey", headers=admin).status_code == 404


def test_capabilities(api: TestClient, admin) -> None:  # type: ignore[no-untyped-def]
    caps = api.get("/api/capabilities", headers=admin).json()
    assert caps["proxy_types"] == ["cluster", "dc", "other_dc", "engine", "host"]
    assert "ipmilan" in caps["fence_agent_types"]["standard"]
    assert set(caps["fence_agent_types"]["engine"]) >= set(caps["fence_agent_types"]["native"])
    assert "non_responsive" in caps["host_statuses"]


def test_openapi_is_served(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    assert "/api/hosts/{host_id}/fenceagents" in spec["paths"]
    assert "/api/auth/token" in spec["paths"]


def test_delete_in_use_is_a_conflict(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    r = api.delete(f"/api/clusters/{world['c1']['id']}", headers=admin)
    assert r.status_code == 409
    assert "still holds 2 host(s)" in r.json()["detail"]


# -- bad input: the field named, nothing stored -----------------------------------------

def state(api: TestClient, admin) -> str:  # type: ignore[no-untyped-def]
    hosts = api.get("/api/hosts", headers=admin).json()
    agents = [api.get(f"/api/hosts/{h['id']}/fenceagents", headers=admin).json() for h in hosts]
    return repr((hosts, agents))


BAD_PROXIES = [
    ([{"type": "clustr"}], 422, "pm_proxies.0.type"),
    ([{"type": "dc"}, {"type": "dc"}], 400, "power_management.pm_proxies"),
    ([{"type": "host", "host": "h1"}], 400, "pm_proxies"),
    ([{"type": "host", "host": "ghost"}], 400, "pm_proxies"),
    ([{"type": "host"}], 400, "power_management.pm_proxies"),
    ([{"type": "host", "host": "bad host!"}], 400, "power_management.pm_proxies"),
    ([{"type": "host", "host": "cluster"}], 400, "power_management.pm_proxies"),
    ([{"type": "cluster", "host": "h2"}], 400, "power_management.pm_proxies"),
]


@pytest.mark.parametrize("proxies, status, field", BAD_PROXIES)
def test_bad_proxy_chains_are_refused(api: TestClient, admin, world, proxies, status, field) -> None:  # type: ignore[no-untyped-def]
    before = state(api, admin)
    r = api.put(f"/api/hosts/{world['h1']['id']}/power_management", headers=admin,
                json={"enabled": True, "pm_proxies": proxies})
    assert r.status_code == status, r.text
    assert field in r.json()["field"]
    assert state(api, admin) == before


BAD_AGENTS = [
    ({"type": "nosuch", "address": "10.1.0.1"}, 400, "type", "unknown fence agent type"),
    ({"type": "ipmilan", "address": ""}, 400, "address", "must not be empty"),
    ({"type": "ipmilan", "address": "10.1.0.1", "port": 65536}, 422, "port",
     "65536 is out of range (at most 65535)"),
    ({"type": "ipmilan", "address": "10.1.0.1", "port": -1}, 422, "port",
     "-1 is out of range (at least 1)"),
    ({"type": "ipmilan", "address": "10.1.0.1",
      "options": [{"name": "lanplus", "value": "1\naction=off"}]}, 400, "options", "newline"),
    ({"type": "ipmilan", "address": "10.1.0.1",
      "options": [{"name": "lan\nplus", "value": "1"}]}, 400, "options", "line break"),
    ({"type": "ipmilan", "address": "10.1.0.1",
      "options": [{"name": "x=y", "value": "1"}]}, 400, "options", "'='"),
    ({"type": "ipmilan", "address": "10.1.0.1",
      "options": [{"name": "x", "value": "a=b"}]}, 400, "options", "'='"),
    ({"type": "ipmilan", "address": "10.1.0.1", "password": SECRET + "\n"}, 400, "password", "line break"),
    ({"type": "ipmilan", "address": "10.1.0.1", "colour": "red"}, 422, "colour", "Extra inputs"),
    ({"address": "10.1.0.1"}, 422, "type", "Field required"),
]


@pytest.mark.parametrize("body, status, field, message", BAD_AGENTS)
def test_bad_fence_agents_are_refused(api: TestClient, admin, world, body, status, field, message) -> None:  # type: ignore[no-untyped-def]
    before = state(api, admin)
    r = api.post(f"/api/hosts/{world['h1']['id']}/fenceagents", headers=admin, json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert message in r.json()["detail"]
    assert SECRET not in r.text
    assert state(api, admin) == before


BAD_HOSTS = [
    ({"name": "", "address": "10.0.0.9"}, 400, "name"),
    ({"name": "h9", "address": ""}, 400, "address"),
    ({"name": "h9", "address": "10.0.0.1"}, 409, "address"),
    ({"name": "H1", "address": "10.0.0.9"}, 409, "name"),
    ({"name": "engine", "address": "10.0.0.9"}, 400, "name"),
    ({"name": "h9", "address": "10.0.0.9", "status": "sleeping"}, 422, "status"),
    ({"name": "h9", "address": "10.0.0.9", "status": "non_operational"}, 400, "non_operational_reason"),
]


@pytest.mark.parametrize("body, status, field", BAD_HOSTS)
def test_bad_hosts_are_refused(api: TestClient, admin, world, body, status, field) -> None:  # type: ignore[no-untyped-def]
    before = state(api, admin)
    r = api.post("/api/hosts", headers=admin, json={**body, "cluster": {"id": world["c1"]["id"]}})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert state(api, admin) == before


def test_unknown_cluster_is_refused(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    r = api.post("/api/hosts", headers=admin, json={"name": "h9", "address": "10.0.0.9",
                                                    "cluster": {"id": 999}})
    assert r.status_code == 400 and r.json()["field"] == "cluster"
    assert api.get("/api/hosts/999", headers=admin).status_code == 404


def test_host_agent_port_defaults_and_is_checked(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    assert world["h1"]["port"] == 54321
    r = api.put(f"/api/hosts/{world['h1']['id']}", headers=admin, json={"port": 70000})
    assert r.status_code == 422 and r.json()["field"] == "port"
    assert "70000 is out of range" in r.json()["detail"]
    r = api.put(f"/api/hosts/{world['h1']['id']}", headers=admin, json={"port": 8443})
    assert r.json()["port"] == 8443


def test_agent_update_without_options_keeps_the_stored_ones(api: TestClient, admin, world) -> None:  # type: ignore[no-untyped-def]
    hid = world["h1"]["id"]
    agent = api.post(f"/api/hosts/{hid}/fenceagents", headers=admin, json={
        "type": "apc_snmp", "address": "10.1.0.5", "encrypt_options": True,
        "options": [{"name": "community", "value": "kept-community"}]}).json()
    r = api.put(f"/api/hosts/{hid}/fenceagents/{agent['id']}", headers=admin, json={
        "type": "apc_snmp", "address": "10.1.0.6", "encrypt_options": True, "order": 2})
    assert r.status_code == 200, r.text
    assert (r.json()["order"], r.json()["options"]) == (2, [{"name": "community", "value": None}])
    with api.app.state.ctx.db.session() as s:  # type: ignore[attr-defined]
        from hostpower.store.inventory import Inventory
        stored = Inventory(s, api.app.state.ctx.box).agent(hid, agent["id"])  # type: ignore[attr-defined]
    assert stored.options == (("community", "kept-community"),)
    r = api.put(f"/api/hosts/{hid}/fenceagents/{agent['id']}", headers=admin, json={
        "type": "apc_snmp", "address": "10.1.0.6", "options": []})
    assert r.json()["options"] == []


def test_an_agent_types_parameters_come_from_its_metadata(api: TestClient, viewer) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from conftest import require
    require(Path("/usr/sbin/fence_ipmilan").exists(), "fence-agents is not installed")
    r = api.get("/api/capabilities/fenceagents/fence_ipmilan", headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["type"], body["installed"], body["native"]) == ("ipmilan", True, True)
    params = {p["name"]: p for p in body["parameters"]}
    assert {"ip", "username", "password", "lanplus"} <= set(params)
    assert params["lanplus"]["type"] == "boolean"
    r = api.get("/api/capabilities/fenceagents/nosuch", headers=viewer)
    assert r.status_code == 400 and r.json()["field"] == "agent_type"
