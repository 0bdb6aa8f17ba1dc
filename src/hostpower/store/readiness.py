"""Fencing readiness per host (table `readiness`), as the PM health check
found it: written by the engine that owns the host, read alike by every
engine's API and by the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostpower.model.errors import NotFoundError
from hostpower.model.readiness import HostReadiness, PathCheck, Readiness
from hostpower.store.configstore import ConfigStore
from hostpower.store.tables import ClusterRow, HostRow, ReadinessRow


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ReadinessStore:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- the health check's writes ---------------------------------------------------------

    def save(self, r: HostReadiness) -> Readiness | None:
        """Store the verdict; returns the readiness stored before (None if none was)."""
        now = r.checked_at or datetime.now(UTC)
        checks = json.dumps([c.as_dict() for c in r.checks])
        row = self.s.get(ReadinessRow, r.host_id, with_for_update=True)
        if row is None:
            self.s.add(ReadinessRow(host_id=r.host_id, readiness=r.readiness.value, paths=r.paths,
                                    checks=checks, message=r.message, checked_at=now,
                                    changed_at=now, engine=r.engine))
            self.s.flush()
            return None
        previous = Readiness(row.readiness)
        if previous is not r.readiness:
            row.changed_at = now
        row.readiness, row.paths, row.checks = r.readiness.value, r.paths, checks
        row.message, row.checked_at, row.engine = r.message, now, r.engine
        self.s.flush()
        return previous

    def delete(self, host_id: int) -> bool:
        row = self.s.get(ReadinessRow, host_id)
        if row is None:
            return False
        self.s.delete(row)
        self.s.flush()
        return True

    def checked_hosts(self) -> set[int]:
        return set(self.s.scalars(select(ReadinessRow.host_id)))

    # -- the readers' view ---------------------------------------------------------------------

    def report(self, host_id: int | None = None) -> list[HostReadiness]:
        """Every host of the inventory (or the one named; NotFoundError if it
        is not), by name: its stored verdict, or `unknown` with the reason."""
        q = (select(HostRow, ClusterRow.name, ReadinessRow)
             .join(ClusterRow, ClusterRow.id == HostRow.cluster_id)
             .outerjoin(ReadinessRow, ReadinessRow.host_id == HostRow.id)
             .order_by(HostRow.name))
        if host_id is not None:
            q = q.where(HostRow.id == host_id)
        rows = self.s.execute(q).all()
        if host_id is not None and not rows:
            raise NotFoundError("host", host_id)
        checking = ConfigStore(self.s).load()["PMHealthCheckEnabled"]
        return [_entry(host, cluster, row, checking) for host, cluster, row in rows]


def _entry(host: HostRow, cluster: str, row: ReadinessRow | None,
           checking: bool) -> HostReadiness:
    if not host.pm_enabled:
        return HostReadiness(host.id, host.name, Readiness.UNKNOWN, 0, cluster=cluster,
                             message=f"{host.name}: power management is disabled, so it "
                                     f"cannot be fenced and is not checked")
    if row is None:
        why = ("the next round of the PM health check will check it" if checking else
               "the PM health check is off (PMHealthCheckEnabled)")
        return HostReadiness(host.id, host.name, Readiness.UNKNOWN, 0, cluster=cluster,
                             message=f"{host.name} has not been checked yet: {why}")
    return HostReadiness(
        host.id, host.name, Readiness(row.readiness), row.paths,
        tuple(PathCheck.from_dict(c) for c in json.loads(row.checks or "[]")),
        row.message, _utc(row.checked_at), _utc(row.changed_at), row.engine, cluster=cluster)
