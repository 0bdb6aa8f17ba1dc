"""Health, authentication, configuration and capabilities."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from hostpower import __version__
from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.deps import EngineCtx, Member
from hostpower.api.audit import (
    WriteAudit, audited_admin, auth_event, client_address, log_events,
)
from hostpower.api.auth import bearer, current_user
from hostpower.api.login import log_in
from hostpower.config import ConfigKey
from hostpower.model.agenttypes import STANDARD_TYPES
from hostpower.model.events import Severity
from hostpower.model.inventory import HostStatus, NonOperationalReason
from hostpower.model.proxychain import ProxySource
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.users import Users

router = APIRouter(prefix="/api", tags=["system"])


@router.get("/health", response_model=S.HealthOut, responses={503: {
    "model": S.HealthOut, "description": "not ready: the engine cannot renew its lease in "
                                         "the database, so it starts no external action"}})
def health(member: Member) -> S.HealthOut | JSONResponse:
    """The only resource that answers without a token. 503 "not ready" while
    the engine cannot renew its lease (the database is gone): a load balancer
    then sends requests to another engine."""
    if member is not None and not member.may_act():
        body = S.HealthOut(status="not ready", version=__version__, detail=member.why_not())
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    return S.HealthOut(status="ok", version=__version__)


@router.post("/auth/token", response_model=S.TokenOut, tags=["auth"],
             responses=E.responses(400, 401, 422, 429, 503))
def issue_token(body: S.TokenRequest, request: Request) -> S.TokenOut:
    """Throttled per user name and per client address (see api/login.py)."""
    user = log_in(request, body.username, body.password, via="token")
    return S.TokenOut(access_token=user.token, expires_at=user.expires.isoformat(),
                      role=user.role)


@router.delete("/auth/token", status_code=204, tags=["auth"],
               responses=E.responses(401, 503))
def revoke_token(request: Request, ctx: EngineCtx,
                 creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
    """Log out: revoke the bearer token sent (401 without a valid one)."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "authentication required: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    with ctx.db.session() as s:
        users = Users(s)
        user = users.user_for_token(creds.credentials)
        if user is None:
            raise HTTPException(401, "token is invalid or expired",
                                headers={"WWW-Authenticate": "Bearer"})
        users.revoke(creds.credentials)
        event = auth_event(request, Severity.INFO, "auth.logout",
                           f"{user.name} logged out (token) from {client_address(request)}",
                           user.name, "token")
        Events(s).add(event)
    log_events([event])
    return Response(status_code=204)


def _config_out(key: ConfigKey, value: str) -> S.ConfigValueOut:
    return S.ConfigValueOut(
        name=key.name, value=value, default=key.default, type=key.kind,
        description=key.description, unit=key.unit, minimum=key.minimum, maximum=key.maximum)


@router.get("/config", response_model=list[S.ConfigValueOut], dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def list_config(ctx: EngineCtx) -> list[S.ConfigValueOut]:
    with ctx.db.session() as s:
        return [_config_out(k, v) for k, v in ConfigStore(s).listing()]


@router.get("/config/{name}", response_model=S.ConfigValueOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_config(name: str, ctx: EngineCtx) -> S.ConfigValueOut:
    with ctx.db.session() as s:
        return _config_out(*ConfigStore(s).get(name))


@router.put("/config/{name}", response_model=S.ConfigValueOut,
            responses=E.responses(*E.WRITE_ONE))
def set_config(name: str, body: S.ConfigValueIn, ctx: EngineCtx,
               audit: WriteAudit = Depends(audited_admin)) -> S.ConfigValueOut:
    with ctx.db.session() as s:
        key, value = ConfigStore(s).set(name, body.value)
        audit.record(s, f"set {key.name} to {value!r}")  # no configuration key is a secret
        return _config_out(key, value)


@router.get("/capabilities/fenceagents/{agent_type}", response_model=S.AgentTypeOut,
            dependencies=[Depends(current_user)], responses=E.responses(400, 401, 502, 503))
def agent_type(agent_type: str, ctx: EngineCtx) -> S.AgentTypeOut:
    """One fence agent type with its parameters (read once from the agent's metadata)."""
    from hostpower.drivers.errors import DriverError
    from hostpower.model import validate

    name = validate.agent_type(agent_type, ctx.known_agent_types(), "agent_type")
    installed = name in ctx.installed_types()
    params = []
    if installed:
        try:
            params = ctx.script_driver.metadata(name)
        except DriverError as exc:
            raise HTTPException(502, f"fence_{name} -o metadata failed: {exc}") from None
    return S.AgentTypeOut(type=name, installed=installed, native=name in ctx.native_types,
                          parameters=[S.AgentParameter(**{k: p.get(k) for k in (
                              "name", "required", "shortdesc", "type", "default", "deprecated")},
                              choices=list(p.get("choices") or [])) for p in params])


@router.get("/capabilities", response_model=S.CapabilitiesOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def capabilities(ctx: EngineCtx) -> S.CapabilitiesOut:
    installed = ctx.installed_types()
    return S.CapabilitiesOut(
        proxy_types=[s.value for s in ProxySource],
        fence_agent_types=S.FenceAgentTypes(
            standard=sorted(STANDARD_TYPES),
            installed=sorted(installed & STANDARD_TYPES),
            native=sorted(ctx.native_types),
            engine=sorted(ctx.engine_agent_types() & STANDARD_TYPES),
        ),
        host_statuses=[s.value for s in HostStatus],
        non_operational_reasons=[r.value for r in NonOperationalReason],
    )
