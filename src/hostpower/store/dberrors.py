"""Database errors as the user should see them.

Two kinds reach a caller from the database itself rather than from a check
in the repositories:

* an integrity violation: a race between two writers (two API requests, two
  engines, the CLI) that both passed the repository's own uniqueness check.
  It becomes a ConflictError naming the column and, where the database says
  it, the value;
* an operational error: the disk is full, the file system is read-only, the
  server is gone. It becomes StorageUnavailable naming the cause;
* a data error: a value the database will not take. It becomes ValidationError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from hostpower.model.errors import ConflictError, StorageUnavailable, ValidationError

# SQLite: "UNIQUE constraint failed: data_centers.name"
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (\w+)\.(\w+)")
# PostgreSQL: 'Key (name)=(dup-dc) already exists.'
_PG_KEY = re.compile(r"Key \((\w+)\)=\((.*)\) already exists", re.S)
_INSERT = re.compile(r"INSERT INTO \w+ \(([^)]*)\)", re.I)
_UPDATE = re.compile(r"UPDATE \w+ SET (.*?) WHERE", re.I | re.S)


def conflict_from(exc: IntegrityError) -> ConflictError:
    """The ConflictError a lost race on a unique column deserves."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    detail = getattr(diag, "message_detail", None) or ""
    pg = _PG_KEY.search(detail)
    if pg:
        return _taken(pg.group(1), pg.group(2))
    lite = _SQLITE_UNIQUE.search(str(orig))
    if lite:
        column = lite.group(2)
        return _taken(column, _bound_value(exc.statement or "", exc.params, column))
    # Not a uniqueness race (a foreign key, a NOT NULL): still the client's
    # request clashing with stored state, never a server error.
    return ConflictError("body", "the request conflicts with the stored data "
                                 "(it changed meanwhile); read it again and retry")


def _taken(column: str, value: Any) -> ConflictError:
    if value is None:
        return ConflictError(column, "is already in use")
    return ConflictError(column, f"{value!r} is already in use")


def _bound_value(statement: str, params: Any, column: str) -> Any:
    """The value bound to `column` in an INSERT or UPDATE, when it can be told."""
    if isinstance(params, dict):
        return params.get(column)
    if not isinstance(params, Sequence) or isinstance(params, str):
        return None
    insert = _INSERT.search(statement)
    if insert:
        columns = [c.strip().strip('"') for c in insert.group(1).split(",")]
    else:
        update = _UPDATE.search(statement)
        if not update:
            return None
        columns = [c.split("=")[0].strip().strip('"') for c in update.group(1).split(",")]
    try:
        return params[columns.index(column)]
    except (ValueError, IndexError):
        return None


def refused_value_from(exc: DataError) -> ValidationError:
    """A value the database will not take (a NUL byte in text on PostgreSQL, a
    number beyond its column): the API schema refuses these first; this is the
    net under every other path."""
    return ValidationError("request", f"a value cannot be stored: {_first_line(exc) or 'refused'}")


def unavailable_from(exc: OperationalError) -> StorageUnavailable:
    """Why the database refused: the first line of the driver's message."""
    return StorageUnavailable(_first_line(exc) or type(exc.orig or exc).__name__)


def _first_line(exc: DataError | OperationalError) -> str:
    """The first line of the driver's message (the rest is SQL and parameters)."""
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0] if lines else ""
