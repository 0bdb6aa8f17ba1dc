"""Second opinions: an engine about to fence hosts asks its peers, through
the database, whether they reach those hosts' agents (fencing/opinions.py).

Engines never talk to each other directly: a probe is a row, an answer is a
row, and both carry the database's time, so only the database must be
reachable for engines to agree, and their clocks do not matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostpower.store.engines import db_clock
from hostpower.store.tables import ReachabilityAnswerRow, ReachabilityProbeRow


@dataclass(frozen=True)
class Answer:
    engine: str
    reachable: bool
    detail: str


class Probes:
    def __init__(self, session: Session) -> None:
        self.s = session

    def ask(self, host_ids: Iterable[int], asked_by: str) -> dict[int, int]:
        """One probe per host: {host id: probe id}."""
        rows = {h: ReachabilityProbeRow(host_id=h, asked_by=asked_by,
                                        created_at=db_clock(self.s)) for h in host_ids}
        self.s.add_all(rows.values())
        self.s.flush()
        return {h: row.id for h, row in rows.items()}

    def open_for(self, engine: str, max_age: float) -> list[tuple[int, int]]:
        """(probe id, host id) of recent probes by other engines that `engine`
        has not answered yet."""
        answered = exists().where(ReachabilityAnswerRow.probe_id == ReachabilityProbeRow.id,
                                  ReachabilityAnswerRow.engine_name == engine)
        rows = self.s.execute(select(ReachabilityProbeRow.id, ReachabilityProbeRow.host_id).where(
            ReachabilityProbeRow.asked_by != engine,
            ReachabilityProbeRow.created_at > db_clock(self.s, -max_age),
            ~answered).order_by(ReachabilityProbeRow.id))
        return [(probe_id, host_id) for probe_id, host_id in rows]

    def answer(self, probe_id: int, engine: str, reachable: bool, detail: str) -> None:
        try:
            with self.s.begin_nested():
                self.s.add(ReachabilityAnswerRow(probe_id=probe_id, engine_name=engine,
                                                 reachable=reachable, detail=detail[:500]))
        except IntegrityError:
            pass  # answered already (or the probe was pruned): nothing to add

    def answers(self, probe_ids: Iterable[int]) -> dict[int, list[Answer]]:
        ids = list(probe_ids)
        found: dict[int, list[Answer]] = {i: [] for i in ids}
        if ids:
            for row in self.s.scalars(select(ReachabilityAnswerRow).where(
                    ReachabilityAnswerRow.probe_id.in_(ids))):
                found[row.probe_id].append(Answer(row.engine_name, row.reachable, row.detail))
        return found

    def prune(self, older_than: float) -> int:
        """Forget probes (and their answers) older than `older_than` seconds."""
        return self.s.execute(delete(ReachabilityProbeRow).where(
            ReachabilityProbeRow.created_at < db_clock(self.s, -older_than))).rowcount
