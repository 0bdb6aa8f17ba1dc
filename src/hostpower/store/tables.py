"""The database schema (SQLAlchemy 2). Alembic migrations must match it:
tests/test_migrations.py compares them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Integer columns (ids among them) are 32-bit on PostgreSQL: no id is larger.
MAX_ID = 2**31 - 1


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DataCenterRow(Base):
    __tablename__ = "data_centers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class ClusterRow(Base):
    __tablename__ = "clusters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    data_center_id: Mapped[int] = mapped_column(ForeignKey("data_centers.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    fencing_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    skip_if_connectivity_broken: Mapped[bool] = mapped_column(Boolean, default=True)
    connectivity_threshold: Mapped[int] = mapped_column(Integer, default=50)
    skip_if_sd_active: Mapped[bool] = mapped_column(Boolean, default=False)


class HostRow(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    address: Mapped[str] = mapped_column(String(255), unique=True)
    agent_port: Mapped[int] = mapped_column(Integer, default=54321, server_default="54321")
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), default="installing")
    non_operational_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pm_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    pm_automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    pm_kdump_detection: Mapped[bool] = mapped_column(Boolean, default=True)
    pm_proxy_preferences: Mapped[str] = mapped_column(Text, default="")
    # SSH access for soft fencing: no port, no access; the host key is pinned.
    ssh_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ssh_user: Mapped[str] = mapped_column(String(32), default="root", server_default="root")
    ssh_host_key: Mapped[str] = mapped_column(Text, default="", server_default="")
    agents: Mapped[list["FenceAgentRow"]] = relationship(
        back_populates="host", cascade="all, delete-orphan", order_by="FenceAgentRow.order",
    )


class FenceAgentRow(Base):
    __tablename__ = "fence_agents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(255), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    # JSON list of [name, value]; encrypted as a whole when encrypt_options.
    options: Mapped[str] = mapped_column(Text, default="[]")
    encrypt_options: Mapped[bool] = mapped_column(Boolean, default=False)
    order: Mapped[int] = mapped_column("agent_order", Integer)
    host: Mapped[HostRow] = relationship(back_populates="agents")


class RevisionRow(Base):
    """Counters that every write of what they name moves, in the same
    transaction (store/revisions.py): "inventory" (data centers, clusters,
    hosts, agents, configuration) and "status" (host statuses only). A cache
    compares them to know it is stale, whoever wrote: this engine, another
    engine, the CLI."""

    __tablename__ = "revisions"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class ConfigRow(Base):
    __tablename__ = "config"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OperationRow(Base):
    """A fence flow, journaled: `phase` is written before each external action."""

    __tablename__ = "operations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(Integer, index=True)
    host_name: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16))  # api | automatic
    # The engine user who asked for it; NULL for automatic fencing.
    requested_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(32))
    # Equals host_id while the flow runs, NULL after: the unique constraint
    # makes "one flow per host at once" hold across engine restarts.
    active_host_id: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The reservation: the engine incarnation that runs the flow, and the
    # fencing token it holds (store/journal.py; a takeover increments it).
    engine_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    engine_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token: Mapped[int] = mapped_column(Integer, server_default="1")
    steps: Mapped[list["OperationStepRow"]] = relationship(
        cascade="all, delete-orphan", order_by="OperationStepRow.id")


class OperationStepRow(Base):
    __tablename__ = "operation_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operation_id: Mapped[int] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    proxies: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{agent, proxy, outcome}]
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    # Notifications read events in (txid, id) order (store/notifycursor.py).
    __table_args__ = (Index("ix_events_txid_id", "txid", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(64))
    # No foreign key: events outlive the hosts they tell about.
    host_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    host_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    operation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The engine user who did it or whom it is about (a login, a write, a power request).
    user: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    engine: Mapped[str | None] = mapped_column(String(128), nullable=True)  # which engine wrote it
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text, default="{}")
    # PostgreSQL: the id of the transaction that wrote the event (ids may
    # commit out of order; notifications read only below the oldest running
    # transaction, store/notifycursor.py). 0 on SQLite, where one writer at a
    # time commits ids in order, and for events older than notifications.
    txid: Mapped[int] = mapped_column(BigInteger, server_default="0")


class LoginFailureRow(Base):
    """Failed logins in a row of one user name or one client address (login
    throttling, api/login.py). Shared by every engine on the database, and only
    ever changed by single atomic statements (store/logins.py)."""

    __tablename__ = "login_failures"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # user | address
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # No login attempt for this subject before this time (back-off or lockout).
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EngineRow(Base):
    """An engine sharing this database (store/engines.py). Lease times come
    from the database's clock. `generation` grows with each incarnation of the
    name: a start, or a return after the lease expired."""

    __tablename__ = "engines"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running | stopped
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    renewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReachabilityProbeRow(Base):
    """An engine about to fence a host asks its peers whether they reach the
    host's agent (fencing/opinions.py); the peers answer in the next table."""

    __tablename__ = "reachability_probes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(Integer)
    asked_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReachabilityAnswerRow(Base):
    __tablename__ = "reachability_answers"
    probe_id: Mapped[int] = mapped_column(
        ForeignKey("reachability_probes.id", ondelete="CASCADE"), primary_key=True)
    engine_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    reachable: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)


class ReadinessRow(Base):
    """A host's fencing readiness as the PM health check last found it
    (fencing/readiness.py): written by the engine that owns the host, read by
    every engine's API and by the CLI. Goes with its host."""

    __tablename__ = "readiness"
    host_id: Mapped[int] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    readiness: Mapped[str] = mapped_column(String(16))  # ready | single_path | unfenceable
    paths: Mapped[int] = mapped_column(Integer)
    # JSON: [{proxy, source, agent_id, agent, state, message, duration}]
    checks: Mapped[str] = mapped_column(Text, default="[]")
    message: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    engine: Mapped[str | None] = mapped_column(String(128), nullable=True)


class KdumpSessionRow(Base):
    """The fence_kdump messages of a host's current (or last) crash dump, as
    any engine's listener received them (kdumplistener.py); the host's owner
    reads it before fencing (fencing/kdump.py). Times on the database's clock."""

    __tablename__ = "kdump_sessions"
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"),
                                         primary_key=True)
    source: Mapped[str] = mapped_column(String(64))        # address the last message came from
    engine: Mapped[str] = mapped_column(String(128))       # the engine that received it
    messages: Mapped[int] = mapped_column(Integer)         # messages of this session
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KdumpListenerRow(Base):
    """Each engine's fence_kdump listener: where it listens, whether it
    could, and what it received since it started (counts of one incarnation)."""

    __tablename__ = "kdump_listeners"
    engine: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))      # ADDRESS:PORT it binds
    state: Mapped[str] = mapped_column(String(16))         # listening | failed | stopped
    detail: Mapped[str] = mapped_column(Text, default="")  # why it failed
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received: Mapped[int] = mapped_column(Integer, default=0)   # datagrams
    accepted: Mapped[int] = mapped_column(Integer, default=0)   # valid, from a known host
    unknown: Mapped[int] = mapped_column(Integer, default=0)    # valid, from no known host
    malformed: Mapped[int] = mapped_column(Integer, default=0)  # not a fence_kdump message
    last_unknown: Mapped[str] = mapped_column(String(64), default="")  # its source address


class DeviceTurnRow(Base):
    """One PM device's turn, claimed by the engine that sends it a command
    (store/deviceturns.py, fencing/devicegate.py). Times on the database's
    clock. `free_at`: when the next command may start — the claim's expiry
    while it is held, the end of the last command plus the interval after."""

    __tablename__ = "device_turns"
    device: Mapped[str] = mapped_column(String(300), primary_key=True)  # ADDRESS:PORT
    holder: Mapped[str] = mapped_column(String(300))     # who claimed it last, as said in errors
    token: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: released
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    free_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotifierRow(Base):
    """A notifier (webhook or SMTP mail) and which events it wants. Its
    signing key or SMTP password is encrypted with the engine's secret key."""

    __tablename__ = "notifiers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(16))               # webhook | smtp
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    min_severity: Mapped[str] = mapped_column(String(16))
    kinds: Mapped[str] = mapped_column(Text, default="[]")      # JSON list of glob patterns
    settings: Mapped[str] = mapped_column(Text, default="{}")   # JSON, never a secret
    secret_encrypted: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotifierStateRow(Base):
    """Where a notifier's delivery stands, shared by every engine: the
    position in the events it has passed, the engine that delivers for it
    now (a lease on the database's clock, and a token that each new holder
    increments), and how delivery goes (store/notifycursor.py)."""

    __tablename__ = "notifier_state"
    notifier_id: Mapped[int] = mapped_column(
        ForeignKey("notifiers.id", ondelete="CASCADE"), primary_key=True)
    cursor_txid: Mapped[int] = mapped_column(BigInteger)
    cursor_id: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)   # engine name
    instance: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its deliverer
    token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    last_delivered_event: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                               nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
