"""What an attacker's or a fuzzer's probes get: 422 for numbers out of range,
409 for a lost race, a 500 only for a bug and then with a request id; never a
driver's exception, never half a write. Each runs on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from apikit import ServedApp
from hostpower.api.app import create_app
from hostpower.model.errors import ConflictError
from hostpower.store.inventory import Inventory
from hostpower.store.tables import DataCenterRow

HUGE = "99999999999999999999999"


@pytest.fixture
def served(ctx):  # type: ignore[no-untyped-def]
    with ServedApp(ctx) as app:
        yield app


@pytest.mark.parametrize("method, path, body, field", [
    ("GET", f"/api/hosts/{HUGE}", None, "host_id"),
    ("DELETE", "/api/hosts/4/fenceagents/37315112406518748832191217664", None, "agent_id"),
    ("GET", "/api/operations?host=1961815566581772767258438795264", None, "host"),
    ("GET", f"/api/events?operation={HUGE}", None, "operation"),
    ("POST", "/api/clusters", {"name": "c", "data_center": {"id": 264007335724703678464}},
     "data_center.id"),
    ("PUT", "/api/hosts/1", {"port": 2**64}, "port"),
    ("GET", "/api/hosts/0", None, "host_id"),
])
def test_probe_numbers_out_of_range_answer_422_naming_the_field(
        served: ServedApp, method: str, path: str, body: dict | None, field: str) -> None:
    admin = served.admin_headers()
    r = served.request(method, path, admin, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert "out of range" in r.json()["detail"]


def test_probe_fifty_parallel_creates_of_one_name_give_one_201_and_409s(served: ServedApp) -> None:
    admin = served.admin_headers()

    def create(_: int) -> tuple[int, dict]:
        r = served.request("POST", "/api/datacenters", admin, json={"name": "dup-dc"})
        return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(50)))
    statuses = sorted(code for code, _ in answers)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) == {201, 409}, statuses
    for code, body in answers:
        if code == 409:
            assert body["field"] == "name"
            assert "'dup-dc' is already in use" in body["detail"]
    listed = served.request("GET", "/api/datacenters", admin).json()
    assert [dc["name"] for dc in listed] == ["dup-dc"]


def test_a_write_that_loses_the_race_in_the_database_is_a_conflict_naming_the_value(ctx) -> None:  # type: ignore[no-untyped-def]
    """The repository checks names before writing, but another writer (an engine,
    the CLI) may commit the same name in between: the database's own constraint
    decides, and the loser gets ConflictError, not a driver exception."""
    with ctx.db.session() as s:
        Inventory(s, ctx.box).add_data_center("taken")
        other = Inventory(s, ctx.box).add_data_center("other")
    with pytest.raises(ConflictError) as insert:
        with ctx.db.session() as s:
            s.add(DataCenterRow(name="taken", description=""))  # past the check, as a racer
    assert (insert.value.field, insert.value.message) == ("name", "'taken' is already in use")
    with pytest.raises(ConflictError) as update:
        with ctx.db.session() as s:
            s.get(DataCenterRow, other.id).name = "taken"
    assert (update.value.field, update.value.message) == ("name", "'taken' is already in use")
    with ctx.db.session() as s:
        assert [dc.name for dc in Inventory(s, ctx.box).data_centers()] == ["other", "taken"]


def test_a_bug_answers_500_with_a_request_id_that_the_log_has(
        sqlite_ctx, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def broken(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals: s3cr3t")
    monkeypatch.setattr(Inventory, "data_centers", broken)
    app = ServedApp(sqlite_ctx)
    with app:
        admin = app.admin_headers()
        with caplog.at_level(logging.ERROR, logger="hostpower.api"):
            r = app.request("GET", "/api/datacenters", admin)
        assert r.status_code == 500
        body = r.json()
        request_id = body["request_id"]
        assert r.headers["X-Request-ID"] == request_id
        assert request_id in body["detail"] and "s3cr3t" not in r.text
        logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
        assert logged and "s3cr3t" in str(logged[0].exc_info[1])
        # The engine still answers.
        assert app.request("GET", "/api/health", {}).status_code == 200


def test_text_with_a_nul_byte_is_refused_by_the_schema(ctx) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL cannot store a NUL byte: refused as 422 on both databases."""
    from hostpower.store.users import Users
    with ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
    with TestClient(create_app(ctx)) as api:
        token = api.post("/api/auth/token", json={"username": "root",
                                                  "password": "admin-password"}).json()
        admin = {"Authorization": f"Bearer {token['access_token']}"}
        r = api.post("/api/datacenters", headers=admin,
                     json={"name": "dc1", "description": "a\x00b"})
        assert r.status_code == 422 and r.json()["field"] == "description"
        assert api.get("/api/datacenters", headers=admin).json() == []
        for name in ("host", "user"):
            r = api.get("/api/events", headers=admin, params={name: "a\x00b"})
            assert (r.status_code, r.json()["field"]) == (422, name), r.text
