"""The script driver: runs the fence-agents `fence_<type>` programs.

This is the standard path that every PM device type has: one process per
command, parameters as `key=value` lines on stdin. Stdin, and not argv or the
environment, is the only channel that does not expose the password to other
users of the machine (/proc/PID/cmdline and /proc/PID/environ). The child
gets a small clean environment and a session of its own, so that a timeout
can kill it together with the ipmitool/ssh/curl processes it started.

fence-agents exit codes: 0 success (status: on), 2 status off, anything else
a failure. `off` exits 0 only after the agent verified the device off.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from hostpower.drivers.base import DriverError, FenceDriver
from hostpower.model.errors import ValidationError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome, validate_option

log = logging.getLogger(__name__)

AGENT_TYPE_RE = re.compile(r"^[a-z0-9_]+$")
# The only environment an agent sees: no credentials, no proxy settings, no
# locale surprises, and no Python DeprecationWarning noise on stderr.
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "PYTHONWARNINGS": "ignore"}
METADATA_TIMEOUT = 15.0
MESSAGE_MAX = 300
# fencing.py prefixes its log lines with "2024-01-02 03:04:05,678 ".
_LOG_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+")
_MASK = "********"


class ScriptDriver(FenceDriver):
    """Runs `fence_<type>` from `fence_agents_path`.

    `on_spawn(pid)` is called right after each agent process started (before
    it is given its parameters); `last_pid` holds the pid of the latest one.
    Both exist for tests and diagnostics.
    """

    name = "script"

    def __init__(self, fence_agents_path: str = "/usr/sbin",
                 on_spawn: Callable[[int], None] | None = None) -> None:
        self.fence_agents_path = fence_agents_path
        self.on_spawn = on_spawn
        self.last_pid: int | None = None
        self._lock = threading.Lock()
        self._types: list[str] | None = None
        self._metadata: dict[str, list[dict[str, object]]] = {}

    # -- what is installed ------------------------------------------------------

    def executable(self, agent_type: str) -> Path:
        """Path of the agent program; DriverError for a malformed type name."""
        if not isinstance(agent_type, str) or not AGENT_TYPE_RE.match(agent_type):
            raise DriverError(f"invalid agent type {agent_type!r}: use [a-z0-9_]+")
        return Path(self.fence_agents_path, f"fence_{agent_type}")

    def can_run(self, agent_type: str) -> bool:
        try:
            path = self.executable(agent_type)
        except DriverError:
            return False
        return path.is_file() and os.access(path, os.X_OK)

    def available_types(self) -> list[str]:
        """Installed agent types, sorted; listed once and then cached (see `refresh`)."""
        with self._lock:
            if self._types is None:
                self._types = self._scan_types()
            return list(self._types)

    def refresh(self) -> None:
        """Forget cached type lists and metadata (after installing agents)."""
        with self._lock:
            self._types = None
            self._metadata.clear()

    def _scan_types(self) -> list[str]:
        try:
            names = os.listdir(self.fence_agents_path)
        except OSError:
            return []
        types = (n[len("fence_"):] for n in names if n.startswith("fence_"))
        return sorted(t for t in types if AGENT_TYPE_RE.match(t) and self.can_run(t))

    def metadata(self, agent_type: str) -> list[dict[str, object]]:
        """The agent's parameters from `fence_<type> -o metadata`, cached per type.

        Each entry: name, required (bool), shortdesc, type (the content type:
        string, boolean, integer, second, select, ...), default (str or None),
        deprecated (bool), choices (list of str, for select).
        """
        with self._lock:
            cached = self._metadata.get(agent_type)
        if cached is not None:
            return [dict(p) for p in cached]
        if not self.can_run(agent_type):
            raise DriverError(f"fence agent fence_{agent_type} is not installed "
                              f"in {self.fence_agents_path}")
        path = self.executable(agent_type)
        try:
            done = subprocess.run([str(path), "-o", "metadata"], stdin=subprocess.DEVNULL,
                                  capture_output=True, env=CHILD_ENV, cwd="/",
                                  timeout=METADATA_TIMEOUT, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DriverError(f"fence_{agent_type} -o metadata failed: {exc}") from exc
        if done.returncode != 0:
            raise DriverError(f"fence_{agent_type} -o metadata exited with {done.returncode}")
        params = parse_metadata(done.stdout)
        with self._lock:
            self._metadata[agent_type] = params
        return [dict(p) for p in params]

    # -- running an action -------------------------------------------------------

    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Run one action; DriverError (nothing started) for a bad spec or missing agent."""
        action = FenceAction(action)
        path = self.executable(spec.type)
        request = agent_input(spec, action)
        if not self.can_run(spec.type):
            raise DriverError(f"fence agent {path} is not installed")
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=CHILD_ENV, cwd="/", start_new_session=True)
        except OSError as exc:
            return FenceResult(action, Outcome.ERROR, f"cannot start {path}: {exc.strerror}",
                               duration=time.monotonic() - started)
        self.last_pid = proc.pid
        if self.on_spawn is not None:
            try:
                self.on_spawn(proc.pid)
            except Exception:  # a diagnostic hook must not leave the agent unattended
                log.exception("on_spawn hook failed")
        try:
            out, err = proc.communicate(request.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return FenceResult(action, Outcome.ERROR, f"timed out after {timeout:g} s",
                               duration=time.monotonic() - started)
        duration = time.monotonic() - started
        secret = spec.password.reveal()
        stdout = _clean(out, secret)
        stderr = _clean(err, secret)
        outcome = outcome_for(action, proc.returncode, stderr)
        message = _message(outcome, proc.returncode, stdout, stderr)
        return FenceResult(action, outcome, message, exit_code=proc.returncode,
                           duration=duration)


def agent_input(spec: AgentSpec, action: FenceAction) -> str:
    """The stdin of the agent: one key=value per line, action last.

    Refuses (DriverError) anything that could add a line of its own: every
    user option goes through validate_option, and the driver's own fields
    may not hold line breaks or NUL bytes.
    """
    lines: list[tuple[str, str]] = []
    if spec.address:
        lines.append(("ip", spec.address))
    if spec.port is not None:
        lines.append(("ipport", str(int(spec.port))))
    if spec.username:
        lines.append(("username", spec.username))
    if spec.password:
        lines.append(("password", spec.password.reveal()))
    if spec.plug:
        lines.append(("plug", spec.plug))
    for key, value in lines:
        if any(c in value for c in "\n\r\x00"):
            # Never echo the value: it may be the password.
            raise DriverError(f"{key}: must not contain a line break or NUL byte")
    for key, value in spec.options:
        try:
            validate_option(key, value)
        except ValidationError as exc:
            raise DriverError(str(exc)) from exc
        lines.append((key, value))
    lines.append(("action", FenceAction(action).value))
    return "".join(f"{k}={v}\n" for k, v in lines)


def outcome_for(action: FenceAction, exit_code: int, stderr: str = "") -> Outcome:
    """Map an agent's exit code to what the device answered."""
    if action is FenceAction.STATUS:
        return {0: Outcome.ON, 2: Outcome.OFF}.get(exit_code, Outcome.ERROR)
    if exit_code != 0:
        return Outcome.ERROR
    if action is FenceAction.OFF:
        return Outcome.OFF  # fence agents exit 0 for off only once verified off
    if action is FenceAction.REBOOT and "timed out waiting to power on" in stderr.lower():
        # fencing.py reports a reboot whose power-on failed as a success; the
        # device is not verified back on, so it is not ON.
        return Outcome.ERROR
    return Outcome.ON


def parse_metadata(xml: bytes | str) -> list[dict[str, object]]:
    """Parameters of a fence-agents metadata document (see ScriptDriver.metadata)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DriverError(f"unreadable agent metadata: {exc}") from exc
    params: list[dict[str, object]] = []
    for p in root.iter("parameter"):
        content = p.find("content")
        shortdesc = p.find("shortdesc")
        params.append({
            "name": p.get("name", ""),
            "required": p.get("required") == "1",
            "shortdesc": (shortdesc.text or "").strip() if shortdesc is not None else "",
            "type": content.get("type", "string") if content is not None else "string",
            "default": content.get("default") if content is not None else None,
            "deprecated": p.get("deprecated") == "1",
            "choices": [o.get("value", "") for o in content.iter("option")]
            if content is not None else [],
        })
    return params


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent's whole process group (it leads it), then reap the agent.

    The leader is not reaped yet, so its pid still names our group.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        # A descendant that left the group still holds the pipes: stop reading.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            log.error("fence agent pid %s survived SIGKILL", proc.pid)


def _clean(data: bytes | None, secret: str) -> str:
    text = (data or b"").decode("utf-8", "replace")
    if secret:
        text = text.replace(secret, _MASK)
    return text


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        line = _LOG_TIME_RE.sub("", line.strip())
        if line:
            return line[:MESSAGE_MAX]
    return ""


def _message(outcome: Outcome, exit_code: int, stdout: str, stderr: str) -> str:
    """The agent's last meaningful line: stdout on success, stderr first on failure."""
    if outcome is Outcome.ERROR:
        text = _last_line(stderr) or _last_line(stdout)
        if exit_code < 0:
            return text or f"killed by signal {-exit_code}"
        return text or f"agent failed with exit code {exit_code}"
    return _last_line(stdout) or _last_line(stderr)
