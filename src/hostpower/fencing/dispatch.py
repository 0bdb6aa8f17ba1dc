"""Carrying a command to the device: through a host agent, or run by the
engine itself with its local drivers.

The engine's own commands run in a thread pool of their own: a driver call
blocks for as long as the device takes (seconds for a fence script), and in
asyncio's default pool (a few threads per core) a mass failure would queue
every command behind a handful, and the lease renewal and database reads,
which use that pool too, behind them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import NoDriver
from hostpower.drivers.registry import driver_for
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.proxies import Candidate

# Commands the engine runs itself at once, at most: above any sensible
# FenceConcurrencyLimit times the agents of a group; more wait their turn.
LOCAL_COMMANDS = 256


class ProxyDispatch:
    def __init__(self, client: AgentClient | None, local_drivers: list[FenceDriver],
                 prefer_native: Callable[[], bool] = lambda: True) -> None:
        self.client = client
        self.local_drivers = local_drivers
        self.prefer_native = prefer_native
        # Threads are started as commands need them, up to the bound.
        self._commands = ThreadPoolExecutor(LOCAL_COMMANDS, thread_name_prefix="hostpower-command")

    def close(self) -> None:
        """Stop taking commands; those running end in their own time."""
        self._commands.shutdown(wait=False, cancel_futures=True)

    async def run(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                  timeout: float) -> FenceResult:
        if candidate.host is None:
            try:
                driver = driver_for(spec, self.local_drivers, self.prefer_native())
            except NoDriver as exc:
                return FenceResult(action, Outcome.ERROR,
                                   exc.describe(f"the engine cannot run fence_{spec.type}"))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._commands, driver.run, spec, action, timeout)
        if self.client is None:
            return FenceResult(action, Outcome.ERROR, "no agent client configured")
        host = candidate.host
        try:
            return await self.client.fence(host.address, host.agent_port, spec, action, timeout,
                                           prefer_native=self.prefer_native())
        except AgentError as exc:
            return FenceResult(action, Outcome.ERROR, str(exc))
