"""The inventory repository: data centers, clusters, hosts and fence agents.

Every write validates first and raises ValidationError, NotFoundError or
ConflictError before anything is stored; the caller's session rolls back.
"""

from __future__ import annotations

import json
from collections.abc import Set
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from hostpower.model import sshkey, validate
from hostpower.model.agenttypes import STANDARD_TYPES
from hostpower.model.errors import ConflictError, NotFoundError, ValidationError
from hostpower.model.inventory import (
    Cluster, ConnectivityPolicy, DataCenter, FenceAgent, FencingPolicy, Host, HostStatus,
    InventorySnapshot, NonOperationalReason, PowerManagement, SshAccess,
)
from hostpower.model.proxychain import (
    ProxySource, check_chain_hosts, format_chain, parse_chain,
)
from hostpower.model.secret import Secret
from hostpower.store.crypto import SecretBox
from hostpower.store.tables import MAX_ID, ClusterRow, DataCenterRow, FenceAgentRow, HostRow

_KEEP = object()  # "field not given": keep the stored value
_AGENT_TABLE, _HOST_TABLE = FenceAgentRow.__table__, HostRow.__table__
_AGENTS_OF = (select(*(c.label("order") if c.name == "agent_order" else c for c in _AGENT_TABLE.c))
              .where(_AGENT_TABLE.c.host_id == bindparam("host_id"))
              .order_by(_AGENT_TABLE.c.agent_order, _AGENT_TABLE.c.id))
_STATUSES = select(_HOST_TABLE.c.id, _HOST_TABLE.c.status, _HOST_TABLE.c.non_operational_reason)
_HOST_EXISTS = select(_HOST_TABLE.c.id).where(_HOST_TABLE.c.id == bindparam("host_id"))


@dataclass(frozen=True)
class AgentInput:
    """A fence agent as the user gives it; password None keeps the stored one."""

    type: str
    address: str
    port: int | None = None
    username: str = ""
    password: Secret | None = None
    options: tuple[tuple[str, str], ...] | None = ()   # None on update: keep the stored ones
    order: int | None = None
    encrypt_options: bool = False


@dataclass(frozen=True)
class HostInput:
    name: str
    address: str
    cluster_id: int
    status: HostStatus = HostStatus.INSTALLING
    agent_port: int = 54321
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagement = field(default_factory=PowerManagement)
    ssh: SshAccess = field(default_factory=SshAccess)


def _checked_ssh(ssh: SshAccess) -> SshAccess:
    return SshAccess(port=validate.port(ssh.port, "ssh.port"),
                     user=sshkey.user(ssh.user, "ssh.user"),
                     host_key=sshkey.host_key(ssh.host_key, "ssh.host_key"))


def _status(status: HostStatus, reason: NonOperationalReason | None) -> None:
    if status is HostStatus.NON_OPERATIONAL and reason is None:
        raise ValidationError("non_operational_reason", "is required when status is non_operational")
    if status is not HostStatus.NON_OPERATIONAL and reason is not None:
        raise ValidationError("non_operational_reason", "is only allowed when status is non_operational")


class Inventory:
    def __init__(self, session: Session | Connection, box: SecretBox | None = None,
                 known_types: Set[str] = STANDARD_TYPES) -> None:
        self.s = session
        self.box = box
        self.known_types = known_types

    # -- data centers ---------------------------------------------------------

    def add_data_center(self, name: str, description: str = "") -> DataCenter:
        name = validate.name(name)
        self._unique(DataCenterRow, name, "name")
        row = DataCenterRow(name=name, description=description or "")
        self.s.add(row)
        self.s.flush()
        return _dc(row)

    def data_centers(self) -> list[DataCenter]:
        return [_dc(r) for r in self.s.scalars(select(DataCenterRow).order_by(DataCenterRow.name))]

    def data_center(self, dc_id: int) -> DataCenter:
        return _dc(self._dc_row(dc_id))

    def update_data_center(self, dc_id: int, name: str | None = None,
                           description: str | None = None) -> DataCenter:
        row = self._dc_row(dc_id)
        if name is not None:
            name = validate.name(name)
            self._unique(DataCenterRow, name, "name", row.id)
            row.name = name
        if description is not None:
            row.description = description
        self.s.flush()
        return _dc(row)

    def delete_data_center(self, dc_id: int) -> None:
        row = self._dc_row(dc_id)
        n = self.s.scalar(select(func.count()).where(ClusterRow.data_center_id == dc_id))
        if n:
            raise ConflictError("data_center", f"{row.name!r} still holds {n} cluster(s)")
        self.s.delete(row)
        self.s.flush()

    # -- clusters -------------------------------------------------------------

    def add_cluster(self, name: str, data_center_id: int, description: str = "",
                    fencing_policy: FencingPolicy | None = None) -> Cluster:
        name = validate.name(name)
        self._dc_row(data_center_id, field="data_center")
        self._unique(ClusterRow, name, "name")
        row = ClusterRow(name=name, data_center_id=data_center_id, description=description or "")
        _apply_policy(row, fencing_policy or FencingPolicy())
        self.s.add(row)
        self.s.flush()
        return _cluster(row)

    def clusters(self) -> list[Cluster]:
        return [_cluster(r) for r in self.s.scalars(select(ClusterRow).order_by(ClusterRow.name))]

    def cluster(self, cluster_id: int) -> Cluster:
        return _cluster(self._cluster_row(cluster_id))

    def update_cluster(self, cluster_id: int, name: str | None = None,
                       description: str | None = None, data_center_id: int | None = None,
                       fencing_policy: FencingPolicy | None = None) -> Cluster:
        row = self._cluster_row(cluster_id)
        if name is not None:
            name = validate.name(name)
            self._unique(ClusterRow, name, "name", row.id)
            row.name = name
        if description is not None:
            row.description = description
        if data_center_id is not None and data_center_id != row.data_center_id:
            self._dc_row(data_center_id, field="data_center")
            row.data_center_id = data_center_id
        if fencing_policy is not None:
            _apply_policy(row, fencing_policy)
        self.s.flush()
        return _cluster(row)

    def delete_cluster(self, cluster_id: int) -> None:
        row = self._cluster_row(cluster_id)
        n = self.s.scalar(select(func.count()).where(HostRow.cluster_id == cluster_id))
        if n:
            raise ConflictError("cluster", f"{row.name!r} still holds {n} host(s)")
        self.s.delete(row)
        self.s.flush()

    # -- hosts ----------------------------------------------------------------

    def add_host(self, data: HostInput) -> Host:
        name = validate.host_name(data.name)
        address = validate.address(data.address)
        self._cluster_row(data.cluster_id, field="cluster")
        _status(data.status, data.non_operational_reason)
        self._host_identity_free(name, address, None)
        provisional = Host(id=-1, name=name, address=address, cluster_id=data.cluster_id)
        chain = self._checked_chain(data.power_management.pm_proxies, provisional)
        ssh = _checked_ssh(data.ssh)
        row = HostRow(
            name=name, address=address, cluster_id=data.cluster_id, status=data.status.value,
            agent_port=validate.port(data.agent_port, "port"),
            non_operational_reason=_reason_text(data.non_operational_reason),
        )
        _apply_pm(row, replace(data.power_management, pm_proxies=chain))
        _apply_ssh(row, ssh)
        self.s.add(row)
        self.s.flush()
        return self._host(row)

    def hosts(self) -> list[Host]:
        rows = self.s.scalars(select(HostRow).order_by(HostRow.name))
        return [self._host(r) for r in rows]

    def host(self, host_id: int) -> Host:
        return self._host(self._host_row(host_id))

    def find_host(self, name_or_address: str) -> Host:
        """A host by id, name or address (case-insensitive)."""
        wanted = name_or_address.strip().lower()
        row = self.s.scalar(select(HostRow).where(
            (func.lower(HostRow.name) == wanted) | (func.lower(HostRow.address) == wanted)))
        if row is None and wanted.isascii() and wanted.isdigit() and int(wanted) <= MAX_ID:
            row = self.s.get(HostRow, int(wanted))
        if row is None:
            raise NotFoundError("host", name_or_address)
        return self._host(row)

    def update_host(self, host_id: int, *, name: str | None = None, address: str | None = None,
                    cluster_id: int | None = None, status: HostStatus | None = None,
                    agent_port: int | None = None,
                    non_operational_reason: object = _KEEP,
                    power_management: PowerManagement | None = None,
                    ssh: SshAccess | None = None) -> Host:
        row = self._host_row(host_id)
        new_name = validate.host_name(name) if name is not None else row.name
        new_address = validate.address(address) if address is not None else row.address
        if (new_name.lower(), new_address.lower()) != (row.name.lower(), row.address.lower()):
            self._host_identity_free(new_name, new_address, row.id)
            old = {row.name.lower(), row.address.lower()} - {new_name.lower(), new_address.lower()}
            self._not_named_in_chains(row, old)
        if cluster_id is not None and cluster_id != row.cluster_id:
            self._cluster_row(cluster_id, field="cluster")
        new_status = status if status is not None else HostStatus(row.status)
        if non_operational_reason is _KEEP:
            reason = (_reason(row.non_operational_reason)
                      if new_status is HostStatus.NON_OPERATIONAL else None)
        else:
            reason = non_operational_reason  # type: ignore[assignment]
        _status(new_status, reason)  # type: ignore[arg-type]
        if agent_port is not None:
            validate.port(agent_port, "port")
        pm = power_management
        chain = None
        if pm is not None:
            target = Host(id=row.id, name=new_name, address=new_address,
                          cluster_id=cluster_id or row.cluster_id)
            chain = self._checked_chain(pm.pm_proxies, target)
        checked_ssh = _checked_ssh(ssh) if ssh is not None else None
        # Everything checked: now write.
        row.name, row.address = new_name, new_address
        if cluster_id is not None:
            row.cluster_id = cluster_id
        row.status = new_status.value
        if agent_port is not None:
            row.agent_port = agent_port
        row.non_operational_reason = _reason_text(reason)  # type: ignore[arg-type]
        if pm is not None:
            _apply_pm(row, replace(pm, pm_proxies=chain or ""))
        if checked_ssh is not None:
            _apply_ssh(row, checked_ssh)
        self.s.flush()
        return self._host(row)

    def set_status(self, host_id: int, status: HostStatus,
                   reason: NonOperationalReason | None = None) -> Host:
        return self.update_host(host_id, status=status, non_operational_reason=reason)

    def delete_host(self, host_id: int) -> None:
        row = self._host_row(host_id)
        self._not_named_in_chains(row, {row.name.lower(), row.address.lower()})
        self.s.delete(row)
        self.s.flush()

    # -- fence agents ---------------------------------------------------------

    def add_agent(self, host_id: int, data: AgentInput) -> FenceAgent:
        host = self._host_row(host_id)
        checked = self._checked_agent(data)
        order = data.order
        if order is None:
            order = (max((a.order for a in host.agents), default=0)) + 1
        row = FenceAgentRow(host_id=host_id, order=validate.order(order), **checked)
        row.password_encrypted = self._encrypt(data.password.reveal() if data.password else "")
        self.s.add(row)
        self.s.flush()
        return self._agent(row)

    def agents(self, host_id: int) -> list[FenceAgent]:
        host = self._host_row(host_id)
        return [self._agent(r) for r in sorted(host.agents, key=lambda a: (a.order, a.id))]

    def stored_agents(self, host_id: int) -> list[FenceAgent]:
        """A host's agents as committed, by Core statements built once (the
        engine reads them for every host of a mass failure, on a bare
        Connection of the gateway's reader thread). Within a Session that has
        unflushed changes, use `agents`."""
        rows = self.s.execute(_AGENTS_OF, {"host_id": host_id}).all()
        if not rows and self.s.execute(_HOST_EXISTS, {"host_id": host_id}).first() is None:
            raise NotFoundError("host", host_id)
        return [self._agent(r) for r in rows]

    def agent(self, host_id: int, agent_id: int) -> FenceAgent:
        return self._agent(self._agent_row(host_id, agent_id))

    def update_agent(self, host_id: int, agent_id: int, data: AgentInput) -> FenceAgent:
        row = self._agent_row(host_id, agent_id)
        if data.options is None:
            data = replace(data, options=self._agent(row).options)
        checked = self._checked_agent(data)
        order = validate.order(data.order) if data.order is not None else row.order
        for k, v in checked.items():
            setattr(row, k, v)
        row.order = order
        if data.password is not None:
            row.password_encrypted = self._encrypt(data.password.reveal())
        self.s.flush()
        return self._agent(row)

    def delete_agent(self, host_id: int, agent_id: int) -> None:
        self.s.delete(self._agent_row(host_id, agent_id))
        self.s.flush()

    # -- snapshot -------------------------------------------------------------

    def snapshot(self) -> InventorySnapshot:
        """The whole inventory at once (fence agents are read per host, when needed)."""
        dcs = tuple(_dc(r) for r in self.s.scalars(select(DataCenterRow)))
        clusters = tuple(_cluster(r) for r in self.s.scalars(select(ClusterRow)))
        hosts = tuple(self._host(r) for r in self.s.scalars(select(HostRow)))
        return InventorySnapshot(dcs, clusters, hosts)

    def with_current_statuses(self, snapshot: InventorySnapshot) -> InventorySnapshot:
        """`snapshot` with every host's status as stored now (one narrow query)."""
        now = {i: (st, r) for i, st, r in self.s.execute(_STATUSES)}
        hosts, changed = [], False
        for h in snapshot.hosts:
            stored = now.get(h.id)
            if stored is None:  # deleted meanwhile
                changed = True
                continue
            status, reason = stored
            if status != h.status.value or reason != _reason_text(h.non_operational_reason):
                h = replace(h, status=HostStatus(status), non_operational_reason=_reason(reason))
                changed = True
            hosts.append(h)
        if not changed:  # the same snapshot: what was built from it (the locator) still holds
            return snapshot
        return InventorySnapshot(snapshot.data_centers, snapshot.clusters, tuple(hosts))

    # -- internals ------------------------------------------------------------

    def _unique(self, table: type, value: str, field: str, own_id: int | None = None) -> None:
        column = getattr(table, field)
        clash = self.s.scalar(select(table).where(func.lower(column) == value.lower()))
        if clash is not None and clash.id != own_id:
            raise ConflictError(field, f"{value!r} is already in use")

    def _host_identity_free(self, name: str, address: str, own_id: int | None) -> None:
        """A chain entry must name exactly one host: names and addresses are
        unique across both columns, case-insensitively."""
        for column, value in (("name", name), ("address", address)):
            v = value.lower()
            clash = self.s.scalar(select(HostRow).where(
                ((func.lower(HostRow.name) == v) | (func.lower(HostRow.address) == v))
                & (HostRow.id != (own_id or -1))))
            if clash is not None:
                raise ConflictError(column, f"{value!r} is already used by host {clash.name!r}")

    def _not_named_in_chains(self, row: HostRow, names: set[str]) -> None:
        if not names:
            return
        users = []
        for other in self.s.scalars(select(HostRow).where(
                HostRow.id != row.id, HostRow.pm_proxy_preferences != "")):
            for entry in parse_chain(other.pm_proxy_preferences):
                if entry.source is ProxySource.HOST and entry.key in names:
                    users.append(other.name)
        if users:
            raise ConflictError(
                "host", f"{row.name!r} is named in the proxy chain of {', '.join(sorted(users))}; "
                        f"remove it there first")

    def _checked_chain(self, spec: str, target: Host) -> str:
        entries = parse_chain(spec)
        if any(e.source is ProxySource.HOST for e in entries):
            hosts = [self._host(r) for r in self.s.scalars(select(HostRow))]
            hosts = [h for h in hosts if h.id != target.id] + [target]
            check_chain_hosts(entries, target, hosts)
        return format_chain(entries)

    def _checked_agent(self, data: AgentInput) -> dict[str, object]:
        opts = validate.options(data.options or ())
        if data.password is not None:
            validate.single_line(data.password.reveal(), "password", secret=True)
        return {
            "type": validate.agent_type(data.type, self.known_types),
            "address": validate.address(data.address),
            "port": validate.port(data.port),
            "username": validate.single_line(data.username or "", "username"),
            "options": self._encode_options(opts, data.encrypt_options),
            "encrypt_options": bool(data.encrypt_options),
        }

    def _encode_options(self, opts: tuple[tuple[str, str], ...], encrypt: bool) -> str:
        text = json.dumps([list(p) for p in opts])
        return self._encrypt(text) if encrypt else text

    def _encrypt(self, text: str) -> str:
        if not text:
            return ""
        if self.box is None:
            raise RuntimeError("no secret key loaded: cannot store secrets")
        return self.box.encrypt(text)

    def _decrypt(self, token: str) -> str:
        if not token:
            return ""
        if self.box is None:
            raise RuntimeError("no secret key loaded: cannot read secrets")
        return self.box.decrypt(token)

    def _dc_row(self, dc_id: int, field: str | None = None) -> DataCenterRow:
        row = self.s.get(DataCenterRow, dc_id) if isinstance(dc_id, int) else None
        if row is None:
            if field:
                raise ValidationError(field, f"data center {dc_id!r} does not exist")
            raise NotFoundError("data center", dc_id)
        return row

    def _cluster_row(self, cluster_id: int, field: str | None = None) -> ClusterRow:
        row = self.s.get(ClusterRow, cluster_id) if isinstance(cluster_id, int) else None
        if row is None:
            if field:
                raise ValidationError(field, f"cluster {cluster_id!r} does not exist")
            raise NotFoundError("cluster", cluster_id)
        return row

    def _host_row(self, host_id: int) -> HostRow:
        row = self.s.get(HostRow, host_id) if isinstance(host_id, int) else None
        if row is None:
            raise NotFoundError("host", host_id)
        return row

    def _agent_row(self, host_id: int, agent_id: int) -> FenceAgentRow:
        row = self.s.get(FenceAgentRow, agent_id)
        if row is None or row.host_id != host_id:
            raise NotFoundError("fence agent", agent_id)
        return row

    def _host(self, row: HostRow) -> Host:
        return Host(
            id=row.id, name=row.name, address=row.address, cluster_id=row.cluster_id,
            status=HostStatus(row.status), agent_port=row.agent_port,
            non_operational_reason=_reason(row.non_operational_reason),
            power_management=PowerManagement(
                enabled=row.pm_enabled, automatic_pm_enabled=row.pm_automatic,
                kdump_detection=row.pm_kdump_detection,
                pm_proxies=row.pm_proxy_preferences,
            ),
            ssh=SshAccess(port=row.ssh_port, user=row.ssh_user, host_key=row.ssh_host_key),
        )

    def _agent(self, row: FenceAgentRow) -> FenceAgent:
        text = self._decrypt(row.options) if row.encrypt_options else row.options
        return FenceAgent(
            id=row.id, host_id=row.host_id, type=row.type, address=row.address,
            order=row.order, port=row.port, username=row.username,
            password=Secret(self._decrypt(row.password_encrypted)),
            options=tuple((k, v) for k, v in json.loads(text or "[]")),
            encrypt_options=row.encrypt_options,
        )


def _dc(row: DataCenterRow) -> DataCenter:
    return DataCenter(id=row.id, name=row.name, description=row.description)


def _cluster(row: ClusterRow) -> Cluster:
    return Cluster(
        id=row.id, name=row.name, data_center_id=row.data_center_id,
        description=row.description,
        fencing_policy=FencingPolicy(
            enabled=row.fencing_enabled,
            skip_if_connectivity_broken=ConnectivityPolicy(
                row.skip_if_connectivity_broken, row.connectivity_threshold),
            skip_if_sd_active=row.skip_if_sd_active,
        ),
    )


def _apply_policy(row: ClusterRow, policy: FencingPolicy) -> None:
    threshold = validate.percent(policy.skip_if_connectivity_broken.threshold,
                                 "fencing_policy.skip_if_connectivity_broken.threshold")
    row.fencing_enabled = policy.enabled
    row.skip_if_connectivity_broken = policy.skip_if_connectivity_broken.enabled
    row.connectivity_threshold = threshold
    row.skip_if_sd_active = policy.skip_if_sd_active


def _apply_pm(row: HostRow, pm: PowerManagement) -> None:
    row.pm_enabled = pm.enabled
    row.pm_automatic = pm.automatic_pm_enabled
    row.pm_kdump_detection = pm.kdump_detection
    row.pm_proxy_preferences = pm.pm_proxies


def _apply_ssh(row: HostRow, ssh: SshAccess) -> None:
    row.ssh_port = ssh.port
    row.ssh_user = ssh.user
    row.ssh_host_key = ssh.host_key


def _reason(text: str | None) -> NonOperationalReason | None:
    return NonOperationalReason(text) if text else None


def _reason_text(reason: NonOperationalReason | None) -> str | None:
    return reason.value if reason else None
