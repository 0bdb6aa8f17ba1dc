"""Power operations, operations (fence flows) and events."""

from __future__ import annotations


from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.auth import current_user
from hostpower.api.deps import AdminUser, CurrentUser, EngineCtx, Service
from hostpower.fencing.power import PowerResult
from hostpower.model import validate
from hostpower.model.events import Event, Severity
from hostpower.model.operations import FenceType, Origin
from hostpower.model.inventory import FenceAgent
from hostpower.model.secret import Secret
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal, Operation

router = APIRouter(prefix="/api", tags=["power"])


def operation_out(op: Operation, joined: bool = False) -> S.OperationOut:
    return S.OperationOut(
        id=op.id, host=S.RefOut(id=op.host_id, name=op.host_name, href=f"/api/hosts/{op.host_id}"),
        action=op.action, origin=op.origin, requested_by=op.requested_by,
        state=op.state, phase=op.phase,
        message=op.message, created_at=op.created_at.isoformat(),
        finished_at=op.finished_at.isoformat() if op.finished_at else None,
        steps=[S.StepOut(name=s.name, state=s.state, outcome=s.outcome, proxies=s.proxies,
                         message=s.message, started_at=s.started_at.isoformat(),
                         finished_at=s.finished_at.isoformat() if s.finished_at else None)
               for s in op.steps],
        joined=joined, href=f"/api/operations/{op.id}")


def _status_out(result: PowerResult) -> S.PowerStatusOut:
    first = next((c.proxy for c in result.commands if c.proxy), None)
    return S.PowerStatusOut(power_state=result.outcome.value, proxy=first,
                            message=result.message,
                            commands=[S.AgentCommandOut(**c.summary()) for c in result.commands])


@router.post("/hosts/{host_id}/fence", response_model=None, responses={
    200: {"model": S.PowerStatusOut | S.OperationOut | S.ManualOut,
          "description": "status: the power state; start/stop/restart: the running operation "
                         "joined; manual: done"},
    202: {"model": S.OperationOut, "description": "start/stop/restart: the operation started"},
    **E.responses(400, 401, 403, 404, 409, 422, 503)})
async def fence(host_id: S.PathId, body: S.FenceRequest, service: Service,
                user: CurrentUser) -> JSONResponse:
    """status answers at once; start, stop and restart return an operation (202);
    manual clears the host's state."""
    if body.fence_type is not FenceType.STATUS and not user.is_admin:
        raise HTTPException(403, f"user {user.name!r} has role viewer: admin role required")
    await service.gateway.host(host_id)  # 404 early
    # Every power request names its user: in the operation (requested_by) and its events.
    if body.fence_type is FenceType.STATUS:
        result = await service.status(host_id, requested_by=user.name)
        return JSONResponse(_status_out(result).model_dump())
    if body.fence_type is FenceType.MANUAL:
        await service.manual(host_id, requested_by=user.name)
        return JSONResponse(S.ManualOut(detail="host state cleared").model_dump())
    flow = body.fence_type.flow
    assert flow is not None
    op, joined = await service.request(host_id, flow, Origin.API, requested_by=user.name)
    return JSONResponse(operation_out(op, joined).model_dump(), status_code=200 if joined else 202)


@router.post("/hosts/{host_id}/fenceagents/test", response_model=S.PowerStatusOut,
             responses=E.responses(*E.WRITE_ONE))
async def test_agent(host_id: S.PathId, body: S.FenceAgentTestIn, service: Service,
                     ctx: EngineCtx, user: AdminUser) -> S.PowerStatusOut:
    """oVirt's Test button: a status through the host's chain with this (maybe
    unsaved) agent definition; nothing is stored."""
    def build(s: Session) -> FenceAgent:
        inv = Inventory(s, ctx.box, ctx.known_agent_types())
        inv.host(host_id)
        saved = inv.agent(host_id, body.id) if body.id is not None else None
        password = body.password
        if password is None and saved is not None:
            password = saved.password.reveal()
        if body.options is None:
            opts = saved.options if saved is not None else ()
        else:
            opts = validate.options(tuple((o.name, o.value) for o in body.options))
        return FenceAgent(
            id=body.id or 0, host_id=host_id,
            type=validate.agent_type(body.type, ctx.known_agent_types()),
            address=validate.address(body.address), order=1, port=validate.port(body.port),
            username=validate.single_line(body.username, "username"),
            password=Secret(validate.single_line(password or "", "password", secret=True)),
            options=opts)

    agent = await service.gateway.run(build)
    return _status_out(await service.test_agent(host_id, agent, requested_by=user.name))


@router.get("/operations/{op_id}", response_model=S.OperationOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_operation(op_id: S.PathId, ctx: EngineCtx) -> S.OperationOut:
    with ctx.db.session() as s:
        return operation_out(Journal(s).get(op_id))


@router.get("/operations", response_model=list[S.OperationOut], dependencies=[Depends(current_user)],
            responses=E.responses(401, 422, 503))
def list_operations(ctx: EngineCtx, host: S.QueryId = None,
                    limit: int = Query(100, ge=1, le=1000)) -> list[S.OperationOut]:
    with ctx.db.session() as s:
        return [operation_out(op) for op in Journal(s).list(host, limit)]


def event_out(e: Event) -> S.EventOut:
    return S.EventOut(id=e.id or 0, time=e.created_at.isoformat() if e.created_at else "",
                      severity=e.severity, kind=e.kind, host=e.host_name,
                      host_id=e.host_id, operation_id=e.operation_id, user=e.user,
                      engine=e.engine,
                      message=e.message, details=e.details)


@router.get("/events", response_model=list[S.EventOut], dependencies=[Depends(current_user)],
            responses=E.responses(400, 401, 404, 422, 503))
def list_events(ctx: EngineCtx, host: S.QueryText = None, severity: Severity | None = None,
                since: S.IsoTime | None = None, operation: S.QueryId = None,
                user: S.QueryText = None,
                limit: int = Query(500, ge=1, le=5000)) -> list[S.EventOut]:
    """Filters: host (name, address or id), severity (at least), since (ISO time),
    user (the engine user who did it or whom it is about: logins, writes, power requests)."""
    with ctx.db.session() as s:
        host_id = None
        if host is not None:
            host_id = Inventory(s, ctx.box).find_host(host).id
        return [event_out(e) for e in Events(s).query(host_id, severity, since, operation,
                                                      user=user, limit=limit)]
