"""``POST /ovirt-engine/api/hosts/{id}/fence``: oVirt's fence action.

``<action><fence_type>status|start|stop|restart|manual</fence_type></action>``
runs through the fencing service exactly as POST /api/hosts/{id}/fence does
(the proxy chain, the agent groups, the journal, one flow per host). The
answer is oVirt's:

* status: ``<action><power_management><status>on|off|unknown</status>...``
  with ``<status>complete</status>``; when no proxy got an answer, oVirt's
  failed action: ``<status>failed</status>`` and a ``<fault>`` (the SDK raises
  it);
* start, stop, restart: as in oVirt, the request waits for the operation to
  end (at most SYNC_WAIT seconds) and answers ``complete`` with the verified
  power state, or a fault (400) with the operation's message. With
  ``<async>true</async>`` (or once SYNC_WAIT has passed) it answers 202 at
  once with ``<status>pending</status>``, the operation's id as the action's
  id and a link to the operation in the native API. A request for a host
  whose flow already runs joins that flow;
* manual: the operator's confirmation that the host was rebooted by hand.

Viewers may ask for a status; everything else needs the admin role (403).
"""

from __future__ import annotations

from fastapi import Request, Response

from hostpower.api.deps import CurrentUser, Service
from hostpower.api.ovirt import body as B
from hostpower.api.ovirt.common import obj_id, require_admin, router as ovirt_router
from hostpower.api.ovirt.faults import fault_node
from hostpower.api.ovirt.render import Node, answer, link, value
from hostpower.model.errors import ValidationError
from hostpower.model.operations import FenceType, FlowAction, OperationState, Origin
from hostpower.model.power import Outcome
from hostpower.store.journal import Operation

router = ovirt_router()
SYNC_WAIT = 600.0  # seconds a start, stop or restart request waits for its operation
_VERIFIED = {FlowAction.STOP: "off", FlowAction.START: "on", FlowAction.RESTART: "on"}
_TYPES = ", ".join(t.value for t in FenceType)


def _action(fence_type: FenceType, status: str, *extra: Node | None,
            attrs: dict[str, str] | None = None) -> Node:
    return Node("action", attrs or {}).add(value("fence_type", fence_type.value), *extra,
                                           value("status", status))


def _pm(state: str) -> Node:
    return Node("power_management").add(value("status", state))


def _pending(fence_type: FenceType, op: Operation) -> Node:
    return _action(fence_type, "pending", value("async", True),
                   link("operation", f"/api/operations/{op.id}"), attrs={"id": str(op.id)})


def _fence_type(doc: B.Body) -> FenceType:
    raw = B.text(doc, "fence_type", "action")
    if not raw:
        raise ValidationError("action.fence_type", f"is required ({_TYPES})")
    try:
        return FenceType(raw.strip().lower())
    except ValueError:
        raise ValidationError("action.fence_type", f"{raw!r} is not one of {_TYPES}") from None


@router.post("/hosts/{host_id}/fence")
async def fence(host_id: str, request: Request, service: Service,
                user: CurrentUser) -> Response:
    hid = obj_id(host_id, "host")
    doc = await B.read(request, "action")
    fence_type = _fence_type(doc)
    run_async = B.boolean(doc, "async", "action")
    if B.boolean(doc, "maintenance_after_restart", "action"):
        raise ValidationError("action.maintenance_after_restart",
                              "hostpower has no maintenance flow: only false")
    if fence_type is not FenceType.STATUS:
        require_admin(user)
    await service.gateway.host(hid)  # 404 before anything runs

    if fence_type is FenceType.STATUS:
        result = await service.status(hid, requested_by=user.name)
        if result.outcome is Outcome.ERROR:
            detail = result.message or "no proxy got an answer from the host's fence agents"
            return answer(request, _action(fence_type, "failed",
                                           fault_node("Operation Failed", detail)))
        return answer(request, _action(fence_type, "complete", _pm(result.outcome.value)))

    if fence_type is FenceType.MANUAL:
        await service.manual(hid, requested_by=user.name)
        return answer(request, _action(fence_type, "complete"))

    flow = fence_type.flow
    assert flow is not None
    op, _joined = await service.request(hid, flow, Origin.API, requested_by=user.name)
    if run_async:
        return answer(request, _pending(fence_type, op), 202)
    op = await service.wait(op.id, SYNC_WAIT)
    if op.state is OperationState.RUNNING:
        return answer(request, _pending(fence_type, op), 202)
    if op.state is OperationState.SUCCEEDED:
        return answer(request, _action(fence_type, "complete", _pm(_VERIFIED[op.action])))
    return answer(request, _action(fence_type, "failed", fault_node(
        "Operation Failed", f"operation {op.id} ({op.action}) failed: {op.message}")), 400)
