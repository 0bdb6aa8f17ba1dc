"""The proxy locator: ordered candidates per source, and who was passed over."""

from __future__ import annotations

from hostpower.model.inventory import (
    Cluster, DataCenter, Host, HostStatus, InventorySnapshot, NonOperationalReason,
)
from hostpower.model.proxychain import parse_chain
from hostpower.proxies import ProxyLocator

UP = HostStatus.UP


def snapshot(*hosts: Host) -> InventorySnapshot:
    dcs = (DataCenter(1, "dc1"), DataCenter(2, "dc2"))
    clusters = (Cluster(10, "c10", 1), Cluster(11, "c11", 1), Cluster(20, "c20", 2))
    return InventorySnapshot(dcs, clusters, hosts)


def host(id_: int, cluster: int, status: HostStatus = UP,
         reason: NonOperationalReason | None = None) -> Host:
    return Host(id=id_, name=f"h{id_}", address=f"10.0.{cluster}.{id_}", cluster_id=cluster,
                status=status, non_operational_reason=reason)


def names(locator: ProxyLocator, target: Host, chain: str, agent_type: str = "ipmilan",
          load: dict[int, int] | None = None) -> list[tuple[str, str]]:
    return [(c.entry.text, c.name)
            for plan in locator.iter_sources(target, agent_type, parse_chain(chain), load)
            for c in plan.candidates]


def test_default_chain_prefers_the_cluster_then_the_data_center_then_the_engine() -> None:
    t, a, b, c = host(1, 10), host(2, 10), host(3, 11), host(4, 20)
    loc = ProxyLocator(snapshot(t, a, b, c), engine_agent_types={"ipmilan"})
    assert names(loc, t, "cluster,dc,engine") == [
        ("cluster", "h2"), ("dc", "h3"), ("engine", "engine")]


def test_the_target_and_hosts_that_are_not_up_are_passed_over_with_reasons() -> None:
    t = host(1, 10)
    down = host(2, 10, HostStatus.NON_RESPONSIVE)
    netfail = host(3, 10, HostStatus.NON_OPERATIONAL, NonOperationalReason.NETWORK_UNREACHABLE)
    storage = host(4, 10, HostStatus.NON_OPERATIONAL, NonOperationalReason.STORAGE_UNREACHABLE)
    up = host(5, 10)
    loc = ProxyLocator(snapshot(t, down, netfail, storage, up), engine_agent_types=set())
    [plan] = list(loc.iter_sources(t, "ipmilan", parse_chain("cluster")))
    # Up hosts before non_operational ones (for a reason other than network).
    assert [c.name for c in plan.candidates] == ["h5", "h4"]
    reasons = {p.name: p.reason for p in plan.passed_over}
    assert reasons == {
        "h1": "the target itself",
        "h2": "not up (status non_responsive)",
        "h3": "non_operational (network unreachable)",
    }


def test_engine_is_a_candidate_only_where_it_can_run_the_agent_type() -> None:
    t = host(1, 10)
    loc = ProxyLocator(snapshot(t), engine_agent_types={"ipmilan"})
    [plan] = list(loc.iter_sources(t, "redfish", parse_chain("engine")))
    assert plan.candidates == []
    assert [(p.name, p.reason) for p in plan.passed_over] == [
        ("engine", "cannot run fence_redfish locally")]
    assert names(loc, t, "engine") == [("engine", "engine")]


def test_a_host_listed_by_an_earlier_entry_is_not_tried_again() -> None:
    t, a = host(1, 10), host(2, 10)
    loc = ProxyLocator(snapshot(t, a), engine_agent_types=set())
    plans = list(loc.iter_sources(t, "ipmilan", parse_chain("h2,cluster,dc")))
    assert [c.name for c in plans[0].candidates] == ["h2"]
    assert plans[1].candidates == []
    assert ("h2", "already a candidate of entry h2") in [(p.name, p.reason) for p in plans[1].passed_over]


def test_named_host_entry_may_be_in_any_data_center() -> None:
    t, far = host(1, 10), host(9, 20)
    loc = ProxyLocator(snapshot(t, far), engine_agent_types=set())
    assert names(loc, t, "10.0.20.9") == [("10.0.20.9", "h9")]
    assert names(loc, t, "cluster,dc") == []


def test_other_dc_lists_hosts_of_other_data_centers_only() -> None:
    t, same_dc, other = host(1, 10), host(2, 11), host(3, 20)
    loc = ProxyLocator(snapshot(t, same_dc, other), engine_agent_types=set())
    assert names(loc, t, "other_dc") == [("other_dc", "h3")]


def test_load_spreads_operations_across_equal_candidates() -> None:
    t, a, b, c = host(1, 10), host(2, 10), host(3, 10), host(4, 10)
    loc = ProxyLocator(snapshot(t, a, b, c), engine_agent_types=set())
    assert names(loc, t, "cluster", load={})[0][1] == "h2"
    assert [n for _, n in names(loc, t, "cluster", load={2: 2, 3: 1})] == ["h4", "h3", "h2"]
    # Status still outranks load: an idle non_operational host stays behind busy up hosts.
    slow = host(5, 10, HostStatus.NON_OPERATIONAL, NonOperationalReason.OTHER)
    loc = ProxyLocator(snapshot(t, a, slow), engine_agent_types=set())
    assert [n for _, n in names(loc, t, "cluster", load={2: 5})] == ["h2", "h5"]


def test_hosts_that_reported_they_cannot_run_the_agent_are_passed_over() -> None:
    t, a, b = host(1, 10), host(2, 10), host(3, 10)
    loc = ProxyLocator(snapshot(t, a, b), engine_agent_types=set(),
                       host_agent_types={2: {"redfish"}, 3: {"ipmilan", "redfish"}})
    [plan] = list(loc.iter_sources(t, "ipmilan", parse_chain("cluster")))
    assert [c.name for c in plan.candidates] == ["h3"]
    assert ("h2", "cannot run fence_ipmilan") in [(p.name, p.reason) for p in plan.passed_over]


def test_explain_names_hosts_of_other_clusters() -> None:
    t, a, b = host(1, 10), host(2, 11), host(3, 20)
    loc = ProxyLocator(snapshot(t, a, b), engine_agent_types=set())
    cluster_plan = loc.explain(t, "ipmilan", parse_chain("cluster"))[0]
    assert ("h2", "other cluster (c11)") in [(p.name, p.reason) for p in cluster_plan.passed_over]


def test_sources_are_computed_lazily() -> None:
    t, a = host(1, 10), host(2, 10)
    loc = ProxyLocator(snapshot(t, a), engine_agent_types=set())
    plans = loc.iter_sources(t, "ipmilan", parse_chain("cluster,other_dc"))
    first = next(plans)
    assert [c.name for c in first.candidates] == ["h2"]
