"""``/ovirt-engine/api/hosts``: list (with search), get, and update of a host's
power management, as oVirt's Host and PowerManagement types."""

from __future__ import annotations

from fastapi import Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from hostpower.api import convert as C
from hostpower.api.audit import WriteAudit, audited_admin
from hostpower.api.deps import CurrentUser, EngineCtx
from hostpower.api.ovirt import body as B
from hostpower.api.ovirt.common import inventory, limit, obj_id, router as ovirt_router
from hostpower.api.ovirt.proxies import merged, ovirt_type, visible
from hostpower.api.ovirt.render import BASE, Node, answer, link, listing, ref, value
from hostpower.api.ovirt.search import Search
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import Host, PowerManagement

router = ovirt_router()

# Fields of power_management that belong to oVirt 3's single device: the
# devices are fence agents now (hosts/{id}/fenceagents), in oVirt as here.
_DEVICE_FIELDS = ("address", "username", "password", "options", "type", "agents")
# Host fields shown but not changed here: a different value is refused.
_FIXED = ("name", "address", "port", "status")


def pm_node(pm: PowerManagement) -> Node:
    proxies = [Node("pm_proxy").add(value("type", t)) for t in visible(pm.pm_proxies)]
    return Node("power_management").add(
        value("automatic_pm_enabled", pm.automatic_pm_enabled),
        value("enabled", pm.enabled),
        value("kdump_detection", pm.kdump_detection),
        listing("pm_proxies", "pm_proxy", proxies))


def host_node(h: Host) -> Node:
    href = f"{BASE}/hosts/{h.id}"
    reason = h.non_operational_reason.value if h.non_operational_reason else None
    return Node("host", {"href": href, "id": str(h.id)}).add(
        Node("actions").add(link("fence", f"{href}/fence")),
        value("name", h.name),
        # The service's path, and the model's name for it (what the SDK reads
        # into host.agents, so that follow_link(host.agents) lists them).
        link("fenceagents", f"{href}/fenceagents"),
        link("agents", f"{href}/fenceagents"),
        value("address", h.address),
        value("port", h.agent_port),
        pm_node(h.power_management),
        value("status", h.status.value),
        value("status_detail", reason),
        ref("cluster", "clusters", h.cluster_id))


@router.get("/hosts")
def list_hosts(request: Request, ctx: EngineCtx, _: CurrentUser, search: str | None = None,
               max_: int | None = Query(None, alias="max"),
               case_sensitive: bool = True) -> Response:
    with ctx.db.session() as s:
        inv = inventory(ctx, s)
        clusters = {c.id: c for c in inv.clusters()}
        dcs = {d.id: d.name for d in inv.data_centers()}
        hosts = inv.hosts()
    query: Search[Host] = Search("hosts", {
        "name": lambda h: h.name,
        "address": lambda h: h.address,
        "status": lambda h: h.status.value,
        "cluster": lambda h: clusters[h.cluster_id].name,
        "datacenter": lambda h: dcs[clusters[h.cluster_id].data_center_id],
    }, search or "", case_sensitive)
    found = query.filter(hosts, limit(max_))
    return answer(request, listing("hosts", "host", [host_node(h) for h in found]))


@router.get("/hosts/{host_id}")
def get_host(host_id: str, request: Request, ctx: EngineCtx, _: CurrentUser) -> Response:
    with ctx.db.session() as s:
        host = inventory(ctx, s).host(obj_id(host_id, "host"))
    return answer(request, host_node(host))


def _pm_update(pm: PowerManagement, doc: B.Body) -> tuple[PowerManagement, list[str] | None]:
    """The new power management (pm_proxies still the stored chain) and the
    oVirt-typed proxies sent, if any."""
    path = "power_management"
    for name in _DEVICE_FIELDS:
        if doc.get(name) not in (None, "", []):
            raise ValidationError(f"{path}.{name}", "oVirt 3's single power management device "
                                                    "is not served: use the host's fenceagents")
    sent = B.items(doc, "pm_proxies", path)
    wanted = None if sent is None else [
        ovirt_type(B.text(p, "type", f"{path}.pm_proxies"), i) for i, p in enumerate(sent, 1)]

    def flag(name: str, stored: bool) -> bool:
        got = B.boolean(doc, name, path)
        return stored if got is None else got

    return PowerManagement(
        enabled=flag("enabled", pm.enabled),
        automatic_pm_enabled=flag("automatic_pm_enabled", pm.automatic_pm_enabled),
        kdump_detection=flag("kdump_detection", pm.kdump_detection),
        pm_proxies=pm.pm_proxies), wanted


def _check_fixed(host: Host, doc: B.Body) -> None:
    shown = {"name": host.name, "address": host.address, "port": str(host.agent_port),
             "status": host.status.value}
    for name in _FIXED:
        sent = B.text(doc, name, "host")
        if sent is not None and sent.strip() != shown[name]:
            raise ValidationError(f"host.{name}", "is not changed through the oVirt API, only "
                                                  "power_management is (use PUT /api/hosts/{id})")
    cluster = B.ref_id(doc, "cluster", "host")
    if cluster is not None and cluster != host.cluster_id:
        raise ValidationError("host.cluster", "is not changed through the oVirt API (use PUT "
                                              "/api/hosts/{id})")


@router.put("/hosts/{host_id}")
async def update_host(host_id: str, request: Request, ctx: EngineCtx,
                      audit: WriteAudit = Depends(audited_admin)) -> Response:
    hid = obj_id(host_id, "host")
    doc = await B.read(request, "host")

    def write() -> Host:
        with ctx.db.session() as s:
            inv = inventory(ctx, s)
            host = inv.host(hid)
            _check_fixed(host, doc)
            pm_doc = B.section(doc, "power_management", "host")
            if pm_doc is None:
                return host
            pm, wanted = _pm_update(host.power_management, pm_doc)
            if wanted is not None:
                pm = PowerManagement(pm.enabled, pm.automatic_pm_enabled, pm.kdump_detection,
                                     C.chain_in(merged(pm.pm_proxies, wanted)))
            host = inv.update_host(hid, power_management=pm)
            audit.record(s, f"updated the power management of host {host.name} (oVirt API)",
                         host.id, host.name)
            return host

    return answer(request, host_node(await run_in_threadpool(write)))
