"""Request and response bodies. Field names follow the oVirt v4 API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hostpower.model.inventory import HostStatus, NonOperationalReason


class Strict(BaseModel):
    """Unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class Ref(Strict):
    id: int


class RefOut(BaseModel):
    id: int
    name: str
    href: str


# -- data centers / clusters ----------------------------------------------------

class DataCenterIn(Strict):
    name: str
    description: str = ""


class DataCenterPatch(Strict):
    name: str | None = None
    description: str | None = None


class DataCenterOut(BaseModel):
    id: int
    name: str
    description: str
    href: str


class ConnectivityPolicyBody(Strict):
    enabled: bool = True
    threshold: int = 50


class SdActivePolicyBody(Strict):
    enabled: bool = False


class FencingPolicyBody(Strict):
    enabled: bool = True
    skip_if_connectivity_broken: ConnectivityPolicyBody = Field(default_factory=ConnectivityPolicyBody)
    skip_if_sd_active: SdActivePolicyBody = Field(default_factory=SdActivePolicyBody)


class ClusterIn(Strict):
    name: str
    data_center: Ref
    description: str = ""
    fencing_policy: FencingPolicyBody = Field(default_factory=FencingPolicyBody)


class ClusterPatch(Strict):
    name: str | None = None
    data_center: Ref | None = None
    description: str | None = None
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
    host: str | None = Field(None, description="host name or address, for type host")


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


class HostIn(Strict):
    name: str
    address: str
    port: int = Field(54321, description="TCP port of the host agent")
    cluster: Ref
    status: HostStatus = HostStatus.INSTALLING
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagementIn = Field(default_factory=PowerManagementIn)


class HostPatch(Strict):
    name: str | None = None
    address: str | None = None
    port: int | None = None
    cluster: Ref | None = None
    status: HostStatus | None = None
    non_operational_reason: NonOperationalReason | None = None
    power_management: PowerManagementIn | None = None


class HostOut(BaseModel):
    id: int
    name: str
    address: str
    port: int
    cluster: RefOut
    status: HostStatus
    non_operational_reason: NonOperationalReason | None
    power_management: PowerManagementOut
    href: str


# -- fence agents -------------------------------------------------------------------

class Option(Strict):
    name: str
    value: str


class OptionOut(BaseModel):
    name: str
    value: str | None = Field(description="null when the agent's options are encrypted")


class FenceAgentIn(Strict):
    type: str
    address: str
    port: int | None = None
    username: str = ""
    password: str | None = Field(None, description="write-only; omit on update to keep it")
    options: list[Option] | None = Field(
        None, description="omit on update to keep the stored options (values of encrypted "
                          "options are never returned, so this is how they are kept)")
    order: int | None = Field(None, description="agents of the same order run concurrently")
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
    value: str


class TokenRequest(Strict):
    # No user name is longer (users.name); failed logins are counted per name.
    username: str = Field(max_length=128)
    password: str


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


class ErrorOut(BaseModel):
    detail: str
    field: str | None = None


# -- power operations, events ---------------------------------------------------------

FenceType = Literal["status", "start", "stop", "restart", "manual"]


class FenceRequest(Strict):
    fence_type: FenceType


class FenceAgentTestIn(FenceAgentIn):
    id: int | None = Field(None, description="a saved agent whose password to use when none is given")


class AgentCommandOut(BaseModel):
    agent_id: int
    agent: str
    action: str
    outcome: str
    proxy: str | None
    message: str
    attempts: list[dict]


class PowerStatusOut(BaseModel):
    power_state: Literal["on", "off", "unknown", "error"]
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
    action: str
    origin: str = Field(description="api or automatic")
    requested_by: str | None = Field(description="the engine user who asked; null for "
                                                 "automatic fencing")
    state: Literal["running", "succeeded", "failed"]
    phase: str
    message: str
    created_at: str
    finished_at: str | None
    steps: list[StepOut]
    joined: bool = False
    href: str


class EventOut(BaseModel):
    id: int
    time: str
    severity: Literal["info", "warning", "error"]
    kind: str
    host: str | None
    host_id: int | None
    operation_id: int | None
    user: str | None = Field(description="the engine user who did it or whom it is about")
    message: str
    details: dict
