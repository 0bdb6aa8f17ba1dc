"""Notifiers as stored (table `notifiers`, with `notifier_state`): created,
changed and removed by the API and the CLI, read by every engine's
deliverer (notify/). Secrets are encrypted with the engine's secret key
(store/crypto.py) and only `secret()` returns one, as a `Secret`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hostpower.model.errors import NotFoundError, ValidationError
from hostpower.model.events import Severity
from hostpower.model.notifiers import (
    DeliveryState, Notifier, NotifierType, check_kinds, check_name, check_secret,
    check_secret_rules, check_severity, check_type, secret_field, settings_as_dict,
    settings_from_dict,
    settings_from_input,
)
from hostpower.model.secret import Secret
from hostpower.store.crypto import SecretBox
from hostpower.store.notifycursor import start_position
from hostpower.store.tables import MAX_ID, NotifierRow, NotifierStateRow

KEEP = object()  # update(): leave the stored secret as it is


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Notifiers:
    def __init__(self, session: Session, box: SecretBox) -> None:
        self.s = session
        self.box = box

    # -- reads -------------------------------------------------------------------------------

    def list(self) -> list[Notifier]:
        rows = self.s.scalars(select(NotifierRow).order_by(NotifierRow.name)).all()
        return [_notifier(r) for r in rows]

    def get(self, notifier_id: int) -> Notifier:
        return _notifier(self._row(notifier_id))

    def find(self, ident: str) -> Notifier:
        """By name, or by id when `ident` is a number no name matches."""
        row = self.s.scalar(select(NotifierRow).where(NotifierRow.name == ident))
        if row is None and ident.isdigit() and int(ident) <= MAX_ID:
            row = self.s.get(NotifierRow, int(ident))
        if row is None:
            raise NotFoundError("notifier", ident)
        return _notifier(row)

    def secret(self, notifier_id: int) -> Secret | None:
        row = self._row(notifier_id)
        return Secret(self.box.decrypt(row.secret_encrypted)) if row.secret_encrypted else None

    def state(self, notifier_id: int) -> DeliveryState:
        row = self.s.get(NotifierStateRow, notifier_id)
        if row is None:
            raise NotFoundError("notifier", notifier_id)
        return _state(row)

    def states(self) -> dict[int, DeliveryState]:
        return {r.notifier_id: _state(r) for r in self.s.scalars(select(NotifierStateRow))}

    # -- writes ------------------------------------------------------------------------------

    def add(self, name: str, kind: str, settings: dict[str, Any], secret: str | None = None,
            min_severity: str = Severity.WARNING.value, kinds: list[str] | None = None,
            enabled: bool = True) -> Notifier:
        """Checked field by field (ValidationError names the field). The new
        notifier delivers the events written from now on."""
        ntype = check_type(kind)
        checked = settings_from_input(ntype, settings, f"{ntype.value}.")
        token = self._encrypt(ntype, secret)
        check_secret_rules(ntype, checked, bool(token))
        row = NotifierRow(name=check_name(name), type=ntype.value, enabled=bool(enabled),
                          min_severity=check_severity(min_severity).value,
                          kinds=json.dumps(list(check_kinds(kinds))),
                          settings=json.dumps(settings_as_dict(checked)), secret_encrypted=token,
                          created_at=datetime.now(UTC))
        txid, event_id = start_position(self.s)
        self.s.add(row)
        self.s.flush()
        self.s.add(NotifierStateRow(notifier_id=row.id, cursor_txid=txid, cursor_id=event_id,
                                    token=0, delivered=0, dropped=0, last_error="", attempts=0))
        self.s.flush()
        return _notifier(row)

    def update(self, notifier_id: int, name: str | None = None, enabled: bool | None = None,
               min_severity: str | None = None, kinds: list[str] | None = None,
               settings: dict[str, Any] | None = None, secret: Any = KEEP) -> Notifier:
        """Change what is given; `settings` are merged into the stored ones;
        `secret` KEEP keeps the stored one, None or "" removes it."""
        row = self._row(notifier_id)
        ntype = NotifierType(row.type)
        if name is not None:
            row.name = check_name(name)
        if enabled is not None:
            row.enabled = bool(enabled)
        if min_severity is not None:
            row.min_severity = check_severity(min_severity).value
        if kinds is not None:
            row.kinds = json.dumps(list(check_kinds(kinds)))
        merged = {k: v for k, v in json.loads(row.settings).items()}
        if settings:
            merged.update(settings)
        checked = settings_from_input(ntype, merged, f"{ntype.value}.")
        row.settings = json.dumps(settings_as_dict(checked))
        if secret is not KEEP:
            row.secret_encrypted = self._encrypt(ntype, secret)
        check_secret_rules(ntype, checked, bool(row.secret_encrypted))
        self.s.flush()
        return _notifier(row)

    def remove(self, notifier_id: int) -> Notifier:
        row = self._row(notifier_id)
        found = _notifier(row)
        self.s.execute(delete(NotifierStateRow).where(NotifierStateRow.notifier_id == notifier_id))
        self.s.delete(row)
        self.s.flush()
        return found

    # -- helpers -----------------------------------------------------------------------------

    def _row(self, notifier_id: int) -> NotifierRow:
        row = self.s.get(NotifierRow, notifier_id) if 0 < notifier_id <= MAX_ID else None
        if row is None:
            raise NotFoundError("notifier", notifier_id)
        return row

    def _encrypt(self, ntype: NotifierType, secret: str | None) -> str:
        if secret is None or secret == "":
            return ""
        if not isinstance(secret, str):
            raise ValidationError(secret_field(ntype), "must be text")
        field = secret_field(ntype)
        if ntype is NotifierType.WEBHOOK:
            check_secret(secret, field)
        elif len(secret) > 1024 or "\x00" in secret:
            raise ValidationError(field, "must be at most 1024 characters, without NUL")
        return self.box.encrypt(secret)


def _notifier(row: NotifierRow) -> Notifier:
    ntype = NotifierType(row.type)
    return Notifier(name=row.name, type=ntype,
                    settings=settings_from_dict(ntype, json.loads(row.settings)),
                    min_severity=Severity(row.min_severity), kinds=tuple(json.loads(row.kinds)),
                    enabled=row.enabled, id=row.id, secret_set=bool(row.secret_encrypted))


def _state(row: NotifierStateRow) -> DeliveryState:
    return DeliveryState(
        notifier_id=row.notifier_id, holder=row.holder, delivered=row.delivered,
        dropped=row.dropped, last_delivered_event=row.last_delivered_event,
        last_delivered_at=_utc(row.last_delivered_at), last_error=row.last_error,
        last_error_at=_utc(row.last_error_at), attempts=row.attempts,
        failing_since=_utc(row.failing_since))
