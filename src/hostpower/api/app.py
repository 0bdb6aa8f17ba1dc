"""The FastAPI application: routers, error mapping, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hostpower import __version__
from hostpower.context import EngineContext
from hostpower.api import errors
from hostpower.api import (
    routes_engines, routes_fence, routes_hosts, routes_inventory, routes_readiness, routes_ssh,
    routes_system,
)
from hostpower.api import routes_kdump  # kdump detection: listeners and crash dumps
from hostpower.api import routes_metrics  # Prometheus: GET /metrics
from hostpower.api import routes_notifiers  # notifications: webhooks and mail
from hostpower.api import routes_session  # web console login (cookie + CSRF)
from hostpower.api import ovirt  # oVirt's REST API v4 for power management, /ovirt-engine
from hostpower.api.login import TooManyLoginAttempts
from hostpower.metrics import EngineMetrics
from hostpower.runtime import EngineRuntime
from hostpower.web.routes import mount_console  # web console: / and /static

log = logging.getLogger("hostpower.api")


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
    # Without a runtime (inventory-only use, tests) nothing runs: its metrics are zeros.
    app.state.metrics = runtime.metrics if runtime is not None else EngineMetrics(
        database_errors=lambda: ctx.db.errors)

    errors.install(app)

    @app.exception_handler(TooManyLoginAttempts)
    async def _throttled(_: Request, exc: TooManyLoginAttempts) -> JSONResponse:
        return errors.error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    app.include_router(routes_system.router)
    app.include_router(routes_inventory.router)
    app.include_router(routes_hosts.router)
    app.include_router(routes_ssh.router)
    app.include_router(routes_fence.router)
    app.include_router(routes_engines.router)
    app.include_router(routes_readiness.router)
    app.include_router(routes_kdump.router)
    app.include_router(routes_metrics.router)
    app.include_router(ovirt.router)
    app.include_router(routes_notifiers.router)
    # Web console: session login under /api/session, the page under / and /static.
    app.include_router(routes_session.router)
    mount_console(app)
    return app
