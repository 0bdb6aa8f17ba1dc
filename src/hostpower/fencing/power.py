"""A power action on a host with any number of agents: order groups tried in
turn, the agents of one group at once (model/agentgroups.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hostpower.fencing.executor import ChainExecutor, CommandResult
from hostpower.model.agentgroups import combine, conclusive, order_groups
from hostpower.model.inventory import FenceAgent
from hostpower.model.power import FenceAction, Outcome


@dataclass
class PowerResult:
    action: FenceAction
    outcome: Outcome
    commands: list[CommandResult] = field(default_factory=list)
    message: str = ""

    @property
    def proxies(self) -> list[dict[str, object]]:
        return [c.summary() for c in self.commands]


AgentLoader = Callable[[int], Awaitable[list[FenceAgent]]]


class HostPower:
    def __init__(self, executor: ChainExecutor, load_agents: AgentLoader) -> None:
        self.executor = executor
        self.load_agents = load_agents

    async def run(self, host_id: int, action: FenceAction, operation_id: int | None = None,
                  agents: Sequence[FenceAgent] | None = None) -> PowerResult:
        agents = list(agents) if agents is not None else await self.load_agents(host_id)
        if not agents:
            return PowerResult(action, Outcome.ERROR, message="the host has no fence agent")
        done: list[CommandResult] = []
        outcome = Outcome.ERROR
        for group in order_groups(agents):
            results = await asyncio.gather(
                *(self.executor.run(host_id, a, action, operation_id) for a in group))
            done.extend(results)
            outcome = combine(action, [r.result.outcome for r in results])
            if conclusive(action, outcome):
                return PowerResult(action, outcome, done)
        failed = "; ".join(f"{c.agent.type}@{c.agent.address}: {c.result.message or c.result.outcome.value}"
                           for c in done if not c.result.ok)
        return PowerResult(action, outcome, done, message=failed)
