"""The pure parts of the oVirt API layer, table-driven: the search language
served and how oVirt's pm_proxies merge into hostpower's chain."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hostpower.api.ovirt.proxies import merged, ovirt_type, visible
from hostpower.api.ovirt.search import Search
from hostpower.model.errors import ValidationError


@dataclass
class H:
    name: str
    status: str


HOSTS = [H("east-1", "up"), H("east-2", "maintenance"), H("West-1", "up")]


def found(query: str, case_sensitive: bool = True) -> list[str]:
    search: Search[H] = Search("hosts", {"name": lambda h: h.name,
                                         "status": lambda h: h.status}, query, case_sensitive)
    return [h.name for h in search.filter(HOSTS)]


@pytest.mark.parametrize("query, names", [
    ("", ["east-1", "east-2", "West-1"]),
    ("name=east-1", ["east-1"]),
    ("name=east-*", ["east-1", "east-2"]),
    ("name=*-1", ["east-1", "West-1"]),
    ('name="east-2"', ["east-2"]),
    ("Hosts: name=east-2", ["east-2"]),
    ("name=west-1", []),
    ("status=up and name=e*", ["east-1"]),
    ("name=east-2 or name=West-1", ["east-2", "West-1"]),
    ("status=up and name!=east-1 or name=east-2", ["east-2", "West-1"]),
    ("name=east.1", []),  # a dot is a dot, not a regular expression
], ids=lambda v: str(v))
def test_ovirt_search_terms(query: str, names: list[str]) -> None:
    assert found(query) == names


def test_ovirt_search_ignores_case_when_asked() -> None:
    assert found("name=WEST-*", case_sensitive=False) == ["West-1"]
    assert found("name=WEST-*") == []


@pytest.mark.parametrize("query, message", [
    ("name=a sortby name", "search: 'sortby' is not served"),
    ("sortby name", "search: 'sortby' is not served"),
    ("page 2", "search: 'page' is not served"),
    ("address=10.0.0.1",
     "search: 'address' is not a field served for hosts (served: name, status)"),
    ("name>a", "search: cannot read 'name>a'"),
    ("(name=a)", "search: cannot read '(name=a)'"),
    ("name=a name=b", "search: expected 'and' or 'or' before 'name=b'"),
    ("Vms: name=a", "search: 'Vms': this collection is hosts"),
], ids=lambda v: str(v))
def test_ovirt_search_refuses_what_it_does_not_serve(query: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        found(query)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("chain, sent, result", [
    ("", ["dc", "cluster"], "dc,cluster"),
    ("cluster,dc", ["dc", "cluster"], "dc,cluster"),
    ("host9,cluster,engine,dc", ["dc", "cluster"], "host9,dc,engine,cluster"),
    ("host9,cluster,engine,dc", ["other_dc"], "host9,other_dc,engine"),
    ("host9,cluster,engine,dc", [], "host9,engine"),
    ("engine", ["cluster", "dc", "other_dc"], "engine,cluster,dc,other_dc"),
], ids=lambda v: str(v))
def test_ovirt_pm_proxies_take_the_places_of_the_ovirt_entries(
        chain: str, sent: list[str], result: str) -> None:
    entries = merged(chain, sent)
    assert ",".join(p.host or p.type for p in entries) == result


def test_ovirt_pm_proxies_show_only_ovirt_types() -> None:
    assert visible("host9,cluster,engine,dc,10.0.0.7,other_dc") == ["cluster", "dc", "other_dc"]
    assert visible("") == []


def test_ovirt_pm_proxy_types_outside_ovirts_are_refused() -> None:
    assert ovirt_type(" DC ", 1) == "dc"
    with pytest.raises(ValidationError) as raised:
        ovirt_type("engine", 2)
    assert str(raised.value).startswith(
        "power_management.pm_proxies: entry 2: type 'engine' is not an oVirt proxy type")
