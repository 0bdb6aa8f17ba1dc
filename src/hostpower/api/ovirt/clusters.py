"""``/ovirt-engine/api/clusters`` (list, get, update of name, description and
fencing_policy) and ``/ovirt-engine/api/datacenters`` (list, get, and a data
center's clusters), as oVirt's Cluster, FencingPolicy and DataCenter."""

from __future__ import annotations

from fastapi import Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from hostpower.api.audit import WriteAudit, audited_admin
from hostpower.api.deps import CurrentUser, EngineCtx
from hostpower.api.ovirt import body as B
from hostpower.api.ovirt.common import inventory, limit, obj_id, router as ovirt_router
from hostpower.api.ovirt.render import BASE, Node, answer, link, listing, ref, value
from hostpower.api.ovirt.search import Search
from hostpower.model import validate
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import Cluster, ConnectivityPolicy, DataCenter, FencingPolicy

router = ovirt_router()
FP = "cluster.fencing_policy"
# FencingPolicy fields of oVirt that hostpower has not (no Gluster): shown
# false, refused when set true.
_GLUSTER = ("skip_if_gluster_bricks_up", "skip_if_gluster_quorum_not_met")


def policy_node(p: FencingPolicy) -> Node:
    return Node("fencing_policy").add(
        value("enabled", p.enabled),
        Node("skip_if_connectivity_broken").add(
            value("enabled", p.skip_if_connectivity_broken.enabled),
            value("threshold", p.skip_if_connectivity_broken.threshold)),
        value("skip_if_gluster_bricks_up", False),
        value("skip_if_gluster_quorum_not_met", False),
        Node("skip_if_sd_active").add(value("enabled", p.skip_if_sd_active)))


def cluster_node(c: Cluster) -> Node:
    return Node("cluster", {"href": f"{BASE}/clusters/{c.id}", "id": str(c.id)}).add(
        value("name", c.name), value("description", c.description),
        policy_node(c.fencing_policy),
        ref("data_center", "datacenters", c.data_center_id))


def dc_node(dc: DataCenter) -> Node:
    href = f"{BASE}/datacenters/{dc.id}"
    return Node("data_center", {"href": href, "id": str(dc.id)}).add(
        value("name", dc.name), value("description", dc.description),
        link("clusters", f"{href}/clusters"))


def policy_in(doc: B.Body, stored: FencingPolicy) -> FencingPolicy:
    """The stored policy with what `doc` sets; bounds are checked by the inventory."""
    for name in _GLUSTER:
        if B.boolean(doc, name, FP):
            raise ValidationError(f"{FP}.{name}", "hostpower has no Gluster: only false")
    conn = B.section(doc, "skip_if_connectivity_broken", FP) or {}
    sd = B.section(doc, "skip_if_sd_active", FP) or {}
    old = stored.skip_if_connectivity_broken
    enabled = B.boolean(doc, "enabled", FP)
    conn_enabled = B.boolean(conn, "enabled", f"{FP}.skip_if_connectivity_broken")
    threshold = B.integer(conn, "threshold", f"{FP}.skip_if_connectivity_broken")
    if threshold is not None:
        validate.percent(threshold, f"{FP}.skip_if_connectivity_broken.threshold")
    sd_enabled = B.boolean(sd, "enabled", f"{FP}.skip_if_sd_active")
    return FencingPolicy(
        enabled=stored.enabled if enabled is None else enabled,
        skip_if_connectivity_broken=ConnectivityPolicy(
            old.enabled if conn_enabled is None else conn_enabled,
            old.threshold if threshold is None else threshold),
        skip_if_sd_active=stored.skip_if_sd_active if sd_enabled is None else sd_enabled)


def _clusters(request: Request, found: list[Cluster]) -> Response:
    return answer(request, listing("clusters", "cluster", [cluster_node(c) for c in found]))


@router.get("/clusters")
def list_clusters(request: Request, ctx: EngineCtx, _: CurrentUser, search: str | None = None,
                  max_: int | None = Query(None, alias="max"),
                  case_sensitive: bool = True) -> Response:
    with ctx.db.session() as s:
        inv = inventory(ctx, s)
        dcs = {d.id: d.name for d in inv.data_centers()}
        clusters = inv.clusters()
    query: Search[Cluster] = Search("clusters", {
        "name": lambda c: c.name, "datacenter": lambda c: dcs[c.data_center_id],
    }, search or "", case_sensitive)
    return _clusters(request, query.filter(clusters, limit(max_)))


@router.get("/clusters/{cluster_id}")
def get_cluster(cluster_id: str, request: Request, ctx: EngineCtx, _: CurrentUser) -> Response:
    with ctx.db.session() as s:
        return answer(request, cluster_node(inventory(ctx, s).cluster(obj_id(cluster_id,
                                                                             "cluster"))))


@router.put("/clusters/{cluster_id}")
async def update_cluster(cluster_id: str, request: Request, ctx: EngineCtx,
                         audit: WriteAudit = Depends(audited_admin)) -> Response:
    cid = obj_id(cluster_id, "cluster")
    doc = await B.read(request, "cluster")

    def write() -> Cluster:
        with ctx.db.session() as s:
            inv = inventory(ctx, s)
            stored = inv.cluster(cid)
            dc = B.ref_id(doc, "data_center", "cluster")
            if dc is not None and dc != stored.data_center_id:
                raise ValidationError("cluster.data_center", "is not changed through the oVirt "
                                                             "API (use PUT /api/clusters/{id})")
            fp = B.section(doc, "fencing_policy", "cluster")
            c = inv.update_cluster(
                cid, name=B.text(doc, "name", "cluster"),
                description=B.text(doc, "description", "cluster"),
                fencing_policy=None if fp is None else policy_in(fp, stored.fencing_policy))
            audit.record(s, f"updated cluster {c.name} (oVirt API)")
            return c

    return answer(request, cluster_node(await run_in_threadpool(write)))


@router.get("/datacenters")
def list_datacenters(request: Request, ctx: EngineCtx, _: CurrentUser,
                     search: str | None = None, max_: int | None = Query(None, alias="max"),
                     case_sensitive: bool = True) -> Response:
    with ctx.db.session() as s:
        dcs = inventory(ctx, s).data_centers()
    query: Search[DataCenter] = Search("datacenters", {"name": lambda d: d.name},
                                       search or "", case_sensitive)
    found = query.filter(dcs, limit(max_))
    return answer(request, listing("data_centers", "data_center", [dc_node(d) for d in found]))


@router.get("/datacenters/{dc_id}")
def get_datacenter(dc_id: str, request: Request, ctx: EngineCtx, _: CurrentUser) -> Response:
    with ctx.db.session() as s:
        return answer(request, dc_node(inventory(ctx, s).data_center(obj_id(dc_id,
                                                                            "data center"))))


@router.get("/datacenters/{dc_id}/clusters")
def datacenter_clusters(dc_id: str, request: Request, ctx: EngineCtx,
                        _: CurrentUser) -> Response:
    with ctx.db.session() as s:
        inv = inventory(ctx, s)
        dc = inv.data_center(obj_id(dc_id, "data center"))
        return _clusters(request, [c for c in inv.clusters() if c.data_center_id == dc.id])
