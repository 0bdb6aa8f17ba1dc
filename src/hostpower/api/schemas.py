"""Request and response bodies. Field names follow the oVirt v4 API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from hostpower.model.events import Severity
from hostpower.model.inventory import HostStatus, NonOperationalReason
from hostpower.model.lease import EngineState
from hostpower.model.operations import FenceType, FlowAction, OperationState, Origin, Phase
from hostpower.model.power import Outcome
from hostpower.model.readiness import PathState, Readiness
from hostpower.store.tables import MAX_ID

# An id beyond the database's integer range cannot exist, and is refused by
# the schema (422) before it reaches the database.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Port = Annotated[int, Field(ge=1, le=65535)]
AgentOrder = Annotated[int, Field(ge=1, le=1000)]
Percent = Annotated[int, Field(ge=0, le=100)]
# Text a user gives: anything but a NUL byte, which PostgreSQL cannot store.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=NO_NUL)]
QueryText = Annotated[str | None, Query(pattern=NO_NUL)]




def _iso_time(value: object) -> datetime:
    """An ISO 8601 time with its zone; not a bare number (pydantic would take
    one as seconds since 1970, which nobody means in a query)."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return parsed


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]


class Strict(BaseModel):
    """Unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class Ref(Strict):
    id: Id


class RefOut(BaseModel):
    id: int
    name: str
    href: str


# -- data centers / clusters ----------------------------------------------------

class DataCenterIn(Strict):
    name: Text
    description: Text = ""


class DataCenterPatch(Strict):
    name: Text | None = None
    description: Text | None = None


class DataCenterOut(BaseModel):
    id: int
    name: str
    description: str
    href: str


class ConnectivityPolicyBody(Strict):
    enabled: bool = True
    threshold: Percent = 50


class SdActivePolicyBody(Strict):
    enabled: bool = False


class FencingPolicyBody(Strict):
    enabled: bool = True
    skip_if_connectivity_broken: ConnectivityPolicyBody = Field(default_factory=ConnectivityPolicyBody)
    skip_if_sd_active: SdActivePolicyBody = Field(default_factory=SdActivePolicyBody)


class ClusterIn(Strict):
    name: Text
    data_center: Ref
    description: Text = ""
    fencing_policy: FencingPolicyBody = Field(default_factory=FencingPolicyBody)


class ClusterPatch(Strict):
    name: Text | None = None
    data_center: Ref | None = None
    description: Text | None = None
    fencing_policy: FencingPolicyBody | None = None


class ClusterOut(BaseModel):
    id: int
    name: str
    description: str
    data_center: RefOut
    fencing_policy: FencingPolicyBody
    href: str


# -- hosts ------------------------------------------------------------------------

ProxyType = Literal["cluster", "dc", "other_dc", "engine", "host"]


class PmProxy(Strict):
    type: ProxyType
    host: Text | None = Field(None, description="host name or address, for type host")


class PmProxyEffective(BaseModel):
    type: ProxyType
    host: str | None = None
    implicit: bool = Field(description="appended by FenceProxyImplicitPreferences or the default")


class PowerManagementIn(Strict):
    enabled: bool = False
    automatic_pm_enabled: bool = True
    kdump_detection: bool = True
    pm_proxies: list[PmProxy] = Field(default_factory=list)


class PowerManagementOut(BaseModel):
    enabled: bool
    automatic_pm_enabled: bool
    kdump_detection: bool
    pm_proxies: list[PmProxy]
    effective_pm_proxies: list[PmProxyEffective]


class SshIn(Strict):
    port: Port | None = Field(None, description="TCP port of the host's SSH server; null: no "
                                                "SSH access, so no soft fencing")
    user: Text = Field("root", max_length=64, description="the user the engine logs in as "
                                                          "(its key in that user's "
                                                          "authorized_keys)")
    host_key: Text | None = Field(
        None, max_length=16384,
        description="the host's SSH public key, pinned: '<type> <base64>' as ssh-keyscan or "
                    "/etc/ssh/ssh_host_ed25519_key.pub show it (or POST .../ssh/pin fetches "
                    "it); on update, omit it to keep the pinned key, '' to unpin")


class SshOut(BaseModel):
    port: int | None
    user: str
    host_key: str | None = Field(description="the pinned host key; null: none pinned (the "
                                             "engine then never connects)")
    fingerprint: str | None = Field(description="SHA256 fingerprint of the pinned host key, "
                                                "as ssh-keygen -lf shows it")


class SshPinIn(Strict):
    fingerprint: Text | None = Field(
        None, max_length=100,
        description="the fingerprint expected (SHA256:..., read on the host's console): the "
                    "key the host offers is pinned only if it has it")


class SshPublicKeyOut(BaseModel):
    public_key: str = Field(description="one authorized_keys line: put it in the SSH user's "
                                        "~/.ssh/authorized_keys on each host")
    fingerprint: str


class HostIn(Strict):
    name: Text
    address: Text
    port: Port = Field(54321, description="TCP port of the host agent")
    cluster: Ref
    status: HostStatus = HostStatus.INSTALLING
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagementIn = Field(default_factory=PowerManagementIn)
    ssh: SshIn = Field(default_factory=SshIn)


class HostPatch(Strict):
    name: Text | None = None
    address: Text | None = None
    port: Port | None = None
    cluster: Ref | None = None
    status: HostStatus | None = None
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagementIn | None = None
    ssh: SshIn | None = None


class HostOut(BaseModel):
    id: int
    name: str
    address: str
    port: int
    cluster: RefOut
    status: HostStatus
    non_operational_reason: NonOperationalReason | None
    power_management: PowerManagementOut
    ssh: SshOut
    href: str


# -- fence agents -------------------------------------------------------------------

class Option(Strict):
    name: Text
    value: Text


class OptionOut(BaseModel):
    name: str
    value: str | None = Field(description="null when the agent's options are encrypted")


class FenceAgentIn(Strict):
    type: Text
    address: Text
    port: Port | None = None
    username: Text = ""
    password: Text | None = Field(None, description="write-only; omit on update to keep it")
    options: list[Option] | None = Field(
        None, description="omit on update to keep the stored options (values of encrypted "
                          "options are never returned, so this is how they are kept)")
    order: AgentOrder | None = Field(None, description="agents of the same order run "
                                                       "concurrently")
    encrypt_options: bool = False


class FenceAgentOut(BaseModel):
    id: int
    type: str
    address: str
    port: int | None
    username: str
    options: list[OptionOut]
    order: int
    concurrent: bool = Field(description="another agent of this host has the same order")
    encrypt_options: bool
    password_set: bool
    href: str


# -- config, auth, capabilities ---------------------------------------------------------

class ConfigValueOut(BaseModel):
    name: str
    value: str
    default: str
    type: str
    description: str
    unit: str
    minimum: int | None
    maximum: int | None


class ConfigValueIn(Strict):
    value: Text


class TokenRequest(Strict):
    # No user name is longer (users.name); failed logins are counted per name.
    username: Text = Field(max_length=128)
    password: Text


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: str
    role: str


class FenceAgentTypes(BaseModel):
    standard: list[str]
    installed: list[str]
    native: list[str]
    engine: list[str]


class AgentParameter(BaseModel):
    name: str
    required: bool
    shortdesc: str
    type: str
    default: str | None
    deprecated: bool
    choices: list[str] = Field(default_factory=list)


class AgentTypeOut(BaseModel):
    type: str
    installed: bool
    native: bool
    parameters: list[AgentParameter] = Field(
        description="from `fence_<type> -o metadata` on the engine; empty when not installed")


class CapabilitiesOut(BaseModel):
    proxy_types: list[str]
    fence_agent_types: FenceAgentTypes
    host_statuses: list[str]
    non_operational_reasons: list[str]


# -- power operations, events ---------------------------------------------------------

class ManualOut(BaseModel):
    detail: str


class FenceRequest(Strict):
    fence_type: FenceType


class FenceAgentTestIn(FenceAgentIn):
    id: Id | None = Field(None, description="a saved agent whose password to use when none "
                                            "is given")


class AgentCommandOut(BaseModel):
    agent_id: int
    agent: str
    action: str
    outcome: str
    proxy: str | None
    message: str
    attempts: list[dict]


class PowerStatusOut(BaseModel):
    power_state: Outcome
    proxy: str | None = Field(description="the proxy that answered (first agent)")
    message: str
    commands: list[AgentCommandOut]


class StepOut(BaseModel):
    name: str
    state: str
    outcome: str | None
    proxies: list[dict]
    message: str
    started_at: str
    finished_at: str | None


class OperationOut(BaseModel):
    id: int
    host: RefOut
    action: FlowAction
    origin: Origin
    requested_by: str | None = Field(description="the engine user who asked; null for "
                                                 "automatic fencing")
    state: OperationState
    phase: Phase
    message: str
    created_at: str
    finished_at: str | None
    steps: list[StepOut]
    joined: bool = False
    href: str


class EventOut(BaseModel):
    id: int
    time: str
    severity: Severity
    kind: str
    host: str | None
    host_id: int | None
    operation_id: int | None
    user: str | None = Field(description="the engine user who did it or whom it is about")
    engine: str | None = Field(None, description="the engine that wrote it (None: written "
                                                 "by the CLI or before engines had names)")
    message: str
    details: dict


class HealthOut(BaseModel):
    status: Literal["ok", "not ready"] = Field(
        description="'not ready' (with 503) while the engine cannot renew its lease in the "
                    "database: it starts no external action then")
    version: str
    detail: str | None = Field(None, description="why the engine is not ready")


class EngineOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    address: str = Field(description="the URL the engine was bound to")
    generation: int = Field(description="grows with each start of this name, and when the "
                                        "engine comes back after its lease expired")
    state: EngineState = Field(description="alive: lease valid; expired: stopped renewing "
                                           "(crashed or cut off); stopped: stopped cleanly")
    started_at: str
    renewed_at: str
    lease_expires_at: str = Field(description="on the database's clock, like the other times")
    is_self: bool = Field(alias="self", description="true for the engine that answered")
    hosts: int = Field(description="how many hosts the engine owns (monitors and treats): "
                                   "the hash ring over the alive engines; 0 unless alive")


class PathCheckOut(BaseModel):
    proxy: str = Field(description="the proxy: a host's name, or 'engine'")
    source: str = Field(description="the chain entry that made it a candidate (cluster, dc, "
                                    "other_dc, engine, or the host named in the chain)")
    agent_id: int = Field(description="the fence agent checked (0: an agent since deleted)")
    agent: str = Field(description="the agent as type@address[:port]")
    state: PathState = Field(description="works: the device answered a status through this "
                                         "proxy; fails: it did not (message says why); "
                                         "not_tried: the proxy was not eligible, or beyond the "
                                         "candidates checked per chain entry (message says which)")
    message: str = Field(description="the power state when it works; why, otherwise")
    duration: float = Field(description="seconds the status took (0 when not tried)")


class ReadinessOut(BaseModel):
    host_id: int
    host: str
    cluster: str | None
    href: str = Field(description="this host's readiness")
    readiness: Readiness = Field(
        description="ready: two or more proxies can fence it; single_path: exactly one (a "
                    "single point of failure); unfenceable: none; unknown: not checked yet, "
                    "or power management disabled")
    paths: int = Field(description="how many proxies must fail before the host cannot be "
                                   "fenced (with one agent: the proxies that work for it)")
    working: list[str] = Field(description="proxies with a working path, in chain order")
    failing: list[str] = Field(description="proxies tried that work for none of its agents")
    not_tried: list[str]
    message: str
    checked_at: str | None = Field(description="when the PM health check last checked it")
    changed_at: str | None = Field(description="since when its readiness is what it is")
    engine: str | None = Field(description="the engine that checked it (its owner then)")
    checks: list[PathCheckOut] = Field(description="every (proxy, agent) path, in chain order")


class KdumpListenerOut(BaseModel):
    engine: str = Field(description="the engine whose listener this is")
    address: str = Field(description="ADDRESS:PORT it listens on (0.0.0.0: every address)")
    state: Literal["listening", "failed", "stopped"]
    alive: bool = Field(description="listening, and reported within FenceKdumpListenerTimeout")
    detail: str = Field(description="why it cannot listen (state failed)")
    heartbeat_at: str = Field(description="its last report, on the database's clock")
    received: int = Field(description="datagrams received since it started")
    accepted: int = Field(description="fence_kdump messages from a known host")
    unknown: int = Field(description="fence_kdump messages from an address that is no "
                                     "host's: ignored")
    malformed: int = Field(description="datagrams that are no fence_kdump message: ignored")
    last_unknown: str = Field(description="the source of the last ignored message from an "
                                          "unknown address")


class KdumpSessionOut(BaseModel):
    host_id: int
    host: str
    state: Literal["dumping", "finished"] = Field(
        description="dumping: a message within KdumpFinishedTimeout; finished: none since")
    source: str = Field(description="the address the last message came from")
    engine: str = Field(description="the engine that received it")
    messages: int = Field(description="messages of this crash dump")
    first_message_at: str
    last_message_at: str


class KdumpOut(BaseModel):
    listeners: list[KdumpListenerOut]
    sessions: list[KdumpSessionOut] = Field(description="each host's latest crash dump, "
                                                        "until the host is up again")
