"""oVirt's faults: every error under /ovirt-engine/api is a ``<fault>`` with a
reason and a detail, in XML or JSON like the answers, with the status the
native API gives for the same error (api/errors.py). The SDK turns a 401 or
403 into its AuthError, a 404 into NotFoundError, any other into Error, and
quotes the reason and the detail.

`OvirtRoute` is the route class of every oVirt route: what a route (or one of
its dependencies) raises becomes a fault here, so the application's own JSON
error handlers never see an oVirt request.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from hostpower.api.errors import REQUEST_ID_HEADER
from hostpower.api.login import TooManyLoginAttempts
from hostpower.api.ovirt.render import Node, answer, value
from hostpower.model.errors import (
    ConflictError, EngineNotReady, NotFoundError, StorageUnavailable, ValidationError,
)

log = logging.getLogger("hostpower.api")

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}
# oVirt's realm: a client that sees it knows to get a token from the SSO service.
UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="RESTAPI"'}


class Fault(Exception):
    """An error answered as a fault with this status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def fault_node(reason: str, detail: str) -> Node:
    return Node("fault").add(value("reason", reason), value("detail", detail))


def fault(request: Request, status: int, detail: str,
          headers: dict[str, str] | None = None) -> Response:
    return answer(request, fault_node(REASONS.get(status, "Operation Failed"), detail),
                  status, headers)


def _with_field(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field and not message.startswith(field) else message


def as_fault(request: Request, exc: Exception) -> Response:
    """The fault for an exception; anything unexpected is a 500 naming a request id."""
    if isinstance(exc, Fault):
        return fault(request, exc.status, exc.detail, exc.headers)
    if isinstance(exc, ValidationError):
        return fault(request, 400, _with_field(exc.field, str(exc)))
    if isinstance(exc, ConflictError):
        return fault(request, 409, _with_field(exc.field, str(exc)))
    if isinstance(exc, NotFoundError):
        return fault(request, 404, str(exc))
    if isinstance(exc, StorageUnavailable | EngineNotReady):
        log.warning("%s", exc)
        return fault(request, 503, str(exc), {"Retry-After": "10"})
    if isinstance(exc, TooManyLoginAttempts):
        return fault(request, 429, str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{"msg": "invalid request"}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return fault(request, 400, f"{where}: {first.get('msg')}")
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers.update(UNAUTHENTICATED)
        return fault(request, exc.status_code, str(exc.detail), headers)
    request_id = getattr(request.state, "request_id", None) or secrets.token_hex(8)
    log.error("request %s (%s %s) failed", request_id, request.method, request.url.path,
              exc_info=exc)
    return fault(request, 500, f"internal error; the engine's log has it as request "
                               f"{request_id}", {REQUEST_ID_HEADER: request_id})


class OvirtRoute(APIRoute):
    """A route whose errors are oVirt faults."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error of an oVirt route is a fault
                return as_fault(request, exc)

        return handle
