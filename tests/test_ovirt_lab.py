"""oVirt's Python SDK fencing lab hosts through hostpower's proxy chain:
the SDK's restart reaches the host's IPMI BMC through another host of its
cluster (the chain's `cluster` entry), exactly once off and once on."""

from __future__ import annotations

from collections.abc import Iterator

import ovirtsdk4 as sdk
from ovirtsdk4 import types
import pytest

from apikit import ServedApp
from enginekit import host_id, served_world
from hostpower.lab.runner import RunningLab
from labkit import counts, wait_counts

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, ServedApp]]:
    with served_world(tmp_path_factory.mktemp("ovirt")) as world:
        world[1].admin_headers()  # creates the admin user
        yield world


def connect(served: ServedApp) -> sdk.Connection:
    from apikit import ADMIN, ADMIN_PASSWORD

    return sdk.Connection(url=f"{served.url}/ovirt-engine/api", username=f"{ADMIN}@internal",
                          password=ADMIN_PASSWORD, insecure=True, timeout=120)


def test_ovirt_lab_status_and_restart_through_the_chain(world) -> None:  # type: ignore[no-untyped-def]
    lab, served = world
    hid = str(host_id(served.ctx, "c1-h1"))
    bmc = lab.topo.host("c1-h1").bmcs[0].name
    before = counts(lab, bmc)
    with connect(served) as conn:
        [host] = conn.system_service().hosts_service().list(search="name=c1-h1")
        assert host.id == hid and host.status is types.HostStatus.UP
        assert [p.type for p in host.power_management.pm_proxies] == []  # the default chain
        service = conn.system_service().hosts_service().host_service(hid)
        assert service.fence(fence_type="status").status is types.PowerManagementStatus.ON
        pm = service.fence(fence_type="restart")
        assert pm.status is types.PowerManagementStatus.ON
    after = wait_counts(lab, bmc, before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    [op] = served.request("GET", f"/api/operations?host={hid}", served.admin_headers()).json()
    assert (op["state"], op["requested_by"]) == ("succeeded", "root")
    stop = next(s for s in op["steps"] if s["name"] == "stop")
    [command] = stop["proxies"]
    assert command["proxy"] in ("c1-h2", "c1-h3")  # another host of c1: the chain's cluster
    assert command["attempts"][0]["source"] == "cluster"


def test_ovirt_lab_pm_proxies_set_by_the_sdk_choose_the_proxies(world) -> None:  # type: ignore[no-untyped-def]
    """pm_proxies [other_dc, cluster] set through the SDK: a status of c2-h2
    tries the hosts of dc2 first (c3's hosts, which c2's management network
    does not let in), then its own cluster's c2-h1, which answers."""
    _, served = world
    hid = str(host_id(served.ctx, "c2-h2"))
    with connect(served) as conn:
        service = conn.system_service().hosts_service().host_service(hid)
        service.update(types.Host(power_management=types.PowerManagement(pm_proxies=[
            types.PmProxy(type=types.PmProxyType.OTHER_DC),
            types.PmProxy(type=types.PmProxyType.CLUSTER)])))
        assert service.fence(fence_type="status").status is types.PowerManagementStatus.ON
    admin = served.admin_headers()
    pm = served.request("GET", f"/api/hosts/{hid}", admin).json()["power_management"]
    assert [p["type"] for p in pm["effective_pm_proxies"]] == ["other_dc", "cluster", "engine",
                                                              "dc"]
    status = served.request("POST", f"/api/hosts/{hid}/fence", admin,
                            json={"fence_type": "status"}).json()
    assert status["proxy"] == "c2-h1"
    attempts = [(a["proxy"], a["source"]) for a in status["commands"][0]["attempts"]]
    assert attempts[-1] == ("c2-h1", "cluster")
    assert {s for _, s in attempts[:-1]} == {"other_dc"}
    assert {p for p, _ in attempts[:-1]} <= {"c3-h1", "c3-h2"}
