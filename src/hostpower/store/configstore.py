"""Stored configuration values (only those that differ from the default are kept)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostpower.config import KEYS, Config, ConfigKey, lookup
from hostpower.store.tables import ConfigRow


class ConfigStore:
    def __init__(self, session: Session) -> None:
        self.s = session

    def load(self) -> Config:
        return Config({r.key: r.value for r in self.s.scalars(select(ConfigRow))})

    def get(self, name: str) -> tuple[ConfigKey, str]:
        """The key and its current value as text."""
        key = lookup(name)
        return key, self.load().as_text()[key.name]

    def set(self, name: str, value: str) -> tuple[ConfigKey, str]:
        """Validate, then store; raises before writing anything."""
        key = lookup(name)
        canonical = key.canonical(value)
        row = self.s.get(ConfigRow, key.name)
        if row is None:
            self.s.add(ConfigRow(key=key.name, value=canonical))
        else:
            row.value = canonical
        self.s.flush()
        return key, canonical

    def reset(self, name: str) -> ConfigKey:
        key = lookup(name)
        row = self.s.get(ConfigRow, key.name)
        if row is not None:
            self.s.delete(row)
            self.s.flush()
        return key

    def listing(self) -> list[tuple[ConfigKey, str]]:
        values = self.load().as_text()
        return [(k, values[k.name]) for k in KEYS]
