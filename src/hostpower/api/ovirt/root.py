"""``GET /ovirt-engine/api``: the root the SDK reads on ``connection.test()``
(product information, the collections served, a summary of the hosts), and
a fault for every path and method not served."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request, Response

from hostpower import __version__
from hostpower.api.deps import CurrentUser, EngineCtx
from hostpower.api.ovirt.common import inventory, router as ovirt_router
from hostpower.api.ovirt.faults import Fault
from hostpower.api.ovirt.render import BASE, Node, answer, link, value
from hostpower.model.inventory import HostStatus

router = ovirt_router()
fallback = ovirt_router()
# The oVirt API level this layer follows (ovirt-engine-api-model 4.5; SDK 4.6).
API_MAJOR, API_MINOR = 4, 5
COLLECTIONS = ("clusters", "datacenters", "hosts")


def api_node(hosts_total: int, hosts_up: int) -> Node:
    links = []
    for c in COLLECTIONS:
        links += [link(c, f"{BASE}/{c}"), link(f"{c}/search", f"{BASE}/{c}?search={{query}}")]
    version = Node("version").add(
        value("build", 0), value("full_version", f"{API_MAJOR}.{API_MINOR}.0 (hostpower "
                                                 f"{__version__})"),
        value("major", API_MAJOR), value("minor", API_MINOR), value("revision", 0))
    return Node("api").add(
        *links,
        Node("product_info").add(value("name", "hostpower"), value("vendor", "hostpower"),
                                 version),
        Node("summary").add(Node("hosts").add(value("active", hosts_up),
                                              value("total", hosts_total))),
        value("time", datetime.now(UTC).isoformat(timespec="milliseconds")))


@router.get("")
@router.get("/")
def api_root(request: Request, ctx: EngineCtx, _: CurrentUser) -> Response:
    with ctx.db.session() as s:
        hosts = inventory(ctx, s).hosts()
    up = sum(1 for h in hosts if h.status is HostStatus.UP)
    return answer(request, api_node(len(hosts), up))


@fallback.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def not_served(rest: str, request: Request) -> Response:
    raise Fault(404, f"{request.method} {BASE}/{rest} is not served by hostpower's oVirt API "
                     f"(power management only: see docs/ovirt-api.md)")
