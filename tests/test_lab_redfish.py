"""The lab's Redfish BMCs (sushy-tools behind the lab's session layer, over
HTTPS signed by the lab's device CA) against the real fence_redfish and a
plain HTTPS client: power drives the host, sessions, counts, faults."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import wait_until
from hostpower.lab.runner import RunningLab
from hostpower.lab.topology import parse
from hostpower.model.errors import ValidationError
from labkit import (
    REDFISH_LAB, counts, fence_redfish, redfish_client, redfish_login, require_lab_tools, start,
    wait_all_agents, wait_counts,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_lab_tools(namespaces=False)
    doc = yaml.safe_load(REDFISH_LAB)
    doc["redfish"] = {"max_sessions": 3}
    running, _ = start(tmp_path_factory.mktemp("lab"), doc)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def powered_on(lab: RunningLab) -> Iterator[None]:
    yield
    lab.lab.fault("k1-r", "bmc_unresponsive", clear=True)
    lab.lab.fault("k1-r", "bmc_restart")  # every session a test left open is forgotten
    if lab.lab.status()["hosts"]["k1-r"]["power"] == "off":
        assert fence_redfish(lab, _bmc(lab), "on").returncode == 0
    wait_all_agents(lab)


def _bmc(lab: RunningLab):  # type: ignore[no-untyped-def]
    return lab.topo.host("k1-r").bmcs[0]


def _wait_host(lab: RunningLab, power: str, agent: str) -> None:
    """Power events reach the supervisor asynchronously (the BMC's stdout)."""
    def there() -> bool:
        host = lab.lab.status()["hosts"]["k1-r"]
        return host["power"] == power and host["agent"] == agent
    wait_until(there, 5, f"k1-r power {power}, agent {agent}")


def test_fence_redfish_status_off_on_reboot_drive_the_host(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    before = counts(lab, bmc.name)
    boots = lab.lab.status()["hosts"]["k1-r"]["boots"]
    status = fence_redfish(lab, bmc, "status")
    assert status.returncode == 0 and "Status: ON" in status.stdout, status.stderr
    off = fence_redfish(lab, bmc, "off")
    assert off.returncode == 0, off.stderr
    _wait_host(lab, "off", "stopped")
    assert fence_redfish(lab, bmc, "status").returncode == 2  # fence-agents: 2 = off
    assert fence_redfish(lab, bmc, "on").returncode == 0
    wait_all_agents(lab)
    reboot = fence_redfish(lab, bmc, "reboot")
    assert reboot.returncode == 0, reboot.stderr
    wait_all_agents(lab)
    assert lab.lab.status()["hosts"]["k1-r"]["boots"] == boots + 2
    now = wait_counts(lab, bmc.name, before, on=2, off=2, status=4)
    assert now["login"] == before["login"]  # fence_redfish uses basic auth, no sessions
    assert now["refused"] == before["refused"]


def test_the_bmc_certificate_is_signed_by_the_labs_device_ca_not_the_engines(
        lab: RunningLab) -> None:
    bmc = _bmc(lab)
    bundle = lab.redfish_ca_bundle
    assert bundle.is_file() and bundle.parent != lab.engine_cert_dir
    assert bundle.read_bytes() != (lab.engine_cert_dir / "ca.crt").read_bytes()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{bmc.address}:{bmc.port}/redfish/v1/",
                  verify=ssl.create_default_context(cafile=str(lab.engine_cert_dir / "ca.crt")))
    with redfish_client(lab, bmc) as c:
        assert c.get("/redfish/v1/").json()["Systems"] == {"@odata.id": "/redfish/v1/Systems"}
    assert lab.lab.status()["redfish_ca_bundle"] == str(bundle)


def test_a_session_is_created_used_and_deleted_and_counted(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    before = counts(lab, bmc.name)
    with redfish_client(lab, bmc) as c:
        root = c.get("/redfish/v1/").json()
        assert root["SessionService"] == {"@odata.id": "/redfish/v1/SessionService"}
        assert root["Links"]["Sessions"] == {"@odata.id": "/redfish/v1/SessionService/Sessions"}
        login = redfish_login(c, lab)
        assert login.status_code == 201, login.text
        token, location = login.headers["X-Auth-Token"], login.headers["Location"]
        auth = {"X-Auth-Token": token}
        system = c.get(bmc.systems_uri, headers=auth)
        assert system.status_code == 200 and system.json()["PowerState"] == "On"
        listed = c.get("/redfish/v1/SessionService/Sessions", headers=auth).json()
        assert {"@odata.id": location} in listed["Members"]
        assert c.delete(location, headers=auth).status_code == 204
        assert c.get(bmc.systems_uri, headers=auth).status_code == 401
    now = wait_counts(lab, bmc.name, before, login=1, logout=1, status=1, refused=1)
    assert (now["login"] - before["login"], now["logout"] - before["logout"]) == (1, 1)


def test_a_reset_through_a_session_drives_the_host(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    with redfish_client(lab, bmc) as c:
        auth = {"X-Auth-Token": redfish_login(c, lab).headers["X-Auth-Token"]}
        target = c.get(bmc.systems_uri, headers=auth).json()["Actions"][
            "#ComputerSystem.Reset"]["target"]
        assert c.post(target, json={"ResetType": "ForceOff"}, headers=auth).status_code == 204
        _wait_host(lab, "off", "stopped")
        assert c.get(bmc.systems_uri, headers=auth).json()["PowerState"] == "Off"
        assert c.post(target, json={"ResetType": "On"}, headers=auth).status_code == 204
    wait_all_agents(lab)


def test_a_wrong_password_is_refused_and_counted(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    before = counts(lab, bmc.name)
    r = fence_redfish(lab, bmc, "status", password="wrong")
    assert r.returncode == 1
    assert "Status: ON" not in r.stdout
    with redfish_client(lab, bmc) as c:
        assert redfish_login(c, lab, password="wrong").status_code == 401
    now = wait_counts(lab, bmc.name, before, refused=2)
    assert now["login"] == before["login"]


def test_logins_beyond_the_session_limit_are_refused(lab: RunningLab) -> None:
    with redfish_client(lab, _bmc(lab)) as c:
        for _ in range(3):  # the fixture's max_sessions
            assert redfish_login(c, lab).status_code == 201
        full = redfish_login(c, lab)
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "Base.1.0.SessionLimitExceeded"


def test_a_restart_forgets_every_session_and_keeps_the_power(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    with redfish_client(lab, bmc) as c:
        auth = {"X-Auth-Token": redfish_login(c, lab).headers["X-Auth-Token"]}
        assert c.get(bmc.systems_uri, headers=auth).status_code == 200
        lab.lab.fault("k1-r", "bmc_restart")
        # The kept-alive connection was closed by the restart; httpx opens a new one.
        stale = c.get(bmc.systems_uri, headers=auth)
        assert stale.status_code == 401
        assert stale.json()["error"]["code"] == "Base.1.0.NoValidSession"
        assert redfish_login(c, lab).status_code == 201
    status = lab.lab.status()["hosts"]["k1-r"]
    assert status["power"] == "on" and status["agent"] == "running"
    assert status["bmcs"][bmc.name]["restarts"] >= 1


def test_an_unresponsive_bmc_holds_requests_until_the_client_gives_up(lab: RunningLab) -> None:
    bmc = _bmc(lab)
    before = counts(lab, bmc.name)
    lab.lab.fault("k1-r", "bmc_unresponsive")
    started = time.monotonic()
    with redfish_client(lab, bmc, timeout=1) as c, pytest.raises(httpx.TimeoutException):
        c.get("/redfish/v1/")
    assert time.monotonic() - started < 5
    # fence_redfish sets no timeout on its requests: against a dead BMC it
    # waits until whoever runs it gives up (hostpower's script driver: its timeout).
    with pytest.raises(subprocess.TimeoutExpired):
        fence_redfish(lab, bmc, "status", timeout=3)
    wait_counts(lab, bmc.name, before, dropped=2)
    assert lab.lab.status()["hosts"]["k1-r"]["bmcs"][bmc.name]["answering"] is False
    lab.lab.fault("k1-r", "bmc_unresponsive", clear=True)
    assert fence_redfish(lab, bmc, "status").returncode == 0


def test_bmc_restart_is_refused_for_an_ipmi_bmc(lab: RunningLab) -> None:
    from hostpower.lab.errors import LabError
    with pytest.raises(LabError, match="bmc_restart needs a Redfish BMC"):
        lab.lab.fault("k1-i", "bmc_restart")


def test_the_inventory_gives_a_redfish_agent_with_its_systems_uri(lab: RunningLab) -> None:
    hosts = lab.inventory_document()["data_centers"][0]["clusters"][0]["hosts"]
    agent = next(h for h in hosts if h["name"] == "k1-r")["power_management"]["agents"][0]
    bmc = _bmc(lab)
    assert agent == {"type": "redfish", "address": bmc.address, "port": bmc.port,
                     "username": "admin", "password": "lab-bmc-password",
                     "options": {"systems_uri": bmc.systems_uri}, "order": 1}
    status = lab.lab.status()["hosts"]["k1-r"]["bmcs"][bmc.name]
    assert status["kind"] == "redfish" and status["systems_uri"] == bmc.systems_uri
    assert set(status["counts"]) == {"status", "on", "off", "reset", "login", "logout",
                                     "refused", "dropped"}


def test_a_configured_power_delay_and_session_timeout_apply(tmp_path: Path) -> None:
    require_lab_tools(namespaces=False)
    doc = yaml.safe_load(REDFISH_LAB)
    doc["redfish"] = {"power_delay": 0.5, "session_timeout": 1}
    running, _ = start(tmp_path, doc, loopback=True)
    try:
        bmc = running.topo.host("k1-r").bmcs[0]
        assert bmc.port == 16443 and bmc.address.startswith("127.")
        with redfish_client(running, bmc) as c:
            auth = {"X-Auth-Token": redfish_login(c, running).headers["X-Auth-Token"]}
            target = f"{bmc.systems_uri}/Actions/ComputerSystem.Reset"
            assert c.post(target, json={"ResetType": "ForceOff"}, headers=auth).status_code == 204
            assert c.get(bmc.systems_uri, headers=auth).json()["PowerState"] == "On"
            wait_until(lambda: c.get(bmc.systems_uri, headers=auth).json()["PowerState"] == "Off",
                       5, "the delayed power off")
            assert c.get("/redfish/v1/SessionService", headers=auth).json()[
                "SessionTimeout"] == 1
            time.sleep(1.5)  # idle past the session timeout
            assert c.get(bmc.systems_uri, headers=auth).status_code == 401
        wait_until(lambda: running.lab.status()["hosts"]["k1-r"]["power"] == "off", 5,
                   "the host to lose power")
    finally:
        running.stop()


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"bmc": "ilo"}, "hosts[0].bmc", "must be one of ipmi, redfish"),
    ({"bmc": ["redfish"]}, "hosts[0].bmc", "must be one of ipmi, redfish"),
], ids=["unknown-kind", "not-a-string"])
def test_topology_errors_name_the_host_field(change: dict, field: str, problem: str) -> None:
    doc = yaml.safe_load(REDFISH_LAB)
    doc["data_centers"][0]["clusters"][0]["hosts"][0].update(change)
    with pytest.raises(ValidationError) as err:
        parse(doc, namespaced=False)
    assert field in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize(("options", "field"), [
    ({"power_delay": -1}, "redfish.power_delay"),
    ({"max_sessions": 0}, "redfish.max_sessions"),
    ({"sessions": 3}, "redfish.sessions"),
    ({"power_delay": "soon"}, "redfish.power_delay"),
], ids=["negative-delay", "no-sessions", "unknown-key", "not-a-number"])
def test_redfish_option_errors_name_the_field(options: dict, field: str) -> None:
    doc = yaml.safe_load(REDFISH_LAB)
    doc["redfish"] = options
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        parse(doc, namespaced=False)
