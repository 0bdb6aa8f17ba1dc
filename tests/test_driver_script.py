"""The script driver with the real fence-agents programs (fence_ipmilan, fence_dummy).

fence_ipmilan drives a VirtualBmc on 127.0.82.x through ipmitool; every BMC
is stopped by the test that started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostpower.drivers.errors import DriverError
from hostpower.drivers.installed import installed_agent_types, is_installed
from hostpower.drivers.script import ScriptDriver
from hostpower.drivers.script_protocol import CHILD_ENV, agent_input, outcome_for
from hostpower.lab.bmc import VirtualBmc
from hostpower.model.power import AgentSpec, FenceAction, Outcome
from hostpower.model.secret import Secret

AGENTS = Path("/usr/sbin")
USER = "admin"
PASSWORD = "fence-Pw-7c1d9e"
FAST = (("lanplus", "1"), ("power_wait", "0"))


def require_agents(*tools: str) -> None:
    from conftest import require

    for agent in ("fence_ipmilan", "fence_dummy"):
        require(os.access(AGENTS / agent, os.X_OK),
                f"fence-agents is not installed ({AGENTS / agent} missing)")
    for tool in tools:
        require(shutil.which(tool) is not None, f"{tool} is not installed")


@pytest.fixture
def driver() -> ScriptDriver:
    require_agents("ipmitool")
    return ScriptDriver(str(AGENTS))


@pytest.fixture
def start_bmc() -> Iterator[Callable[..., VirtualBmc]]:
    started: list[VirtualBmc] = []

    def start(address: str, state: str = "on") -> VirtualBmc:
        bmc = VirtualBmc(address, 0, USER, PASSWORD, state=state).start()
        started.append(bmc)
        return bmc

    yield start
    for bmc in started:
        bmc.stop()


def ipmi_spec(bmc: VirtualBmc, password: str = PASSWORD,
              options: tuple[tuple[str, str], ...] = FAST) -> AgentSpec:
    return AgentSpec(type="ipmilan", address=bmc.address, username=USER,
                     password=Secret(password), port=bmc.port, options=options)


def test_fence_ipmilan_status_off_on_reboot(driver: ScriptDriver,
                                            start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.82.1", state="on")
    spec = ipmi_spec(bmc)

    status = driver.run(spec, FenceAction.STATUS, 10)
    assert (status.outcome, status.exit_code, status.message) == (Outcome.ON, 0, "Status: ON")

    off = driver.run(spec, FenceAction.OFF, 10)
    assert (off.outcome, off.exit_code, off.message) == (Outcome.OFF, 0, "Success: Powered OFF")
    assert bmc.power_state == "off"

    status = driver.run(spec, FenceAction.STATUS, 10)
    assert (status.outcome, status.exit_code) == (Outcome.OFF, 2)  # fence-agents: 2 = off

    again = driver.run(spec, FenceAction.OFF, 10)
    assert (again.outcome, again.message) == (Outcome.OFF, "Success: Already OFF")

    on = driver.run(spec, FenceAction.ON, 10)
    assert (on.outcome, on.message) == (Outcome.ON, "Success: Powered ON")
    assert bmc.power_state == "on"

    before = bmc.counters()
    reboot = driver.run(spec, FenceAction.REBOOT, 10)
    assert (reboot.outcome, reboot.message) == (Outcome.ON, "Success: Rebooted")
    after = bmc.counters()
    # fence_ipmilan's reboot is off, verified, then on (method onoff).
    assert (after.off - before.off, after.on - before.on) == (1, 1)
    assert bmc.power_state == "on"
    assert all(r.duration < 5 for r in (status, off, on, reboot))


def test_wrong_password_is_an_error_and_fast(driver: ScriptDriver,
                                             start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.82.2")
    result = driver.run(ipmi_spec(bmc, password="wrong-password"), FenceAction.STATUS, 10)
    assert result.outcome is Outcome.ERROR
    assert result.exit_code == 1
    assert result.duration < 3
    assert result.message  # the agent's last line, e.g. "ERROR: Failed: Unable to obtain ..."
    assert "wrong-password" not in result.message


def _group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process in that process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
        if int(fields[2]) == pgid:
            members.append((int(entry), fields[0]))
    return members


def test_bmc_not_answering_times_out_and_kills_the_process_group(
        driver: ScriptDriver, start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.82.3")
    bmc.answering = False
    spawned: list[int] = []
    largest_group: list[int] = [0]

    def watch(pid: int) -> None:
        spawned.append(pid)

        def sample() -> None:
            while Path(f"/proc/{pid}").exists():
                live = [p for p, state in _group_members(pid) if state != "Z"]
                largest_group[0] = max(largest_group[0], len(live))
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()

    driver.on_spawn = watch
    result = driver.run(ipmi_spec(bmc), FenceAction.STATUS, 3)

    assert result.outcome is Outcome.ERROR
    assert result.message == "timed out after 3 s"
    assert 3 <= result.duration < 5  # fence_ipmilan alone would take about 20 s
    assert spawned == [driver.last_pid]
    assert largest_group[0] >= 2  # the agent and the ipmitool it started
    # SIGKILL went to the whole group: nothing of it is left alive. A member
    # killed takes until the kernel schedules it to end (a loaded machine);
    # one the driver did not kill would live on (ipmitool retries ~20 s).
    deadline = time.monotonic() + 5
    while (alive := [m for m in _group_members(spawned[0]) if m[1] != "Z"]) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == []


def _argv_and_environ(pid: int) -> tuple[bytes, bytes] | None:
    """What /proc shows of a process; None in the instant between fork and exec.

    (The kernel sets a new program's argv/environ address after the exec has
    already closed close-on-exec pipes, so right after Popen they may read empty.)
    """
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    return (cmdline, environ) if cmdline and environ else None


def _leaks(pid: int, secret: bytes, wait: float = 5.0) -> dict[str, bool]:
    """Whether the secret shows in a running process's argv or environment."""
    deadline = time.monotonic() + wait
    while (seen := _argv_and_environ(pid)) is None:
        assert time.monotonic() < deadline, f"/proc/{pid} stayed empty"
        time.sleep(0.01)
    return {"cmdline": secret in seen[0], "environ": secret in seen[1]}


def test_the_leak_check_finds_a_password_in_argv_and_environ() -> None:
    """The check used below is real: it catches a password passed the wrong way."""
    secret = PASSWORD.encode()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", PASSWORD],
                            env={"IPMI_PASSWORD": PASSWORD})
    try:
        assert _leaks(proc.pid, secret) == {"cmdline": True, "environ": True}
    finally:
        proc.kill()
        proc.wait()


def test_password_is_in_neither_argv_nor_environ_of_the_agent(
        driver: ScriptDriver, start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.82.4")
    bmc.answering = False  # keeps fence_ipmilan running while it is inspected
    samples: list[tuple[bytes, bytes]] = []

    def inspect(pid: int) -> None:
        def sample() -> None:
            while True:
                try:
                    seen = _argv_and_environ(pid)
                except OSError:
                    return  # the agent is gone
                if seen is not None:
                    samples.append(seen)
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()

    driver.on_spawn = inspect
    result = driver.run(ipmi_spec(bmc), FenceAction.STATUS, 2)

    secret = PASSWORD.encode()
    assert samples and not any(secret in argv or secret in env for argv, env in samples)
    assert result.outcome is Outcome.ERROR
    assert len(samples) >= 5, "the agent was not inspected while it ran"
    assert b"fence_ipmilan" in samples[0][0]
    env = dict(v.split(b"=", 1) for v in samples[0][1].split(b"\0") if v)
    assert env == {k.encode(): v.encode() for k, v in CHILD_ENV.items()}


def test_fence_dummy_file_status_off_on(tmp_path: Path) -> None:
    require_agents()
    driver = ScriptDriver(str(AGENTS))
    names = {p["name"] for p in driver.metadata("dummy")}
    assert {"type", "status_file"} <= names

    status_file = tmp_path / "power"
    status_file.write_text("on")
    spec = AgentSpec(type="dummy", address="", username="", password=Secret(""),
                     options=(("type", "file"), ("status_file", str(status_file))))

    assert driver.run(spec, FenceAction.STATUS, 10).outcome is Outcome.ON
    off = driver.run(spec, FenceAction.OFF, 10)
    assert off.outcome is Outcome.OFF and status_file.read_text() == "off"
    status = driver.run(spec, FenceAction.STATUS, 10)
    assert (status.outcome, status.exit_code, status.message) == (Outcome.OFF, 2, "Status: OFF")
    assert driver.run(spec, FenceAction.ON, 10).outcome is Outcome.ON
    assert status_file.read_text() == "on"


def test_a_password_the_agent_does_not_know_is_masked_in_messages(tmp_path: Path) -> None:
    """fence_dummy has no password parameter and echoes the unknown line to stderr."""
    require_agents()
    driver = ScriptDriver(str(AGENTS))
    status_file = tmp_path / "power"
    status_file.write_text("garbage")  # makes the status fail: the message is from stderr
    spec = AgentSpec(type="dummy", address="127.0.0.1", username=USER, password=Secret(PASSWORD),
                     options=(("type", "file"), ("status_file", str(status_file))))
    result = driver.run(spec, FenceAction.STATUS, 10)
    assert result.outcome is Outcome.ERROR
    assert PASSWORD not in result.message


@pytest.mark.parametrize("spec_change, why", [
    ({"options": (("lanplus", "1\naction=off"),)}, "newline"),
    ({"options": (("action", "off"),)}, "reserved"),
    ({"options": (("power_wait", "0\rx"),)}, "carriage return"),
    ({"options": (("Lanplus", "1"),)}, "invalid"),
    ({"password": Secret("pw\naction=off")}, "line break"),
    ({"username": "admin\naction=off"}, "line break"),
    ({"address": "127.0.0.1\naction=off"}, "line break"),
    ({"type": "../../bin/sh"}, "invalid agent type"),
    ({"type": "ipmi lan"}, "invalid agent type"),
    ({"type": "no_such_agent"}, "not installed"),
])
def test_injection_and_bad_specs_are_refused_before_anything_runs(
        spec_change: dict[str, object], why: str) -> None:
    spawned: list[int] = []
    driver = ScriptDriver(str(AGENTS), on_spawn=spawned.append)
    fields: dict[str, object] = {"type": "ipmilan", "address": "127.0.82.5", "username": USER,
                                 "password": Secret(PASSWORD), "options": FAST}
    fields.update(spec_change)
    spec = AgentSpec(**fields)  # type: ignore[arg-type]
    with pytest.raises(DriverError) as refused:
        driver.run(spec, FenceAction.OFF, 5)
    assert why in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert spawned == [] and driver.last_pid is None


def test_agent_input_is_one_line_per_parameter_action_last() -> None:
    spec = AgentSpec(type="ipmilan", address="10.0.0.5", username="root",
                     password=Secret("pw=with=equals"), port=6230, plug="3",
                     options=(("lanplus", "1"), ("cipher", "3")))
    assert agent_input(spec, FenceAction.REBOOT).splitlines() == [
        "ip=10.0.0.5", "ipport=6230", "username=root", "password=pw=with=equals", "plug=3",
        "lanplus=1", "cipher=3", "action=reboot"]


@pytest.mark.parametrize("action, code, outcome", [
    (FenceAction.STATUS, 0, Outcome.ON),
    (FenceAction.STATUS, 2, Outcome.OFF),
    (FenceAction.STATUS, 1, Outcome.ERROR),
    (FenceAction.STATUS, -9, Outcome.ERROR),
    (FenceAction.OFF, 0, Outcome.OFF),
    (FenceAction.OFF, 2, Outcome.ERROR),
    (FenceAction.OFF, 7, Outcome.ERROR),
    (FenceAction.ON, 0, Outcome.ON),
    (FenceAction.ON, 6, Outcome.ERROR),
    (FenceAction.REBOOT, 0, Outcome.ON),
    (FenceAction.REBOOT, 1, Outcome.ERROR),
])
def test_exit_codes_map_to_outcomes(action: FenceAction, code: int, outcome: Outcome) -> None:
    assert outcome_for(action, code) is outcome


def test_a_reboot_that_did_not_power_back_on_is_not_on() -> None:
    """fencing.py exits 0 for a reboot whose power-on timed out; the driver does not call it ON."""
    stderr = "2024-05-01 10:00:00,000 ERROR: Timed out waiting to power ON\n"
    assert outcome_for(FenceAction.REBOOT, 0, stderr) is Outcome.ERROR


def test_metadata_of_fence_ipmilan_is_parsed_and_cached(tmp_path: Path) -> None:
    require_agents()
    # A private agents directory, so that the cache can be shown by removing the agent.
    (tmp_path / "fence_ipmilan").symlink_to(AGENTS / "fence_ipmilan")
    driver = ScriptDriver(str(tmp_path))

    params = {p["name"]: p for p in driver.metadata("ipmilan")}
    assert {"ip", "ipport", "username", "password", "lanplus", "power_wait"} <= set(params)
    assert params["lanplus"]["type"] == "boolean" and params["lanplus"]["default"] == "0"
    assert params["ipport"]["default"] == "623"
    assert params["action"]["required"] is True
    assert params["login"]["deprecated"] is True
    assert params["privlvl"]["choices"] == ["callback", "user", "operator", "administrator"]
    assert params["ip"]["shortdesc"] == "IP address or hostname of fencing device"

    (tmp_path / "fence_ipmilan").unlink()
    assert {p["name"] for p in driver.metadata("ipmilan")} == set(params)
    with pytest.raises(DriverError):
        driver.metadata("dummy")


def test_installed_agent_types_and_is_installed(tmp_path: Path) -> None:
    require_agents()
    driver = ScriptDriver(str(AGENTS))
    types = installed_agent_types(str(AGENTS))
    assert {"ipmilan", "dummy", "apc_snmp", "redfish"} <= set(types)
    assert types == tuple(sorted(types))
    assert driver.agent_types() == frozenset(types)
    assert is_installed(str(AGENTS), "ipmilan") and is_installed(str(AGENTS), "dummy")
    assert not is_installed(str(AGENTS), "no_such_agent")
    assert not is_installed(str(AGENTS), "../sbin/fence_ipmilan")
    assert ScriptDriver(str(tmp_path)).agent_types() == frozenset()
    assert ScriptDriver(str(tmp_path / "missing")).agent_types() == frozenset()
