"""Bearer-token authentication: viewers read, admins write."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hostpower.store.users import Role, Users

bearer = HTTPBearer(auto_error=False, description="token from POST /api/auth/token")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def current_user(request: Request,
                 creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "authentication required: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    ctx = request.app.state.ctx
    with ctx.db.session() as s:
        user = Users(s).user_for_token(creds.credentials)
        if user is None:
            raise HTTPException(401, "token is invalid or expired",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal(user.name, Role(user.role))


def admin_user(user: Principal = Depends(current_user)) -> Principal:
    if not user.is_admin:
        raise HTTPException(403, f"user {user.name!r} has role viewer: admin role required")
    return user
