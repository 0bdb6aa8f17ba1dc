"""Carrying a command to the device: through a host agent, or run by the
engine itself with its local drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import NoDriver
from hostpower.drivers.registry import driver_for
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.proxies import Candidate


class ProxyDispatch:
    def __init__(self, client: AgentClient | None, local_drivers: list[FenceDriver],
                 prefer_native: Callable[[], bool] = lambda: True) -> None:
        self.client = client
        self.local_drivers = local_drivers
        self.prefer_native = prefer_native

    async def run(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                  timeout: float) -> FenceResult:
        if candidate.host is None:
            try:
                driver = driver_for(spec, self.local_drivers, self.prefer_native())
            except NoDriver as exc:
                return FenceResult(action, Outcome.ERROR,
                                   exc.describe(f"the engine cannot run fence_{spec.type}"))
            return await asyncio.to_thread(driver.run, spec, action, timeout)
        if self.client is None:
            return FenceResult(action, Outcome.ERROR, "no agent client configured")
        host = candidate.host
        try:
            return await self.client.fence(host.address, host.agent_port, spec, action, timeout,
                                           prefer_native=self.prefer_native())
        except AgentError as exc:
            return FenceResult(action, Outcome.ERROR, str(exc))
