"""Handing out lab instances: at most MAX_INSTANCES labs run on one machine,
each under its own number (identity.py), claimed race-free, and whatever a
lab that died left behind is removed without touching a running one.

The pool lives in a runtime directory (root: /run/hostpower-lab; otherwise
$XDG_RUNTIME_DIR/hostpower-lab or /tmp/hostpower-lab-<uid>):

    allocate.lock   flock'ed while an instance is chosen or dead ones are cleaned
    <N>/owner       flock'ed by lab N for its whole life; holds {"pid", "home", ...}

A held lock means a live owner: the kernel drops an flock when the last
descriptor of its holder closes, however the holder dies, so there is no
stale pid to second-guess. Each claim opens the file anew, so two labs of one
process (tests) exclude each other too. The descriptor is close-on-exec and
never inherited by the lab's children: an orphaned agent cannot keep a dead
lab "alive".

Every process a lab starts carries HOSTPOWER_LAB_INSTANCE=<runtime dir>/<N>
in its environment; that is how the agents of a crashed loopback lab (no
namespace to find them by) are found and killed. A program that clears its
environment (OpenSSH's sshd does) must name a path under <runtime dir>/<N>/
in its command line instead (the SSH servers put their pid files there).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hostpower.lab import netns
from hostpower.lab.errors import LabError
from hostpower.lab.identity import MAX_INSTANCES, LabInstance
from hostpower.lab.processes import alive, kill_and_wait

MARKER = "HOSTPOWER_LAB_INSTANCE"
ALLOCATION_TIMEOUT = 60.0   # the lock is held for seconds at most (cleaning a dead lab)


def default_runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/hostpower-lab")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "hostpower-lab" if runtime else Path(f"/tmp/hostpower-lab-{os.getuid()}")


@dataclass
class InstanceLease:
    """A claimed instance; the claim lasts until release() or the owner's death."""
    instance: LabInstance
    pool: InstancePool
    lock_file: IO[str] | None
    removed: list[str] = field(default_factory=list)  # leftovers of dead labs removed on the way

    @property
    def marker(self) -> str:
        return str(self.pool.instance_dir(self.instance))

    def child_env(self) -> dict[str, str]:
        """The environment of every process the lab starts (see MARKER)."""
        return {**os.environ, MARKER: self.marker}

    @property
    def held(self) -> bool:
        return self.lock_file is not None

    def record(self, **info: Any) -> None:
        """Write what `hostpower lab list` shows about the owner (pid, home, mode)."""
        assert self.lock_file is not None, "the lease was released"
        self.lock_file.truncate(0)
        self.lock_file.write(json.dumps({"pid": os.getpid(), **info}))
        self.lock_file.flush()

    def release(self) -> None:
        if self.lock_file is not None:
            self.lock_file.truncate(0)  # `lab list` must not show a stale owner
            self.lock_file.close()
            self.lock_file = None


class InstancePool:
    def __init__(self, runtime_dir: Path | None = None,
                 manages_namespaces: bool | None = None) -> None:
        """The system pool by default. A pool under another directory (tests)
        must not manage namespaces: namespaces are machine-wide, and only the
        system pool knows which of them are alive."""
        self.dir = runtime_dir or default_runtime_dir()
        if manages_namespaces is None:
            manages_namespaces = runtime_dir is None and netns.available()
        self.manages_namespaces = manages_namespaces

    def instance_dir(self, inst: LabInstance) -> Path:
        return self.dir / str(inst.number)

    # -- locking ------------------------------------------------------------------------

    @contextmanager
    def _allocation(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        with open(self.dir / "allocate.lock", "a") as f:
            deadline = time.monotonic() + ALLOCATION_TIMEOUT
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"{self.dir / 'allocate.lock'} stayed locked for "
                                       f"{ALLOCATION_TIMEOUT:.0f} s") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _try_claim(self, inst: LabInstance) -> IO[str] | None:
        """The instance's owner lock if nobody holds it (call under _allocation)."""
        d = self.instance_dir(inst)
        d.mkdir(exist_ok=True)
        f = open(d / "owner", "a+")  # noqa: SIM115 - stays open: the open file holds the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    def _read_owner(self, inst: LabInstance) -> dict[str, Any]:
        try:
            return json.loads((self.instance_dir(inst) / "owner").read_text() or "{}")
        except (OSError, ValueError):
            return {}

    # -- the operations -------------------------------------------------------------------

    def reserve(self, namespaced: bool) -> InstanceLease:
        """Claim the lowest free instance whose address ranges nothing else on
        the machine uses, after removing what dead labs left behind."""
        with self._allocation():
            claims = self._claim_free()
            chosen: LabInstance | None = None
            try:
                removed = self._clean_dead(claims)
                refused = []
                for inst in sorted(claims, key=lambda i: i.number):
                    used = netns.ranges_in_use(inst) if namespaced and self.manages_namespaces else []
                    if not used:
                        chosen = inst
                        break
                    refused.append(f"instance {inst.number}: its range is used by {used[0]!r}")
                if chosen is None:
                    raise LabError(self._none_free_message(claims, refused))
                lease = InstanceLease(chosen, self, claims[chosen], removed)
                lease.record(namespaced=namespaced)
                return lease
            finally:
                for inst, f in claims.items():
                    if inst != chosen:
                        f.close()

    def cleanup(self) -> list[str]:
        """Remove what every dead lab left behind; running labs are untouched."""
        with self._allocation():
            claims = self._claim_free()
            try:
                return self._clean_dead(claims)
            finally:
                for f in claims.values():
                    f.close()

    def running(self) -> dict[LabInstance, dict[str, Any]]:
        """Every running instance with what its owner recorded (pid, home)."""
        with self._allocation():
            claims = self._claim_free()
            for f in claims.values():
                f.close()
        return {inst: self._read_owner(inst) for inst in map(LabInstance, range(MAX_INSTANCES))
                if inst not in claims}

    # -- helpers ----------------------------------------------------------------------------

    def _claim_free(self) -> dict[LabInstance, IO[str]]:
        claims = {}
        for inst in map(LabInstance, range(MAX_INSTANCES)):
            lock = self._try_claim(inst)
            if lock is not None:
                claims[inst] = lock
        return claims

    def _clean_dead(self, claims: dict[LabInstance, IO[str]]) -> list[str]:
        """Called holding the owner lock of every instance in claims: none of
        them has a live lab, so whatever carries their names is left over."""
        markers = {str(self.instance_dir(inst)): inst for inst in claims}
        removed = [f"process {pid} of lab instance {inst.number}"
                   for pid, inst in _kill_marked_processes(markers)]
        if self.manages_namespaces:
            for inst in sorted(netns.instances_present() & claims.keys(), key=lambda i: i.number):
                removed += netns.teardown(inst)
        for lock in claims.values():
            lock.truncate(0)  # no owner any more
        return removed

    def _none_free_message(self, claims: dict[LabInstance, IO[str]], refused: list[str]) -> str:
        owners = [f"instance {inst.number}: pid {info.get('pid')}, home {info.get('home')}"
                  for inst in map(LabInstance, range(MAX_INSTANCES)) if inst not in claims
                  for info in [self._read_owner(inst)]]
        return (f"no free lab instance: at most {MAX_INSTANCES} labs run at once on this machine; "
                + "; ".join(owners + refused))


def _kill_marked_processes(markers: dict[str, LabInstance]) -> list[tuple[int, LabInstance]]:
    """SIGKILL every process whose environment names one of the markers, or
    whose command line names a path under one (processes of other users are
    invisible to a non-root pool: fine, their labs are not ours)."""
    in_env = {f"{MARKER}={marker}".encode(): inst for marker, inst in markers.items()}
    in_args = {f"{marker}/".encode(): inst for marker, inst in markers.items()}
    found: dict[int, LabInstance] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        inst = _marked(entry.name, in_env, in_args)
        if inst is not None and alive(int(entry.name)):
            found[int(entry.name)] = inst
    return [(pid, found[pid]) for pid in kill_and_wait(list(found))]


def _marked(pid: str, in_env: dict[bytes, LabInstance],
            in_args: dict[bytes, LabInstance]) -> LabInstance | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            variables = f.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    inst = next((in_env[v] for v in variables if v in in_env), None)
    return inst or next((i for prefix, i in in_args.items()
                         for arg in args if prefix in arg), None)
