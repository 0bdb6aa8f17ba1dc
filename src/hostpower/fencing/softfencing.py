"""Soft fencing: restart the host agent over SSH before any power action.

The first precaution of the escalation (fencing/escalation.py), as oVirt
does it: a host whose agent stopped answering may well be fine but for its
agent, and restarting the agent's service spares its workloads a power
cycle. For a host with SSH access configured (`ssh.port`):

1. PM status first, through the host's proxy chain: a host verified **off**
   is not soft-fenced (event `soft_fencing.skipped`); restarting a service
   on it makes no sense, and the restart flow then counts it as fenced.
2. Connect over SSH as the host's `ssh.user` with the engine's key
   (fencing/sshaccess.py), trusting exactly the host key pinned at
   enrolment, and run `SshSoftFencingCommand`, all within
   `SshSoftFencingTimeoutInSec` (event `soft_fencing.started`).
3. Heartbeat the agent until it answers or `TimeoutToResetHostInSeconds`
   passes. It answers: the host is up again, no power action (INFO
   `soft_fencing.healed`; the escalation adds `treatment.spared`).

Anything else (SSH refused or unreachable, the engine's key refused, a host
key that is not the pinned one, a command that fails, an agent still silent)
is a WARNING `soft_fencing.failed` naming why, and the next precaution, in
the end hard fencing, follows.

Soft fencing is tried once per period of silence, as in oVirt (whose host
manager resets its "SSH soft fencing executed" flag when the host is up
again): while a host stays non-responsive after a failed attempt (a later
precaution spared it, or hard fencing failed), the next escalations go on
without restarting its agent again. The period ends when the monitor sees
the host up (a `host.status` event with status up).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hostpower.config import Config
from hostpower.fencing.escalation import Step
from hostpower.fencing.service import FencingService
from hostpower.fencing.sshaccess import SshFailure, SshKeyError, engine_key, run_command
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host, HostStatus
from hostpower.model.power import Outcome

# How often the agent is asked again while it is waited for.
POLL_SECONDS = 1.0


class SoftFencing:
    name = "soft_fencing"

    def __init__(self, service: FencingService, client: AgentClient, ssh_dir: Path,
                 poll: float = POLL_SECONDS) -> None:
        self.service = service
        self.gateway = service.gateway
        self.client = client
        self.ssh_dir = ssh_dir
        self.poll = poll
        self._tried: set[int] = set()   # hosts soft-fenced since they last were up
        if self.gateway is not None:
            self.gateway.on_event(self._on_event)

    def _on_event(self, event: Event) -> None:
        if (event.kind == "host.status" and event.host_id is not None
                and event.details.get("status") == HostStatus.UP.value):
            self._tried.discard(event.host_id)

    async def consider(self, host: Host, config: Config) -> Step:
        if not host.ssh.configured or host.ssh.port is None:
            return Step.proceed("no SSH access configured")
        if host.id in self._tried:
            return Step.proceed("soft fencing was tried already since the host stopped answering")
        status = await self.service.status(host.id)
        if status.outcome is Outcome.OFF:
            await self._event(Severity.INFO, "soft_fencing.skipped", host,
                              f"soft fencing of {host.name} skipped: PM status says off",
                              {"reason": "power_off"})
            return Step.proceed("PM status says off")
        command = str(config["SshSoftFencingCommand"])
        timeout = float(config["SshSoftFencingTimeoutInSec"])
        where = f"{host.ssh.user}@{host.address}:{host.ssh.port}"
        self.gateway.check_may_act()  # connecting and restarting a service is an external action
        self._tried.add(host.id)
        await self._event(Severity.INFO, "soft_fencing.started", host,
                          f"soft fencing of {host.name}: running `{command}` over SSH as "
                          f"{where} (PM status: {status.outcome.value})",
                          {"command": command, "pm_status": status.outcome.value})
        try:
            key = await asyncio.to_thread(engine_key, self.ssh_dir)
            result = await run_command(host.address, host.ssh.port, host.ssh.user,
                                       host.ssh.host_key, key, command, timeout)
        except SshFailure as exc:
            details = {"reason": exc.kind}
            if exc.seen or exc.expected:
                details.update(seen_fingerprint=exc.seen, pinned_fingerprint=exc.expected)
            return await self._failed(host, str(exc), details)
        except SshKeyError as exc:
            return await self._failed(host, f"the engine's SSH key is unusable: {exc}",
                                      {"reason": "engine_key"})
        if result.exit_status != 0:
            said = (result.stderr.strip().splitlines()[-1:]
                    or result.stdout.strip().splitlines()[-1:])
            return await self._failed(
                host, f"`{command}` exited with status {result.exit_status} on {host.name}"
                      + (f": {said[0][:300]}" if said else ""),
                {"reason": "command_failed", "exit_status": result.exit_status})
        grace = float(config["TimeoutToResetHostInSeconds"])
        waited = await self._agent_answers(host, grace, float(config["HostHeartbeatTimeoutInSec"]))
        if waited is None:
            return await self._failed(
                host, f"its agent is still silent {grace:g} s (TimeoutToResetHostInSeconds) "
                      f"after `{command}`", {"reason": "agent_silent"})
        self._tried.discard(host.id)  # healed: the period of silence is over
        fresh = await self.gateway.host(host.id)
        if fresh.status in (HostStatus.NON_RESPONSIVE, HostStatus.CONNECTING):
            await self.gateway.set_host_status(host.id, HostStatus.UP)
            await self._event(Severity.INFO, "host.status", host,
                              f"{host.name} answers again after soft fencing: up",
                              {"status": HostStatus.UP.value})
        await self._event(Severity.INFO, "soft_fencing.healed", host,
                          f"soft fencing healed {host.name}: its agent answers again "
                          f"{waited:.1f} s after `{command}`; no power action",
                          {"command": command, "seconds": round(waited, 2)})
        return Step.spared(f"soft fencing healed it: its agent answers again after `{command}`")

    async def _agent_answers(self, host: Host, grace: float, beat_timeout: float) -> float | None:
        """Seconds until the agent answered, or None if it did not within `grace`."""
        started = time.monotonic()
        deadline = started + grace
        while True:
            left = deadline - time.monotonic()
            try:
                await self.client.heartbeat(host.address, host.agent_port,
                                            max(0.5, min(beat_timeout, left)))
                return time.monotonic() - started
            except AgentError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(self.poll, left))

    async def _failed(self, host: Host, why: str, details: dict[str, object]) -> Step:
        await self._event(Severity.WARNING, "soft_fencing.failed", host,
                          f"soft fencing of {host.name} failed: {why}; the treatment goes on "
                          f"towards hard fencing",
                          details)
        return Step.proceed(why)

    async def _event(self, severity: Severity, kind: str, host: Host, message: str,
                     details: dict[str, object]) -> None:
        await self.gateway.emit(Event(severity, kind, message, host_id=host.id,
                                      host_name=host.name, details=details))
