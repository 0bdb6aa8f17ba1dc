"""The API's error model: one body for every error, declared in OpenAPI.

Every error answer is ``{"detail": "...", "field": "..." | null}`` (a 500 adds
``request_id``). Routes declare the statuses they can answer with
``responses(...)``, so a client generated from /api/openapi.json handles each
one. A 500 is a bug: it is logged with a request id and answered with that id
and nothing of the exception.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostpower.model.errors import (
    ConflictError, EngineNotReady, NotFoundError, StorageUnavailable, ValidationError,
)

log = logging.getLogger("hostpower.api")

REQUEST_ID_HEADER = "X-Request-ID"


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, for a person")
    field: str | None = Field(None, description="the request field at fault, dotted "
                                                "(e.g. power_management.pm_proxies), if any")
    request_id: str | None = Field(None, description="set on 500: quote it when reporting "
                                                     "the problem; the engine's log has it")


_MEANING = {
    400: "a value breaks a rule the schema cannot express (a reference to a missing "
         "object, a rule across fields, an invalid proxy chain)",
    401: "no valid credentials (send a bearer token or log in)",
    403: "authenticated, but not allowed: the admin role is required, or a console "
         "write without the CSRF token or from another site",
    404: "the object in the path does not exist",
    409: "conflicts with stored state: a name already in use, an object still in use, "
         "an operation running",
    422: "the request does not match the schema: the field named is missing, of the "
         "wrong type or out of range",
    429: "too many failed logins: wait for Retry-After seconds",
    502: "a fence agent on the engine could not be run, or the host's SSH server could not "
         "be talked to",
    503: "the engine's database cannot be written or reached (disk full, read-only, "
         "server down), or the fencing service is not running; retry later",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route answers."""
    return {s: {"model": ErrorOut, "description": _MEANING[s]} for s in statuses}


# The statuses by kind of route; a route adds what is particular to it.
READ = (401, 503)                           # an authenticated read
READ_ONE = (401, 404, 422, 503)             # ... of an object named in the path
WRITE = (400, 401, 403, 409, 422, 503)      # an admin's write
WRITE_ONE = (400, 401, 403, 404, 409, 422, 503)
DELETE = (401, 403, 404, 409, 422, 503)


def error(status: int, detail: str, field: str | None = None,
          headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = ErrorOut(detail=detail, field=field, **extra).model_dump(exclude_none=True)
    body.setdefault("field", None)
    return JSONResponse(body, status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "cookie", "header")]
    return ".".join(parts) or "body"


_NUMBER = re.compile(r"-?\d{1,400}(\.\d{1,400})?")
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
           "greater_than": ("gt", "more than"), "less_than": ("lt", "less than")}


def _message(e: dict[str, Any]) -> str:
    """Pydantic's message, but a number out of range says which number and
    the bound (a number is never a secret; other input is never echoed)."""
    bound = _BOUNDS.get(str(e.get("type")))
    value = e.get("input")
    if isinstance(value, str) and _NUMBER.fullmatch(value):  # from a path or query
        value = int(value) if value.lstrip("-").isdigit() else float(value)
    if bound and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value} is out of range ({bound[1]} {e.get('ctx', {}).get(bound[0])})"
    return str(e.get("msg"))


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at `path`. Starlette's own 405 names
    only the first route that matched the path, not its siblings."""
    methods: set[str] = set()
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    """The handlers that turn every error into ErrorOut."""

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return error(400, str(exc), exc.field)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return error(409, str(exc), exc.field)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(StorageUnavailable)
    async def _storage(_: Request, exc: StorageUnavailable) -> JSONResponse:
        log.error("%s", exc)
        return error(503, str(exc), headers={"Retry-After": "10"})

    @app.exception_handler(EngineNotReady)
    async def _not_ready(_: Request, exc: EngineNotReady) -> JSONResponse:
        log.warning("%s", exc)
        return error(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return error(exc.status_code, str(exc.detail), headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold a password.
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _loc(tuple(first.get("loc", ())))
        detail = "; ".join(f"{_loc(tuple(e.get('loc', ())))}: {_message(e)}" for e in errors)
        return error(422, detail, field)

    @app.middleware("http")
    async def _request_id(request: Request,
                          call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every answer carries a request id; an unexpected exception is logged
        with it and answered as a 500 that names it, and nothing else."""
        request_id = secrets.token_hex(8)
        request.state.request_id = request_id
        try:
            response = await call_next(request)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, request.method,
                          request.url.path)
            response = error(500, f"internal error; the engine's log has it as request "
                                  f"{request_id}", request_id=request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
