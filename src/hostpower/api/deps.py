"""What routes depend on, as FastAPI dependencies with Annotated aliases:
a route says `ctx: EngineCtx` or `service: Service` and never reaches into
`request.app.state` itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from hostpower.api.auth import Principal, admin_user, current_user
from hostpower.context import EngineContext
from hostpower.fencing.service import FencingService
from hostpower.membership import Membership


def engine_context(request: Request) -> EngineContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def fencing_service(request: Request) -> FencingService:
    runtime = request.app.state.runtime
    if runtime is None or runtime.service is None:
        raise HTTPException(503, "power operations are not available: the engine runs without "
                                 "its fencing service")
    return runtime.service  # type: ignore[no-any-return]


def membership(request: Request) -> Membership | None:
    """This engine's membership; None when it runs without one (no lease: always ready)."""
    runtime = request.app.state.runtime
    return runtime.membership if runtime is not None else None


EngineCtx = Annotated[EngineContext, Depends(engine_context)]
Service = Annotated[FencingService, Depends(fencing_service)]
CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
Member = Annotated[Membership | None, Depends(membership)]
