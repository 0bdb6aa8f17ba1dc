"""Domain objects to API bodies and back."""

from __future__ import annotations

from hostpower.api import schemas as S
from hostpower.config import Config
from hostpower.model.errors import ValidationError
from hostpower.model.inventory import (
    Cluster, ConnectivityPolicy, DataCenter, FenceAgent, FencingPolicy, Host, PowerManagement,
    SshAccess,
)
from hostpower.model.sshkey import fingerprint
from hostpower.model.proxychain import (
    ProxyEntry, ProxySource, check_entries, format_chain, parse_chain, parse_entry,
)
from hostpower.proxies import effective_chain


def dc_out(dc: DataCenter) -> S.DataCenterOut:
    return S.DataCenterOut(id=dc.id, name=dc.name, description=dc.description,
                           href=f"/api/datacenters/{dc.id}")


def policy_out(p: FencingPolicy) -> S.FencingPolicyBody:
    return S.FencingPolicyBody(
        enabled=p.enabled,
        skip_if_connectivity_broken=S.ConnectivityPolicyBody(
            enabled=p.skip_if_connectivity_broken.enabled,
            threshold=p.skip_if_connectivity_broken.threshold),
        skip_if_sd_active=S.SdActivePolicyBody(enabled=p.skip_if_sd_active),
    )


def policy_in(body: S.FencingPolicyBody) -> FencingPolicy:
    return FencingPolicy(
        enabled=body.enabled,
        skip_if_connectivity_broken=ConnectivityPolicy(
            body.skip_if_connectivity_broken.enabled, body.skip_if_connectivity_broken.threshold),
        skip_if_sd_active=body.skip_if_sd_active.enabled,
    )


def cluster_out(c: Cluster, dc: DataCenter) -> S.ClusterOut:
    return S.ClusterOut(
        id=c.id, name=c.name, description=c.description,
        data_center=S.RefOut(id=dc.id, name=dc.name, href=f"/api/datacenters/{dc.id}"),
        fencing_policy=policy_out(c.fencing_policy), href=f"/api/clusters/{c.id}",
    )


def chain_in(proxies: list[S.PmProxy]) -> str:
    """API proxies to the stored chain text; errors name the list position."""
    entries: list[ProxyEntry] = []
    for i, p in enumerate(proxies, 1):
        field = "power_management.pm_proxies"
        if p.type == "host":
            if not p.host:
                raise ValidationError(field, f"entry {i}: type host needs a host name or address")
            entry = parse_entry(p.host, i, field)
            if entry.source is not ProxySource.HOST:
                raise ValidationError(
                    field, f"entry {i}: {p.host!r} is a source keyword, not a host; "
                           f"use type {entry.source.value!r}")
        else:
            if p.host:
                raise ValidationError(field, f"entry {i}: type {p.type} takes no host")
            entry = ProxyEntry(ProxySource(p.type))
        entries.append(entry)
    return format_chain(check_entries(entries, "power_management.pm_proxies"))


def _proxy(e: ProxyEntry) -> S.PmProxy:
    return S.PmProxy(type=e.source.value, host=e.host)


def pm_out(pm: PowerManagement, config: Config) -> S.PowerManagementOut:
    own = parse_chain(pm.pm_proxies)
    effective = effective_chain(own, config)
    own_keys = {e.key for e in own}
    return S.PowerManagementOut(
        enabled=pm.enabled, automatic_pm_enabled=pm.automatic_pm_enabled,
        kdump_detection=pm.kdump_detection,
        pm_proxies=[_proxy(e) for e in own],
        effective_pm_proxies=[
            S.PmProxyEffective(type=e.source.value, host=e.host, implicit=e.key not in own_keys)
            for e in effective
        ],
    )


def pm_in(body: S.PowerManagementIn) -> PowerManagement:
    return PowerManagement(
        enabled=body.enabled, automatic_pm_enabled=body.automatic_pm_enabled,
        kdump_detection=body.kdump_detection, pm_proxies=chain_in(body.pm_proxies),
    )


def ssh_in(body: S.SshIn, stored: SshAccess | None = None) -> SshAccess:
    """`host_key` omitted keeps the stored key (none when creating)."""
    key = body.host_key if body.host_key is not None else (stored.host_key if stored else "")
    return SshAccess(port=body.port, user=body.user, host_key=key)


def ssh_out(ssh: SshAccess) -> S.SshOut:
    return S.SshOut(port=ssh.port, user=ssh.user, host_key=ssh.host_key or None,
                    fingerprint=fingerprint(ssh.host_key) if ssh.host_key else None)


def host_out(h: Host, cluster: Cluster, config: Config) -> S.HostOut:
    return S.HostOut(
        id=h.id, name=h.name, address=h.address, port=h.agent_port,
        cluster=S.RefOut(id=cluster.id, name=cluster.name, href=f"/api/clusters/{cluster.id}"),
        status=h.status, non_operational_reason=h.non_operational_reason,
        power_management=pm_out(h.power_management, config), ssh=ssh_out(h.ssh),
        href=f"/api/hosts/{h.id}",
    )


def agent_out(a: FenceAgent, siblings: list[FenceAgent]) -> S.FenceAgentOut:
    return S.FenceAgentOut(
        id=a.id, type=a.type, address=a.address, port=a.port, username=a.username,
        options=[S.OptionOut(name=k, value=None if a.encrypt_options else v) for k, v in a.options],
        order=a.order,
        concurrent=any(o.order == a.order and o.id != a.id for o in siblings),
        encrypt_options=a.encrypt_options, password_set=bool(a.password),
        href=f"/api/hosts/{a.host_id}/fenceagents/{a.id}",
    )
