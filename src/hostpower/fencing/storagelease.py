"""The storage lease precaution: do not power-cycle a host that is still
renewing its lease on the shared storage (cluster policy `skip_if_sd_active`).

Such a host is alive and only cut off from this engine: power-cycling it
would kill its workloads for nothing. oVirt's rule, followed here: the
check is made by a proxy *host* (the engine itself sees no storage), and
only a lease seen alive spares the host; a lease stale or absent, or no
proxy able to tell, lets fencing go on (VDSM's `fenceNode` fences unless
the lease status says HOST_STATUS_LIVE, also when it cannot get that status).

Proxies are chosen through the target's proxy chain as for a fence command
(proxies.py: the chain's entries in order, eligible hosts only, the target
never, least loaded first), except the `engine` entry, and without regard
to fence agent types (a lease check runs no fence agent). The first proxy
whose answer decides (model/storagelease.py: alive, stale or absent) wins;
a proxy that fails, or cannot tell (it is not on the shared storage, or has
watched the lease too briefly), hands over to the next, at most
`MAX_PROXIES_ASKED` of them.

Events: `storage_lease.alive` (INFO, once while the host stays spared),
`storage_lease.stale` (INFO: fencing goes on), `storage_lease.unknown`
(WARNING: nobody could tell, fencing goes on); the escalation adds its
`treatment.spared`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hostpower.config import Config
from hostpower.fencing.escalation import Step
from hostpower.fencing.gateway import EngineGateway
from hostpower.hostagent.client import AgentError
from hostpower.hostagent.wire import StorageLeaseAnswer
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host
from hostpower.model.proxychain import ProxySource, parse_chain
from hostpower.model.storagelease import LeaseJudgement, LeaseState, judge
from hostpower.proxies import ProxyLocator, effective_chain

log = logging.getLogger("hostpower.monitor")

MAX_PROXIES_ASKED = 8
KEY = "HostStorageLeaseAliveCheckingInterval"
# A host found alive again within this many seconds of the last time is the
# same episode (the monitor asks every round): `storage_lease.alive` is not told again.
RETELL_AFTER = 30.0


class LeaseClient(Protocol):
    async def storage_lease(self, address: str, port: int, host: str,
                            timeout: float) -> StorageLeaseAnswer: ...


@dataclass(frozen=True)
class Asked:
    """One proxy asked, and what came of it."""

    proxy: str
    source: str
    outcome: str  # a LeaseState value, or "error"
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"proxy": self.proxy, "source": self.source, "outcome": self.outcome,
                "detail": self.detail}


class StorageLease:
    """The `storage_lease` precaution (fencing/escalation.py)."""

    name = "storage_lease"

    def __init__(self, gateway: EngineGateway, client: LeaseClient | None,
                 load: Mapping[int, int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`load`: commands each proxy host runs now (the executor's), to spread checks."""
        self.gateway = gateway
        self.client = client
        self.load = load if load is not None else {}
        self.clock = clock
        self._alive_at: dict[int, float] = {}  # host -> when its lease was last found alive

    async def consider(self, host: Host, config: Config) -> Step:
        snapshot, _ = await self.gateway.state()
        if not snapshot.cluster(host.cluster_id).fencing_policy.skip_if_sd_active:
            return Step.proceed()
        window = float(config[KEY])
        timeout = float(config["HostHeartbeatTimeoutInSec"])
        chain = effective_chain(parse_chain(host.power_management.pm_proxies), config)
        # No fence agent runs: every host is able, and the engine sees no storage.
        locator = ProxyLocator(snapshot, frozenset(), {})
        target = snapshot.host(host.id)
        listed: dict[int, str] = {}
        asked: list[Asked] = []
        for entry in chain:
            if entry.source is ProxySource.ENGINE:
                continue
            plan = locator.source_plan(target, "", entry, listed, self.load)
            for candidate in plan.candidates:
                if len(asked) >= MAX_PROXIES_ASKED:
                    break
                proxy = candidate.host
                assert proxy is not None
                self.gateway.check_may_act()
                if self.client is None:
                    asked.append(Asked(proxy.name, entry.text, "error", "no agent client"))
                    continue
                try:
                    answer = await self.client.storage_lease(proxy.address, proxy.agent_port,
                                                             host.name, timeout)
                except AgentError as exc:
                    asked.append(Asked(proxy.name, entry.text, "error", str(exc)))
                    continue
                verdict = judge(watching=answer.watching, exists=answer.exists,
                                renewed_ago=answer.renewed_ago,
                                watched_for=answer.watched_for, window=window)
                why = verdict.reason + (f" ({answer.detail})" if answer.detail else "")
                asked.append(Asked(proxy.name, entry.text, verdict.state.value, why))
                if verdict.state is not LeaseState.UNKNOWN:
                    return await self._decided(host, asked, answer, verdict, window)
        return await self._unknown(host, chain_text=",".join(e.text for e in chain), asked=asked)

    async def _decided(self, host: Host, asked: list[Asked], answer: StorageLeaseAnswer,
                       verdict: LeaseJudgement, window: float) -> Step:
        last = asked[-1]
        details = {"proxy": last.proxy, "source": last.source, "state": verdict.state.value,
                   "renewed_ago": answer.renewed_ago, "watched_for": answer.watched_for,
                   "counter": answer.counter, "boot_id": answer.boot_id, "window": window,
                   "asked": [a.as_dict() for a in asked]}
        seen = f"seen by proxy {last.proxy} ({last.source})"
        if verdict.state is LeaseState.ALIVE:
            now = self.clock()
            before = self._alive_at.get(host.id)
            self._alive_at[host.id] = now
            if before is None or now - before > RETELL_AFTER:
                await self._event(Severity.INFO, "storage_lease.alive", host,
                                  f"storage lease of {host.name} {verdict.reason}, {seen}, "
                                  f"within {KEY} ({window:g} s): it is alive on the shared "
                                  f"storage", details)
            else:
                log.debug("storage lease of %s still alive: %s, %s", host.name,
                          verdict.reason, seen)
            return Step.spared(f"its storage lease was {verdict.reason} (seen by proxy "
                               f"{last.proxy}): it is alive but cut off from this engine")
        self._alive_at.pop(host.id, None)
        await self._event(Severity.INFO, "storage_lease.stale", host,
                          f"storage lease of {host.name}: {verdict.reason}, {seen}; "
                          f"{KEY} is {window:g} s: fencing goes on", details)
        return Step.proceed(verdict.reason)

    async def _unknown(self, host: Host, chain_text: str, asked: list[Asked]) -> Step:
        self._alive_at.pop(host.id, None)
        tried = "; ".join(f"{a.proxy} ({a.source}): {a.detail}" for a in asked)
        await self._event(Severity.WARNING, "storage_lease.unknown", host,
                          f"no proxy could tell whether the storage lease of {host.name} is "
                          f"alive ({tried or f'no eligible proxy host in chain {chain_text}'}); "
                          f"fencing goes on, as oVirt does when it cannot check",
                          {"asked": [a.as_dict() for a in asked], "chain": chain_text})
        return Step.proceed("storage lease not checked")

    async def _event(self, severity: Severity, kind: str, host: Host, message: str,
                     details: dict[str, object]) -> None:
        await self.gateway.emit(Event(severity, kind, message, host_id=host.id,
                                      host_name=host.name, details=details))
