"""Treatment gates for a non-responsive host, each with its reason."""

from __future__ import annotations

from dataclasses import replace

from hostpower.model.inventory import (
    Cluster, ConnectivityPolicy, FencingPolicy, Host, HostStatus, PowerManagement,
)
from hostpower.model.treatment import Facts, Gate, decide

PM_ON = PowerManagement(enabled=True, automatic_pm_enabled=True)


def facts(**over) -> Facts:  # type: ignore[no-untyped-def]
    target = Host(1, "h1", "10.0.0.1", 1, HostStatus.NON_RESPONSIVE, power_management=PM_ON)
    others = [Host(i, f"h{i}", f"10.0.0.{i}", 1, HostStatus.UP) for i in range(2, 6)]
    base = Facts(host=target, cluster=Cluster(1, "c1", 1), cluster_hosts=[target, *others],
                 now=1000.0, engine_started_at=0.0, startup_window=300, quiet_time=180,
                 last_operation_at=None, in_flow=False, agent_count=1)
    return replace(base, **over)


def test_a_lone_non_responsive_host_is_fenced() -> None:
    assert decide(facts()).fence


def test_gates_in_order_each_with_its_reason() -> None:
    d = decide(facts(in_flow=True, now=10))
    assert (d.fence, d.gate) == (False, Gate.IN_FLOW)
    d = decide(facts(now=100.0))
    assert d.gate is Gate.STARTUP_WINDOW and "first 300 s" in d.reason
    d = decide(facts(cluster=Cluster(1, "c1", 1, fencing_policy=FencingPolicy(enabled=False))))
    assert d.gate is Gate.CLUSTER_FENCING_DISABLED and "cluster c1" in d.reason
    d = decide(facts(last_operation_at=900.0))
    assert d.gate is Gate.QUIET_TIME and "100 s ago" in d.reason
    host = Host(1, "h1", "10.0.0.1", 1, HostStatus.NON_RESPONSIVE)
    assert decide(facts(host=host)).gate is Gate.PM_DISABLED
    host = replace(host, power_management=PowerManagement(enabled=True, automatic_pm_enabled=False))
    assert decide(facts(host=host)).gate is Gate.AUTOMATIC_PM_OFF
    assert decide(facts(agent_count=0)).gate is Gate.NO_AGENTS


def test_connectivity_threshold_skips_when_too_many_hosts_are_unreachable() -> None:
    f = facts()
    hosts = list(f.cluster_hosts)
    hosts[1] = replace(hosts[1], status=HostStatus.CONNECTING)   # 2 of 5 = 40% < 50%
    assert decide(replace(f, cluster_hosts=hosts)).fence
    hosts[2] = replace(hosts[2], status=HostStatus.NON_RESPONSIVE)  # 3 of 5 = 60% >= 50%
    d = decide(replace(f, cluster_hosts=hosts))
    assert d.gate is Gate.CONNECTIVITY_BROKEN
    assert "3 of 5 hosts of cluster c1 (60%)" in d.reason
    off = Cluster(1, "c1", 1, fencing_policy=FencingPolicy(
        skip_if_connectivity_broken=ConnectivityPolicy(enabled=False)))
    assert decide(replace(f, cluster_hosts=hosts, cluster=off)).fence
