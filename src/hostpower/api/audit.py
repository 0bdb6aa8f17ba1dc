"""Who did what through the API: audit events for logins, logouts and every
write, each with the engine user and the client address. Never a password, a
token or a request body (a body may hold a PM password)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from hostpower.api.auth import Principal, admin_user
from hostpower.model.events import Event, Severity
from hostpower.store.events import Events

log = logging.getLogger("hostpower.audit")
USER_LENGTH = 128  # EventRow.user
_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
           Severity.ERROR: logging.ERROR}


def client_address(request: Request) -> str:
    """The client's address as uvicorn reports it. Behind a reverse proxy this is
    the proxy's address, unless uvicorn is told to trust the proxy's
    X-Forwarded-For (`--proxy-headers --forwarded-allow-ips=PROXY`): then it is
    the address the proxy saw."""
    return request.client.host if request.client and request.client.host else "unknown"


def engine_name(request: Request) -> str | None:
    """The name of the engine serving the request (None without membership)."""
    runtime = getattr(request.app.state, "runtime", None)
    membership = getattr(runtime, "membership", None)
    return membership.me.name if membership is not None else None


def auth_event(request: Request, severity: Severity, kind: str, message: str,
               user: str | None, via: str, **details: Any) -> Event:
    """A login, logout, failed login or lockout (kinds auth.*)."""
    return Event(severity, kind, message, user=user[:USER_LENGTH] if user else None,
                 engine=engine_name(request),
                 details={"address": client_address(request), "via": via, **details})


def log_events(events: Iterable[Event]) -> None:
    """Into the engine's log too; called once they are committed."""
    for event in events:
        log.log(_LEVELS[event.severity], "%s", event.message)


@dataclass
class WriteAudit:
    """Records an admin's write in the write's own transaction: a write that
    fails is rolled back with its audit event, a stored one always has one."""

    user: Principal
    method: str
    path: str
    address: str
    engine: str | None = None
    recorded: list[Event] = field(default_factory=list)

    def record(self, s: Session, did: str, host_id: int | None = None,
               host_name: str | None = None) -> None:
        """`did` completes "<user> ...", e.g. "updated host h7"."""
        event = Event(Severity.INFO, "audit.write", f"{self.user.name} {did}",
                      host_id=host_id, host_name=host_name, user=self.user.name,
                      engine=self.engine, details={"method": self.method, "path": self.path,
                               "address": self.address, "via": self.user.via})
        Events(s).add(event)
        self.recorded.append(event)


def audited_admin(request: Request,
                  user: Principal = Depends(admin_user)) -> Iterator[WriteAudit]:
    """An admin-only write route's dependency: the admin, and the audit to record
    the write with."""
    audit = WriteAudit(user, request.method, request.url.path, client_address(request),
                       engine_name(request))
    yield audit
    # Reached only when the route returned, i.e. after its transaction committed.
    log_events(audit.recorded)
