"""The engine's runtime context: settings, database, secret key, capabilities.

One object built at start-up and handed to the API, the CLI and the fencing
code, so none of them reads the environment or opens files on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from hostpower.config import Config
from hostpower.drivers.installed import installed_agent_types
from hostpower.drivers.ipmilan_options import NATIVE_TYPES as IPMI_NATIVE_TYPES
from hostpower.drivers.redfish_options import NATIVE_TYPES as REDFISH_NATIVE_TYPES
from hostpower.drivers.script import ScriptDriver
from hostpower.model.agenttypes import STANDARD_TYPES
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.crypto import SecretBox
from hostpower.store.db import Database


@dataclass
class EngineContext:
    settings: Settings
    db: Database
    box: SecretBox
    started_at: float = field(default=0.0)

    @classmethod
    def open(cls, settings: Settings | None = None, migrate: bool = True) -> "EngineContext":
        settings = settings or Settings.from_env()
        settings.ensure_home()
        db = Database(settings.db_url)
        if migrate:
            db.upgrade()
        return cls(settings=settings, db=db, box=SecretBox.load_or_create(settings.key_file))

    def config(self) -> Config:
        with self.db.session() as s:
            return ConfigStore(s).load()

    @cached_property
    def script_driver(self) -> ScriptDriver:
        """One script driver per engine, so `-o metadata` is read once per type."""
        return ScriptDriver(self.config()["FenceAgentsPath"])

    @property
    def native_types(self) -> frozenset[str]:
        """Agent types this engine can drive in-process, without a script."""
        return IPMI_NATIVE_TYPES | REDFISH_NATIVE_TYPES

    def installed_types(self) -> frozenset[str]:
        """fence_<type> programs present now (read anew: agents may be installed meanwhile)."""
        return frozenset(installed_agent_types(self.config()["FenceAgentsPath"]))

    def engine_agent_types(self) -> frozenset[str]:
        """Types the `engine` proxy source can run: installed scripts and native drivers."""
        return self.installed_types() | self.native_types

    def known_agent_types(self) -> frozenset[str]:
        """Types a user may configure: the standard ones and any this engine runs."""
        return STANDARD_TYPES | self.engine_agent_types()

    def close(self) -> None:
        self.db.dispose()
