"""``/ovirt-engine/api/hosts/{id}/fenceagents``: a host's fence agents as
oVirt's Agent type. The password is write-only (never in an answer); the
values of encrypted options are not shown. `concurrent` is read-only, as in
the native API: agents of the same `order` form a concurrent group."""

from __future__ import annotations

from fastapi import Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from hostpower.api.audit import WriteAudit, audited_admin
from hostpower.api.deps import CurrentUser, EngineCtx
from hostpower.api.ovirt import body as B
from hostpower.api.ovirt.common import inventory, limit, obj_id, router as ovirt_router
from hostpower.api.ovirt.render import BASE, Node, answer, listing, ref, value
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import FenceAgent
from hostpower.model.secret import Secret
from hostpower.store.inventory import AgentInput

router = ovirt_router()
PATH = "agent"


def agent_node(a: FenceAgent, siblings: list[FenceAgent]) -> Node:
    options = [Node("option").add(value("name", k), value("value", None if a.encrypt_options
                                                           else v)) for k, v in a.options]
    return Node("agent", {"href": f"{BASE}/hosts/{a.host_id}/fenceagents/{a.id}",
                          "id": str(a.id)}).add(
        value("address", a.address),
        value("concurrent", any(o.order == a.order and o.id != a.id for o in siblings)),
        value("encrypt_options", a.encrypt_options),
        listing("options", "option", options),
        value("order", a.order),
        value("port", a.port),
        value("type", a.type),
        value("username", a.username),
        ref("host", "hosts", a.host_id))


def _options(doc: B.Body) -> tuple[tuple[str, str], ...] | None:
    sent = B.items(doc, "options", PATH)
    if sent is None:
        return None
    out = []
    for i, o in enumerate(sent, 1):
        name = B.text(o, "name", f"{PATH}.options")
        if not name:
            raise ValidationError(f"{PATH}.options", f"option {i} has no name")
        out.append((name, B.text(o, "value", f"{PATH}.options") or ""))
    return tuple(out)


def agent_input(doc: B.Body, stored: FenceAgent | None) -> AgentInput:
    """An agent from oVirt's fields; on update, what is omitted keeps its stored
    value (the password and the options too: omitted is None, kept)."""
    def field(name: str, old: str | None) -> str | None:
        got = B.text(doc, name, PATH)
        return old if got is None else got

    kind = field("type", stored.type if stored else None)
    address = field("address", stored.address if stored else None)
    for name, got in (("type", kind), ("address", address)):
        if not got:
            raise ValidationError(f"{PATH}.{name}", "is required")
    port = B.integer(doc, "port", PATH)
    if port is None and "port" not in doc and stored is not None:
        port = stored.port
    password = B.text(doc, "password", PATH)
    encrypt = B.boolean(doc, "encrypt_options", PATH)
    return AgentInput(
        type=kind or "", address=address or "", port=port,
        username=field("username", stored.username if stored else "") or "",
        password=Secret(password) if password is not None else None,
        options=_options(doc) if stored is not None else (_options(doc) or ()),
        order=B.integer(doc, "order", PATH),
        encrypt_options=encrypt if encrypt is not None else bool(
            stored and stored.encrypt_options))


def _describe(a: FenceAgent) -> str:
    return f"fence agent {a.id} ({a.type}@{a.address})"


@router.get("/hosts/{host_id}/fenceagents")
def list_agents(host_id: str, request: Request, ctx: EngineCtx, _: CurrentUser,
                max_: int | None = Query(None, alias="max")) -> Response:
    with ctx.db.session() as s:
        agents = inventory(ctx, s).agents(obj_id(host_id, "host"))
    shown = agents[:limit(max_)] if limit(max_) is not None else agents
    return answer(request, listing("agents", "agent", [agent_node(a, agents) for a in shown]))


@router.get("/hosts/{host_id}/fenceagents/{agent_id}")
def get_agent(host_id: str, agent_id: str, request: Request, ctx: EngineCtx,
              _: CurrentUser) -> Response:
    hid = obj_id(host_id, "host")
    with ctx.db.session() as s:
        inv = inventory(ctx, s)
        agent = inv.agent(hid, obj_id(agent_id, "fence agent"))
        return answer(request, agent_node(agent, inv.agents(hid)))


@router.post("/hosts/{host_id}/fenceagents")
async def add_agent(host_id: str, request: Request, ctx: EngineCtx,
                    audit: WriteAudit = Depends(audited_admin)) -> Response:
    hid = obj_id(host_id, "host")
    doc = await B.read(request, "agent")

    def write() -> Node:
        with ctx.db.session() as s:
            inv = inventory(ctx, s)
            host = inv.host(hid)
            agent = inv.add_agent(hid, agent_input(doc, None))
            audit.record(s, f"added {_describe(agent)} to host {host.name} (oVirt API)",
                         host.id, host.name)
            return agent_node(agent, inv.agents(hid))

    node = await run_in_threadpool(write)
    return answer(request, node, 201, {"Location": node.attrs["href"]})


@router.put("/hosts/{host_id}/fenceagents/{agent_id}")
async def update_agent(host_id: str, agent_id: str, request: Request, ctx: EngineCtx,
                       audit: WriteAudit = Depends(audited_admin)) -> Response:
    hid, aid = obj_id(host_id, "host"), obj_id(agent_id, "fence agent")
    doc = await B.read(request, "agent")

    def write() -> Node:
        with ctx.db.session() as s:
            inv = inventory(ctx, s)
            host = inv.host(hid)
            agent = inv.update_agent(hid, aid, agent_input(doc, inv.agent(hid, aid)))
            audit.record(s, f"updated {_describe(agent)} of host {host.name} (oVirt API)",
                         host.id, host.name)
            return agent_node(agent, inv.agents(hid))

    return answer(request, await run_in_threadpool(write))


@router.delete("/hosts/{host_id}/fenceagents/{agent_id}")
def remove_agent(host_id: str, agent_id: str, request: Request, ctx: EngineCtx,
                 audit: WriteAudit = Depends(audited_admin)) -> Response:
    """oVirt answers a removal with 200 and no body (the SDK expects 200)."""
    hid, aid = obj_id(host_id, "host"), obj_id(agent_id, "fence agent")
    with ctx.db.session() as s:
        inv = inventory(ctx, s)
        host = inv.host(hid)
        agent = inv.agent(hid, aid)
        inv.delete_agent(hid, aid)
        audit.record(s, f"deleted {_describe(agent)} of host {host.name} (oVirt API)",
                     host.id, host.name)
    return Response(status_code=200)
