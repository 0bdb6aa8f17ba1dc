"""The engines sharing the database, as every engine sees them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.auth import current_user
from hostpower.api.deps import EngineCtx, Member
from hostpower.model.lease import EngineMember
from hostpower.store.engines import Engines

router = APIRouter(prefix="/api", tags=["engines"])


@router.get("/engines", response_model=list[S.EngineOut], dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def list_engines(ctx: EngineCtx, member: Member) -> list[S.EngineOut]:
    """Every engine registered in the database, alive, expired or stopped,
    judged on the database's clock; the same answer from every engine but
    for `self`."""
    with ctx.db.session() as s:
        engines = Engines(s).list()
        shares = Engines(s).host_shares(engines)
    me = (member.me.name, member.generation) if member is not None else None
    return [engine_out(e, (e.name, e.generation) == me, shares[e.name]) for e in engines]


def engine_out(e: EngineMember, is_self: bool, hosts: int) -> S.EngineOut:
    return S.EngineOut(name=e.name, address=e.address, generation=e.generation, state=e.state,
                       started_at=e.started_at.isoformat(), renewed_at=e.renewed_at.isoformat(),
                       lease_expires_at=e.lease_expires_at.isoformat(), is_self=is_self,
                       hosts=hosts)
