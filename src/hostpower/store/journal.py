"""The fence journal: operations and their steps, written before each
external action so that an engine that dies mid-flow can resume it.

Each running operation is reserved by the engine incarnation that runs it
(`Runner`) with a fencing token. Every step is recorded only while the
runner still holds that token, checked in the statement that records it:
a takeover (`take_over`) increments the token, so a runner that was paused
or cut off and wakes up finds its reservation gone (`ReservationLost`)
before it can send another command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, String, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostpower.model.errors import HostpowerError, NotFoundError
from hostpower.model.operations import FlowAction, OperationState, Origin, Phase, Runner
from hostpower.store.tables import OperationRow, OperationStepRow

_OPERATIONS = OperationRow.__table__
_STEPS = OperationStepRow.__table__
# A flow's steps, the hottest statements of the engine: built once (building
# a statement costs more than SQLite takes to run it). A step is recorded
# only while the reservation holds the token; `phase` NULL keeps the phase.
_ENTER_STEP = update(_OPERATIONS).where(
    _OPERATIONS.c.id == bindparam("op_id"), _OPERATIONS.c.token == bindparam("held_token"),
    _OPERATIONS.c.state == OperationState.RUNNING.value,
).values(updated_at=bindparam("now"),
         phase=func.coalesce(bindparam("phase", type_=String), _OPERATIONS.c.phase))
_INSERT_STEP = insert(_STEPS).values(
    operation_id=bindparam("b_operation_id"), name=bindparam("b_name"), state="running",
    proxies="[]", message="", started_at=bindparam("b_started_at")).returning(_STEPS.c.id)
_FINISH_ANY = update(_OPERATIONS).where(_OPERATIONS.c.id == bindparam("op_id")).values(
    state=bindparam("b_state"), message=bindparam("b_message"), phase=Phase.DONE.value,
    active_host_id=None, finished_at=bindparam("now"), updated_at=bindparam("now"))
_FINISH = _FINISH_ANY.where(_OPERATIONS.c.token == bindparam("held_token"),
                            _OPERATIONS.c.state == OperationState.RUNNING.value)
_ACTIVE_FOR = select(_OPERATIONS.c.id).where(_OPERATIONS.c.active_host_id == bindparam("host_id"))
_OPEN = insert(_OPERATIONS).values(
    host_id=bindparam("b_host_id"), host_name=bindparam("b_host_name"),
    action=bindparam("b_action"), origin=bindparam("b_origin"),
    requested_by=bindparam("b_requested_by"), state=OperationState.RUNNING.value,
    phase=Phase.BEGIN.value, active_host_id=bindparam("b_host_id"), message="",
    created_at=bindparam("b_now"), updated_at=bindparam("b_now"),
    engine_name=bindparam("b_engine_name"), engine_generation=bindparam("b_engine_generation"),
    token=1).returning(_OPERATIONS.c.id)
_HOLDS = select(_OPERATIONS.c.id).where(
    _OPERATIONS.c.id == bindparam("op_id"), _OPERATIONS.c.token == bindparam("held_token"),
    _OPERATIONS.c.state == OperationState.RUNNING.value)
_GET = select(_OPERATIONS).where(_OPERATIONS.c.id == bindparam("op_id"))
_GET_STEPS = (select(_STEPS).where(_STEPS.c.operation_id == bindparam("op_id"))
              .order_by(_STEPS.c.id))
_FINISH_STEP = update(_STEPS).where(_STEPS.c.id == bindparam("step_id")).values(
    state=bindparam("b_state"), outcome=bindparam("b_outcome"), message=bindparam("b_message"),
    proxies=bindparam("b_proxies"), finished_at=bindparam("b_finished_at"))


@dataclass(frozen=True)
class Step:
    id: int
    name: str
    state: str
    outcome: str | None
    proxies: list[dict[str, Any]]
    message: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Operation:
    id: int
    host_id: int
    host_name: str
    action: FlowAction
    origin: Origin
    state: OperationState
    phase: Phase
    message: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[Step] = field(default_factory=list)
    requested_by: str | None = None   # the engine user; None for automatic fencing
    runner: Runner | None = None      # who holds the reservation (None: written before 0008)
    token: int = 1                    # the fencing token of that reservation

    @property
    def running(self) -> bool:
        return self.state is OperationState.RUNNING


class ReservationLost(HostpowerError):
    """Another engine took the operation over (or it ended): the runner that
    gets this must send nothing more for it."""

    def __init__(self, operation_id: int, token: int) -> None:
        super().__init__(f"operation {operation_id} is no longer reserved with token {token}: "
                         f"another engine took it over")
        self.operation_id = operation_id


class AlreadyRunning(HostpowerError):
    """A flow for this host is running; `operation_id` is the one to join."""

    def __init__(self, operation_id: int) -> None:
        super().__init__(f"operation {operation_id} is running for this host")
        self.operation_id = operation_id


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Journal:
    def __init__(self, session: Session | Connection) -> None:
        # active_for, running and list read ORM rows (a Session); the rest
        # are Core statements, also run on the group-commit writer's
        # Connection (store/groupcommit.py).
        self.s = session

    def begin(self, host_id: int, host_name: str, action: FlowAction, origin: Origin,
              requested_by: str | None = None, runner: Runner | None = None) -> Operation:
        """Record a new running operation, or raise AlreadyRunning with the
        one that holds the host (the database enforces one at a time)."""
        try:
            op = self.open(host_id, host_name, action, origin, requested_by, runner)
        except IntegrityError:  # another writer began one for this host meanwhile
            self.s.rollback()
            existing = self.active_for(host_id)
            raise AlreadyRunning(existing.id if existing else -1) from None
        if isinstance(op, AlreadyRunning):
            raise op
        return op

    def open(self, host_id: int, host_name: str, action: FlowAction, origin: Origin,
             requested_by: str | None, runner: Runner | None) -> Operation | AlreadyRunning:
        """A new running operation, by Core statements built once (also on
        the group-commit writer's Connection), or AlreadyRunning (returned,
        not raised: the writer's batch goes on) naming the one that holds the
        host. A concurrent writer's insert for the same host makes the unique
        index refuse this one (IntegrityError)."""
        existing = self.s.execute(_ACTIVE_FOR, {"host_id": host_id}).first()
        if existing is not None:
            return AlreadyRunning(existing.id)
        now = _now()
        values = {"b_host_id": host_id, "b_host_name": host_name, "b_action": action.value,
                  "b_origin": origin.value, "b_requested_by": requested_by, "b_now": now,
                  "b_engine_name": runner.name if runner else None,
                  "b_engine_generation": runner.generation if runner else None}
        op_id = self.s.execute(_OPEN, values).scalar_one()
        return Operation(id=op_id, host_id=host_id, host_name=host_name, action=action,
                         origin=origin, state=OperationState.RUNNING, phase=Phase.BEGIN,
                         message="", created_at=now, updated_at=now, finished_at=None,
                         steps=[], requested_by=requested_by, runner=runner, token=1)

    def active_for(self, host_id: int) -> Operation | None:
        row = self.s.scalar(select(OperationRow).where(OperationRow.active_host_id == host_id))
        return _operation(row, row.steps) if row else None

    def running(self) -> list[Operation]:
        # active_host_id is set exactly while an operation runs, and indexed
        # (unique): the monitor asks every second.
        rows = self.s.scalars(select(OperationRow).where(OperationRow.active_host_id.is_not(None))
                              .order_by(OperationRow.id))
        return [_operation(r, r.steps) for r in rows]

    def start_step(self, op_id: int, name: str, phase: Phase | None = None,
                   token: int | None = None) -> int:
        """A step begins; with `phase`, the operation enters it in the same
        commit. With `token`, only while the reservation still holds it
        (ReservationLost otherwise): one conditional statement, so a takeover
        committed before it always wins."""
        now = _now()
        if token is not None:
            entered = self.s.execute(_ENTER_STEP, {"op_id": op_id, "held_token": token, "now": now,
                                                   "phase": phase.value if phase else None})
        else:
            entered = self.s.execute(update(_OPERATIONS).where(_OPERATIONS.c.id == op_id).values(
                updated_at=now, phase=func.coalesce(phase.value if phase else None,
                                                    _OPERATIONS.c.phase)))
        if not entered.rowcount:
            if token is None:
                raise NotFoundError("operation", op_id)
            raise ReservationLost(op_id, token)
        return self.s.execute(_INSERT_STEP, {"b_operation_id": op_id, "b_name": name,
                                             "b_started_at": now}).scalar_one()

    def holds(self, op_id: int, token: int) -> bool:
        """Whether the operation still runs under the reservation `token`
        (a read: the check a status step makes before its command)."""
        return self.s.execute(_HOLDS, {"op_id": op_id, "held_token": token}).first() is not None

    def take_over(self, op_id: int, token: int, runner: Runner) -> Operation | None:
        """Reserve a running operation for `runner` with the next token,
        provided nobody changed its reservation since it was read with
        `token`; None when someone did (or it ended)."""
        moved = self.s.execute(update(OperationRow).where(
            OperationRow.id == op_id, OperationRow.token == token,
            OperationRow.state == OperationState.RUNNING.value,
        ).values(token=token + 1, engine_name=runner.name, engine_generation=runner.generation,
                 updated_at=_now())).rowcount
        if not moved:
            return None
        self._expire()
        return self.get(op_id)

    def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, Any]],
                    message: str = "", state: str = "done") -> None:
        self.s.execute(_FINISH_STEP, {"step_id": step_id, "b_state": state, "b_outcome": outcome,
                                      "b_message": message, "b_proxies": json.dumps(proxies),
                                      "b_finished_at": _now()})

    def finish(self, op_id: int, state: OperationState, message: str = "",
               token: int | None = None) -> Operation:
        """End the operation; with `token`, only while that reservation holds
        (ReservationLost otherwise), in one conditional statement."""
        now = _now()
        values = {"b_state": state.value, "b_message": message, "now": now}
        if token is not None:
            ended = self.s.execute(_FINISH, {"op_id": op_id, "held_token": token, **values})
        else:
            ended = self.s.execute(_FINISH_ANY, {"op_id": op_id, **values})
        if not ended.rowcount:
            if token is None:
                raise NotFoundError("operation", op_id)
            raise ReservationLost(op_id, token)
        self._expire()
        return self.get(op_id)

    def _expire(self) -> None:
        """A Session's loaded rows may predate a Core update: forget them."""
        if isinstance(self.s, Session):
            self.s.expire_all()

    def get(self, op_id: int) -> Operation:
        """The operation and its steps as stored now (Core statements: this
        works on a Session and on a bare Connection of the group-commit writer)."""
        row = self.s.execute(_GET, {"op_id": op_id}).first()
        if row is None:
            raise NotFoundError("operation", op_id)
        steps = self.s.execute(_GET_STEPS, {"op_id": op_id}).all()
        return _operation(row, steps)

    def list(self, host_id: int | None = None, limit: int = 100) -> list[Operation]:
        q = select(OperationRow)
        if host_id is not None:
            q = q.where(OperationRow.host_id == host_id)
        rows = self.s.scalars(q.order_by(OperationRow.id.desc()).limit(limit))
        return [_operation(r, r.steps) for r in rows]

    def last_finished_at(self, host_id: int) -> datetime | None:
        row = self.s.scalar(select(OperationRow.finished_at)
                            .where(OperationRow.host_id == host_id,
                                   OperationRow.finished_at.is_not(None),
                                   OperationRow.action != "status")
                            .order_by(OperationRow.finished_at.desc()).limit(1))
        return _utc(row)


def _operation(row: Any, steps: Any) -> Operation:
    """An operation from its row and its steps' rows: ORM rows or Core rows alike."""
    return Operation(
        id=row.id, host_id=row.host_id, host_name=row.host_name, action=FlowAction(row.action),
        origin=Origin(row.origin), requested_by=row.requested_by, state=OperationState(row.state), phase=Phase(row.phase),
        message=row.message,
        runner=(Runner(row.engine_name, row.engine_generation or 0)
                if row.engine_name is not None else None),
        token=row.token or 1,
        created_at=_utc(row.created_at), updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
        finished_at=_utc(row.finished_at),
        steps=[Step(id=s.id, name=s.name, state=s.state, outcome=s.outcome,
                    proxies=json.loads(s.proxies or "[]"), message=s.message,
                    started_at=_utc(s.started_at), finished_at=_utc(s.finished_at))  # type: ignore[arg-type]
               for s in steps],
    )
