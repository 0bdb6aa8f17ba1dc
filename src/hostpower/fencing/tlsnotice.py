"""A WARNING event for every agent that skips verifying its device's TLS
certificate (the fence-agents option `ssl_insecure`, honoured by the native
Redfish driver and by fence_redfish and the other HTTPS agents alike).

Such an agent can be answered by anyone on the management network who
poses as the BMC: "off" from an impostor would let the engine restart a
host's workloads while the host still runs them. It is the operator's
explicit choice, so it is allowed, and said once per agent and engine run,
the first time the engine sends the agent a command (HostPower.run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from hostpower.drivers.redfish_options import skips_verification
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent

EventSink = Callable[[Event], Awaitable[None]]
HostName = Callable[[int], Awaitable[str | None]]


class InsecureTlsNotice:
    """Emits `fence.tls_unverified` once per agent (by id; by type, address
    and port for an unsaved one, as the Test button sends)."""

    def __init__(self, emit: EventSink, host_name: HostName) -> None:
        self.emit = emit
        self.host_name = host_name
        self._warned: set[object] = set()

    async def check(self, host_id: int, agents: Sequence[FenceAgent]) -> None:
        for agent in agents:
            if not skips_verification(agent.options):
                continue
            key: object = agent.id if agent.id else (agent.type, agent.address, agent.port)
            if key in self._warned:
                continue
            self._warned.add(key)
            name = await self.host_name(host_id)
            device = f"{agent.type}@{agent.address}" + (f":{agent.port}" if agent.port else "")
            await self.emit(Event(
                Severity.WARNING, "fence.tls_unverified",
                f"{device} of {name or f'host {host_id}'} has ssl_insecure: its TLS "
                f"certificate is not verified, so an impostor on the management network "
                f"could answer for it; give the engine and the proxies the CA that signed "
                f"it (RedfishCaBundle, --redfish-ca-bundle) and remove the option",
                host_id=host_id, host_name=name,
                details={"agent_id": agent.id, "agent": device, "option": "ssl_insecure"}))
