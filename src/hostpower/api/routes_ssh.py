"""The engine's SSH access to hosts (soft fencing): its public key, and
pinning a host's SSH host key at enrolment."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.orm import Session

from hostpower.api import convert as C
from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.audit import WriteAudit, audited_admin
from hostpower.api.auth import current_user
from hostpower.api.deps import EngineCtx, Service
from hostpower.fencing.sshaccess import SshFailure, SshKeyError, engine_key, fetch_host_key
from hostpower.model.errors import ConflictError, ValidationError
from hostpower.model.sshkey import fingerprint
from hostpower.store.inventory import Inventory

router = APIRouter(prefix="/api", tags=["ssh"])


@router.get("/ssh/public-key", response_model=S.SshPublicKeyOut,
            dependencies=[Depends(current_user)], responses=E.responses(*E.READ))
def public_key(ctx: EngineCtx) -> S.SshPublicKeyOut:
    """The engine's SSH public key (created at first need): what each host's
    SSH user must have in its authorized_keys for soft fencing."""
    try:
        key = engine_key(ctx.settings.ssh_dir)
    except SshKeyError as exc:
        raise HTTPException(503, str(exc)) from None
    return S.SshPublicKeyOut(public_key=key.public, fingerprint=key.fingerprint)


@router.post("/hosts/{host_id}/ssh/pin", response_model=S.SshOut,
             responses=E.responses(400, 401, 403, 404, 409, 422, 502, 503))
async def pin_host_key(host_id: S.PathId, service: Service, ctx: EngineCtx,
                       body: S.SshPinIn | None = None,
                       audit: WriteAudit = Depends(audited_admin)) -> S.SshOut:
    """Fetch the SSH host key the host offers now and pin it: from then on
    the engine connects to the host only if it shows this key. With
    `fingerprint`, the key is pinned only if it has that fingerprint."""
    host = await service.gateway.host(host_id)
    if host.ssh.port is None:
        raise ValidationError("ssh.port", f"host {host.name} has no SSH access configured: "
                                          f"set its ssh.port first")
    timeout = float((await service.gateway.config())["SshSoftFencingTimeoutInSec"])
    try:
        key = await fetch_host_key(host.address, host.ssh.port, timeout)
    except SshFailure as exc:
        raise HTTPException(502, f"cannot read the SSH host key of {host.name}: {exc}") from None
    seen = fingerprint(key)
    wanted = body.fingerprint.strip() if body is not None and body.fingerprint else None
    if wanted is not None and wanted != seen:
        raise ConflictError("fingerprint", f"{host.name} offers a key with fingerprint {seen}, "
                                           f"not {wanted}: nothing pinned")

    def pin(s: Session) -> S.SshOut:
        inv = Inventory(s, ctx.box)
        stored = inv.host(host_id)
        pinned = inv.update_host(host_id, ssh=replace(stored.ssh, host_key=key))
        audit.record(s, f"pinned the SSH host key of host {pinned.name} ({seen})",
                     pinned.id, pinned.name)
        return C.ssh_out(pinned.ssh)

    return await service.gateway.run(pin)
