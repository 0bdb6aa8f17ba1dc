"""A flow's host status change as Core statements on one connection.

Flows set the statuses of their hosts (reboot, connecting, down,
non-responsive) through the group-commit writer (store/groupcommit.py),
which runs Core statements: the before-flush hook that moves the store's
revisions for ORM writes (store/revisions.py) does not see them, so the
status revision is moved here, in the same transaction, explicitly.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, update

from hostpower.model.errors import NotFoundError
from hostpower.model.inventory import HostStatus
from hostpower.store import revisions
from hostpower.store.tables import HostRow, RevisionRow

_HOSTS = HostRow.__table__
_REVISIONS = RevisionRow.__table__
_SET_STATUS = update(_HOSTS).where(_HOSTS.c.id == bindparam("host_id")).values(
    status=bindparam("b_status"), non_operational_reason=None)
_MOVE_STATUS_REVISION = (update(_REVISIONS).where(_REVISIONS.c.name == revisions.STATUS)
                         .values(value=_REVISIONS.c.value + 1).returning(_REVISIONS.c.value))


def set_flow_status(conn: Connection, host_id: int, status: HostStatus) -> int:
    """Set the status of a host (a status without a non-operational reason:
    those are the monitor's to set); returns the status revision it moved to."""
    if status is HostStatus.NON_OPERATIONAL:
        raise ValueError("a flow never sets non-operational (it needs a reason)")
    if not conn.execute(_SET_STATUS, {"host_id": host_id, "b_status": status.value}).rowcount:
        raise NotFoundError("host", host_id)
    return conn.execute(_MOVE_STATUS_REVISION).scalar_one()
