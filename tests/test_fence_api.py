"""Power operations through the REST API with the engine's runtime running.

No lab: the engine itself is the proxy (chain `engine`, no implicit sources)
and runs the real `fence_dummy` agent of Debian's fence-agents, whose "device"
is a file holding `on` or `off`. So every test sees what an operator would:
the operation's steps, the file actually switched, the events, the host status.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import require
from helpers import bearer, dummy_host
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.model.events import Event, Severity
from hostpower.model.operations import FlowAction, Origin
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.users import Users

FENCE_DUMMY = Path("/usr/sbin/fence_dummy")
SECRET = "Dummy-BMC-Secret-pw"
TEST_SECRET = "Unsaved-Agent-Secret-pw"
HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))
RESTART_STEPS = ["check", "stop", "verify_off", "start", "verify_on"]


def require_fence_dummy() -> None:
    """The device of these tests; skipped on a developer machine without it, fatal in CI."""
    require(FENCE_DUMMY.is_file() and os.access(FENCE_DUMMY, os.X_OK),
            f"needs {FENCE_DUMMY} (Debian package fence-agents)")


# Fast flows, the engine as the only proxy, and no automatic fencing of our hosts.
FAST_CONFIG = {
    "FenceProxyImplicitPreferences": "",
    "FenceStopStatusDelayBetweenRetriesInSec": 0,
    "FenceStartStatusDelayBetweenRetriesInSec": 0,
    "FenceStopStatusRetries": 3,
    "FenceStartStatusRetries": 3,
    "FenceCommandTimeoutInSec": 15,
    "FindFenceProxyRetries": 0,
    "DisableFenceAtStartupInSec": 86400,
}


@dataclass
class Engine:
    api: TestClient
    admin: dict[str, str]
    viewer: dict[str, str]
    hosts: dict[str, int]
    power: dict[str, Path]
    ctx: EngineContext

    def fence(self, host: str, fence_type: str, who: dict[str, str] | None = None) -> Any:
        return self.api.post(f"/api/hosts/{self.hosts[host]}/fence",
                             json={"fence_type": fence_type}, headers=who or self.admin)

    def host_status(self, host: str) -> str:
        return self.api.get(f"/api/hosts/{self.hosts[host]}", headers=self.admin).json()["status"]

    def events(self, **params: str) -> list[dict[str, Any]]:
        r = self.api.get("/api/events", params=params, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, op_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """The operation once it has ended (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.api.get(f"/api/operations/{op_id}", headers=self.admin).json()
            if op["state"] != "running":
                return op
            assert time.monotonic() < deadline, f"operation {op_id} still running: {op}"
            time.sleep(0.1)


def prepare(ctx: EngineContext, tmp_path: Path) -> dict[str, Path]:
    """h1 answers at once; h2's stop takes about two seconds (fence_dummy delay=1),
    long enough to act on a running flow."""
    power = {"h1": tmp_path / "h1.power", "h2": tmp_path / "h2.power"}
    for path in power.values():
        path.write_text("on")
    doc = {"config": FAST_CONFIG, "data_centers": [{"name": "dc1", "clusters": [{
        "name": "c1", "hosts": [dummy_host("h1", "127.0.0.11", power["h1"], SECRET),
                                dummy_host("h2", "127.0.0.12", power["h2"], SECRET, delay="1")]}]}]}
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s), doc)
        Users(s).add("root", "admin", "admin-password")
        Users(s).add("watcher", "viewer", "viewer-password")
    return power


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    require_fence_dummy()
    ctx = EngineContext.open(Settings(home=tmp_path / "home", db_url=db_url))
    power = prepare(ctx, tmp_path)
    try:
        with TestClient(create_app(ctx, EngineRuntime(ctx))) as api:
            admin = bearer(api, "root", "admin-password")
            hosts = {h["name"]: h["id"] for h in api.get("/api/hosts", headers=admin).json()}
            yield Engine(api, admin, bearer(api, "watcher", "viewer-password"), hosts, power, ctx)
    finally:
        ctx.close()


# -- status and flows ---------------------------------------------------------------------

def test_status_answers_at_once_through_the_engine(engine: Engine) -> None:
    """A status is a direct answer (no operation): the state and who answered."""
    r = engine.fence("h1", "status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["power_state"], body["proxy"]) == ("on", "engine")
    assert [(c["agent"], c["outcome"], c["proxy"]) for c in body["commands"]] == [
        ("dummy@10.99.0.1", "on", "engine")]
    engine.power["h1"].write_text("off")
    assert engine.fence("h1", "status").json()["power_state"] == "off"
    assert engine.api.get("/api/operations", headers=engine.admin).json() == []


def test_a_chain_saved_through_the_api_applies_to_the_next_command(engine: Engine) -> None:
    """The engine caches the inventory for proxy selection; an API write is seen at once."""
    assert engine.fence("h1", "status").json()["proxy"] == "engine"
    r = engine.api.put(f"/api/hosts/{engine.hosts['h1']}/power_management", headers=engine.admin,
                       json={"enabled": True, "pm_proxies": [{"type": "cluster"}]})
    assert r.status_code == 200, r.text
    body = engine.fence("h1", "status").json()
    # h2, the only other host of the cluster, is in maintenance: no proxy is eligible.
    assert (body["power_state"], body["proxy"]) == ("error", None)
    assert "no eligible proxy" in body["commands"][0]["message"]


def test_a_cli_write_while_the_engine_runs_applies_to_its_next_command(engine: Engine) -> None:
    """Another writer of the database (here the `hostpower` command, as an
    operator or a second engine would) moves the store's revision; the
    engine's next command sees the change, with no restart and no TTL."""
    r = engine.api.put(f"/api/hosts/{engine.hosts['h1']}/power_management", headers=engine.admin,
                       json={"enabled": True, "pm_proxies": []})  # the default chain applies
    assert r.status_code == 200, r.text
    assert engine.fence("h1", "status").json()["power_state"] == "error"  # default: cluster,dc
    settings = engine.ctx.settings
    env = {**os.environ, "HOSTPOWER_HOME": str(settings.home),
           "HOSTPOWER_DB_URL": settings.db_url}
    done = subprocess.run([HOSTPOWER, "config", "set", "FenceProxyDefaultPreferences", "engine"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    body = engine.fence("h1", "status").json()
    assert (body["power_state"], body["proxy"]) == ("on", "engine")


def test_restart_runs_every_step_through_the_engine_and_the_events_tell_the_story(
        engine: Engine) -> None:
    r = engine.fence("h1", "restart")
    assert r.status_code == 202, r.text
    started = r.json()
    assert (started["action"], started["state"], started["joined"]) == ("restart", "running", False)
    op = engine.wait(started["id"])
    assert (op["state"], op["message"]) == ("succeeded", "h1 was restarted")
    assert [s["name"] for s in op["steps"]] == RESTART_STEPS
    assert [s["outcome"] for s in op["steps"]] == ["on", "off", "off", "on", "on"]
    assert all(c["proxy"] == "engine" for s in op["steps"] for c in s["proxies"])
    verify = [s["message"] for s in op["steps"] if s["name"].startswith("verify_")]
    assert verify == ["poll 1/4", "poll 1/4"]  # 3 retries: the first poll and 3 more
    assert engine.power["h1"].read_text() == "on"
    assert engine.host_status("h1") == "connecting"  # back on: waiting for its agent

    story = [e for e in engine.events(host="h1") if e["operation_id"] == op["id"]]
    kinds = [e["kind"] for e in story]
    assert (kinds[0], kinds[-1]) == ("fence.started", "fence.succeeded")
    attempts = [e for e in story if e["kind"] == "fence.attempt"]
    assert [(a["details"]["action"], a["details"]["proxy"]) for a in attempts] == [
        ("status", "engine"), ("off", "engine"), ("status", "engine"), ("on", "engine"),
        ("status", "engine")]
    assert "restart of h1 started by root (api)" in story[0]["message"]
    assert {e["severity"] for e in story} == {"info"}


def test_stop_leaves_the_device_off_and_the_host_down(engine: Engine) -> None:
    r = engine.fence("h1", "stop")
    assert r.status_code == 202, r.text
    op = engine.wait(r.json()["id"])
    assert (op["state"], op["message"]) == ("succeeded", "h1 was stopped")
    assert [s["name"] for s in op["steps"]] == ["stop", "verify_off"]
    assert engine.power["h1"].read_text() == "off"
    assert engine.host_status("h1") == "down"


def test_a_request_while_a_flow_runs_joins_it_and_manual_is_refused(engine: Engine) -> None:
    """One flow per host: a second restart (or a stop) joins the running one, and
    clearing the host's state under a running flow is a conflict."""
    first = engine.fence("h2", "restart")
    assert first.status_code == 202, first.text
    op_id = first.json()["id"]
    again = engine.fence("h2", "restart")
    assert again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["joined"]) == (op_id, True)
    stop = engine.fence("h2", "stop")
    assert (stop.status_code, stop.json()["id"], stop.json()["action"]) == (200, op_id, "restart")
    manual = engine.fence("h2", "manual")
    assert manual.status_code == 409, manual.text
    assert f"operation {op_id} (restart) is running for h2" in manual.json()["detail"]
    assert engine.wait(op_id)["state"] == "succeeded"
    assert engine.power["h2"].read_text() == "on"
    joined = [e for e in engine.events(host="h2") if e["kind"] == "fence.joined"]
    assert len(joined) == 2 and all(e["operation_id"] == op_id for e in joined)
    assert len(engine.api.get("/api/operations", headers=engine.admin).json()) == 1


def test_manual_clears_the_host_state(engine: Engine) -> None:
    r = engine.fence("h1", "manual")
    assert (r.status_code, r.json()) == (200, {"detail": "host state cleared"})
    assert engine.host_status("h1") == "down"
    [event] = [e for e in engine.events(host="h1") if e["kind"] == "fence.manual"]
    assert event["severity"] == "warning"
    assert "rebooted by hand" in event["message"]
    assert engine.power["h1"].read_text() == "on"  # the device was not touched


# -- who did it ---------------------------------------------------------------------------

def test_operations_and_events_name_who_powered_a_host(engine: Engine) -> None:
    """"Who powered off h1?": the operation's requested_by and every event of the
    flow, down to each proxy attempt; a status names its user too."""
    r = engine.fence("h1", "stop")
    assert r.status_code == 202, r.text
    assert (r.json()["origin"], r.json()["requested_by"]) == ("api", "root")
    op = engine.wait(r.json()["id"])
    assert (op["state"], op["requested_by"]) == ("succeeded", "root")
    listed = engine.api.get("/api/operations", params={"host": engine.hosts["h1"]},
                            headers=engine.admin).json()
    assert [(o["id"], o["requested_by"]) for o in listed] == [(op["id"], "root")]
    story = [e for e in engine.events(host="h1") if e["operation_id"] == op["id"]]
    assert story[0]["message"] == "stop of h1 started by root (api)"
    assert {e["kind"] for e in story} >= {"fence.started", "fence.attempt", "fence.succeeded"}
    assert {e["user"] for e in story} == {"root"}

    assert engine.fence("h1", "status", engine.viewer).json()["power_state"] == "off"
    by_watcher = engine.events(user="watcher", host="h1")
    assert [e["kind"] for e in by_watcher] == ["fence.attempt"]
    assert by_watcher[0]["details"]["action"] == "status"

    assert engine.fence("h1", "manual").status_code == 200
    [manual] = [e for e in engine.events(host="h1") if e["kind"] == "fence.manual"]
    assert manual["user"] == "root" and manual["message"].startswith("root confirmed h1")


def test_joining_a_flow_names_both_users(engine: Engine) -> None:
    with engine.ctx.db.session() as s:
        Users(s).add("other", "admin", "other-password")
    first = engine.fence("h2", "restart")
    assert first.status_code == 202, first.text
    joined = engine.fence("h2", "stop", bearer(engine.api, "other", "other-password"))
    assert (joined.json()["joined"], joined.json()["requested_by"]) == (True, "root")
    engine.wait(first.json()["id"])
    [event] = engine.events(host="h2", user="other")
    assert event["kind"] == "fence.joined"
    assert event["message"].startswith("stop of h2 requested by other (api) while operation")
    assert event["details"] == {"operation_requested_by": "root"}


def test_automatic_fencing_has_no_requesting_user(engine: Engine) -> None:
    service = engine.api.app.state.runtime.service  # type: ignore[attr-defined]
    op, joined = engine.api.portal.call(  # type: ignore[union-attr]
        service.request, engine.hosts["h1"], FlowAction.STOP, Origin.AUTOMATIC)
    assert (joined, op.origin, op.requested_by) == (False, "automatic", None)
    body = engine.wait(op.id)
    assert (body["origin"], body["requested_by"]) == ("automatic", None)
    story = [e for e in engine.events(host="h1") if e["operation_id"] == op.id]
    assert story[0]["message"] == "stop of h1 started (automatic)"
    assert {e["user"] for e in story} == {None}


# -- refused requests ---------------------------------------------------------------------

def test_a_viewer_may_ask_status_but_nothing_else(engine: Engine) -> None:
    assert engine.fence("h1", "status", engine.viewer).json()["power_state"] == "on"
    for fence_type in ("restart", "stop", "start", "manual"):
        r = engine.fence("h1", fence_type, engine.viewer)
        assert r.status_code == 403, fence_type
        assert "admin role required" in r.json()["detail"]
    assert engine.api.get("/api/operations", headers=engine.admin).json() == []
    assert engine.power["h1"].read_text() == "on"
    assert engine.host_status("h1") == "maintenance"


def test_an_unknown_fence_type_or_host_is_refused(engine: Engine) -> None:
    r = engine.fence("h1", "reboot")
    assert r.status_code == 422
    assert r.json()["field"] == "fence_type"
    r = engine.api.post("/api/hosts/999999/fence", json={"fence_type": "restart"},
                        headers=engine.admin)
    assert r.status_code == 404
    assert "host 999999 not found" in r.json()["detail"]
    assert engine.api.get("/api/operations", headers=engine.admin).json() == []


def test_without_a_runtime_power_operations_answer_503(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
    with TestClient(create_app(ctx)) as api:
        admin = bearer(api, "root", "admin-password")
        for fence_type in ("status", "restart"):
            r = api.post("/api/hosts/1/fence", json={"fence_type": fence_type}, headers=admin)
            assert r.status_code == 503
            assert "power operations are not available" in r.json()["detail"]


# -- events -------------------------------------------------------------------------------

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def seed_events(ctx: EngineContext, hosts: dict[str, int]) -> None:
    """Events at known times, one minute apart; their kinds start with `test.`."""
    rows = [("h1", Severity.INFO), ("h1", Severity.WARNING), ("h1", Severity.ERROR),
            ("h2", Severity.ERROR)]
    with ctx.db.session() as s:
        for n, (host, severity) in enumerate(rows):
            Events(s).add(Event(severity, f"test.{n}", f"event {n} of {host}",
                                host_id=hosts[host], host_name=host,
                                created_at=T0 + timedelta(minutes=n)))


def seeded(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events if e["kind"].startswith("test.")]


def test_events_filter_by_host_severity_and_time(engine: Engine) -> None:
    seed_events(engine.ctx, engine.hosts)
    assert seeded(engine.events(host="h1")) == ["test.0", "test.1", "test.2"]
    assert seeded(engine.events(host="127.0.0.12")) == ["test.3"]
    warning = engine.events(severity="warning")
    assert seeded(warning) == ["test.1", "test.2", "test.3"]  # at least warning
    assert {e["severity"] for e in warning} <= {"warning", "error"}
    assert seeded(engine.events(severity="error", host="h1")) == ["test.2"]
    assert seeded(engine.events(since="2020-01-01T00:01:30Z")) == ["test.2", "test.3"]
    assert seeded(engine.events(since="2020-01-01T00:01:00+00:00", host="h1")) == [
        "test.1", "test.2"]
    assert seeded(engine.events(since=(T0 + timedelta(days=1)).isoformat())) == []


def test_events_since_in_another_time_zone(engine: Engine) -> None:
    """01:01:30+01:00 is 00:01:30 UTC: events 2 and 3 only."""
    seed_events(engine.ctx, engine.hosts)
    assert seeded(engine.events(since="2020-01-01T01:01:30+01:00")) == ["test.2", "test.3"]


def test_events_refuse_bad_filters_naming_them(engine: Engine) -> None:
    r = engine.api.get("/api/events", params={"since": "2020-01-01T00:00:00"},
                       headers=engine.admin)
    assert r.status_code == 422  # RFC 3339 date-time, as declared, has a zone
    assert r.json()["field"] == "since" and "time zone" in r.json()["detail"]
    r = engine.api.get("/api/events", params={"since": "0.5"}, headers=engine.admin)
    assert (r.status_code, r.json()["field"]) == (422, "since")
    r = engine.api.get("/api/events", params={"severity": "fatal"}, headers=engine.admin)
    assert (r.status_code, r.json()["field"]) == (422, "severity")
    r = engine.api.get("/api/events", params={"host": "ghost"}, headers=engine.admin)
    assert r.status_code == 404 and "ghost" in r.json()["detail"]


# -- the Test button ----------------------------------------------------------------------

def probe(engine: Engine, status_file: Path, password: str = TEST_SECRET) -> Any:
    """fenceagents/test with an unsaved fence_dummy definition."""
    definition = {"type": "dummy", "address": "10.99.0.2", "username": "admin",
                  "password": password,
                  "options": [{"name": "type", "value": "file"},
                              {"name": "status_file", "value": str(status_file)}]}
    return engine.api.post(f"/api/hosts/{engine.hosts['h1']}/fenceagents/test",
                           headers=engine.admin, json=definition)


def test_testing_an_unsaved_agent_answers_and_stores_nothing(engine: Engine,
                                                             tmp_path: Path) -> None:
    agents_before = engine.api.get(f"/api/hosts/{engine.hosts['h1']}/fenceagents",
                                   headers=engine.admin).json()
    device = tmp_path / "probe.power"
    for state in ("off", "on"):
        device.write_text(state)
        r = probe(engine, device)
        assert r.status_code == 200, r.text
        assert (r.json()["power_state"], r.json()["proxy"]) == (state, "engine")
    assert device.read_text() == "on"
    assert engine.api.get(f"/api/hosts/{engine.hosts['h1']}/fenceagents",
                          headers=engine.admin).json() == agents_before
    assert engine.api.get("/api/operations", headers=engine.admin).json() == []


def test_testing_an_agent_with_a_wrong_status_file_answers_error(engine: Engine,
                                                                 tmp_path: Path) -> None:
    """fence_dummy reads a missing status file as `off`; a file that is not a status
    file (neither `on` nor `off`) is the error it can report."""
    wrong = tmp_path / "not-a-status-file.txt"
    wrong.write_text("this is not a power state")
    body = probe(engine, wrong).json()
    assert body["power_state"] == "error"
    assert body["proxy"] is None
    assert "Unable to obtain correct plug status" in body["message"]
    assert body["commands"][0]["attempts"][0]["proxy"] == "engine"


def test_no_password_appears_in_any_answer_event_or_log(engine: Engine, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = tmp_path / "garbage.power"
    wrong.write_text("garbage")
    texts = [engine.fence("h1", "status").text, probe(engine, wrong).text,
             probe(engine, engine.power["h1"]).text]
    op = engine.fence("h1", "restart").json()
    engine.wait(op["id"])
    texts += [engine.api.get(f"/api/operations/{op['id']}", headers=engine.admin).text,
              engine.api.get("/api/events", headers=engine.admin).text,
              engine.api.get(f"/api/hosts/{engine.hosts['h1']}/fenceagents",
                             headers=engine.admin).text,
              caplog.text]
    everything = "\n".join(texts)
    assert "fence.attempt" in everything  # the events were there to be searched
    assert SECRET not in everything and TEST_SECRET not in everything
