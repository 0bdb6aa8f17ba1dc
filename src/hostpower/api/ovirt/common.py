"""What the oVirt routes share: ids as oVirt's text, the inventory, roles."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from hostpower.api.auth import Principal
from hostpower.api.ovirt.faults import Fault, OvirtRoute
from hostpower.context import EngineContext
from hostpower.model.errors import NotFoundError
from hostpower.store.inventory import Inventory
from hostpower.store.tables import MAX_ID


def router() -> APIRouter:
    """A router of oVirt routes (faults for errors), not in /api/openapi.json."""
    return APIRouter(prefix="/ovirt-engine/api", route_class=OvirtRoute, tags=["ovirt"],
                     include_in_schema=False)


def obj_id(raw: str, kind: str) -> int:
    """oVirt's ids are text; ours are numbers. Anything else names no object: 404."""
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise NotFoundError(kind, raw)
    return int(raw)


def inventory(ctx: EngineContext, s: Session) -> Inventory:
    return Inventory(s, ctx.box, ctx.known_agent_types())


def require_admin(user: Principal) -> None:
    if not user.is_admin:
        raise Fault(403, f"user {user.name!r} has role viewer: admin role required")


def limit(max_: int | None) -> int | None:
    """oVirt's `max`: a negative one (oVirt's -1) means all."""
    return None if max_ is None or max_ < 0 else max_
