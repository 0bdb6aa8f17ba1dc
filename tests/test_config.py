"""The configuration registry and its stored values (both backends)."""

from __future__ import annotations

import pytest

from hostpower.config import KEYS, Config, lookup
from hostpower.model.errors import NotFoundError, ValidationError
from hostpower.store.configstore import ConfigStore

REQUIRED = {
    "FenceProxyDefaultPreferences": "cluster,dc",
    "FenceProxyImplicitPreferences": "engine,cluster,dc",
    "FenceStopStatusRetries": "18",
    "FenceStopStatusDelayBetweenRetriesInSec": "10",
    "FenceStartStatusRetries": "18",
    "FenceStartStatusDelayBetweenRetriesInSec": "10",
    "FindFenceProxyRetries": "3",
    "FindFenceProxyDelayBetweenRetriesInSec": "30",
    "DisableFenceAtStartupInSec": "300",
    "FenceQuietTimeBetweenOperationsInSec": "180",
    "HostHeartbeatIntervalInSec": "3",
    "HostHeartbeatTimeoutInSec": "20",
    "TimeoutToResetHostInSeconds": "60",
    "HostAttemptsToResetCount": "2",
    "FenceAgentsPath": "/usr/sbin",
}


def test_every_required_key_has_its_default() -> None:
    values = Config().as_text()
    for name, default in REQUIRED.items():
        assert values[name] == default, name


def test_every_key_has_a_description_and_a_valid_default() -> None:
    for key in KEYS:
        assert key.description.endswith("."), key.name
        key.parse(key.default)


@pytest.mark.parametrize("name, value, message", [
    ("FenceStopStatusRetries", "abc", "'abc' is not a whole number"),
    ("FenceStopStatusRetries", "-1", "-1 is below the minimum 0"),
    ("HostHeartbeatIntervalInSec", "0", "0 is below the minimum 1"),
    ("PreferNativeFenceDrivers", "maybe", "'maybe' is not true or false"),
    ("FenceAgentsPath", "relative/dir", "is not an absolute path"),
    ("FenceProxyDefaultPreferences", "", "must name at least one proxy source"),
    ("FenceProxyDefaultPreferences", "cluster,host1", "only cluster, dc, other_dc and engine"),
    ("FenceProxyImplicitPreferences", "engine,engine", "duplicates entry 1"),
])
def test_invalid_values_are_refused_naming_the_key(name: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        lookup(name).parse(value)
    assert err.value.field == name
    assert message in err.value.message


def test_lookup_is_case_insensitive_and_refuses_unknown_keys() -> None:
    assert lookup("fencestopstatusretries").name == "FenceStopStatusRetries"
    with pytest.raises(NotFoundError):
        lookup("NoSuchKey")


def test_values_are_stored_canonically_and_read_back_typed(ctx) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        store = ConfigStore(s)
        assert store.set("PreferNativeFenceDrivers", "No")[1] == "false"
        assert store.set("FenceProxyImplicitPreferences", " Engine , DC ")[1] == "engine,dc"
        store.set("FenceStopStatusRetries", "5")
    config = ctx.config()
    assert config["PreferNativeFenceDrivers"] is False
    assert config["FenceStopStatusRetries"] == 5
    assert [e.text for e in config["FenceProxyImplicitPreferences"]] == ["engine", "dc"]


def test_an_invalid_value_changes_nothing(ctx) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        ConfigStore(s).set("FenceStopStatusRetries", "7")
    with pytest.raises(ValidationError), ctx.db.session() as s:
        ConfigStore(s).set("FenceStopStatusRetries", "seven")
    assert ctx.config()["FenceStopStatusRetries"] == 7


def test_reset_returns_to_the_default(ctx) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        ConfigStore(s).set("DisableFenceAtStartupInSec", "5")
        ConfigStore(s).reset("DisableFenceAtStartupInSec")
    assert ctx.config()["DisableFenceAtStartupInSec"] == 300


def test_a_stored_value_that_no_longer_validates_falls_back_to_the_default() -> None:
    assert Config({"FenceStopStatusRetries": "garbage"})["FenceStopStatusRetries"] == 18
