"""The proxy chain grammar and implicit completion (DESIGN.md, "The proxy chain")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostpower.config import Config
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import Host
from hostpower.model.proxychain import (
    ProxyEntry, ProxySource, check_chain_hosts, complete_chain, format_chain, parse_chain,
    parse_source_list,
)

DEFAULTS = Config()


def normalize(spec: str, default: str = "cluster,dc", implicit: str = "engine,cluster,dc") -> str:
    return format_chain(complete_chain(
        parse_chain(spec), parse_source_list(default, "d"), parse_source_list(implicit, "i")))


@pytest.mark.parametrize("spec, effective", [
    # The original design's examples.
    ("engine,IP1,IP2", "engine,IP1,IP2,cluster,dc"),
    ("IP1,dc,IP2", "IP1,dc,IP2,engine,cluster"),
    ("", "cluster,dc,engine"),
    # Case, white space, and keywords already present.
    ("  Cluster , DC ", "cluster,dc,engine"),
    ("ENGINE", "engine,cluster,dc"),
    ("other_dc", "other_dc,engine,cluster,dc"),
    ("dc,cluster,engine", "dc,cluster,engine"),
    ("host7.example.com, 10.0.0.7", "host7.example.com,10.0.0.7,engine,cluster,dc"),
    ("fe80::1", "fe80::1,engine,cluster,dc"),
])
def test_effective_chain_matches_the_design(spec: str, effective: str) -> None:
    assert normalize(spec) == effective


def test_empty_implicit_preferences_mean_exactly_the_chain_given() -> None:
    assert normalize("IP1,IP2", implicit="") == "IP1,IP2"
    assert normalize("", implicit="") == "cluster,dc"


def test_default_preferences_apply_only_to_a_host_without_a_chain() -> None:
    assert normalize("", default="dc,engine", implicit="") == "dc,engine"
    assert normalize("cluster", default="dc,engine", implicit="") == "cluster"


@pytest.mark.parametrize("spec, message", [
    ("clustr", "entry 1 'clustr' is an unknown word (did you mean 'cluster'?)"),
    ("cluster,engien", "entry 2 'engien' is an unknown word (did you mean 'engine'?)"),
    ("datacenter", "entry 1 'datacenter' is an unknown word (did you mean 'dc'?)"),
    ("other-dc", "(did you mean 'other_dc'?)"),
    ("cluster,,dc", "entry 2 is empty"),
    ("cluster,", "entry 2 is empty"),
    ("dc,DC", "entry 2 'dc' duplicates entry 1"),
    ("h1.example,H1.EXAMPLE", "entry 2 'H1.EXAMPLE' duplicates entry 1"),
    ("cluster,bad host", "entry 2 'bad host' is neither a proxy source"),
    ("under_score", "entry 1 'under_score' is neither"),
    ("1.2.3", "entry 1 '1.2.3' is neither"),
    ("300.1.1.1", "entry 1 '300.1.1.1' is neither"),
])
def test_invalid_chains_are_refused_naming_the_entry(spec: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_chain(spec)
    assert err.value.field == "pm_proxies"
    assert message in err.value.message


def test_short_host_names_near_keywords_are_host_names() -> None:
    # dc1, dcc and eng are plausible host names: only long near-misses are typos.
    assert [e.source for e in parse_chain("dc1,dcc,eng")] == [ProxySource.HOST] * 3


def test_configuration_keys_take_source_keywords_only() -> None:
    with pytest.raises(ValidationError, match="only cluster, dc, other_dc and engine"):
        parse_source_list("cluster,host1", "FenceProxyDefaultPreferences")


def _host(id_: int, name: str, address: str) -> Host:
    return Host(id=id_, name=name, address=address, cluster_id=1)


def test_saved_chain_host_entries_must_exist_and_not_be_the_target() -> None:
    target = _host(1, "h1", "10.0.0.1")
    hosts = [target, _host(2, "h2", "10.0.0.2")]
    check_chain_hosts(parse_chain("h2,cluster"), target, hosts)
    with pytest.raises(ValidationError, match="entry 1 'h3' is not a defined host"):
        check_chain_hosts(parse_chain("h3"), target, hosts)
    with pytest.raises(ValidationError, match="entry 2 '10.0.0.1' is the host itself"):
        check_chain_hosts(parse_chain("dc,10.0.0.1"), target, hosts)
    with pytest.raises(ValidationError, match="entry 2 '10.0.0.2' names the same host as entry 1"):
        check_chain_hosts(parse_chain("h2,10.0.0.2"), target, hosts)


# -- properties -------------------------------------------------------------------

keywords = st.sampled_from(["cluster", "dc", "other_dc", "engine", "CLUSTER", "Dc"])
labels = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True).filter(
    lambda s: s not in {"cluster", "dc", "engine"} and not s.startswith(("clust", "engi")))
hostnames = st.builds(lambda a, b: f"{a}.{b}", labels, labels)
ips = st.ip_addresses(v=4).map(str)
entries = st.one_of(keywords, hostnames, ips)


def unique_chain(items: list[str]) -> str:
    seen, out = set(), []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return ",".join(out)


chains = st.lists(entries, max_size=8).map(unique_chain)
source_lists = st.lists(st.sampled_from(["cluster", "dc", "other_dc", "engine"]),
                        unique=True).map(",".join)


@given(chains, source_lists.filter(bool), source_lists)
def test_normalize_is_idempotent(spec: str, default: str, implicit: str) -> None:
    once = normalize(spec, default, implicit)
    assert normalize(once, default, implicit) == once


@given(chains, source_lists.filter(bool), source_lists)
def test_normalize_never_yields_duplicates(spec: str, default: str, implicit: str) -> None:
    result = [e.lower() for e in normalize(spec, default, implicit).split(",") if e]
    assert len(result) == len(set(result))


@given(chains.filter(bool), source_lists.filter(bool), source_lists)
def test_normalize_keeps_the_users_order_as_a_prefix(spec: str, default: str, implicit: str) -> None:
    given_entries = [e.strip().lower() for e in spec.split(",")]
    result = [e.lower() for e in normalize(spec, default, implicit).split(",")]
    assert result[: len(given_entries)] == given_entries


@given(chains, source_lists.filter(bool), source_lists)
def test_normalize_contains_every_implicit_entry(spec: str, default: str, implicit: str) -> None:
    result = normalize(spec, default, implicit).split(",")
    for entry in filter(None, implicit.split(",")):
        assert entry in result


def test_entry_text_and_key() -> None:
    e = ProxyEntry(ProxySource.HOST, "Host7.Example")
    assert (e.text, e.key) == ("Host7.Example", "host7.example")
    assert ProxyEntry(ProxySource.OTHER_DC).text == "other_dc"
