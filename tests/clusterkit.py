"""Several real `hostpower serve` engines on one PostgreSQL database, beside a lab.

* `pg_database`, `lab_on_postgres`, `load_lab`, `prepare`, `configure`: a
  fresh database holding the lab's inventory, an admin user, the fast
  configuration of enginekit and a short engine lease (`LEASE`). The engines
  share the lab's HOSTPOWER_HOME: the same CA as the host agents trust, the
  same key for the secrets stored in the database.
* `engines(settings, logs)`: a `Cluster`, whose `start_engine` runs
  `hostpower serve --engine-name NAME --plain-http --bind 127.0.0.1:PORT`
  (plain HTTP is fine on loopback); every engine, relay and namespace it
  made is stopped or deleted on exit, whatever happened.
* `Engine`: one such process: its API with an admin token, SIGKILL
  (a crash), SIGSTOP/SIGCONT (a freeze; `frozen` says whether it is stopped,
  also by a `:pause` failpoint), SIGTERM (a clean stop), its log.
* `owners(engines, host_ids)`: which engine owns which host, as every engine
  computes it from the same live engines (model/ownership.py).
* An engine in a network namespace of the test's own (`Cluster.namespace`,
  `isolated_engine`) has only `lo`: it reaches the database through a
  unix-socket `Relay` (tests/relay.py) and no lab host. Its API listens on
  127.0.0.1 inside that namespace, out of the test's reach: the test sees it
  through its log and through the engines sharing its database
  (`engines_seen`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PG_ADMIN_DSN, _create_pg_database, _drop_pg_database
from enginekit import FAST, SCENARIO_TOPOLOGY, engine_context
from helpers import bearer, free_port, wait_until
from hostpower.context import EngineContext
from hostpower.lab import netns as lab_netns
from hostpower.lab.processes import kill_and_wait
from hostpower.lab.runner import RunningLab
from hostpower.model.ownership import Ownership
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.engines import Engines
from hostpower.store.users import Users
from labkit import load_yaml, require_lab_tools, start, wait_all_agents
from relay import Relay
from servekit import HOSTPOWER, kill, stop

LEASE = 3  # seconds: renewed every 1 s, not ready 2.25 s after the last renewal, expired after 3
ADMIN, ADMIN_PASSWORD = "ops", "ops-password"
LISTENING = "hostpower engine listening on"
# `hpl-` without an instance digit: never taken for a lab instance's leftovers
# (lab/identity.py), so no lab cleans it up; the cluster deletes its own.
NETNS_PREFIX = "hpl-t-"


# -- the shared database ------------------------------------------------------------------

@contextmanager
def pg_database(admin_dsn: str = PG_ADMIN_DSN) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL), dropped on exit;
    for scopes wider than conftest's per-test `pg_url`."""
    name = _create_pg_database(admin_dsn)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        _drop_pg_database(admin_dsn, name)


def configure(settings: Settings, **keys: str) -> None:
    """Set configuration keys in the shared database (migrated if new). Engines
    read them on start; most also apply to running ones (EngineLeaseInSec at
    their next renewal)."""
    ctx = EngineContext.open(settings)
    try:
        with ctx.db.session() as s:
            store = ConfigStore(s)
            for key, value in keys.items():
                store.set(key, value)
    finally:
        ctx.close()


def prepare(settings: Settings, lease: int = LEASE, **keys: str) -> None:
    """The database every engine of a test shares: enginekit's FAST keys, a
    lease of `lease` seconds, `keys`, and the admin user `Engine.api` logs in as."""
    configure(settings, **FAST, EngineLeaseInSec=str(lease), **keys)
    ctx = EngineContext.open(settings)
    try:
        with ctx.db.session() as s:
            if not any(u.name == ADMIN for u in Users(s).list()):
                Users(s).add(ADMIN, "admin", ADMIN_PASSWORD)
    finally:
        ctx.close()


def load_lab(lab: RunningLab, settings: Settings, lease: int = LEASE, **keys: str) -> Settings:
    """The lab's inventory into `settings.db_url` (a fresh database), then `prepare`."""
    engine_context(lab, settings).close()
    prepare(settings, lease, **keys)
    return settings


def with_database(settings: Settings, db_url: str) -> Settings:
    """The same home (CA, secret key) on another database."""
    return replace(settings, db_url=db_url)


@contextmanager
def lab_on_postgres(tmp: Path, db_url: str, topology: str = SCENARIO_TOPOLOGY,
                    **keys: str) -> Iterator[tuple[RunningLab, Settings]]:
    """A lab (home under tmp) with its inventory in the PostgreSQL database
    `db_url`, prepared for engines; the lab is stopped on exit."""
    require_lab_tools()
    lab, settings = start(tmp, load_yaml(topology), db_url=db_url)
    try:
        load_lab(lab, settings, **keys)
        yield lab, settings
    finally:
        lab.stop()


# -- one engine -----------------------------------------------------------------------------

@dataclass
class Engine:
    """A `hostpower serve` process. `url` is where it listens; for an engine
    in a namespace (`netns`) that is inside the namespace, out of reach."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    netns: str | None = None
    _headers: dict[str, str] | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """An admin's bearer token, asked for once."""
        if self._headers is None:
            self._headers = bearer(httpx, ADMIN, ADMIN_PASSWORD, base=self.url)
        return self._headers

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """`method path` on this engine's API with the admin token."""
        assert self.netns is None, f"engine {self.name} listens inside {self.netns}: ask a peer"
        kw.setdefault("timeout", 30)
        return httpx.request(method, self.url + path, headers=self.headers, **kw)

    def health(self, timeout: float = 5) -> httpx.Response:
        """GET /api/health (no token needed): 200 ok, 503 not ready."""
        return httpx.get(f"{self.url}/api/health", timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, a crash: no goodbye, its lease runs out."""
        if self.running:
            kill(self.proc)

    def freeze(self) -> None:
        """SIGSTOP: the process stays, answers nothing and renews nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    @property
    def frozen(self) -> bool:
        """Whether the process is stopped (SIGSTOP: `freeze`, or a `:pause`
        failpoint it reached): state T in /proc/PID/stat."""
        if not self.running:
            return False
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return False  # gone meanwhile
        # "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def stop(self) -> None:
        """SIGTERM, a clean stop (it leaves: shown stopped); SIGKILL after 20 s."""
        if self.running:
            self.thaw()  # a frozen process would not even see the SIGTERM
            stop(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# -- several engines -----------------------------------------------------------------------

class Cluster:
    """The engines (and relays, namespaces) of one test on `settings`' home and
    database. Use it through `engines()`, which closes it."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.started: list[Engine] = []
        self._relays: list[Relay] = []
        self._namespaces: list[str] = []

    def __getitem__(self, name: str) -> Engine:
        """The last engine started under `name`."""
        for engine in reversed(self.started):
            if engine.name == name:
                return engine
        raise KeyError(name)

    def env(self, db_url: str | None = None, failpoint: str | None = None) -> dict[str, str]:
        env = {**os.environ, "HOSTPOWER_HOME": str(self.settings.home),
               "HOSTPOWER_DB_URL": db_url or self.settings.db_url}
        env.pop("HOSTPOWER_FAILPOINT", None)
        if failpoint:
            env["HOSTPOWER_FAILPOINT"] = failpoint  # the engine kills itself there
        return env

    def start_engine(self, name: str, failpoint: str | None = None, db_url: str | None = None,
                     netns: str | None = None, timeout: float = 30) -> Engine:
        """`hostpower serve` named `name`, on `db_url` (default the cluster's
        database), in the namespace `netns` if given; returns once it is ready.

        Ready: /api/health answers 200; in a namespace, where the test cannot
        ask, its "listening" line is in its log and its peers (or the
        database) see it alive."""
        port = free_port()
        cmd = [*HOSTPOWER, "serve", "--engine-name", name, "--plain-http",
               "--bind", f"127.0.0.1:{port}"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]  # execs: the pid is the engine's
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("a") as out:
            proc = subprocess.Popen(cmd, env=self.env(db_url, failpoint), stdout=out,
                                    stderr=subprocess.STDOUT)
        engine = Engine(name, f"http://127.0.0.1:{port}", proc, log, netns)
        self.started.append(engine)  # before waiting: stopped on exit even if never ready
        if netns:
            self._wait_listening(engine, timeout)
            self.wait_state(name, "alive", timeout, exclude=engine)
        else:
            self._wait_healthy(engine, timeout)
        return engine

    def namespace(self, tag: str = "") -> str:
        """A new network namespace with only `lo` (up); deleted on close."""
        name = f"{NETNS_PREFIX}{os.getpid()}-{len(self._namespaces)}{'-' + tag if tag else ''}"
        lab_netns.ip("netns", "add", name)
        self._namespaces.append(name)
        lab_netns.ip("link", "set", "lo", "up", ns=name)
        return name

    def relay(self, listen: tuple[str, int] | str | Path | None = None,
              target: tuple[str, int] = ("127.0.0.1", 5432)) -> Relay:
        """A started Relay to the database, stopped on close. Without
        `listen`: a unix socket `.s.PGSQL.5432` in a new short directory
        (a socket path must fit in 107 bytes; pytest's tmp_path may not)."""
        if listen is None:
            listen = Path(tempfile.mkdtemp(prefix="hpr-")) / ".s.PGSQL.5432"
        relay = Relay(target, listen).start()
        self._relays.append(relay)
        return relay

    def isolated_engine(self, name: str, failpoint: str | None = None,
                        timeout: float = 30) -> tuple[Engine, Relay]:
        """An engine in a namespace of its own, on the cluster's database
        through a unix-socket relay (cut it to cut this engine alone)."""
        relay = self.relay()
        engine = self.start_engine(name, failpoint, relay.url_for(self.settings.db_url),
                                   self.namespace(), timeout)
        return engine, relay

    # -- what the engines see -----------------------------------------------------------------

    def engines_seen(self, via: Engine | None = None,
                     exclude: Engine | None = None) -> dict[str, dict[str, Any]]:
        """The engines as `GET /api/engines` lists them ({name: row}), asked of
        `via` or of the first reachable running engine (not `exclude`);
        with none, read from the database the same way."""
        reachable = [e for e in reversed(self.started)
                     if e.netns is None and e.running and e is not exclude]
        if via is None and reachable:
            via = reachable[0]
        if via is not None:
            r = via.api("GET", "/api/engines")
            assert r.status_code == 200, r.text
            return {row["name"]: row for row in r.json()}
        ctx = EngineContext.open(self.settings, migrate=False)
        try:
            with ctx.db.session() as s:
                return {m.name: {"name": m.name, "state": str(m.state),
                                 "generation": m.generation, "address": m.address}
                        for m in Engines(s).list()}
        finally:
            ctx.close()

    def wait_state(self, name: str, state: str, timeout: float, via: Engine | None = None,
                   exclude: Engine | None = None) -> dict[str, Any]:
        """The row of engine `name` once it is in `state` (alive, expired, stopped)."""
        def seen() -> dict[str, Any] | None:
            row = self.engines_seen(via, exclude).get(name)
            return row if row is not None and row["state"] == state else None
        return wait_until(seen, timeout, f"engine {name} to be {state}", step=0.1)

    # -- readiness and the end -----------------------------------------------------------------

    def _wait_healthy(self, engine: Engine, timeout: float) -> None:
        def healthy() -> bool:
            self._fail_if_exited(engine)
            try:
                return engine.health(timeout=1).status_code == 200
            except httpx.TransportError:
                return False
        wait_until(healthy, timeout, f"engine {engine.name} to answer /api/health 200",
                   step=0.1)

    def _wait_listening(self, engine: Engine, timeout: float) -> None:
        def listening() -> bool:
            self._fail_if_exited(engine)
            return LISTENING in engine.log_text()
        wait_until(listening, timeout, f"engine {engine.name} to log {LISTENING!r}", step=0.1)

    @staticmethod
    def _fail_if_exited(engine: Engine) -> None:
        if not engine.running:
            pytest.fail(f"engine {engine.name} exited with {engine.proc.returncode}:\n"
                        f"{engine.log_text()}")

    def close(self) -> None:
        """Stop every engine (cleanly, killed if it will not), then the relays
        (after the engines: a stopping engine still records that it leaves),
        then delete the namespaces and anything left in them."""
        errors: list[BaseException] = []
        for step in ([lambda e=e: e.stop() for e in self.started]
                     + [r.stop for r in self._relays]
                     + [lambda ns=ns: _delete_namespace(ns) for ns in self._namespaces]):
            try:
                step()
            except BaseException as exc:  # go on: everything else must still be cleaned
                errors.append(exc)
        for relay in self._relays:
            if relay.unix_path is not None:
                _remove_dir(relay.unix_path.parent)
        if errors:
            raise errors[0]


@contextmanager
def engines(settings: Settings, logs: Path) -> Iterator[Cluster]:
    """A Cluster on `settings` (home and database) writing its engines' logs
    under `logs`; everything it started is stopped on exit."""
    cluster = Cluster(settings, logs)
    try:
        yield cluster
    finally:
        cluster.close()


def owners(engines: Iterable[str], host_ids: Iterable[int]) -> dict[int, str]:
    """{host id: owning engine} on the ring over `engines` (the live ones), as
    each engine computes it (fencing/gateway.py `ownership`)."""
    ring = Ownership(engines)
    return {host_id: ring.owner(host_id) or "" for host_id in host_ids}


def _delete_namespace(name: str) -> None:
    # Only processes the cluster started can be in its own namespace.
    kill_and_wait([int(p) for p in lab_netns.ip("netns", "pids", name).split()])
    lab_netns.ip("netns", "del", name)


def _remove_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty or gone: leave it



# -- what every HA scenario shares ---------------------------------------------------------

@pytest.fixture(scope="module")
def ha_lab(tmp_path_factory: pytest.TempPathFactory, pg_server: str,
           ) -> Iterator[tuple[RunningLab, Settings]]:
    """One lab for a test module, its inventory on a PostgreSQL database of its own."""
    with pg_database(pg_server) as db_url:
        with lab_on_postgres(tmp_path_factory.mktemp("ha"), db_url) as started:
            yield started


@pytest.fixture
def ha_world(ha_lab: tuple[RunningLab, Settings], pg_url: str) -> tuple[RunningLab, Settings]:
    """The module's lab with every agent answering (an earlier test may have
    hung or restarted one), its inventory in this test's own database."""
    running, settings = ha_lab
    for host in running.topo.hosts:
        running.lab.fault(host.name, "agent_hang", clear=True)
    wait_all_agents(running, timeout=30)
    return running, load_lab(running, with_database(settings, pg_url))


def events(engine: Engine, **params: Any) -> list[dict[str, Any]]:
    """GET /api/events (oldest first), up to 5,000."""
    r = engine.api("GET", "/api/events", params={"limit": 5000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def hosts(engine: Engine) -> dict[str, dict[str, Any]]:
    """GET /api/hosts by name."""
    r = engine.api("GET", "/api/hosts")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()}
