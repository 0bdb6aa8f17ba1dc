"""Data centers and clusters."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy.orm import Session


from hostpower.api import convert as C
from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.deps import EngineCtx
from hostpower.api.audit import WriteAudit, audited_admin
from hostpower.api.auth import current_user
from hostpower.context import EngineContext
from hostpower.store.inventory import Inventory

router = APIRouter(prefix="/api", tags=["inventory"])


def _inv(ctx: EngineContext, s: Session) -> Inventory:
    return Inventory(s, ctx.box)


@router.get("/datacenters", response_model=list[S.DataCenterOut], dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def list_datacenters(ctx: EngineCtx) -> list[S.DataCenterOut]:
    with ctx.db.session() as s:
        return [C.dc_out(dc) for dc in _inv(ctx, s).data_centers()]


@router.post("/datacenters", status_code=201, response_model=S.DataCenterOut,
             responses=E.responses(*E.WRITE))
def add_datacenter(body: S.DataCenterIn, ctx: EngineCtx,
                   audit: WriteAudit = Depends(audited_admin)) -> S.DataCenterOut:
    with ctx.db.session() as s:
        dc = _inv(ctx, s).add_data_center(body.name, body.description)
        audit.record(s, f"added data center {dc.name}")
        return C.dc_out(dc)


@router.get("/datacenters/{dc_id}", response_model=S.DataCenterOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_datacenter(dc_id: S.PathId, ctx: EngineCtx) -> S.DataCenterOut:
    with ctx.db.session() as s:
        return C.dc_out(_inv(ctx, s).data_center(dc_id))


@router.put("/datacenters/{dc_id}", response_model=S.DataCenterOut,
            responses=E.responses(*E.WRITE_ONE))
def update_datacenter(dc_id: S.PathId, body: S.DataCenterPatch, ctx: EngineCtx,
                      audit: WriteAudit = Depends(audited_admin)) -> S.DataCenterOut:
    with ctx.db.session() as s:
        dc = _inv(ctx, s).update_data_center(dc_id, body.name, body.description)
        audit.record(s, f"updated data center {dc.name}")
        return C.dc_out(dc)


@router.delete("/datacenters/{dc_id}", status_code=204,
               responses=E.responses(*E.DELETE))
def delete_datacenter(dc_id: S.PathId, ctx: EngineCtx,
                      audit: WriteAudit = Depends(audited_admin)) -> Response:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        name = inv.data_center(dc_id).name
        inv.delete_data_center(dc_id)
        audit.record(s, f"deleted data center {name}")
    return Response(status_code=204)


@router.get("/clusters", response_model=list[S.ClusterOut], dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def list_clusters(ctx: EngineCtx) -> list[S.ClusterOut]:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        dcs = {dc.id: dc for dc in inv.data_centers()}
        return [C.cluster_out(c, dcs[c.data_center_id]) for c in inv.clusters()]


@router.post("/clusters", status_code=201, response_model=S.ClusterOut,
             responses=E.responses(*E.WRITE))
def add_cluster(body: S.ClusterIn, ctx: EngineCtx,
                audit: WriteAudit = Depends(audited_admin)) -> S.ClusterOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        c = inv.add_cluster(body.name, body.data_center.id, body.description,
                            C.policy_in(body.fencing_policy))
        audit.record(s, f"added cluster {c.name}")
        return C.cluster_out(c, inv.data_center(c.data_center_id))


@router.get("/clusters/{cluster_id}", response_model=S.ClusterOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_cluster(cluster_id: S.PathId, ctx: EngineCtx) -> S.ClusterOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        c = inv.cluster(cluster_id)
        return C.cluster_out(c, inv.data_center(c.data_center_id))


@router.put("/clusters/{cluster_id}", response_model=S.ClusterOut,
            responses=E.responses(*E.WRITE_ONE))
def update_cluster(cluster_id: S.PathId, body: S.ClusterPatch, ctx: EngineCtx,
                   audit: WriteAudit = Depends(audited_admin)) -> S.ClusterOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        c = inv.update_cluster(
            cluster_id, name=body.name, description=body.description,
            data_center_id=body.data_center.id if body.data_center else None,
            fencing_policy=C.policy_in(body.fencing_policy) if body.fencing_policy else None)
        audit.record(s, f"updated cluster {c.name}")
        return C.cluster_out(c, inv.data_center(c.data_center_id))


@router.delete("/clusters/{cluster_id}", status_code=204,
               responses=E.responses(*E.DELETE))
def delete_cluster(cluster_id: S.PathId, ctx: EngineCtx,
                   audit: WriteAudit = Depends(audited_admin)) -> Response:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        name = inv.cluster(cluster_id).name
        inv.delete_cluster(cluster_id)
        audit.record(s, f"deleted cluster {name}")
    return Response(status_code=204)
