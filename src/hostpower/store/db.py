"""Database connection and migrations."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hostpower.store import revisions
from hostpower.store.dberrors import conflict_from, refused_value_from, unavailable_from

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("hostpower.store")


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def read_only_sqlite_file(url: str) -> Path | None:
    """The SQLite file of `url` when it exists on a file system this process
    cannot write (a read-only mount); None otherwise."""
    path = sqlite_file(url)
    if path is not None and path.exists() and not os.access(path.parent, os.W_OK):
        return path
    return None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        read_only = read_only_sqlite_file(url)
        if read_only is not None:
            # SQLite in WAL mode cannot even read a database whose directory
            # it cannot write, unless told the file will not change: then
            # reads work, and every write fails (503 through the API).
            log.warning("%s is on a read-only file system: the engine reads its database "
                        "but every write fails until it is writable and the engine restarts",
                        read_only)
            url = f"sqlite:///file:{read_only}?immutable=1&uri=true"
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if read_only is None:
                cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives the engine process dying
            # (the journal's promise); only an OS crash or power cut may roll
            # back the last commits, and a resumed flow checks the device
            # before acting, so even then nothing is switched twice. 40x faster
            # commits than FULL. Production runs PostgreSQL anyway.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args=POSTGRES_CONNECT_ARGS)


# A database that vanishes from the network (not refusing, just silent) must
# fail a statement within seconds, not after TCP's quarter of an hour: the
# engine then reports the outage and stops acting (membership.py) instead of
# hanging a worker thread. libpq ignores the TCP options on unix sockets.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data for this long ends the connection
}


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    assert head is not None
    return head


class Database:
    """An engine plus sessions that commit on success and roll back on error.

    A unique constraint that a concurrent writer won leaves as ConflictError,
    a database that cannot be written or reached as StorageUnavailable: the
    caller never sees a driver's exception."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        revisions.track(self._sessions)
        self.errors = 0   # operations that found the database unavailable (metrics.py)

    def upgrade(self) -> None:
        upgrade(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except IntegrityError as exc:
                _rollback(session)
                raise conflict_from(exc) from exc
            except OperationalError as exc:
                _rollback(session)
                self.errors += 1
                raise unavailable_from(exc) from exc
            except DataError as exc:
                _rollback(session)
                raise refused_value_from(exc) from exc
            except BaseException:
                _rollback(session)
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def _rollback(session: Session) -> None:
    """Roll back, even when the database is the thing that failed."""
    try:
        session.rollback()
    except OperationalError:
        pass
