"""The one-engine lock of an SQLite database: an exclusive `flock` on a file
next to the database, held while the engine runs.

The kernel drops the lock when the process ends, however it ends (SIGKILL
included), so a crashed engine never blocks a restart; and while it runs, a
second engine on the same file finds the lock taken and is refused before it
starts anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from hostpower.model.errors import StorageUnavailable


def lock_path(db_file: Path) -> Path:
    return db_file.with_name(db_file.name + ".engine-lock")


class EngineLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, db_file: Path) -> "EngineLock | None":
        """The lock, or None when another process holds it. A lock file that
        cannot even be created (read-only directory) is StorageUnavailable."""
        path = lock_path(db_file)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open the engine lock {path}: "
                                     f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise StorageUnavailable(f"cannot lock {path}: {exc.strerror or exc}") from None
        # For a person who finds the file: which process holds it.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @staticmethod
    def holder(db_file: Path) -> str:
        """The process id written by the holder, if it can be read ('' if not)."""
        try:
            return lock_path(db_file).read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
