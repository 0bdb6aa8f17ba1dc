"""Notifiers: where events are delivered (webhooks, SMTP mail), and how
delivery goes. Reads for every user, writes for admins (audited); secrets
are write-only."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from hostpower.api import errors as E
from hostpower.api import notifier_schemas as N
from hostpower.api import schemas as S
from hostpower.api.audit import WriteAudit, audited_admin, engine_name
from hostpower.api.auth import current_user
from hostpower.api.deps import EngineCtx
from hostpower.model.errors import ValidationError
from hostpower.model.notifiers import DeliveryState, Notifier, NotifierType, settings_as_dict
from hostpower.notify.errors import DeliveryError
from hostpower.notify.send import probe_event, send_once
from hostpower.store.configstore import ConfigStore
from hostpower.store.notifiers import KEEP, Notifiers

router = APIRouter(prefix="/api", tags=["notifiers"])


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notifier_out(n: Notifier, st: DeliveryState) -> N.NotifierOut:
    settings = settings_as_dict(n.settings)
    return N.NotifierOut(
        id=n.id, name=n.name, type=n.type.value, enabled=n.enabled, min_severity=n.min_severity,
        kinds=list(n.kinds),
        webhook=settings if n.type is NotifierType.WEBHOOK else None,
        smtp=settings if n.type is NotifierType.SMTP else None,
        secret_set=n.secret_set, href=f"/api/notifiers/{n.id}",
        state=N.DeliveryStateOut(
            holder=st.holder, delivered=st.delivered, dropped=st.dropped,
            last_delivered_event=st.last_delivered_event,
            last_delivered_at=_time(st.last_delivered_at), last_error=st.last_error,
            last_error_at=_time(st.last_error_at), attempts=st.attempts, failing=st.failing,
            failing_since=_time(st.failing_since)))


def _settings(model: Any) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True) if model is not None else {}


@router.get("/notifiers", response_model=list[N.NotifierOut],
            dependencies=[Depends(current_user)], responses=E.responses(*E.READ))
def list_notifiers(ctx: EngineCtx) -> list[N.NotifierOut]:
    with ctx.db.session() as s:
        store = Notifiers(s, ctx.box)
        states = store.states()
        return [notifier_out(n, states[n.id]) for n in store.list() if n.id in states]


@router.get("/notifiers/{notifier_id}", response_model=N.NotifierOut,
            dependencies=[Depends(current_user)], responses=E.responses(*E.READ_ONE))
def get_notifier(notifier_id: S.PathId, ctx: EngineCtx) -> N.NotifierOut:
    with ctx.db.session() as s:
        store = Notifiers(s, ctx.box)
        return notifier_out(store.get(notifier_id), store.state(notifier_id))


@router.post("/notifiers", status_code=201, response_model=N.NotifierOut,
             responses=E.responses(*E.WRITE))
def add_notifier(body: N.NotifierIn, ctx: EngineCtx,
                 audit: WriteAudit = Depends(audited_admin)) -> N.NotifierOut:
    """A webhook needs `webhook` and `secret`; mail needs `smtp` (and
    `password` with a `username`). It delivers the events written from now on."""
    settings = body.webhook if body.type == "webhook" else body.smtp
    other = "smtp" if body.type == "webhook" else "webhook"
    if settings is None:
        raise ValidationError(body.type, f"the settings of a {body.type} notifier are needed")
    if getattr(body, other) is not None:
        raise ValidationError(other, f"a {body.type} notifier has no {other} settings")
    secret = body.secret if body.type == "webhook" else body.password
    unused = "password" if body.type == "webhook" else "secret"
    if getattr(body, unused) is not None:
        raise ValidationError(unused, f"a {body.type} notifier has no {unused}")
    with ctx.db.session() as s:
        store = Notifiers(s, ctx.box)
        n = store.add(body.name, body.type, _settings(settings), secret=secret,
                      min_severity=body.min_severity.value, kinds=list(body.kinds),
                      enabled=body.enabled)
        audit.record(s, f"added {n.type.value} notifier {n.name}")
        return notifier_out(n, store.state(n.id))  # type: ignore[arg-type]


@router.put("/notifiers/{notifier_id}", response_model=N.NotifierOut,
            responses=E.responses(*E.WRITE_ONE))
def update_notifier(notifier_id: S.PathId, body: N.NotifierPatch, ctx: EngineCtx,
                    audit: WriteAudit = Depends(audited_admin)) -> N.NotifierOut:
    """Changes what is given; `webhook`/`smtp` fields are merged into the stored ones."""
    with ctx.db.session() as s:
        store = Notifiers(s, ctx.box)
        kind = store.get(notifier_id).type
        mine, other = ("webhook", "smtp") if kind is NotifierType.WEBHOOK else ("smtp", "webhook")
        if getattr(body, other) is not None:
            raise ValidationError(other, f"a {kind.value} notifier has no {other} settings")
        unused = "password" if kind is NotifierType.WEBHOOK else "secret"
        if getattr(body, unused) is not None:
            raise ValidationError(unused, f"a {kind.value} notifier has no {unused}")
        given = body.model_fields_set
        field = "secret" if kind is NotifierType.WEBHOOK else "password"
        n = store.update(notifier_id, name=body.name, enabled=body.enabled,
                         min_severity=body.min_severity.value if body.min_severity else None,
                         kinds=list(body.kinds) if body.kinds is not None else None,
                         settings=_settings(getattr(body, mine)),
                         secret=getattr(body, field) if field in given else KEEP)
        audit.record(s, f"updated notifier {n.name}")
        return notifier_out(n, store.state(notifier_id))


@router.delete("/notifiers/{notifier_id}", status_code=204, responses=E.responses(*E.DELETE))
def delete_notifier(notifier_id: S.PathId, ctx: EngineCtx,
                    audit: WriteAudit = Depends(audited_admin)) -> Response:
    with ctx.db.session() as s:
        n = Notifiers(s, ctx.box).remove(notifier_id)
        audit.record(s, f"removed notifier {n.name}")
    return Response(status_code=204)


@router.post("/notifiers/{notifier_id}/test", response_model=N.NotifierTestOut,
             responses=E.responses(*E.WRITE_ONE))
async def test_notifier(notifier_id: S.PathId, ctx: EngineCtx, request: Request,
                        audit: WriteAudit = Depends(audited_admin)) -> N.NotifierTestOut:
    """Send a test message now, once (no retry), whatever the notifier's
    filters; `delivered` says whether it arrived. Like power operations, only
    on an engine that runs its background services (503 otherwise)."""
    runtime = request.app.state.runtime
    if runtime is None or getattr(runtime, "notifications", None) is None:
        raise HTTPException(503, "notifications are not available: the engine runs without "
                                 "its background services")

    def read() -> tuple[Notifier, Any, float]:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            timeout = ConfigStore(s).load()["NotificationTimeoutInSec"]
            return store.get(notifier_id), store.secret(notifier_id), float(timeout)

    notifier, secret, timeout = await asyncio.to_thread(read)
    try:
        await send_once(notifier, secret,
                        probe_event(notifier, engine_name(request), audit.user.name), timeout)
        out = N.NotifierTestOut(delivered=True, detail="delivered")
    except DeliveryError as exc:
        out = N.NotifierTestOut(delivered=False, detail=str(exc))

    def record() -> None:
        with ctx.db.session() as s:
            audit.record(s, f"tested notifier {notifier.name}: "
                            f"{'delivered' if out.delivered else 'not delivered'}")

    await asyncio.to_thread(record)
    return out
