"""Hosts, their power management and fence agents."""

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
from hostpower.model.inventory import FenceAgent, Host
from hostpower.model.secret import Secret
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import AgentInput, HostInput, Inventory

router = APIRouter(prefix="/api", tags=["hosts"])


def _inv(ctx: EngineContext, s: Session) -> Inventory:
    return Inventory(s, ctx.box, ctx.known_agent_types())


def _host_out(inv: Inventory, s: Session, host: Host) -> S.HostOut:
    return C.host_out(host, inv.cluster(host.cluster_id), ConfigStore(s).load())


@router.get("/hosts", response_model=list[S.HostOut], dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ))
def list_hosts(ctx: EngineCtx) -> list[S.HostOut]:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        config = ConfigStore(s).load()
        clusters = {c.id: c for c in inv.clusters()}
        return [C.host_out(h, clusters[h.cluster_id], config) for h in inv.hosts()]


@router.post("/hosts", status_code=201, response_model=S.HostOut,
             responses=E.responses(*E.WRITE))
def add_host(body: S.HostIn, ctx: EngineCtx,
             audit: WriteAudit = Depends(audited_admin)) -> S.HostOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        host = inv.add_host(HostInput(
            name=body.name, address=body.address, cluster_id=body.cluster.id,
            agent_port=body.port,
            status=body.status, non_operational_reason=body.non_operational_reason,
            power_management=C.pm_in(body.power_management), ssh=C.ssh_in(body.ssh)))
        audit.record(s, f"added host {host.name}", host.id, host.name)
        return _host_out(inv, s, host)


@router.get("/hosts/{host_id}", response_model=S.HostOut, dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_host(host_id: S.PathId, ctx: EngineCtx) -> S.HostOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        return _host_out(inv, s, inv.host(host_id))


@router.put("/hosts/{host_id}", response_model=S.HostOut,
            responses=E.responses(*E.WRITE_ONE))
def update_host(host_id: S.PathId, body: S.HostPatch, ctx: EngineCtx,
                audit: WriteAudit = Depends(audited_admin)) -> S.HostOut:
    fields = body.model_fields_set
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        kwargs = {}
        if "non_operational_reason" in fields:
            kwargs["non_operational_reason"] = body.non_operational_reason
        if body.ssh is not None:
            kwargs["ssh"] = C.ssh_in(body.ssh, inv.host(host_id).ssh)
        host = inv.update_host(
            host_id, name=body.name, address=body.address,
            cluster_id=body.cluster.id if body.cluster else None, status=body.status,
            agent_port=body.port,
            power_management=C.pm_in(body.power_management) if body.power_management else None,
            **kwargs)
        audit.record(s, f"updated host {host.name}", host.id, host.name)
        return _host_out(inv, s, host)


@router.delete("/hosts/{host_id}", status_code=204,
               responses=E.responses(*E.DELETE))
def delete_host(host_id: S.PathId, ctx: EngineCtx,
                audit: WriteAudit = Depends(audited_admin)) -> Response:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        name = inv.host(host_id).name
        inv.delete_host(host_id)
        audit.record(s, f"deleted host {name}", host_id, name)
    return Response(status_code=204)


@router.get("/hosts/{host_id}/power_management", response_model=S.PowerManagementOut,
            dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_power_management(host_id: S.PathId, ctx: EngineCtx) -> S.PowerManagementOut:
    with ctx.db.session() as s:
        host = _inv(ctx, s).host(host_id)
        return C.pm_out(host.power_management, ConfigStore(s).load())


@router.put("/hosts/{host_id}/power_management", response_model=S.PowerManagementOut,
            responses=E.responses(*E.WRITE_ONE))
def set_power_management(host_id: S.PathId, body: S.PowerManagementIn, ctx: EngineCtx,
                         audit: WriteAudit = Depends(audited_admin)) -> S.PowerManagementOut:
    with ctx.db.session() as s:
        host = _inv(ctx, s).update_host(host_id, power_management=C.pm_in(body))
        audit.record(s, f"updated the power management of host {host.name}", host.id, host.name)
        return C.pm_out(host.power_management, ConfigStore(s).load())


# -- fence agents ----------------------------------------------------------------
# {agent_id:int}: only digits match, so another method on /fenceagents/test
# (a POST-only route, routes_fence.py) answers 405, not 422 for an agent id
# "test".

def _agent_input(body: S.FenceAgentIn) -> AgentInput:
    return AgentInput(
        type=body.type, address=body.address, port=body.port, username=body.username,
        password=Secret(body.password) if body.password is not None else None,
        options=None if body.options is None else tuple((o.name, o.value) for o in body.options),
        order=body.order,
        encrypt_options=body.encrypt_options,
    )


@router.get("/hosts/{host_id}/fenceagents", response_model=list[S.FenceAgentOut],
            dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def list_agents(host_id: S.PathId, ctx: EngineCtx) -> list[S.FenceAgentOut]:
    with ctx.db.session() as s:
        agents = _inv(ctx, s).agents(host_id)
        return [C.agent_out(a, agents) for a in agents]


def _agent_name(agent: FenceAgent) -> str:
    return f"fence agent {agent.id} ({agent.type}@{agent.address})"


@router.post("/hosts/{host_id}/fenceagents", status_code=201, response_model=S.FenceAgentOut,
             responses=E.responses(*E.WRITE_ONE))
def add_agent(host_id: S.PathId, body: S.FenceAgentIn, ctx: EngineCtx,
              audit: WriteAudit = Depends(audited_admin)) -> S.FenceAgentOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        agent = inv.add_agent(host_id, _agent_input(body))
        host = inv.host(host_id)
        audit.record(s, f"added {_agent_name(agent)} to host {host.name}", host.id, host.name)
        return C.agent_out(agent, inv.agents(host_id))


@router.get("/hosts/{host_id}/fenceagents/{agent_id:int}", response_model=S.FenceAgentOut,
            dependencies=[Depends(current_user)],
            responses=E.responses(*E.READ_ONE))
def get_agent(host_id: S.PathId, agent_id: S.PathId, ctx: EngineCtx) -> S.FenceAgentOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        return C.agent_out(inv.agent(host_id, agent_id), inv.agents(host_id))


@router.put("/hosts/{host_id}/fenceagents/{agent_id:int}", response_model=S.FenceAgentOut,
            responses=E.responses(*E.WRITE_ONE))
def update_agent(host_id: S.PathId, agent_id: S.PathId, body: S.FenceAgentIn, ctx: EngineCtx,
                 audit: WriteAudit = Depends(audited_admin)) -> S.FenceAgentOut:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        agent = inv.update_agent(host_id, agent_id, _agent_input(body))
        host = inv.host(host_id)
        audit.record(s, f"updated {_agent_name(agent)} of host {host.name}", host.id, host.name)
        return C.agent_out(agent, inv.agents(host_id))


@router.delete("/hosts/{host_id}/fenceagents/{agent_id:int}", status_code=204,
               responses=E.responses(*E.DELETE))
def delete_agent(host_id: S.PathId, agent_id: S.PathId, ctx: EngineCtx,
                 audit: WriteAudit = Depends(audited_admin)) -> Response:
    with ctx.db.session() as s:
        inv = _inv(ctx, s)
        agent = inv.agent(host_id, agent_id)
        host = inv.host(host_id)
        inv.delete_agent(host_id, agent_id)
        audit.record(s, f"deleted {_agent_name(agent)} of host {host.name}", host.id, host.name)
    return Response(status_code=204)
