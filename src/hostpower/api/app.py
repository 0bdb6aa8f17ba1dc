"""The FastAPI application: routers, error mapping, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hostpower import __version__
from hostpower.context import EngineContext
from hostpower.model.errors import ConflictError, NotFoundError, ValidationError
from hostpower.api import routes_fence, routes_hosts, routes_inventory, routes_system
from hostpower.api import routes_session  # web console login (cookie + CSRF)
from hostpower.api.login import TooManyLoginAttempts
from hostpower.runtime import EngineRuntime
from hostpower.web.routes import mount_console  # web console: / and /static

log = logging.getLogger("hostpower.api")


def _error(status: int, detail: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status)


INVENTORY_PATHS = ("/api/datacenters", "/api/clusters", "/api/hosts", "/api/config")
POWER_OPERATION_PATHS = ("/fence", "/fenceagents/test")


def _changes_inventory(request: Request) -> bool:
    path = request.url.path.rstrip("/")
    return (request.method not in ("GET", "HEAD", "OPTIONS")
            and path.startswith(INVENTORY_PATHS) and not path.endswith(POWER_OPERATION_PATHS))


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


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

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return _error(400, str(exc), exc.field)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, str(exc), exc.field)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(TooManyLoginAttempts)
    async def _throttled(_: Request, exc: TooManyLoginAttempts) -> JSONResponse:
        response = _error(429, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold a password.
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _loc(tuple(first.get("loc", ())))
        detail = "; ".join(f"{_loc(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return _error(422, detail, field)

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
