"""oVirt's SSO, as the SDK uses it, over hostpower's users and tokens.

* ``POST /ovirt-engine/sso/oauth/token`` (form: grant_type=password,
  scope=ovirt-app-api, username, password): a token from the same login as
  POST /api/auth/token (api/login.py: throttled, audited), answered the way
  oVirt's SSO does: ``{"access_token", "token_type": "bearer", "scope", "exp"}``
  (exp in milliseconds since 1970, as text). A user name ``NAME@internal`` is
  the hostpower user NAME: oVirt's internal domain is the engine's own users.
* ``POST /ovirt-engine/services/sso-logout`` (form: token; what the SDK's
  ``connection.close()`` calls) and ``POST /ovirt-engine/sso/oauth/revoke``
  revoke the token: DELETE /api/auth/token's work.

Errors are OAuth's JSON (``{"error", "error_description"}``), which the SDK
raises as AuthError("Error during SSO authentication <error> : <description>").
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hostpower.api.audit import auth_event, client_address, log_events
from hostpower.api.deps import EngineCtx
from hostpower.api.login import TooManyLoginAttempts, log_in
from hostpower.model.events import Severity
from hostpower.store.events import Events
from hostpower.store.users import Users

router = APIRouter(prefix="/ovirt-engine", tags=["ovirt"], include_in_schema=False)

SCOPE = "ovirt-app-api"
INTERNAL_DOMAIN = "@internal"
MAX_FORM = 16384


def oauth_error(status: int, error: str, description: str,
                headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description},
                        status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_FORM:
        return {}
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def engine_user(username: str) -> str:
    return username.removesuffix(INTERNAL_DOMAIN)


@router.post("/sso/oauth/token")
async def token(request: Request) -> JSONResponse:
    form = await _form(request)
    grant = form.get("grant_type", "")
    if grant != "password":
        return oauth_error(400, "unsupported_grant_type",
                           f"grant_type {grant!r} is not supported: use password")
    scopes = form.get("scope", "").split()
    if SCOPE not in scopes:
        return oauth_error(400, "invalid_scope", f"scope must include {SCOPE}")
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password or len(username) > 128 or "\x00" in username + password:
        return oauth_error(400, "invalid_request", "username and password are required")
    try:
        # The password check is slow on purpose (scrypt): not on the event loop.
        user = await run_in_threadpool(log_in, request, engine_user(username), password,
                                       "ovirt-sso")
    except TooManyLoginAttempts as exc:
        return oauth_error(429, "access_denied", str(exc),
                           {"Retry-After": str(exc.retry_after)})
    except HTTPException as exc:
        return oauth_error(400, "access_denied",
                           f"Cannot authenticate user {username!r}: {exc.detail}")
    return JSONResponse({
        "access_token": user.token, "token_type": "bearer", "scope": SCOPE,
        "exp": str(int(user.expires.timestamp() * 1000)),
    }, headers={"Cache-Control": "no-store"})


def _revoke(request: Request, ctx: EngineCtx, token: str) -> None:
    """Revoke `token` if it is one; nothing to say otherwise (as oVirt: 200 either way)."""
    events = []
    with ctx.db.session() as s:
        users = Users(s)
        user = users.user_for_token(token) if token else None
        if user is not None:
            users.revoke(token)
            event = auth_event(request, Severity.INFO, "auth.logout",
                               f"{user.name} logged out (ovirt-sso) from "
                               f"{client_address(request)}", user.name, "ovirt-sso")
            Events(s).add(event)
            events.append(event)
    log_events(events)


@router.post("/services/sso-logout")
async def sso_logout(request: Request, ctx: EngineCtx) -> JSONResponse:
    form = await _form(request)
    bearer = request.headers.get("authorization", "")
    token = form.get("token") or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
    await run_in_threadpool(_revoke, request, ctx, token)
    return JSONResponse({}, headers={"Cache-Control": "no-store"})


@router.post("/sso/oauth/revoke")
async def revoke(request: Request, ctx: EngineCtx) -> JSONResponse:
    form = await _form(request)
    await run_in_threadpool(_revoke, request, ctx, form.get("token", ""))
    return JSONResponse({}, headers={"Cache-Control": "no-store"})
