"""Where the engine keeps its state: HOSTPOWER_HOME and HOSTPOWER_DB_URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("HOSTPOWER_HOME") or "./var").resolve()
        url = env.get("HOSTPOWER_DB_URL") or f"sqlite:///{home / 'hostpower.db'}"
        return cls(home=home, db_url=url)

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.home

    @property
    def missing_sqlite_file(self) -> Path | None:
        """The SQLite file the URL names, when it does not exist yet; otherwise
        None (it exists, or the database is not SQLite)."""
        if not self.db_url.startswith("sqlite:///"):
            return None
        path = Path(self.db_url[len("sqlite:///"):])
        return None if path.exists() else path

    @property
    def key_file(self) -> Path:
        return self.home / "secret.key"

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    @property
    def ssh_dir(self) -> Path:
        """The engine's SSH key (fencing/sshaccess.py)."""
        return self.home / "ssh"
