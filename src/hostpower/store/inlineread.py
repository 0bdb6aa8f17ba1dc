"""Small reads on the event loop itself, for the embedded SQLite database.

A flow step checks its reservation and the store's revisions before its
command: two indexed reads of a few rows, about 0.1 ms on SQLite. Sent to a
thread, the hop and the wait for the interpreter cost several times that
while other flows run. SQLite in WAL mode never makes a reader wait for a
writer, so such a read can run on the loop: on a connection of its own
whose busy timeout is short (SQLITE_BUSY only happens in rare moments, such
as recovering the log after a crash). A read that fails here is given to
the reader thread instead (`InlineUnavailable`).

PostgreSQL is a network away: its reads always go to the reader thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

T = TypeVar("T")
# How long SQLite may retry a busy database before this read gives up here.
BUSY_TIMEOUT_MS = 20


class InlineUnavailable(Exception):
    """This read could not run on the loop: run it on the reader thread."""


class InlineReader:
    def __init__(self, database: Any) -> None:
        self.database = database
        self._conn: Connection | None = None

    def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` in a read transaction, here and now."""
        try:
            if self._conn is None:
                self._conn = self.database.engine.connect()
                self._conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                self._conn.commit()
            with self._conn.begin():
                return fn(self._conn)
        except OperationalError as exc:
            self.close()
            raise InlineUnavailable(str(exc)) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # its busy timeout is not the pool's
                conn.invalidate()
                conn.close()
