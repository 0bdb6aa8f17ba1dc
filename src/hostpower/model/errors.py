"""Errors of the domain: every one names the field it concerns."""

from __future__ import annotations


class HostpowerError(Exception):
    """Base of every error hostpower raises on purpose."""


class ValidationError(HostpowerError):
    """Bad input: names the field and the problem. Nothing was stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(HostpowerError):
    """A named object (host, cluster, key, ...) does not exist."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(HostpowerError):
    """The request clashes with existing state (duplicate name, object in use)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StorageUnavailable(HostpowerError):
    """The database cannot be written (disk full, read-only) or reached.
    Nothing of the request was stored; the same request may succeed later."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"the engine's database is unavailable: {cause}")
        self.cause = cause
