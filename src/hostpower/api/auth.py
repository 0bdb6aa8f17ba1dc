"""Authentication: viewers read, admins write.

Two ways in, checked in this order:

* ``Authorization: Bearer <token>`` (POST /api/auth/token) — the API clients'
  way. Not sent by a browser on its own, so it needs no CSRF protection.
* The web console's session cookie (POST /api/session). A browser sends it on
  its own, also with requests a hostile page makes it send, so a cookie is
  accepted for a state-changing method (anything but GET, HEAD, OPTIONS) only
  when the request also carries the session's CSRF token in the
  ``X-CSRF-Token`` header and does not come from another site (``Origin`` /
  ``Sec-Fetch-Site``); otherwise 403. A page of another origin can neither
  read the token nor add the header without a CORS preflight, which the
  engine never grants.

Session tokens live in the same table as API tokens (hashed, 12 hours). The
CSRF token is derived from the session token (a domain-separated SHA-256), so
it needs no storage, survives an engine restart, and a copy of the database
(which holds only token hashes) yields neither.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from hostpower.store.users import Role, Users

bearer = HTTPBearer(auto_error=False, description="token from POST /api/auth/token")

SESSION_COOKIE = "hostpower_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

session_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False,
    description=f"web console session from POST /api/session; writes also need the "
                f"{CSRF_HEADER} header returned at login")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    via: str = "bearer"  # "bearer" or "session"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a session: unguessable without the (HttpOnly) cookie."""
    return hashlib.sha256(b"hostpower-csrf\x00" + session_token.encode()).hexdigest()


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_same_origin(request: Request) -> None:
    """Refuse a request a browser marks as coming from another site.

    Modern browsers send ``Sec-Fetch-Site``: only ``same-origin`` (or ``none``,
    a user's own action) passes. Without it, an ``Origin`` header must match
    the engine's own (the ``Host``, or ``X-Forwarded-Host`` behind a reverse
    proxy). A request with neither (curl, a script) is judged by the CSRF
    token alone."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise HTTPException(403, "cross-site request refused")
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        proto = request.headers.get("x-forwarded-proto", request.url.scheme)
        allowed.add(f"{proto}://{forwarded.split(',')[0].strip()}".lower())
    if _origin_of(origin) not in allowed:
        raise HTTPException(403, "cross-site request refused")


def check_csrf(request: Request, session_token: str) -> None:
    """For a cookie-authenticated unsafe request: same site and the right header."""
    check_same_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, csrf_token_for(session_token)):
        raise HTTPException(403, f"CSRF check failed: send the session's {CSRF_HEADER} header")


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request,
                 creds: HTTPAuthorizationCredentials | None = Depends(bearer),
                 cookie: str | None = Depends(session_cookie)) -> Principal:
    if creds is not None and creds.scheme.lower() == "bearer":
        token, via = creds.credentials, "bearer"
    elif cookie:
        token, via = cookie, "session"
    else:
        raise _unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
    ctx = request.app.state.ctx
    with ctx.db.session() as s:
        user = Users(s).user_for_token(token)
        if user is None:
            raise _unauthenticated("token is invalid or expired" if via == "bearer"
                                   else "session expired: log in again")
        principal = Principal(user.name, Role(user.role), via)
    if via == "session" and request.method.upper() not in SAFE_METHODS:
        check_csrf(request, token)
    return principal


def admin_user(user: Principal = Depends(current_user)) -> Principal:
    if not user.is_admin:
        raise HTTPException(403, f"user {user.name!r} has role viewer: admin role required")
    return user
