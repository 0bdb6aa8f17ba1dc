"""Inventory: data centers, clusters, hosts and their power management.

Plain immutable values. The store maps them to tables; the locator and the
fencing code read them; nothing here touches I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hostpower.model.secret import Secret


class HostStatus(StrEnum):
    """Host statuses as oVirt operators know them."""

    UP = "up"
    CONNECTING = "connecting"
    NON_RESPONSIVE = "non_responsive"
    MAINTENANCE = "maintenance"
    DOWN = "down"
    REBOOT = "reboot"
    NON_OPERATIONAL = "non_operational"
    INSTALLING = "installing"
    KDUMPING = "kdumping"


class NonOperationalReason(StrEnum):
    """Why a host is non_operational; only network problems disqualify a proxy."""

    NETWORK_UNREACHABLE = "network_unreachable"
    STORAGE_UNREACHABLE = "storage_unreachable"
    CPU_INCOMPATIBLE = "cpu_incompatible"
    VERSION_INCOMPATIBLE = "version_incompatible"
    OTHER = "other"


@dataclass(frozen=True)
class ConnectivityPolicy:
    """Skip automatic fencing when this share of a cluster is unreachable."""

    enabled: bool = True
    threshold: int = 50  # percent of the cluster's hosts


@dataclass(frozen=True)
class FencingPolicy:
    enabled: bool = True
    skip_if_connectivity_broken: ConnectivityPolicy = field(default_factory=ConnectivityPolicy)
    skip_if_sd_active: bool = False


@dataclass(frozen=True)
class DataCenter:
    id: int
    name: str
    description: str = ""


@dataclass(frozen=True)
class Cluster:
    id: int
    name: str
    data_center_id: int
    description: str = ""
    fencing_policy: FencingPolicy = field(default_factory=FencingPolicy)


@dataclass(frozen=True)
class FenceAgent:
    """One PM device definition of a host. Same `order` = concurrent group."""

    id: int
    host_id: int
    type: str
    address: str
    order: int
    port: int | None = None
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    options: tuple[tuple[str, str], ...] = ()
    encrypt_options: bool = False


@dataclass(frozen=True)
class PowerManagement:
    enabled: bool = False
    automatic_pm_enabled: bool = True
    kdump_detection: bool = True
    # The host's own chain as the user wrote it (normalized spelling), or ""
    # for "no chain of its own": FenceProxyDefaultPreferences then applies.
    pm_proxies: str = ""


@dataclass(frozen=True)
class SshAccess:
    """How the engine reaches the host over SSH for soft fencing. `port`
    None: no SSH access configured (no soft fencing). `host_key` is the
    host's public key pinned at enrolment ("<type> <base64>", model/sshkey.py);
    "" until it is pinned, and the engine never connects without it."""

    port: int | None = None
    user: str = "root"
    host_key: str = ""

    @property
    def configured(self) -> bool:
        return self.port is not None


@dataclass(frozen=True)
class Host:
    id: int
    name: str
    address: str
    cluster_id: int
    status: HostStatus = HostStatus.INSTALLING
    agent_port: int = 54321
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagement = field(default_factory=PowerManagement)
    ssh: SshAccess = field(default_factory=SshAccess)

    def matches(self, name_or_address: str) -> bool:
        """Whether a chain entry such as `host7` or `10.0.0.7` names this host."""
        wanted = name_or_address.lower()
        return wanted in (self.name.lower(), self.address.lower())


@dataclass(frozen=True)
class InventorySnapshot:
    """A consistent view of the inventory, the input of the proxy locator."""

    data_centers: tuple[DataCenter, ...]
    clusters: tuple[Cluster, ...]
    hosts: tuple[Host, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cluster_by_id", {c.id: c for c in self.clusters})
        object.__setattr__(self, "_host_by_id", {h.id: h for h in self.hosts})

    def cluster(self, cluster_id: int) -> Cluster:
        return self._cluster_by_id[cluster_id]  # type: ignore[attr-defined]

    def host(self, host_id: int) -> Host:
        return self._host_by_id[host_id]  # type: ignore[attr-defined]

    def data_center_of(self, host: Host) -> int:
        return self.cluster(host.cluster_id).data_center_id

    def find_host(self, name_or_address: str) -> Host | None:
        for h in self.hosts:
            if h.matches(name_or_address):
                return h
        return None
