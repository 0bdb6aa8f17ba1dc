"""kdump detection as the engines see it: their fence_kdump listeners and
the hosts' crash dumps (docs/fencing.md#kdump-detection)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.auth import current_user
from hostpower.api.deps import EngineCtx
from hostpower.model.kdump import listener_alive, same_session
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.kdump import KdumpStore

router = APIRouter(prefix="/api", tags=["kdump"])


@router.get("/kdump", response_model=S.KdumpOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def kdump(ctx: EngineCtx) -> S.KdumpOut:
    """Every engine's listener (where it listens, whether it is alive, what it
    received and ignored) and every host's latest crash dump. Read from the
    database: every engine answers the same."""
    with ctx.db.session() as s:
        config = ConfigStore(s).load()
        store = KdumpStore(s)
        listeners, sessions = store.listeners(), store.sessions()
        names = {h.id: h.name for h in Inventory(s, ctx.box).hosts()}
    timeout = float(config["FenceKdumpListenerTimeout"])
    finished_after = float(config["KdumpFinishedTimeout"])
    return S.KdumpOut(
        listeners=[S.KdumpListenerOut(
            engine=lst.engine, address=lst.address, state=lst.state,  # type: ignore[arg-type]
            alive=lst.state == "listening" and listener_alive(lst.since_heartbeat, timeout),
            detail=lst.detail, heartbeat_at=lst.heartbeat_at.isoformat(),
            received=lst.counts.received, accepted=lst.counts.accepted,
            unknown=lst.counts.unknown, malformed=lst.counts.malformed,
            last_unknown=lst.counts.last_unknown) for lst in listeners],
        sessions=[S.KdumpSessionOut(
            host_id=d.host_id, host=names.get(d.host_id, str(d.host_id)),
            state="dumping" if same_session(d.since_last, finished_after) else "finished",
            source=d.source, engine=d.engine, messages=d.messages,
            first_message_at=d.first_at.isoformat(), last_message_at=d.last_at.isoformat())
            for d in sessions])
