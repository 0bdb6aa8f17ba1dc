"""Web console sessions: log in (cookie + CSRF token), who am I, log out.

See auth.py for how the cookie and the CSRF token are checked. The bearer
token API (/api/auth/token) is unchanged; this is the browser's way in.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel

from hostpower.api import errors as E
from hostpower.api import schemas as S
from hostpower.api.deps import EngineCtx
from hostpower.api.audit import auth_event, client_address, log_events
from hostpower.api.auth import (
    SESSION_COOKIE, Principal, check_csrf, check_same_origin, csrf_token_for, current_user,
    session_cookie,
)
from hostpower.api.login import log_in
from hostpower.model.events import Event, Severity
from hostpower.store.events import Events
from hostpower.store.users import Users

router = APIRouter(prefix="/api", tags=["auth"])


class SessionOut(BaseModel):
    user: str
    role: str
    csrf_token: str
    csrf_header: str = "X-CSRF-Token"


def _secure(request: Request) -> bool:
    """Secure cookie when the browser talks https (directly or via a proxy
    that uvicorn trusts for X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def _clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=_secure(request), httponly=True,
                           samesite="strict")


@router.post("/session", response_model=SessionOut,
             responses=E.responses(400, 401, 403, 422, 429, 503))
def start_session(body: S.TokenRequest, request: Request, response: Response) -> SessionOut:
    """Log in: sets the HttpOnly session cookie and returns the CSRF token to
    send in the X-CSRF-Token header with every state-changing request.
    Throttled like POST /api/auth/token (see api/login.py)."""
    check_same_origin(request)  # no login CSRF from another site
    user = log_in(request, body.username, body.password, via="session")
    # No Max-Age: the cookie ends with the browser session; the server side
    # expires it after the token lifetime (12 hours) anyway.
    response.set_cookie(SESSION_COOKIE, user.token, path="/", httponly=True,
                        samesite="strict", secure=_secure(request))
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(user=user.name, role=user.role, csrf_token=csrf_token_for(user.token))


@router.get("/session", response_model=SessionOut, responses=E.responses(401, 503))
def who_am_i(request: Request, response: Response,
             user: Principal = Depends(current_user),
             cookie: str | None = Depends(session_cookie)) -> SessionOut:
    """The current session (the console calls it on load to get its CSRF
    token back after a page reload). Same-origin only: no CORS is granted, so
    another site cannot read the token."""
    if user.via != "session" or not cookie:
        raise HTTPException(401, "no console session: log in with POST /api/session",
                            headers={"WWW-Authenticate": "Bearer"})
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(user=user.name, role=user.role.value, csrf_token=csrf_token_for(cookie))


@router.delete("/session", status_code=204, responses=E.responses(401, 403, 503))
def log_out(request: Request, ctx: EngineCtx,
            cookie: str | None = Depends(session_cookie)) -> Response:
    """Log out: revokes the session token (CSRF-checked) and clears the cookie.
    Without a valid session there is nobody to log out: 401 (and the stale
    cookie, if any, is cleared all the same)."""
    events: list[Event] = []
    user = None
    if cookie:
        with ctx.db.session() as s:
            users = Users(s)
            user = users.user_for_token(cookie)
            if user is not None:
                check_csrf(request, cookie)
                users.revoke(cookie)
                events.append(auth_event(
                    request, Severity.INFO, "auth.logout",
                    f"{user.name} logged out (session) from {client_address(request)}",
                    user.name, "session"))
                Events(s).add(events[0])
    log_events(events)
    if user is None:
        response: Response = E.error(401, "no console session: nothing to log out")
    else:
        response = Response(status_code=204)
    _clear_cookie(response, request)
    return response
