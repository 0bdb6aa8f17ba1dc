"""The proxy locator: a host's effective chain and an inventory snapshot in,
ordered proxy candidates out, with every host passed over and why.

Pure logic (no I/O). The fencing executor asks it anew for every step of a
flow, so a proxy that died between the stop and the start is not used again.
Candidates of a source are computed only when the executor reaches that
source: a mass failure of 10,000 hosts must not sort the whole inventory for
every command.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field

from hostpower.config import Config
from hostpower.model.inventory import (
    Host, HostStatus, InventorySnapshot, NonOperationalReason,
)
from hostpower.model.proxychain import ProxyEntry, ProxySource, complete_chain

ENGINE = "engine"


@dataclass(frozen=True)
class Candidate:
    """A proxy to try: a host, or the engine itself (host None)."""

    entry: ProxyEntry
    host: Host | None

    @property
    def name(self) -> str:
        return self.host.name if self.host else ENGINE

    @property
    def is_engine(self) -> bool:
        return self.host is None


@dataclass(frozen=True)
class PassedOver:
    entry: ProxyEntry
    name: str
    reason: str


@dataclass
class SourcePlan:
    """The candidates one chain entry yields, best first, and those it passed over."""

    entry: ProxyEntry
    candidates: list[Candidate] = field(default_factory=list)
    passed_over: list[PassedOver] = field(default_factory=list)


def _rank(host: Host) -> int | str:
    """0 for up, 1 for non_operational for a non-network reason, else why not."""
    if host.status is HostStatus.UP:
        return 0
    if host.status is HostStatus.NON_OPERATIONAL:
        if host.non_operational_reason is NonOperationalReason.NETWORK_UNREACHABLE:
            return "non_operational (network unreachable)"
        return 1
    return f"not up (status {host.status.value})"


class ProxyLocator:
    """Indexes one inventory snapshot for fast candidate lookup."""

    def __init__(
        self,
        snapshot: InventorySnapshot,
        engine_agent_types: Set[str],
        host_agent_types: Mapping[int, Set[str]] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.engine_agent_types = engine_agent_types
        # Fence agent types each host agent reported it can run; a host not
        # in the map has not reported yet and is assumed able.
        self.host_agent_types = host_agent_types or {}
        self._by_cluster: dict[int, list[Host]] = {}
        self._by_dc: dict[int, list[Host]] = {}
        dc_of_cluster = {c.id: c.data_center_id for c in snapshot.clusters}
        for host in sorted(snapshot.hosts, key=lambda h: h.name):
            self._by_cluster.setdefault(host.cluster_id, []).append(host)
            self._by_dc.setdefault(dc_of_cluster[host.cluster_id], []).append(host)

    # -- the public questions -------------------------------------------------

    def iter_sources(
        self,
        target: Host,
        agent_type: str,
        chain: Sequence[ProxyEntry],
        load: Mapping[int, int] | None = None,
    ) -> Iterator[SourcePlan]:
        """Yield each entry's candidates in chain order, computed on demand.

        `load` counts operations each host is running now: among equally good
        candidates the least loaded comes first, spreading a mass failure.
        A host listed by an earlier entry is not listed again.
        """
        listed: dict[int, str] = {}
        for entry in chain:
            yield self.source_plan(target, agent_type, entry, listed, load or {})

    def explain(
        self, target: Host, agent_type: str, chain: Sequence[ProxyEntry]
    ) -> list[SourcePlan]:
        """Every source's plan, with out-of-scope hosts of the data center
        named too, for `hostpower proxies explain`."""
        plans = list(self.iter_sources(target, agent_type, chain))
        for plan in plans:
            if plan.entry.source is ProxySource.CLUSTER:
                dc = self.snapshot.data_center_of(target)
                for host in self._by_dc.get(dc, []):
                    if host.cluster_id != target.cluster_id:
                        cluster = self.snapshot.cluster(host.cluster_id).name
                        plan.passed_over.append(
                            PassedOver(plan.entry, host.name, f"other cluster ({cluster})"))
        return plans

    def source_plan(
        self,
        target: Host,
        agent_type: str,
        entry: ProxyEntry,
        listed: dict[int, str] | None = None,
        load: Mapping[int, int] | None = None,
    ) -> SourcePlan:
        """The candidates of one entry. Hosts in `listed` (host id -> the entry
        that listed it) are passed over; the candidates found are added to it."""
        listed = listed if listed is not None else {}
        plan = SourcePlan(entry)
        if entry.source is ProxySource.ENGINE:
            if agent_type in self.engine_agent_types:
                plan.candidates.append(Candidate(entry, None))
            else:
                plan.passed_over.append(PassedOver(
                    entry, ENGINE, f"cannot run fence_{agent_type} locally"))
            return plan

        ranked: list[tuple[int, int, str, Host]] = []
        for host in self._members(target, entry):
            reason = self._ineligible(host, target, agent_type, listed)
            if isinstance(reason, str):
                plan.passed_over.append(PassedOver(entry, host.name, reason))
            else:
                ranked.append((reason, (load or {}).get(host.id, 0), host.name, host))
        ranked.sort(key=lambda r: r[:3])
        for *_, host in ranked:
            plan.candidates.append(Candidate(entry, host))
            listed[host.id] = entry.text
        return plan

    # -- helpers ----------------------------------------------------------------

    def _members(self, target: Host, entry: ProxyEntry) -> list[Host]:
        dc = self.snapshot.data_center_of(target)
        if entry.source is ProxySource.CLUSTER:
            return self._by_cluster.get(target.cluster_id, [])
        if entry.source is ProxySource.DC:
            return self._by_dc.get(dc, [])
        if entry.source is ProxySource.OTHER_DC:
            return [h for dc_id, hosts in sorted(self._by_dc.items()) if dc_id != dc
                    for h in hosts]
        found = self.snapshot.find_host(entry.host or "")
        return [found] if found else []

    def _ineligible(
        self, host: Host, target: Host, agent_type: str, listed: Mapping[int, str]
    ) -> int | str:
        """The host's rank if eligible, else the reason it is passed over."""
        if host.id == target.id:
            return "the target itself"
        if host.id in listed:
            return f"already a candidate of entry {listed[host.id]}"
        rank = _rank(host)
        if isinstance(rank, str):
            return rank
        types = self.host_agent_types.get(host.id)
        if types is not None and agent_type not in types:
            return f"cannot run fence_{agent_type}"
        return rank


def effective_chain(own: Sequence[ProxyEntry], config: Config) -> tuple[ProxyEntry, ...]:
    """The chain a host's proxies are chosen by: its own entries (or
    FenceProxyDefaultPreferences when it has none) completed with
    FenceProxyImplicitPreferences. The one place that reads those keys."""
    return complete_chain(own, config["FenceProxyDefaultPreferences"],
                          config["FenceProxyImplicitPreferences"])
