"""The host's lease on shared storage: renewed by its agent, watched by the others.

An agent started with `--storage-lease-dir DIR` (DIR on storage every host
of the installation mounts; in the lab a directory the simulated hosts
share) does, every `--storage-lease-interval` seconds, in one thread:

1. **renew**: write `DIR/<host name>.lease`, a one-line JSON record
   (format, host, boot id, a counter incremented at every renewal, the
   writer's wall time, its interval) to a temporary file, fsync it, rename
   it over the lease (readers never see half a record);
2. **watch**: read every `*.lease` of DIR and remember, per host, when its
   record last changed, on this agent's monotonic clock.

So a proxy answers "when did you last see X's lease renewed?" from its own
observations, without comparing its clock to anyone's (sanlock's delta
leases, which oVirt relies on, work the same way). A renewal counts only
when two scans at most `MAX_GAP_FACTOR` intervals apart saw different
records; after a longer gap (this agent was stopped, starved or suspended)
what it remembers is dropped and watching starts over, since a change seen
across the gap may be arbitrarily old.

The thread lives as long as the agent process: a killed agent stops
renewing, and so does a frozen one (SIGSTOP), which is right: a host whose
agent hangs is to be fenced once the check says so.

Path safety: a lease is named by a host name checked against the
inventory's name rules (`validate.NAME_RE`: no '/', cannot start with '.'),
and files are opened with O_NOFOLLOW and read up to `MAX_LEASE_BYTES`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostpower.hostagent.wire import StorageLeaseAnswer
from hostpower.model import validate
from hostpower.model.errors import ValidationError

log = logging.getLogger("hostpower.hostagent")

FORMAT = "hostpower-storage-lease/1"
SUFFIX = ".lease"
DEFAULT_INTERVAL = 2.0
MIN_INTERVAL = 0.2
MAX_INTERVAL = 60.0
MAX_LEASE_BYTES = 4096
MAX_LEASES = 10_000   # files looked at per scan; a shared directory is not unbounded
MAX_GAP_FACTOR = 2.5  # scans further apart than this many intervals break the watch


def lease_file_name(host: str) -> str:
    """`<host>.lease` for a valid host name; ValidationError naming "host" otherwise."""
    if not isinstance(host, str) or not validate.NAME_RE.match(host):
        raise ValidationError("host", "must be a host name: letters, digits, '.', '_' and '-', "
                                      "starting with a letter or digit")
    return host + SUFFIX


def lease_path(directory: Path, host: str) -> Path:
    path = Path(directory) / lease_file_name(host)
    assert path.parent == Path(directory)  # the name rules guarantee it; belt and braces
    return path


@dataclass(frozen=True)
class LeaseRecord:
    """What one renewal writes."""

    host: str
    boot_id: str
    counter: int
    written_at: float  # the writer's wall clock: shown, never compared
    interval: float

    def to_bytes(self) -> bytes:
        return (json.dumps({"format": FORMAT, "host": self.host, "boot_id": self.boot_id,
                            "counter": self.counter, "written_at": round(self.written_at, 3),
                            "interval": self.interval}, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, host: str | None = None) -> "LeaseRecord":
        """Parse a lease file; ValueError saying what is wrong. With `host`,
        the record must name that host (a file copied or renamed is not its lease)."""
        if len(data) > MAX_LEASE_BYTES:
            raise ValueError(f"larger than {MAX_LEASE_BYTES} bytes")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not a JSON record") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} record")
        name, boot_id, counter = body.get("host"), body.get("boot_id"), body.get("counter")
        if not isinstance(name, str) or not validate.NAME_RE.match(name):
            raise ValueError("host is not a host name")
        if host is not None and name != host:
            raise ValueError(f"the record names another host ({name})")
        if not isinstance(boot_id, str) or not 0 < len(boot_id) <= 64:
            raise ValueError("boot_id is not a short string")
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise ValueError("counter is not a whole number")
        written_at, interval = body.get("written_at"), body.get("interval")
        for field, value in (("written_at", written_at), ("interval", interval)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                raise ValueError(f"{field} is not a number")
        if interval <= 0:
            raise ValueError("interval is not positive")
        return cls(name, boot_id, counter, float(written_at), float(interval))


def write_lease(directory: Path, record: LeaseRecord) -> None:
    """Write the record to its lease file: temporary file, fsync, rename."""
    final = lease_path(directory, record.host)
    tmp = final.with_name(f".{final.name}.tmp")  # a dot name: no scan reads it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, record.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def read_lease(path: Path) -> tuple[bytes, float]:
    """The raw content (at most MAX_LEASE_BYTES + 1 bytes) and mtime of a lease
    file; OSError if absent or unreadable (a symbolic link is refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        data = os.read(fd, MAX_LEASE_BYTES + 1)
    finally:
        os.close(fd)
    return data, st.st_mtime


@dataclass
class _Watch:
    """What this agent remembers of one host's lease (times on its monotonic clock)."""

    since: float                       # the unbroken watch of this file began
    key: tuple[str, int] | None = None  # (boot id, counter) of the last valid record read
    key_at: float | None = None        # the last scan that read that record
    renewed_by: float | None = None    # the lease was renewed after this scan

    def read(self, key: tuple[str, int] | None, now: float) -> None:
        """A scan at `now` read `key` (None: the file was unreadable or malformed,
        which proves nothing either way). A renewal is a valid record replaced
        by another valid one: it happened after the scan that read the old one."""
        if key is None:
            return
        if self.key is not None and key != self.key:
            self.renewed_by = self.key_at
        self.key, self.key_at = key, now


class StorageLease:
    """Renews this host's lease and watches every lease of the directory."""

    def __init__(self, directory: Path, host_name: str, boot_id: str,
                 interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        lease_file_name(host_name)  # refuse a name that cannot be a lease at once
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValidationError("storage_lease_interval",
                                  f"must be {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds")
        self.directory = Path(directory)
        self.host_name = host_name
        self.boot_id = boot_id
        self.interval = float(interval)
        self.clock = clock
        self.wall = wall
        self.counter = 0
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._last_scan: float | None = None
        self._dir_since: float | None = None   # unbroken watch of the directory since
        self._renew_error: str | None = None
        self._scan_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the thread

    def start(self) -> "StorageLease":
        log.info("storage lease host=%s: renewing %s every %g s", self.host_name,
                 lease_path(self.directory, self.host_name), self.interval)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"storage-lease-{self.host_name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock()
            try:
                self.tick()
            except Exception:  # a bug must not end renewals silently: log and go on
                log.exception("storage lease host=%s: renewal round failed", self.host_name)
            self._stop.wait(max(0.0, self.interval - (self.clock() - started)))

    def tick(self) -> None:
        """One round: renew our lease, then scan everyone's."""
        self.renew()
        self.scan()

    # ---- renewing

    def renew(self) -> bool:
        self.counter += 1
        record = LeaseRecord(self.host_name, self.boot_id, self.counter, self.wall(),
                             self.interval)
        try:
            write_lease(self.directory, record)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if error != self._renew_error:
                log.error("storage lease host=%s: cannot renew in %s: %s", self.host_name,
                          self.directory, error)
            self._renew_error = error
            return False
        if self._renew_error is not None:
            log.warning("storage lease host=%s: renewing again in %s", self.host_name,
                        self.directory)
            self._renew_error = None
        return True

    # ---- watching

    def scan(self) -> None:
        now = self.clock()
        seen: dict[str, tuple[str, int] | None] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if len(seen) >= MAX_LEASES:
                        break
                    name = entry.name
                    if not name.endswith(SUFFIX) or name.startswith("."):
                        continue
                    host = name[:-len(SUFFIX)]
                    if not validate.NAME_RE.match(host):
                        continue
                    seen[host] = self._key(self.directory / name, host)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc.strerror or exc}"
            if error != self._scan_error:
                log.error("storage lease host=%s: cannot read %s: %s", self.host_name,
                          self.directory, error)
            self._scan_error = error
            with self._lock:  # what we cannot see we cannot vouch for: watch anew
                self._watches.clear()
                self._last_scan = self._dir_since = None
            return
        if self._scan_error is not None:
            log.warning("storage lease host=%s: reading %s again", self.host_name,
                        self.directory)
            self._scan_error = None
        with self._lock:
            last = self._last_scan
            unbroken = last is not None and now - last <= MAX_GAP_FACTOR * self.interval
            if not unbroken:
                if last is not None:
                    log.warning("storage lease host=%s: %.1f s between two scans: watching "
                                "every lease anew", self.host_name, now - last)
                self._watches.clear()
                self._dir_since = now
            watches = {}
            for host, key in seen.items():
                watch = self._watches.get(host) or _Watch(since=now)
                watch.read(key, now)
                watches[host] = watch  # a lease gone from the directory is forgotten
            self._watches = watches
            self._last_scan = now

    @staticmethod
    def _key(path: Path, host: str) -> tuple[str, int] | None:
        try:
            data, _mtime = read_lease(path)
            record = LeaseRecord.from_bytes(data, host)
        except (OSError, ValueError):
            return None
        return record.boot_id, record.counter

    # ---- answering

    def observe(self, host: str) -> StorageLeaseAnswer:
        """What this agent knows of `host`'s lease now (the name is validated)."""
        path = lease_path(self.directory, host)
        now = self.clock()
        with self._lock:
            watch = self._watches.get(host)
            dir_since, last_scan = self._dir_since, self._last_scan
        if dir_since is None or last_scan is None or not self.directory.is_dir():
            return StorageLeaseAnswer(host, False, detail=f"this host cannot read the shared "
                                                          f"storage ({self.directory})")
        late = now - last_scan - self.interval
        if now - last_scan > MAX_GAP_FACTOR * self.interval:
            # Our own renew-and-scan round is stuck (hung storage, starved
            # process): what we saw is getting old while the lease may not be.
            return StorageLeaseAnswer(host, False, detail=f"this host's watch of the shared "
                                                          f"storage is {late:.0f} s late")
        renewed_ago = now - watch.renewed_by if watch and watch.renewed_by is not None else None
        try:
            data, mtime = read_lease(path)
        except FileNotFoundError:
            # Known absent since the last scan at least; watched_for only informs here.
            return StorageLeaseAnswer(host, True, exists=False, renewed_ago=renewed_ago,
                                      watched_for=now - dir_since)
        except OSError as exc:  # there, but not readable (a symbolic link, permissions)
            return StorageLeaseAnswer(host, True, exists=True, renewed_ago=renewed_ago,
                                      watched_for=now - watch.since if watch else 0.0,
                                      detail=f"cannot read it: {exc.strerror or exc}")
        # A file that appeared after the last scan has not been watched at all yet.
        watched_for = now - watch.since if watch is not None else 0.0
        try:
            record = LeaseRecord.from_bytes(data, host)
        except ValueError as exc:
            return StorageLeaseAnswer(host, True, exists=True, renewed_ago=renewed_ago,
                                      watched_for=watched_for, mtime_age=self.wall() - mtime,
                                      detail=f"malformed: {exc}")
        return StorageLeaseAnswer(host, True, exists=True, renewed_ago=renewed_ago,
                                  watched_for=watched_for, counter=record.counter,
                                  boot_id=record.boot_id, written_at=record.written_at,
                                  interval=record.interval, mtime_age=self.wall() - mtime)
