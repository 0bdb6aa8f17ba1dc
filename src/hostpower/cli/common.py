"""Helpers shared by the command modules."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.model.errors import HostpowerError
from hostpower.settings import Settings


class CliError(HostpowerError):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def open_context() -> EngineContext:
    return EngineContext.open(Settings.from_env())


def open_existing_context() -> EngineContext:
    """The engine's database; a missing SQLite file is an error, not a new database."""
    missing = Settings.from_env().missing_sqlite_file
    if missing is not None:
        raise CliError(f"no database at {missing}: is HOSTPOWER_HOME or HOSTPOWER_DB_URL "
                       f"right?", 1)
    return open_context()


def read_config() -> Config:
    """The stored configuration, or the defaults when no database exists yet
    (so read-only commands do not create one)."""
    settings = Settings.from_env()
    if settings.missing_sqlite_file is not None:
        return Config()
    ctx = EngineContext.open(settings)
    try:
        return ctx.config()
    finally:
        ctx.close()


def read_secret(prompt: str) -> str:
    """From the terminal without echo, or one line of stdin when piped."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        again = getpass.getpass("again: ")
        if first != again:
            raise CliError("the two entries differ", 2)
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    data = [[str(c) for c in r] for r in rows]
    if header:
        data.insert(0, list(header))
    if not data:
        return ""
    widths = [max(len(r[i]) for r in data) for i in range(len(data[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in data]
    return "\n".join(lines)
