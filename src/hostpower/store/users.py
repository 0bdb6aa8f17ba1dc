"""Engine users, their password hashes and API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hostpower.model import validate
from hostpower.model.errors import ConflictError, NotFoundError, ValidationError
from hostpower.store.tables import TokenRow, UserRow

TOKEN_LIFETIME = timedelta(hours=12)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32,
                         n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got, base64.b64decode(digest))


@cache
def _dummy_hash() -> str:
    """What an unknown user's password is checked against: the same scrypt work
    as a wrong password of a real user (hashing a fresh one each time would
    double it, and the timing would tell which names exist)."""
    return hash_password(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, name: str, role: str, password: str) -> UserRow:
        name = validate.name(name, "name")
        try:
            role_value = Role(role)
        except ValueError:
            raise ValidationError("role", f"{role!r} is not a role (admin, viewer)") from None
        if len(password) < 8:
            raise ValidationError("password", "must be at least 8 characters")
        if self.s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
            raise ConflictError("name", f"user {name!r} already exists")
        row = UserRow(name=name, role=role_value.value, password_hash=hash_password(password),
                      created_at=datetime.now(UTC))
        self.s.add(row)
        self.s.flush()
        return row

    def set_password(self, name: str, password: str) -> None:
        if len(password) < 8:
            raise ValidationError("password", "must be at least 8 characters")
        row = self._row(name)
        row.password_hash = hash_password(password)
        self.s.execute(delete(TokenRow).where(TokenRow.user_id == row.id))
        self.s.flush()

    def remove(self, name: str) -> None:
        self.s.delete(self._row(name))
        self.s.flush()

    def list(self) -> list[UserRow]:
        return list(self.s.scalars(select(UserRow).order_by(UserRow.name)))

    def authenticate(self, name: str, password: str) -> UserRow | None:
        row = self.s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            # Same work either way, so timing does not tell which names exist.
            check_password(password, _dummy_hash())
            return None
        return row if check_password(password, row.password_hash) else None

    def issue_token(self, user: UserRow, lifetime: timedelta = TOKEN_LIFETIME) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + lifetime
        self.s.execute(delete(TokenRow).where(TokenRow.expires_at < datetime.now(UTC)))
        self.s.add(TokenRow(token_hash=_token_hash(token), user_id=user.id, expires_at=expires))
        self.s.flush()
        return token, expires

    def user_for_token(self, token: str) -> UserRow | None:
        row = self.s.scalar(select(TokenRow).where(TokenRow.token_hash == _token_hash(token)))
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        if expires < datetime.now(UTC):
            return None
        return self.s.get(UserRow, row.user_id)

    def revoke(self, token: str) -> None:
        self.s.execute(delete(TokenRow).where(TokenRow.token_hash == _token_hash(token)))

    def _row(self, name: str) -> UserRow:
        row = self.s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFoundError("user", name)
        return row
