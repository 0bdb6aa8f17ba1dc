"""Loading an inventory from a YAML (or JSON) document.

Used by `hostpower inventory load`, the demo and the lab. The whole document
is loaded in the caller's transaction: any error names its path
(`data_centers[0].clusters[1].hosts[2].address: ...`) and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from hostpower.model.errors import ConflictError, NotFoundError, ValidationError
from hostpower.model.inventory import (
    ConnectivityPolicy, FencingPolicy, HostStatus, NonOperationalReason, PowerManagement,
    SshAccess,
)
from hostpower.model.secret import Secret
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import AgentInput, HostInput, Inventory


@dataclass
class LoadSummary:
    data_centers: int = 0
    clusters: int = 0
    hosts: int = 0
    agents: int = 0
    config_keys: int = 0

    def __str__(self) -> str:
        return (f"{self.data_centers} data center(s), {self.clusters} cluster(s), "
                f"{self.hosts} host(s), {self.agents} fence agent(s), "
                f"{self.config_keys} configuration key(s)")


@contextmanager
def _at(path: str) -> Iterator[None]:
    """Prefix errors raised inside with the document path."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(f"{path}.{exc.field}", exc.message) from None
    except ConflictError as exc:
        raise ConflictError(f"{path}.{exc.field}", exc.message) from None
    except NotFoundError as exc:
        raise ValidationError(path, str(exc)) from None


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(path, "must be a mapping")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(path, "must be a list")
    return value


def _known(data: Mapping[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(f"{path}.{unknown[0]}", "is not a known field")


def _enum(cls: type, value: Any, path: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise ValidationError(path, f"{value!r} is not one of {choices}") from None


def _policy(data: Any, path: str) -> FencingPolicy:
    d = _mapping(data or {}, path)
    _known(d, {"enabled", "skip_if_connectivity_broken", "skip_if_sd_active"}, path)
    conn = _mapping(d.get("skip_if_connectivity_broken") or {}, f"{path}.skip_if_connectivity_broken")
    sd = d.get("skip_if_sd_active", False)
    return FencingPolicy(
        enabled=bool(d.get("enabled", True)),
        skip_if_connectivity_broken=ConnectivityPolicy(
            bool(conn.get("enabled", True)), conn.get("threshold", 50)),
        skip_if_sd_active=bool(sd.get("enabled") if isinstance(sd, Mapping) else sd),
    )


def _agent(data: Any, path: str) -> AgentInput:
    d = _mapping(data, path)
    _known(d, {"type", "address", "port", "username", "password", "options", "order",
               "encrypt_options"}, path)
    options = d.get("options") or {}
    if isinstance(options, Mapping):
        pairs = tuple((str(k), str(v)) for k, v in options.items())
    else:
        pairs = tuple((str(o["name"]), str(o["value"])) for o in _list(options, f"{path}.options"))
    password = d.get("password")
    return AgentInput(
        type=str(d.get("type", "")), address=str(d.get("address", "")), port=d.get("port"),
        username=str(d.get("username", "")),
        password=Secret(str(password)) if password is not None else None,
        options=pairs, order=d.get("order"), encrypt_options=bool(d.get("encrypt_options", False)),
    )


def _ssh(data: Any, path: str) -> SshAccess:
    """`ssh: {port, user, host_key}`; no `ssh` (or no port): no SSH access."""
    d = _mapping(data or {}, path)
    _known(d, {"port", "user", "host_key"}, path)
    user, key = d.get("user", "root"), d.get("host_key", "")
    return SshAccess(port=d.get("port"), user=user if isinstance(user, str) else repr(user),
                     host_key=key if isinstance(key, str) else repr(key))


def load_document(inv: Inventory, config: ConfigStore, doc: Any) -> LoadSummary:
    """Create everything the document describes. Chains are set after all
    hosts exist, so a chain may name a host defined further down."""
    summary = LoadSummary()
    root = _mapping(doc, "inventory")
    _known(root, {"config", "data_centers"}, "inventory")
    for key, value in _mapping(root.get("config") or {}, "config").items():
        with _at("config"):
            config.set(str(key), str(value))
        summary.config_keys += 1
    chains: list[tuple[str, int, str]] = []
    for i, dc_data in enumerate(_list(root.get("data_centers"), "data_centers")):
        dpath = f"data_centers[{i}]"
        dcd = _mapping(dc_data, dpath)
        _known(dcd, {"name", "description", "clusters"}, dpath)
        with _at(dpath):
            dc = inv.add_data_center(str(dcd.get("name", "")), str(dcd.get("description", "")))
        summary.data_centers += 1
        for j, cl_data in enumerate(_list(dcd.get("clusters"), f"{dpath}.clusters")):
            cpath = f"{dpath}.clusters[{j}]"
            cd = _mapping(cl_data, cpath)
            _known(cd, {"name", "description", "fencing_policy", "hosts"}, cpath)
            with _at(cpath):
                cluster = inv.add_cluster(str(cd.get("name", "")), dc.id,
                                          str(cd.get("description", "")),
                                          _policy(cd.get("fencing_policy"), "fencing_policy"))
            summary.clusters += 1
            for k, h_data in enumerate(_list(cd.get("hosts"), f"{cpath}.hosts")):
                hpath = f"{cpath}.hosts[{k}]"
                hd = _mapping(h_data, hpath)
                _known(hd, {"name", "address", "agent_port", "status", "non_operational_reason",
                            "power_management", "ssh"}, hpath)
                ssh = _ssh(hd.get("ssh"), f"{hpath}.ssh")
                pm = _mapping(hd.get("power_management") or {}, f"{hpath}.power_management")
                _known(pm, {"enabled", "automatic_pm_enabled", "kdump_detection", "pm_proxies",
                            "agents"}, f"{hpath}.power_management")
                reason = hd.get("non_operational_reason")
                with _at(hpath):
                    host = inv.add_host(HostInput(
                        name=str(hd.get("name", "")), address=str(hd.get("address", "")),
                        cluster_id=cluster.id, agent_port=hd.get("agent_port", 54321),
                        status=_enum(HostStatus, hd.get("status", "up"), "status"),
                        non_operational_reason=(_enum(NonOperationalReason, reason,
                                                      "non_operational_reason")
                                                if reason else None),
                        power_management=PowerManagement(
                            enabled=bool(pm.get("enabled", False)),
                            automatic_pm_enabled=bool(pm.get("automatic_pm_enabled", True)),
                            kdump_detection=bool(pm.get("kdump_detection", True))),
                        ssh=ssh,
                    ))
                summary.hosts += 1
                if pm.get("pm_proxies"):
                    chains.append((f"{hpath}.power_management", host.id, str(pm["pm_proxies"])))
                for n, a_data in enumerate(_list(pm.get("agents"), f"{hpath}.power_management.agents")):
                    apath = f"{hpath}.power_management.agents[{n}]"
                    with _at(apath):
                        inv.add_agent(host.id, _agent(a_data, apath))
                    summary.agents += 1
    for path, host_id, spec in chains:
        with _at(path):
            host = inv.host(host_id)
            inv.update_host(host_id, power_management=replace(host.power_management,
                                                               pm_proxies=spec))
    return summary
