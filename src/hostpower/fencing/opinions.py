"""A second opinion before automatic fencing, when several engines run.

An engine that finds hosts non-responsive may be the one whose network is
broken. Before it fences them it asks every other live engine, through the
database (store/probes.py), to heartbeat those hosts' agents. A host any
peer reaches is not fenced: the asking engine is outvoted and says so in an
event. A host nobody reaches is fenced; peers that did not answer in time
are named in the event, and do not hold the fence back (a peer that cannot
answer is no evidence that the host lives).

Every engine answers its peers' probes (`answer_open`), whichever hosts it
owns: the point is a view from another place in the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hostpower.fencing.gateway import EngineGateway
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.inventory import Host
from hostpower.store.probes import Answer, Probes

POLL = 0.1          # seconds between looks for peers' answers
MAX_AGE = 60.0      # a probe older than this is not answered any more
KEEP = 3600.0       # probes are forgotten after an hour
EXTRA_WAIT = 2.0    # peers answer within their heartbeat timeout plus this


@dataclass(frozen=True)
class Verdict:
    host: Host
    reached_by: list[Answer]     # peers that reach the host's agent
    not_reached_by: list[Answer]
    silent: list[str]            # peers that did not answer in time

    @property
    def outvoted(self) -> bool:
        return bool(self.reached_by)


class SecondOpinion:
    def __init__(self, gateway: EngineGateway, client: AgentClient) -> None:
        self.gateway = gateway
        self.client = client

    async def ask(self, hosts: Sequence[Host], peers: Sequence[str],
                  heartbeat_timeout: float) -> list[Verdict]:
        """Ask `peers` about `hosts`; waits until every peer answered for
        every host, or the heartbeat timeout plus EXTRA_WAIT passed."""
        me = self.gateway.runner.name
        probes = await self.gateway.run(lambda s: Probes(s).ask([h.id for h in hosts], me))
        deadline = time.monotonic() + heartbeat_timeout + EXTRA_WAIT
        wanted = set(peers)
        while True:
            answers = await self.gateway.run(lambda s: Probes(s).answers(probes.values()))
            complete = all(wanted <= {a.engine for a in got} for got in answers.values())
            if complete or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL)
        verdicts = []
        for host in hosts:
            got = [a for a in answers[probes[host.id]] if a.engine in wanted]
            verdicts.append(Verdict(host, [a for a in got if a.reachable],
                                    [a for a in got if not a.reachable],
                                    sorted(wanted - {a.engine for a in got})))
        return verdicts

    async def answer_open(self, heartbeat_timeout: float) -> int:
        """Heartbeat the hosts of peers' unanswered probes and answer them;
        returns how many probes were answered."""
        me = self.gateway.runner.name
        open_probes = await self.gateway.run(lambda s: Probes(s).open_for(me, MAX_AGE))
        if not open_probes:
            return 0
        snapshot, _config = await self.gateway.state()
        hosts = {h.id: h for h in snapshot.hosts}
        found = await asyncio.gather(*(self._reach(hosts.get(host_id), heartbeat_timeout)
                                       for _probe, host_id in open_probes))

        def record(s) -> None:  # type: ignore[no-untyped-def]
            probes = Probes(s)
            for (probe_id, _host), (reachable, detail) in zip(open_probes, found):
                probes.answer(probe_id, me, reachable, detail)
            probes.prune(KEEP)
        await self.gateway.run(record)
        return len(open_probes)

    async def _reach(self, host: Host | None, timeout: float) -> tuple[bool, str]:
        if host is None:
            return False, "no such host in this engine's inventory"
        started = time.monotonic()
        try:
            await self.client.heartbeat(host.address, host.agent_port, timeout)
        except AgentError as exc:
            return False, str(exc)
        return True, f"its agent answered in {1000 * (time.monotonic() - started):.0f} ms"
