"""The native IPMI driver (pyghmi) against VirtualBmc, and its parity with fence_ipmilan.

Also the driver registry: which driver runs which spec. Every BMC listens on
its own 127.0.83.x address and a free port, and is stopped by its test.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostpower.drivers.errors import DriverError, NoDriver, UnsupportedSpec
from hostpower.drivers.ipmilan import NativeIpmiDriver
from hostpower.drivers.ipmilan_options import NATIVE_TYPES, native_settings
from hostpower.drivers.registry import (
    default_drivers, driver_for, local_agent_types, select_driver,
)
from hostpower.drivers.script import ScriptDriver
from hostpower.lab.bmc import VirtualBmc
from labkit import virtual_bmcs
from hostpower.model.power import AgentSpec, FenceAction, Outcome
from hostpower.model.secret import Secret

USER = "admin"
PASSWORD = "native-Pw-31f0"
FAST = (("lanplus", "1"), ("power_wait", "0"))


@pytest.fixture
def start_bmc() -> Iterator[Callable[..., VirtualBmc]]:
    with virtual_bmcs(user=USER, password=PASSWORD, state="on") as start:
        yield start


@pytest.fixture
def native() -> Iterator[NativeIpmiDriver]:
    driver = NativeIpmiDriver(poll_interval=0.05)
    yield driver
    driver.close()


def spec_for(bmc: VirtualBmc, password: str = PASSWORD,
             options: tuple[tuple[str, str], ...] = FAST, type: str = "ipmilan") -> AgentSpec:
    return AgentSpec(type=type, address=bmc.address, username=USER, password=Secret(password),
                     port=bmc.port, options=options)


def test_status_off_on_reboot(native: NativeIpmiDriver,
                              start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.83.1", state="on")
    spec = spec_for(bmc)

    status = native.run(spec, FenceAction.STATUS, 5)
    assert (status.outcome, status.message) == (Outcome.ON, "Status: ON")

    off = native.run(spec, FenceAction.OFF, 5)
    assert (off.outcome, off.message) == (Outcome.OFF, "Success: Powered OFF")
    assert bmc.power_state == "off"
    assert native.run(spec, FenceAction.STATUS, 5).outcome is Outcome.OFF
    again = native.run(spec, FenceAction.OFF, 5)
    assert (again.outcome, again.message) == (Outcome.OFF, "Success: Already OFF")

    on = native.run(spec, FenceAction.ON, 5)
    assert (on.outcome, on.message) == (Outcome.ON, "Success: Powered ON")
    assert bmc.power_state == "on"

    changes: list[str] = []
    bmc.on_power_change = changes.append
    reboot = native.run(spec, FenceAction.REBOOT, 5)
    assert (reboot.outcome, reboot.message) == (Outcome.ON, "Success: Rebooted")
    assert changes == ["off", "on"]  # off then on, as fence_ipmilan's onoff method

    # From off, a reboot just powers on (fence_ipmilan does the same).
    bmc.power_state = "off"
    assert native.run(spec, FenceAction.REBOOT, 5).outcome is Outcome.ON
    assert bmc.power_state == "on"
    assert all(r.exit_code is None and r.duration < 1 for r in (status, off, on, reboot))


def test_the_session_is_reused(native: NativeIpmiDriver,
                               start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.83.2")
    spec = spec_for(bmc)
    for _ in range(3):
        assert native.run(spec, FenceAction.STATUS, 5).outcome is Outcome.ON
    assert native.run(spec, FenceAction.OFF, 5).outcome is Outcome.OFF
    assert bmc.counters().logins == 1  # seen by the BMC: one RMCP+ session for four commands
    assert native.logins(bmc.address, bmc.port, USER) == 1
    assert bmc.counters().status >= 4

    native.close()  # logs the session out
    deadline = time.monotonic() + 5
    while bmc.session_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bmc.counters().logouts == 1 and bmc.session_count() == 0


def test_a_new_session_after_the_idle_limit_or_a_password_change(
        start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.83.3")
    driver = NativeIpmiDriver(session_idle_limit=0.0)  # every command finds the session idle
    try:
        spec = spec_for(bmc)
        assert driver.run(spec, FenceAction.STATUS, 5).outcome is Outcome.ON
        assert driver.run(spec, FenceAction.STATUS, 5).outcome is Outcome.ON
        assert bmc.counters().logins == 2
    finally:
        driver.close()

    keeper = NativeIpmiDriver()
    try:
        assert keeper.run(spec_for(bmc), FenceAction.STATUS, 5).outcome is Outcome.ON
        wrong = keeper.run(spec_for(bmc, password="changed"), FenceAction.STATUS, 5)
        assert wrong.outcome is Outcome.ERROR
        assert wrong.message.endswith("failed: Incorrect password provided")
        assert "changed" not in wrong.message.replace("failed", "")
        assert wrong.duration < 2
        assert keeper.run(spec_for(bmc), FenceAction.STATUS, 5).outcome is Outcome.ON
    finally:
        keeper.close()


def test_not_answering_is_an_error_within_the_timeout(
        native: NativeIpmiDriver, start_bmc: Callable[..., VirtualBmc]) -> None:
    bmc = start_bmc("127.0.83.4")
    spec = spec_for(bmc)
    assert native.run(spec, FenceAction.STATUS, 5).outcome is Outcome.ON  # a live session

    bmc.answering = False
    result = native.run(spec, FenceAction.OFF, 2)
    assert result.outcome is Outcome.ERROR
    assert result.message == f"BMC 127.0.83.4:{bmc.port} did not answer within 2 s"
    assert 2 <= result.duration < 2.5
    assert bmc.power_state == "on"

    # A BMC that never answered, with no session yet: the login is bounded too.
    mute = start_bmc("127.0.83.5")
    mute.answering = False
    result = native.run(spec_for(mute), FenceAction.STATUS, 1.5)
    assert result.outcome is Outcome.ERROR and 1.5 <= result.duration < 2

    # Once the BMC answers again, the driver recovers; the "off" it gave up on
    # is not sent late.
    bmc.answering = True
    healed = native.run(spec, FenceAction.STATUS, 15)
    assert healed.outcome is Outcome.ON, healed
    assert bmc.counters().off == 0


def test_commands_to_one_bmc_are_serialized_and_bmcs_run_in_parallel(
        native: NativeIpmiDriver, start_bmc: Callable[..., VirtualBmc]) -> None:
    slow = start_bmc("127.0.83.6", state="on", command_delay=0.2)
    others = [start_bmc(f"127.0.83.{i}", state="on") for i in (7, 8, 9)]
    failures: list[str] = []

    def toggle(bmc: VirtualBmc) -> None:
        spec = spec_for(bmc)
        for action, want in [(FenceAction.OFF, Outcome.OFF), (FenceAction.ON, Outcome.ON)] * 2:
            result = native.run(spec, action, 10)
            if result.outcome is not want:
                failures.append(f"{bmc.address} {action}: {result}")

    threads = [threading.Thread(target=toggle, args=(b,)) for b in [slow, slow, *others]]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    assert slow.max_in_flight == 1  # two threads, one BMC: never two commands at once
    assert all(b.power_state == "on" for b in [slow, *others])
    assert all(b.counters().logins == 1 for b in [slow, *others])
    # 8 slow switches run one after another; the other BMCs do not wait for them.
    assert time.monotonic() - started < 8 * 0.2 + 2


@pytest.mark.parametrize("options, native_ok", [
    ((), True),
    ((("lanplus", "1"),), True),
    ((("lanplus", "true"), ("cipher", "3"), ("privlvl", "operator"), ("method", "onoff"),
      ("power_wait", "2"), ("power_timeout", "30"), ("hexadecimal_kg", "0a1b")), True),
    ((("lanplus", "0"),), False),
    ((("cipher", "1"),), False),
    ((("method", "cycle"),), False),
    ((("privlvl", "root"),), False),
    ((("power_wait", "soon"),), False),
    ((("hexadecimal_kg", "xyz"),), False),
    ((("delay", "10"),), False),
    ((("ipmitool_path", "/opt/ipmitool"),), False),
])
def test_validate_accepts_only_what_it_can_honour(options: tuple[tuple[str, str], ...],
                                         native_ok: bool) -> None:
    spec = AgentSpec(type="ipmilan", address="127.0.83.10", username=USER,
                     password=Secret(PASSWORD), options=options)
    driver = NativeIpmiDriver()
    if native_ok:
        driver.validate(spec)
    else:
        with pytest.raises(UnsupportedSpec):
            driver.validate(spec)
        with pytest.raises(DriverError):
            driver.run(spec, FenceAction.STATUS, 1)


def test_native_settings_and_types() -> None:
    spec = AgentSpec(type="ipmilanplus", address="127.0.83.10", port=6230,
                     options=(("privlvl", "Operator"), ("hexadecimal_kg", "0a1b"),
                              ("power_wait", "1.5")))
    settings = native_settings(spec)
    assert (settings.port, settings.privlevel, settings.kg, settings.power_wait) == \
        (6230, 3, b"\x0a\x1b", 1.5)
    driver = NativeIpmiDriver()
    assert "ipmilan" in driver.agent_types() and "ipmilanplus" in driver.agent_types()
    assert "redfish" not in driver.agent_types()
    with pytest.raises(UnsupportedSpec):
        driver.validate(AgentSpec(type="ipmilan", address="x", plug="1"))
    assert set(driver.agent_types()) == set(NATIVE_TYPES)


def _require_fence_ipmilan() -> None:
    from conftest import require

    require(os.access("/usr/sbin/fence_ipmilan", os.X_OK), "fence-agents is not installed")
    require(shutil.which("ipmitool") is not None, "ipmitool is not installed")


@pytest.mark.parametrize("initial", ["on", "off"])
def test_parity_with_fence_ipmilan(initial: str, native: NativeIpmiDriver,
                                   start_bmc: Callable[..., VirtualBmc]) -> None:
    """Same BMC state, same answer and same end state from both drivers."""
    _require_fence_ipmilan()
    script = ScriptDriver("/usr/sbin")
    bmc = start_bmc("127.0.83.11" if initial == "on" else "127.0.83.12", state=initial)
    spec = spec_for(bmc)

    for action in (FenceAction.STATUS, FenceAction.OFF, FenceAction.ON, FenceAction.REBOOT):
        ends = []
        outcomes = []
        for driver in (native, script):
            bmc.power_state = initial
            result = driver.run(spec, action, 10)
            outcomes.append(result.outcome)
            ends.append(bmc.power_state)
        assert outcomes[0] is outcomes[1], (action, outcomes)
        assert ends[0] == ends[1], (action, ends)
    expected = Outcome.ON if initial == "on" else Outcome.OFF
    bmc.power_state = initial
    assert native.run(spec, FenceAction.STATUS, 5).outcome is expected
    assert script.run(spec, FenceAction.STATUS, 5).outcome is expected


# -------------------------------------------------------------------------- the registry


PLAIN = AgentSpec(type="ipmilan", address="127.0.83.13", options=(("lanplus", "1"),))
CYCLE = AgentSpec(type="ipmilan", address="127.0.83.13", options=(("method", "cycle"),))


def test_select_driver_without_fence_agents(tmp_path: Path) -> None:
    native, no_scripts = NativeIpmiDriver(), ScriptDriver(str(tmp_path))
    # The native driver is used whatever the preference when it is the only one able.
    assert select_driver(PLAIN, [no_scripts, native], prefer_native=False) is native
    assert select_driver(PLAIN, [no_scripts, native], prefer_native=True) is native
    assert select_driver(CYCLE, [no_scripts, native], prefer_native=True) is None
    unknown = AgentSpec(type="no_such_agent", address="127.0.83.13")
    assert select_driver(unknown, [no_scripts, native], prefer_native=True) is None


def test_no_driver_says_why_the_drivers_that_run_the_type_refused(tmp_path: Path) -> None:
    native, no_scripts = NativeIpmiDriver(), ScriptDriver(str(tmp_path))
    with pytest.raises(NoDriver) as refused:
        driver_for(CYCLE, [no_scripts, native], prefer_native=True)
    why = "native IPMI cannot run this agent: method 'cycle' is not supported (onoff)"
    assert refused.value.reasons == (why,)  # "not installed" says nothing of this spec
    assert len(refused.value.refusals) == 2
    assert str(refused.value) == f"no driver for agent type ipmilan: {why}"
    assert refused.value.describe("the engine cannot run fence_ipmilan") == \
        f"the engine cannot run fence_ipmilan: {why}"

    unknown = AgentSpec(type="no_such_agent", address="127.0.83.13")
    with pytest.raises(NoDriver) as refused:
        driver_for(unknown, [no_scripts, native], prefer_native=True)
    assert refused.value.reasons == ()
    assert str(refused.value) == "no driver for agent type no_such_agent"


def test_drivers_declare_their_kind() -> None:
    assert NativeIpmiDriver().native is True
    assert ScriptDriver("/usr/sbin").native is False


def test_select_driver_with_fence_agents() -> None:
    _require_fence_ipmilan()
    native, script = NativeIpmiDriver(), ScriptDriver("/usr/sbin")
    for drivers in ([script, native], [native, script]):
        assert select_driver(PLAIN, drivers, prefer_native=True) is native
        assert select_driver(PLAIN, drivers, prefer_native=False) is script
        # An option the native path cannot honour sends the spec to the script.
        assert select_driver(CYCLE, drivers, prefer_native=True) is script
    dummy = AgentSpec(type="dummy", address="")
    assert select_driver(dummy, [native, script], prefer_native=True) is script


def test_default_drivers_and_local_agent_types(tmp_path: Path) -> None:
    preferred = default_drivers("/usr/sbin", prefer_native=True)
    assert [d.name for d in preferred] == ["native-ipmilan", "native-redfish", "script"]
    assert [d.name for d in default_drivers("/usr/sbin", prefer_native=False)] == \
        ["script", "native-ipmilan", "native-redfish"]
    # Native types count even where no fence agent is installed.
    assert local_agent_types(default_drivers(str(tmp_path), True)) == set(NATIVE_TYPES) | {
        "redfish"}


def test_local_agent_types_include_installed_agents() -> None:
    _require_fence_ipmilan()
    types = local_agent_types(default_drivers("/usr/sbin", prefer_native=True))
    assert set(NATIVE_TYPES) | {"ipmilan", "dummy", "redfish", "apc_snmp"} <= types


def test_an_answer_queued_before_its_waiter_registers_ends_the_wait(
        native: NativeIpmiDriver, start_bmc: Callable[..., VirtualBmc]) -> None:
    """pyghmi's lost wake-up (drivers/pyghmi_wakeup.py): the I/O thread queued
    a BMC's answer before the command's thread registered to wait for it. The
    patched wait returns at once instead of at its deadline (when pyghmi
    would retransmit); a wait with nothing queued still waits."""
    from pyghmi.ipmi.private import session as pyghmi_session

    from hostpower.drivers import pyghmi_wakeup
    bmc = start_bmc("127.0.83.9", state="on")
    assert native.run(spec_for(bmc), FenceAction.STATUS, 10).outcome is Outcome.ON  # I/O thread up
    assert pyghmi_session._io_wait is pyghmi_wakeup._io_wait  # installed by the driver

    class Queued:  # a client session holding an answer nobody processed yet
        pktqueue = [b"answer"]

    address = ("127.0.0.1", 1)  # no BMC there: only the staged answer can end the wait
    pyghmi_session.Session.bmc_handlers[address] = {0: Queued()}
    try:
        waiter = threading.Thread(target=pyghmi_session._io_wait, args=(30, address))
        waiter.start()
        waiter.join(10)
        assert not waiter.is_alive(), "the wait did not see the answer already queued"

        Queued.pktqueue = []
        idle = threading.Thread(target=pyghmi_session._io_wait, args=(2, address))
        idle.start()
        idle.join(0.3)
        assert idle.is_alive(), "a wait with nothing queued must not return"
        idle.join(10)  # its deadline ends it
    finally:
        del pyghmi_session.Session.bmc_handlers[address]
