"""The native Redfish driver against the lab's Redfish BMCs (sushy-tools
behind the lab's session layer, HTTPS from the lab's device CA), beside the
real fence_redfish run by the script driver: same answers, the host driven,
one session per BMC (counted by the lab), a stale session after the BMC
restarted, a wrong password, TLS; and a restart flow through the engine and
a proxy host agent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from enginekit import (
    EngineThread,
    engine_context,
    events,
    host_id,
    last_event_id,
    set_chain,
    set_config,
)
from helpers import wait_until
from labkit import (
    REDFISH_LAB,
    counts,
    require_lab_tools,
    run,
    start,
    wait_all_agents,
    wait_counts,
)

from hostpower.drivers.redfish import NativeRedfishDriver
from hostpower.drivers.script import ScriptDriver
from hostpower.lab.runner import RunningLab
from hostpower.lab.topology import LabBmc
from hostpower.model.inventory import FenceAgent
from hostpower.model.operations import FlowAction, Origin
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.secret import Secret
from hostpower.settings import Settings

pytestmark = pytest.mark.lab
HOST = "k1-r"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Settings]]:
    require_lab_tools(namespaces=False)
    running, settings = start(tmp_path_factory.mktemp("redfish"), yaml.safe_load(REDFISH_LAB))
    yield running, settings
    running.stop()


@pytest.fixture
def lab(world: tuple[RunningLab, Settings]) -> Iterator[RunningLab]:
    running = world[0]
    yield running
    running.lab.fault(HOST, "bmc_unresponsive", clear=True)
    if running.lab.status()["hosts"][HOST]["power"] == "off":
        with native_driver(running) as driver:
            assert driver.run(spec_for(running), FenceAction.ON, 10).outcome is Outcome.ON
    wait_all_agents(running)
    settle(running)


def settle(lab: RunningLab) -> None:
    """Wait until the BMC's counts stop moving (they are reported asynchronously), so
    that a late logout of one test is not counted in the next one's deltas."""
    name = bmc_of(lab).name
    last = [counts(lab, name)]

    def still() -> bool:
        time.sleep(0.1)
        now = counts(lab, name)
        unchanged, last[0] = now == last[0], now
        return unchanged

    wait_until(still, 5, f"{name}'s counts to settle", step=0)


class native_driver:
    """A NativeRedfishDriver trusting the lab's device CA, closed on exit."""

    def __init__(self, lab: RunningLab, ca_bundle: str | None = None, **options: float) -> None:
        bundle = str(lab.redfish_ca_bundle) if ca_bundle is None else ca_bundle
        self.driver = NativeRedfishDriver(ca_bundle=bundle, poll_interval=0.05, **options)

    def __enter__(self) -> NativeRedfishDriver:
        return self.driver

    def __exit__(self, *exc: object) -> None:
        self.driver.close()


def bmc_of(lab: RunningLab) -> LabBmc:
    return lab.topo.host(HOST).bmcs[0]


def spec_for(lab: RunningLab, password: str | None = None, **options: str) -> AgentSpec:
    """The lab BMC's agent, ComputerSystem discovered (no systems_uri) unless given."""
    bmc = bmc_of(lab)
    return AgentSpec(type="redfish", address=bmc.address, port=bmc.port,
                     username=lab.topo.bmc_username,
                     password=Secret(lab.topo.bmc_password if password is None else password),
                     options=tuple(options.items()))


def host_power(lab: RunningLab) -> str:
    return str(lab.lab.status()["hosts"][HOST]["power"])


def answer(result: FenceResult) -> tuple[Outcome, str]:
    return result.outcome, result.message


def test_native_and_fence_redfish_give_the_same_answers_and_drive_the_host(
        lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    before = counts(lab, bmc.name)
    boots = lab.lab.status()["hosts"][HOST]["boots"]
    # the real fence_redfish, verifying the BMC against the CA bundle it is
    # given through the script driver (REQUESTS_CA_BUNDLE)
    script = ScriptDriver(ca_bundle=str(lab.redfish_ca_bundle))
    spec = spec_for(lab)
    with native_driver(lab) as native:
        def both(action: FenceAction) -> tuple[tuple[Outcome, str], tuple[Outcome, str]]:
            return answer(native.run(spec, action, 20)), answer(script.run(spec, action, 20))

        assert both(FenceAction.STATUS) == ((Outcome.ON, "Status: ON"),) * 2
        assert answer(script.run(spec, FenceAction.OFF, 20)) == (Outcome.OFF,
                                                                 "Success: Powered OFF")
        assert host_power(lab) == "off"
        assert both(FenceAction.STATUS) == ((Outcome.OFF, "Status: OFF"),) * 2
        assert both(FenceAction.OFF) == ((Outcome.OFF, "Success: Already OFF"),) * 2
        assert answer(native.run(spec, FenceAction.ON, 20)) == (Outcome.ON, "Success: Powered ON")
        assert host_power(lab) == "on"
        assert both(FenceAction.ON) == ((Outcome.ON, "Success: Already ON"),) * 2
        assert answer(native.run(spec, FenceAction.OFF, 20)) == (Outcome.OFF,
                                                                 "Success: Powered OFF")
        assert answer(script.run(spec, FenceAction.ON, 20)) == (Outcome.ON, "Success: Powered ON")
        # a reboot is off, verified, then on, verified, for both
        assert both(FenceAction.REBOOT) == ((Outcome.ON, "Success: Rebooted"),) * 2
        # from off, both just power on
        assert answer(native.run(spec, FenceAction.OFF, 20))[0] is Outcome.OFF
        assert answer(native.run(spec, FenceAction.REBOOT, 20)) == (Outcome.ON,
                                                                    "Success: Rebooted")
        assert native.logins(bmc.address, bmc.port, lab.topo.bmc_username) == 1
    wait_all_agents(lab)
    now = wait_counts(lab, bmc.name, before, off=5, on=5)
    # the host booted again (a boot cut short by the next off is not counted)
    assert lab.lab.status()["hosts"][HOST]["boots"] > boots
    assert (now["off"] - before["off"], now["on"] - before["on"]) == (5, 5)
    assert now["login"] - before["login"] == 1       # the native driver's one session
    assert now["refused"] == before["refused"]


def test_a_given_systems_uri_is_used_as_is(lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    with native_driver(lab) as native:
        good = native.run(spec_for(lab, systems_uri=bmc.systems_uri), FenceAction.STATUS, 10)
        wrong = native.run(spec_for(lab, systems_uri="/redfish/v1/Systems/nope"),
                           FenceAction.STATUS, 10)
    assert answer(good) == (Outcome.ON, "Status: ON")
    assert wrong.outcome is Outcome.ERROR
    assert wrong.message.startswith(f"BMC {bmc.address}:{bmc.port}: GET /redfish/v1/Systems/nope "
                                    f"answered 404")


def test_one_session_serves_a_hundred_commands_and_is_logged_out_on_close(
        lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    before = counts(lab, bmc.name)
    with native_driver(lab) as native:
        for _ in range(100):
            assert native.run(spec_for(lab), FenceAction.STATUS, 10).outcome is Outcome.ON
        during = wait_counts(lab, bmc.name, before, status=100)
        assert during["login"] - before["login"] == 1
        assert during["logout"] == before["logout"]
    after = wait_counts(lab, bmc.name, before, logout=1)   # close() logged it out
    assert (after["login"] - before["login"], after["logout"] - before["logout"]) == (1, 1)
    assert after["refused"] == before["refused"]


def test_an_idle_session_is_logged_out_without_a_further_command(lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    before = counts(lab, bmc.name)
    with native_driver(lab, session_idle_limit=0.3) as native:
        assert native.run(spec_for(lab), FenceAction.STATUS, 10).outcome is Outcome.ON
        idle = wait_counts(lab, bmc.name, before, login=1, logout=1)
        assert idle["logout"] - before["logout"] == 1
        # the next command opens a new session
        assert native.run(spec_for(lab), FenceAction.STATUS, 10).outcome is Outcome.ON
        again = wait_counts(lab, bmc.name, before, login=2)
        assert again["login"] - before["login"] == 2
    assert counts(lab, bmc.name)["refused"] == before["refused"]


def test_redfish_stale_session_after_a_bmc_restart_logs_in_again_once(lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    with native_driver(lab) as native:
        start = counts(lab, bmc.name)
        assert native.run(spec_for(lab), FenceAction.STATUS, 10).outcome is Outcome.ON
        before = wait_counts(lab, bmc.name, start, login=1, status=1)  # reported asynchronously
        lab.lab.fault(HOST, "bmc_restart")   # the emulator restarts: its sessions are forgotten
        result = native.run(spec_for(lab), FenceAction.OFF, 20)
        assert answer(result) == (Outcome.OFF, "Success: Powered OFF")
        assert host_power(lab) == "off"
        now = wait_counts(lab, bmc.name, before, login=1, refused=1, off=1)
        # the pooled token was refused once, one new login, and the command went through
        assert (now["login"] - before["login"], now["refused"] - before["refused"]) == (1, 1)
        assert native.logins(bmc.address, bmc.port, lab.topo.bmc_username) == 2


def test_redfish_wrong_password_is_a_clear_error_without_a_retry_storm(lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    before = counts(lab, bmc.name)
    target = f"{bmc.address}:{bmc.port}"
    with native_driver(lab) as native:
        results = [native.run(spec_for(lab, password="wrong-Pw"), action, 10)
                   for action in (FenceAction.STATUS, FenceAction.OFF, FenceAction.STATUS,
                                  FenceAction.REBOOT, FenceAction.STATUS)]
        first = results[0]
        refusal = f"authentication failed for user admin at BMC {target}"
        assert answer(first) == (Outcome.ERROR, refusal)
        for later in results[1:]:
            assert later.outcome is Outcome.ERROR
            assert later.message.startswith(f"authentication failed for user admin at BMC "
                                            f"{target} ")
            assert "not tried again" in later.message
        assert all("wrong-Pw" not in r.message for r in results)
        # the right password is tried at once
        assert native.run(spec_for(lab), FenceAction.STATUS, 10).outcome is Outcome.ON
    now = wait_counts(lab, bmc.name, before, refused=1, login=1)
    # five commands with the wrong password: one refused login at the BMC
    assert now["refused"] - before["refused"] == 1
    assert now["login"] - before["login"] == 1   # the right password's session
    assert host_power(lab) == "on"
    # fence_redfish fails as well (it authenticates every request, so it is refused per request)
    script = ScriptDriver(ca_bundle=str(lab.redfish_ca_bundle))
    assert script.run(spec_for(lab, password="wrong-Pw"), FenceAction.STATUS, 20).outcome \
        is Outcome.ERROR


def test_a_bmc_certificate_from_another_ca_is_refused_unless_ssl_insecure(
        lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    before = counts(lab, bmc.name)
    other_ca = str(lab.engine_cert_dir / "ca.crt")   # a CA that did not sign the BMC's certificate
    script = ScriptDriver(ca_bundle=other_ca)
    with native_driver(lab, ca_bundle=other_ca) as native:
        refused = native.run(spec_for(lab), FenceAction.STATUS, 10)
        assert refused.outcome is Outcome.ERROR
        assert refused.message == (f"BMC {bmc.address}:{bmc.port}: TLS certificate not trusted "
                                   f"(unable to get local issuer certificate; verified against "
                                   f"CA bundle {other_ca})")
        script_refused = script.run(spec_for(lab), FenceAction.STATUS, 20)
        assert (script_refused.outcome, script_refused.exit_code) == (Outcome.ERROR, 1)
        assert "CERTIFICATE_VERIFY_FAILED" in script_refused.message   # not "use -h for usage"
        # the operator's explicit choice: skip the verification
        insecure = spec_for(lab, ssl_insecure="1")
        assert answer(native.run(insecure, FenceAction.STATUS, 10)) == (Outcome.ON, "Status: ON")
        assert answer(script.run(insecure, FenceAction.STATUS, 20)) == (Outcome.ON, "Status: ON")
    now = wait_counts(lab, bmc.name, before, login=1)
    assert now["login"] - before["login"] == 1   # no login was sent to the untrusted BMC


@pytest.mark.parametrize("prefer_native", [True, False], ids=["native", "fence_redfish"])
def test_a_proxy_agent_verifies_the_bmc_against_its_ca_bundle(lab: RunningLab,
                                                              prefer_native: bool) -> None:
    """k1-i's host agent (started with --redfish-ca-bundle) runs a status on
    k1-r's BMC with either driver; neither is told to skip verification."""
    proxy = lab.topo.host("k1-i")
    result = run(lambda c: c.fence(proxy.front_address, proxy.agent_port, spec_for(lab),
                                   FenceAction.STATUS, 20, prefer_native=prefer_native), lab)
    assert answer(result) == (Outcome.ON, "Status: ON")
    # fence_redfish is a process of its own (an exit code); the native driver is not
    assert (result.exit_code is None) is prefer_native


# -- through the engine and a proxy host agent (last: the engine's sessions stay open) ------

@pytest.fixture(scope="module")
def engine(world: tuple[RunningLab, Settings]) -> Iterator[EngineThread]:
    """An engine beside the lab, trusting its device CA (RedfishCaBundle), that
    sends k1-r's commands through k1-i's host agent only: that agent runs the
    native Redfish driver with --redfish-ca-bundle (the lab starts it so)."""
    lab, settings = world
    ctx = engine_context(lab, settings)
    set_config(ctx, FenceProxyImplicitPreferences="")
    set_chain(ctx, HOST, "k1-i")
    try:
        with EngineThread(ctx) as running:
            yield running
    finally:
        ctx.close()


def lab_agent(lab: RunningLab, hid: int, password: str | None = None,
              **options: str) -> FenceAgent:
    """k1-r's BMC as an unsaved agent (the Test button's way), ComputerSystem discovered."""
    bmc = bmc_of(lab)
    return FenceAgent(id=0, host_id=hid, type="redfish", address=bmc.address, order=1,
                      port=bmc.port, username=lab.topo.bmc_username,
                      password=Secret(lab.topo.bmc_password if password is None else password),
                      options=tuple(options.items()))


def test_redfish_restart_flow_through_a_proxy_host_agent(engine: EngineThread,
                                                         lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    hid = host_id(engine.ctx, HOST)
    lab.lab.fault(HOST, "bmc_restart")   # no session left from earlier tests
    settle(lab)
    before = counts(lab, bmc.name)
    boots = lab.lab.status()["hosts"][HOST]["boots"]
    op, _ = engine.call(engine.service.request(hid, FlowAction.RESTART, Origin.API))
    done = engine.call(engine.service.wait(op.id, 60))
    assert done.state.value == "succeeded", done.message
    commands = [c for s in done.steps for c in s.proxies]
    assert commands and {c["proxy"] for c in commands} == {"k1-i"}
    assert {c["outcome"] for c in commands} <= {"on", "off"}
    wait_all_agents(lab)
    assert lab.lab.status()["hosts"][HOST]["boots"] == boots + 1
    now = wait_counts(lab, bmc.name, before, off=1, on=1)
    # the native driver in the agent, trusting the lab CA through its flag:
    # one session for every command of the flow, where fence_redfish would
    # log in none and send the password with each of its requests (a session
    # the agent kept from an earlier test is refused once: the BMC restarted)
    assert now["login"] - before["login"] == 1
    assert now["status"] - before["status"] >= 2   # the flow's checks, on that session
    assert now["refused"] - before["refused"] <= 1
    # ... the flag the proxy's agent was started with (the system trust store
    # does not know the lab's device CA)
    argv = Path(f"/proc/{lab.lab.hosts['k1-i'].process.pid}/cmdline").read_bytes().split(b"\0")
    flag = argv.index(b"--redfish-ca-bundle")
    assert argv[flag + 1] == str(lab.redfish_ca_bundle).encode()


def test_redfish_stale_session_through_the_engine(engine: EngineThread,
                                                  lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    hid = host_id(engine.ctx, HOST)
    start = counts(lab, bmc.name)
    assert engine.call(engine.service.status(hid)).outcome is Outcome.ON  # a pooled session
    before = wait_counts(lab, bmc.name, start, status=1)  # reported asynchronously
    lab.lab.fault(HOST, "bmc_restart")
    result = engine.call(engine.service.status(hid))
    assert result.outcome is Outcome.ON
    [command] = result.commands
    assert (command.proxy, [a.outcome for a in command.attempts]) == ("k1-i", ["on"])
    now = wait_counts(lab, bmc.name, before, login=1, refused=1)
    assert (now["login"] - before["login"], now["refused"] - before["refused"]) == (1, 1)


def test_redfish_wrong_password_through_the_engine(engine: EngineThread,
                                                   lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    hid = host_id(engine.ctx, HOST)
    before = counts(lab, bmc.name)
    wrong = lab_agent(lab, hid, password="wrong-Pw")
    results = [engine.call(engine.service.test_agent(hid, wrong)) for _ in range(4)]
    for result in results:
        assert result.outcome is Outcome.ERROR
        assert (f"authentication failed for user admin at BMC {bmc.address}:{bmc.port}"
                in result.message)
        assert "wrong-Pw" not in result.message
    now = wait_counts(lab, bmc.name, before, refused=1)
    assert now["refused"] - before["refused"] == 1   # four tests of the agent, one refused login
    assert host_power(lab) == "on"


def test_ssl_insecure_through_the_engine_works_and_is_warned_about_once(
        engine: EngineThread, lab: RunningLab) -> None:
    bmc = bmc_of(lab)
    hid = host_id(engine.ctx, HOST)
    mark = last_event_id(engine.ctx)
    agent = lab_agent(lab, hid, ssl_insecure="1")
    for _ in range(2):
        assert engine.call(engine.service.test_agent(hid, agent)).outcome is Outcome.ON
    warnings = events(engine.ctx, HOST, kind="fence.tls_unverified", since_id=mark)
    assert len(warnings) == 1
    assert warnings[0].severity.value == "warning"
    assert warnings[0].message.startswith(
        f"redfish@{bmc.address}:{bmc.port} of {HOST} has ssl_insecure: its TLS certificate "
        f"is not verified")
    # the agents of the inventory verify: no warning about them
    assert engine.call(engine.service.status(hid)).outcome is Outcome.ON
    assert len(events(engine.ctx, HOST, kind="fence.tls_unverified", since_id=mark)) == 1
