"""The FastAPI application: routers, error mapping, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from hostpower import __version__
from hostpower.context import EngineContext
from hostpower.api import errors
from hostpower.api import routes_fence, routes_hosts, routes_inventory, routes_system
from hostpower.api import routes_session  # web console login (cookie + CSRF)
from hostpower.runtime import EngineRuntime
from hostpower.web.routes import mount_console  # web console: / and /static

log = logging.getLogger("hostpower.api")


INVENTORY_PATHS = ("/api/datacenters", "/api/clusters", "/api/hosts", "/api/config")
POWER_OPERATION_PATHS = ("/fence", "/fenceagents/test")


def _changes_inventory(request: Request) -> bool:
    path = request.url.path.rstrip("/")
    return (request.method not in ("GET", "HEAD", "OPTIONS")
            and path.startswith(INVENTORY_PATHS) and not path.endswith(POWER_OPERATION_PATHS))


def create_app(ctx: EngineContext, runtime: EngineRuntime | None = None) -> FastAPI:
    """The API; with a runtime, power operations and monitoring run too."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            await runtime.start()
        try:
            yield
        finally:
            if runtime is not None:
                await runtime.stop()

    app = FastAPI(
        title="hostpower", version=__version__,
        description="Host power management and fencing engine",
        openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.runtime = runtime

    errors.install(app)

    @app.middleware("http")
    async def _fresh_inventory(request: Request, call_next):  # type: ignore[no-untyped-def]
        """An inventory or configuration write through the API is seen by the
        next proxy selection at once; power operations and logins keep the
        cache (a status is a POST, and reloading 10,000 hosts for it would
        cost more than the status)."""
        response = await call_next(request)
        if runtime and runtime.service and _changes_inventory(request):
            runtime.service.invalidate()
        return response

    app.include_router(routes_system.router)
    app.include_router(routes_inventory.router)
    app.include_router(routes_hosts.router)
    app.include_router(routes_fence.router)
    # Web console: session login under /api/session, the page under / and /static.
    app.include_router(routes_session.router)
    mount_console(app)
    return app
