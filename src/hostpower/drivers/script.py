"""The script driver: runs the fence-agents `fence_<type>` programs.

This is the standard path that every PM device type has: one process per
command, parameters on stdin (script_protocol.py). The child gets a small
clean environment and a session of its own, so that a timeout can kill it
together with the ipmitool/ssh/curl processes it started.

fence_redfish verifies BMC certificates with python-requests, which reads
its trusted CAs from REQUESTS_CA_BUNDLE: given a `ca_bundle`, the script
driver sets it (a path, not a secret) for redfish agents, so that the script
and the native Redfish driver trust the same CAs. `ssl_insecure` skips the
verification in both.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import UnsupportedType
from hostpower.drivers.installed import agent_program, installed_agent_types, is_installed
from hostpower.drivers.redfish_options import NATIVE_TYPES as REDFISH_TYPES
from hostpower.drivers.script_metadata import Parameter, read_metadata
from hostpower.drivers.script_protocol import (
    CHILD_ENV,
    agent_input,
    clean_output,
    outcome_for,
    result_message,
)
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome

log = logging.getLogger(__name__)


class ScriptDriver(FenceDriver):
    """Runs `fence_<type>` from `fence_agents_path`.

    `on_spawn(pid)` is called right after each agent process started (before
    it is given its parameters); `last_pid` holds the pid of the latest one.
    Both exist for tests and diagnostics.
    """

    name = "script"
    native = False

    def __init__(self, fence_agents_path: str = "/usr/sbin",
                 on_spawn: Callable[[int], None] | None = None,
                 ca_bundle: str | None = None) -> None:
        self.fence_agents_path = fence_agents_path
        self.ca_bundle = ca_bundle or None
        self.on_spawn = on_spawn
        self.last_pid: int | None = None
        self._lock = threading.Lock()
        self._types: frozenset[str] | None = None
        self._metadata: dict[str, list[Parameter]] = {}

    # -- what is installed ------------------------------------------------------

    def agent_types(self) -> frozenset[str]:
        """Installed agent types; listed once and then cached (see `refresh`)."""
        with self._lock:
            if self._types is None:
                self._types = frozenset(installed_agent_types(self.fence_agents_path))
            return self._types

    def validate(self, spec: AgentSpec) -> None:
        """The program must be installed now (not only when the types were listed)."""
        path = agent_program(self.fence_agents_path, spec.type)
        if not is_installed(self.fence_agents_path, spec.type):
            raise UnsupportedType(f"fence agent {path} is not installed")

    def refresh(self) -> None:
        """Forget cached type lists and metadata (after installing agents)."""
        with self._lock:
            self._types = None
            self._metadata.clear()

    def metadata(self, agent_type: str) -> list[Parameter]:
        """The agent's parameters from `fence_<type> -o metadata`, cached per type
        (see script_metadata.parse_metadata for the entries)."""
        with self._lock:
            cached = self._metadata.get(agent_type)
        if cached is not None:
            return [dict(p) for p in cached]
        if not is_installed(self.fence_agents_path, agent_type):
            raise UnsupportedType(f"fence agent fence_{agent_type} is not installed "
                                  f"in {self.fence_agents_path}")
        params = read_metadata(agent_program(self.fence_agents_path, agent_type))
        with self._lock:
            self._metadata[agent_type] = params
        return [dict(p) for p in params]

    # -- running an action -------------------------------------------------------

    def child_env(self, spec: AgentSpec) -> dict[str, str]:
        """The agent's environment: CHILD_ENV, and the Redfish CA bundle for fence_redfish."""
        if self.ca_bundle and spec.type in REDFISH_TYPES:
            return {**CHILD_ENV, "REQUESTS_CA_BUNDLE": self.ca_bundle}
        return dict(CHILD_ENV)

    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Run one action; DriverError (nothing started) for a bad spec or missing agent."""
        action = FenceAction(action)
        self.validate(spec)
        path = agent_program(self.fence_agents_path, spec.type)
        request = agent_input(spec, action)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self.child_env(spec), cwd="/",
                start_new_session=True)
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
        stdout = clean_output(out, secret)
        stderr = clean_output(err, secret)
        outcome = outcome_for(action, proc.returncode, stderr)
        message = result_message(outcome, proc.returncode, stdout, stderr)
        return FenceResult(action, outcome, message, exit_code=proc.returncode,
                           duration=duration)


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
