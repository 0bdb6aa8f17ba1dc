"""Fencing readiness: what the PM health check found for each host
(fencing/readiness.py), read from the database, so every engine answers the
same."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.auth import current_user
from hostpower.api.deps import EngineCtx
from hostpower.model.readiness import HostReadiness, Readiness
from hostpower.store.inventory import Inventory
from hostpower.store.readiness import ReadinessStore

router = APIRouter(prefix="/api", tags=["readiness"])


@router.get("/readiness", response_model=list[S.ReadinessOut],
            dependencies=[Depends(current_user)], responses=E.responses(401, 404, 422, 503))
def list_readiness(ctx: EngineCtx, host: S.QueryText = None,
                   readiness: Readiness | None = None) -> list[S.ReadinessOut]:
    """Every host by name, with what the PM health check found: can it be
    fenced now, through which proxies, which failed. Filters: host (name,
    address or id; 404 if there is none), readiness."""
    with ctx.db.session() as s:
        host_id = Inventory(s, ctx.box).find_host(host).id if host is not None else None
        found = ReadinessStore(s).report(host_id)
    return [readiness_out(r) for r in found if readiness is None or r.readiness is readiness]


@router.get("/readiness/{host_id}", response_model=S.ReadinessOut,
            dependencies=[Depends(current_user)], responses=E.responses(*E.READ_ONE))
def get_readiness(host_id: S.PathId, ctx: EngineCtx) -> S.ReadinessOut:
    with ctx.db.session() as s:
        [found] = ReadinessStore(s).report(host_id)
    return readiness_out(found)


def readiness_out(r: HostReadiness) -> S.ReadinessOut:
    return S.ReadinessOut.model_validate({**r.as_dict(), "href": f"/api/readiness/{r.host_id}"})
