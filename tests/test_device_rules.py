"""The pure rules of the device gate (model/devices.py): which device a
command goes to, how long it waits for the spacing, how a waiter backs off."""

from __future__ import annotations

import pytest

from hostpower.model.devices import (
    CLAIM_MARGIN,
    RETRY_FIRST,
    RETRY_MAX,
    DeviceKey,
    claim_ttl,
    device_key,
    normalize_address,
    retry_delay,
    spacing_wait,
    wait_limit,
)


@pytest.mark.parametrize(("agent_type", "address", "port", "key"), [
    ("ipmilan", "10.0.0.5", None, DeviceKey("10.0.0.5", 623)),
    ("ipmilan", "10.0.0.5", 623, DeviceKey("10.0.0.5", 623)),
    ("ipmilan", "10.0.0.5", 16230, DeviceKey("10.0.0.5", 16230)),
    ("idrac", "10.0.0.5", None, DeviceKey("10.0.0.5", 623)),
    ("redfish", "BMC1.Example.COM.", None, DeviceKey("bmc1.example.com", 443)),
    ("apc_snmp", " 10.0.1.7 ", None, DeviceKey("10.0.1.7", 161)),
    ("apc_snmp", "10.0.1.7", 1161, DeviceKey("10.0.1.7", 1161)),
    ("ilo4_ssh", "10.0.0.9", None, DeviceKey("10.0.0.9", 22)),
    ("wti", "10.0.2.2", None, DeviceKey("10.0.2.2", None)),
    ("redfish", "[2001:DB8::0:1]", None, DeviceKey("2001:db8::1", 443)),
    ("ipmilan", "::ffff:192.0.2.4", None, DeviceKey("192.0.2.4", 623)),
], ids=["ipmi-default", "ipmi-explicit-default", "ipmi-other-port", "idrac-is-ipmi",
        "redfish-name", "snmp-spaces", "snmp-other-port", "ssh", "unknown-default",
        "ipv6", "ipv4-mapped"])
def test_device_key(agent_type: str, address: str, port: int | None, key: DeviceKey) -> None:
    assert device_key(agent_type, address, port) == key


def test_device_key_shared_by_two_agents_on_one_device() -> None:
    # Two hosts behind one PDU (outlets differ: the plug is not in the key),
    # one of them with the default port written out.
    assert device_key("apc_snmp", "pdu1", None) == device_key("apc_snmp", "PDU1", 161)
    # Different ports of one address are different devices (the lab's BMCs).
    assert device_key("ipmilan", "127.0.0.1", 16230) != device_key("ipmilan", "127.0.0.1", 16231)


@pytest.mark.parametrize(("key", "text"), [
    (DeviceKey("10.0.0.5", 623), "10.0.0.5:623"),
    (DeviceKey("2001:db8::1", 443), "[2001:db8::1]:443"),
    (DeviceKey("pdu1", None), "pdu1"),
], ids=["ipv4", "ipv6", "no-port"])
def test_device_key_text(key: DeviceKey, text: str) -> None:
    assert str(key) == key.text == text


def test_normalize_address_keeps_names_unresolved() -> None:
    assert normalize_address("localhost") == "localhost"
    assert normalize_address("127.0.0.1") != normalize_address("localhost")


@pytest.mark.parametrize(("last_end", "now", "interval", "wait"), [
    (None, 100.0, 0.5, 0.0),        # no command yet
    (99.0, 100.0, 0.5, 0.0),        # ended long enough ago
    (99.8, 100.0, 0.5, 0.3),        # 0.2 s ago: 0.3 s more
    (100.0, 100.0, 0.5, 0.5),       # just ended
    (100.0, 100.0, 0.0, 0.0),       # no spacing
], ids=["first", "long-ago", "recent", "just-ended", "no-interval"])
def test_spacing_wait(last_end: float | None, now: float, interval: float, wait: float) -> None:
    assert spacing_wait(last_end, now, interval) == pytest.approx(wait)


def test_claim_outlives_the_command_by_the_margin_only() -> None:
    assert claim_ttl(60) == 60 + CLAIM_MARGIN
    assert claim_ttl(4, margin=0.5) == 4.5
    # The margin covers the agent client's grace past a command's timeout.
    import inspect

    from hostpower.hostagent.client import AgentClient
    grace = inspect.signature(AgentClient.__init__).parameters["fence_margin"].default
    assert CLAIM_MARGIN > grace


def test_a_waiter_outlasts_one_other_command() -> None:
    """Queued behind one command that runs to its timeout (a status through a
    proxy that cannot reach the device), a command is still sent."""
    assert wait_limit(60) >= claim_ttl(60) > 60
    assert wait_limit(4, margin=0.5) == 4.5


@pytest.mark.parametrize(("tries", "free_in", "remaining", "delay"), [
    (1, None, 10.0, RETRY_FIRST),               # held: back off from the first step
    (2, None, 10.0, RETRY_FIRST * 2),
    (20, None, 10.0, RETRY_MAX),                # bounded
    (20, 0.1, 10.0, 0.101),                     # released, spaced: free in 0.1 s
    (1, -5.0, 10.0, 0.001),                     # an expired claim: at once
    (20, None, 0.05, 0.05),                     # never past the waiter's deadline
    (20, None, -1.0, 0.0),
], ids=["first", "second", "bounded", "spacing", "expired", "deadline", "past-deadline"])
def test_retry_delay(tries: int, free_in: float | None, remaining: float, delay: float) -> None:
    assert retry_delay(tries, free_in, remaining) == pytest.approx(delay)
