"""A power action on a host with any number of agents: order groups tried in
turn, the agents of one group at once (model/agentgroups.py).

Within a group, the commands run as tasks of their own. When one agent's
answer settles the group's (an on, for a start or a status), the commands
still running are cancelled and awaited before the answer is returned: no
task outlives the call, and each cancelled command is an event
(ChainExecutor.cancelled says whether it had reached a proxy, which then
still carries it out). The executor alone keeps waiting for the answer of a
command under way, so that its device's turn lasts until the proxy is done
(fencing/devicegate.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hostpower.fencing.executor import ChainExecutor, CommandResult
from hostpower.model.agentgroups import combine, conclusive, goal_reached, order_groups
from hostpower.model.inventory import FenceAgent
from hostpower.model.power import FenceAction, FenceResult, Outcome


@dataclass
class PowerResult:
    action: FenceAction
    outcome: Outcome
    commands: list[CommandResult] = field(default_factory=list)
    message: str = ""
    # The answer of each group asked, in order: (agent ids of the group, outcome).
    groups: list[tuple[tuple[int, ...], Outcome]] = field(default_factory=list)

    @property
    def proxies(self) -> list[dict[str, object]]:
        return [c.summary() for c in self.commands]

    def group_answer(self, group: Sequence[FenceAgent]) -> Outcome | None:
        """What `group` answered to this action, if it was asked."""
        ids = group_key(group)
        return next((o for k, o in self.groups if k == ids), None)


def group_key(group: Sequence[FenceAgent]) -> tuple[int, ...]:
    return tuple(a.id for a in group)


AgentLoader = Callable[[int], Awaitable[list[FenceAgent]]]
# Called with the agents about to be sent a command (fencing/tlsnotice.py).
AgentsNotice = Callable[[int, Sequence[FenceAgent]], Awaitable[None]]


class HostPower:
    def __init__(self, executor: ChainExecutor, load_agents: AgentLoader,
                 notice: AgentsNotice | None = None) -> None:
        self.executor = executor
        self.load_agents = load_agents
        self.notice = notice

    async def agents(self, host_id: int) -> list[FenceAgent]:
        return await self.load_agents(host_id)

    async def run(self, host_id: int, action: FenceAction, operation_id: int | None = None,
                  agents: Sequence[FenceAgent] | None = None) -> PowerResult:
        """`action` through the host's groups in order, until one gives a
        verified answer; with `agents`, through those only."""
        agents = list(agents) if agents is not None else await self.load_agents(host_id)
        if not agents:
            return PowerResult(action, Outcome.ERROR, message="the host has no fence agent")
        if self.notice is not None:
            await self.notice(host_id, agents)
        done: list[CommandResult] = []
        groups: list[tuple[tuple[int, ...], Outcome]] = []
        outcome = Outcome.ERROR
        for group in order_groups(agents):
            results = await self.run_group(host_id, group, action, operation_id)
            done.extend(results)
            outcome = combine(action, [r.result.outcome for r in results if not r.cancelled])
            groups.append((group_key(group), outcome))
            if conclusive(action, outcome):
                return PowerResult(action, outcome, done, groups=groups)
        failed = "; ".join(f"{c.agent.type}@{c.agent.address}: {c.result.message or c.result.outcome.value}"
                           for c in done if not c.result.ok)
        return PowerResult(action, outcome, done, message=failed, groups=groups)

    async def run_group(self, host_id: int, group: Sequence[FenceAgent], action: FenceAction,
                        operation_id: int | None = None) -> list[CommandResult]:
        """`action` on every agent of one group at once; the results in the
        group's order. Once one answer settles the group's (goal_reached),
        the rest are cancelled, and awaited, before this returns."""
        records = [CommandResult(a, action, FenceResult(action, Outcome.ERROR, "not run"))
                   for a in group]
        if len(records) == 1:
            return [await self.executor.run(host_id, group[0], action, operation_id,
                                            record=records[0])]
        tasks = [asyncio.create_task(self.executor.run(host_id, a, action, operation_id, record=r),
                                     name=f"{action.value}-agent-{a.id}")
                 for a, r in zip(group, records)]
        winner: CommandResult | None = None
        try:
            for next_done in asyncio.as_completed(tasks):
                command = await next_done
                if goal_reached(action, command.result.outcome):
                    winner = command
                    break
        finally:
            # Whatever ends the wait (an answer that settles the group, an
            # error, the flow's own cancellation), no command task outlives it.
            running = [t for t in tasks if not t.done()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for task in tasks:  # an error beside the settling answer is not lost silently
                if task.done() and not task.cancelled():
                    task.exception()
        if winner is not None:
            reason = (f"{winner.agent.type}@{winner.agent.address} of the same group already "
                      f"answered {winner.result.outcome.value}")
            for task, record in zip(tasks, records):
                if task.cancelled():
                    await self.executor.cancelled(host_id, record, reason, operation_id)
        return records
