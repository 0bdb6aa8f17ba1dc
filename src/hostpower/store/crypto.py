"""Encryption at rest for PM passwords (and options marked encrypt_options).

The key lives in a file created 0600 under HOSTPOWER_HOME on first start.
Losing it makes the stored passwords unreadable, so it is never rotated
silently; back it up with the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from hostpower.model.errors import HostpowerError


class SecretKeyError(HostpowerError):
    """The key file is missing, unreadable, or does not match the data."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load_or_create(cls, path: Path) -> "SecretBox":
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two engines starting at once must not write two keys.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(Fernet.generate_key())
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretKeyError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        try:
            return cls(path.read_bytes().strip())
        except ValueError as exc:
            raise SecretKeyError(f"{path} does not hold a valid key") from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("stored secret does not match the key file") from exc
