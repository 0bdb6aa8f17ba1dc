"""The pure parts of the native Redfish driver: which specs it takes, how it
reads a ComputerSystem, how the registry picks it, the CA bundle settings,
and the engine's warning about ssl_insecure. The driver against real BMCs
(the lab's sushy-tools emulators, beside fence_redfish) is in
test_redfish_driver.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hostpower.config import lookup
from hostpower.drivers.errors import UnsupportedSpec
from hostpower.drivers.redfish import NativeRedfishDriver
from hostpower.drivers.redfish_options import (
    RedfishSettings,
    redfish_settings,
    skips_verification,
    split_address,
)
from hostpower.drivers.redfish_power import power_state, reset_target
from hostpower.drivers.redfish_session import RedfishFailure, tls_verify
from hostpower.drivers.registry import default_drivers, driver_for
from hostpower.drivers.script import ScriptDriver
from hostpower.fencing.tlsnotice import InsecureTlsNotice
from hostpower.hostagent.daemon import redfish_ca_bundle, run_agent
from hostpower.model.errors import ValidationError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent
from hostpower.model.power import AgentSpec, FenceAction, Outcome


def spec(*options: tuple[str, str], address: str = "127.0.0.1", port: int | None = None,
         plug: str | None = None, type: str = "redfish") -> AgentSpec:
    return AgentSpec(type=type, address=address, username="admin", port=port, plug=plug,
                     options=tuple(options))


def test_settings_taken_from_fence_redfish_options() -> None:
    assert redfish_settings(spec()) == RedfishSettings()
    taken = redfish_settings(spec(("ssl", "1"), ("ssl_insecure", "yes"),
                                  ("systems_uri", "/redfish/v1/Systems/abc/"),
                                  ("redfish_uri", "/redfish/v1"), ("power_wait", "1.5"),
                                  ("power_timeout", "30"), port=8443))
    assert taken == RedfishSettings(port=8443, insecure=True,
                                    systems_uri="/redfish/v1/Systems/abc",
                                    power_wait=1.5, power_timeout=30.0)
    # fence_redfish's backwards-compatible ip:port address
    assert redfish_settings(spec(address="127.0.0.9:8443")).port == 8443
    assert split_address("::1") == ("::1", None)


@pytest.mark.parametrize("options, plug, reason", [
    ((("ssl_insecure", "0"),), None, "ssl_insecure=0 still skips verification in fence_redfish"),
    ((("ssl_insecure", "maybe"),), None, "ssl_insecure='maybe' is not a boolean"),
    ((("ssl", "0"),), None, "Redfish is spoken over HTTPS only"),
    ((("systems_uri", "Systems/1"),), None, "is not an absolute URI path"),
    ((("power_timeout", "-1"),), None, "power_timeout='-1' is out of range"),
    ((("power_wait", "soon"),), None, "is not a number of seconds"),
    ((("delay", "5"),), None, "option 'delay' is not supported natively"),
    ((), "1", "Redfish has no plug"),
], ids=["insecure-false", "insecure-word", "ssl-off", "relative-uri", "negative-timeout",
        "wait-word", "delay", "plug"])
def test_options_it_cannot_honour_go_to_the_script(
        options: tuple[tuple[str, str], ...], plug: str | None, reason: str) -> None:
    native = NativeRedfishDriver()
    with pytest.raises(UnsupportedSpec) as refused:
        native.validate(spec(*options, plug=plug))
    assert refused.value.reason.startswith("native Redfish cannot run this agent: ")
    assert reason in refused.value.reason
    # ... and the registry then picks fence_redfish, the native driver being unable
    drivers = [native, ScriptDriver()]
    assert driver_for(spec(*options, plug=plug), drivers, prefer_native=True).name == "script"


def test_the_registry_prefers_the_native_redfish_driver() -> None:
    drivers = default_drivers(prefer_native=True, redfish_ca_bundle="/etc/lab-ca.pem")
    chosen = driver_for(spec(), drivers, prefer_native=True)
    assert isinstance(chosen, NativeRedfishDriver) and chosen.ca_bundle == "/etc/lab-ca.pem"
    assert driver_for(spec(), drivers, prefer_native=False).name == "script"
    script = next(d for d in drivers if isinstance(d, ScriptDriver))
    assert script.ca_bundle == "/etc/lab-ca.pem"
    for driver in drivers:
        driver.close()


def test_fence_redfish_gets_the_ca_bundle_and_nothing_else() -> None:
    script = ScriptDriver(ca_bundle="/etc/lab-ca.pem")
    env = script.child_env(spec())
    assert env["REQUESTS_CA_BUNDLE"] == "/etc/lab-ca.pem"
    assert "REQUESTS_CA_BUNDLE" not in script.child_env(spec(type="ipmilan"))
    assert "REQUESTS_CA_BUNDLE" not in ScriptDriver().child_env(spec())


def test_a_computer_system_is_read_as_fence_redfish_reads_it() -> None:
    def state(value: object) -> str:
        return power_state({"PowerState": value}, "bmc:443", "/redfish/v1/Systems/1")

    assert state("Off") == "off"
    assert state(" Off ") == "off"
    # "off" only when the BMC says Off: every other state is still on
    for value in ("On", "PoweringOff", "PoweringOn", "Paused"):
        assert state(value) == "on"
    with pytest.raises(RedfishFailure, match="no PowerState in /redfish/v1/Systems/1"):
        state(None)
    with pytest.raises(RedfishFailure, match="offers no ComputerSystem.Reset action"):
        reset_target({"Actions": {}}, "bmc:443", "/redfish/v1/Systems/1")


def test_an_unreadable_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RedfishFailure, match=r"the Redfish CA bundle .*missing.pem cannot be used"):
        tls_verify(str(tmp_path / "missing.pem"), insecure=False)
    assert tls_verify(None, insecure=True) is False
    driver = NativeRedfishDriver(ca_bundle=str(tmp_path / "missing.pem"))
    try:
        result = driver.run(spec(port=1), FenceAction.STATUS, 2)
    finally:
        driver.close()
    assert result.outcome is Outcome.ERROR
    assert "CA bundle" in result.message and "missing.pem" in result.message


def test_the_redfish_ca_bundle_key_and_flag_refuse_bad_paths(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    key = lookup("RedfishCaBundle")
    assert key.parse("") == "" and key.default == ""
    assert key.parse("/etc/hostpower/redfish-ca.pem") == "/etc/hostpower/redfish-ca.pem"
    with pytest.raises(ValidationError) as bad:
        key.parse("ca.pem")
    assert (bad.value.field, bad.value.message) == ("RedfishCaBundle",
                                                   "'ca.pem' is not an absolute path")

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ValueError, match="not a PEM certificate file"):
        redfish_ca_bundle(not_pem)
    assert run_agent(["--redfish-ca-bundle", str(tmp_path / "missing.pem"),
                      "--cert-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--redfish-ca-bundle" in err and "No such file or directory" in err


def test_ssl_insecure_is_warned_about_once_per_agent() -> None:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    async def host_name(host_id: int) -> str:
        return f"h{host_id}"

    insecure = FenceAgent(id=7, host_id=1, type="redfish", address="10.0.0.5", order=1,
                          port=443, options=(("ssl_insecure", "1"),))
    verified = FenceAgent(id=8, host_id=1, type="redfish", address="10.0.0.6", order=1)
    notice = InsecureTlsNotice(emit, host_name)

    async def main() -> None:
        for _ in range(3):
            await notice.check(1, [insecure, verified])

    asyncio.run(main())
    assert len(events) == 1
    event = events[0]
    assert (event.severity, event.kind, event.host_id, event.host_name) == (
        Severity.WARNING, "fence.tls_unverified", 1, "h1")
    assert event.message.startswith("redfish@10.0.0.5:443 of h1 has ssl_insecure: its TLS "
                                    "certificate is not verified")
    # fence_redfish reads the option as a flag: present at all, verification is off
    assert skips_verification((("ssl_insecure", "0"),))
    assert not skips_verification((("ssl", "1"),))


def test_a_fence_agent_failure_is_told_by_its_reason_not_the_usage_hint() -> None:
    from hostpower.drivers.script_protocol import result_message
    stderr = ("2026-12-04 10:14:35,654 ERROR: Failed: send_get_request: HTTPSConnectionPool: "
              "CERTIFICATE_VERIFY_FAILED\n\n"
              "2026-12-04 10:14:35,655 ERROR: Please use '-h' for usage\n")
    assert result_message(Outcome.ERROR, 1, "", stderr) == (
        "ERROR: Failed: send_get_request: HTTPSConnectionPool: CERTIFICATE_VERIFY_FAILED")
