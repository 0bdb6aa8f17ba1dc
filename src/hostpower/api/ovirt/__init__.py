"""oVirt's REST API v4, the part power management uses, under /ovirt-engine.

So that scripts written against oVirt (the official Python SDK,
ovirt-engine-sdk-python) work against hostpower unchanged. Each module holds
one resource and calls what the native API calls (the inventory, the fencing
service, the login): the two APIs cannot disagree. See docs/ovirt-api.md.

    sso        /ovirt-engine/sso/oauth/token, logout and revoke
    root       /ovirt-engine/api (what connection.test() reads), faults for the rest
    hosts      hosts: list with search, get, update of power_management
    proxies    pm_proxies as oVirt's three types, merged into hostpower's chain
    agents     hosts/{id}/fenceagents
    fence      hosts/{id}/fence
    clusters   clusters with fencing_policy, datacenters
    render     the representations: XML, or JSON on Accept: application/json
    body       request bodies (XML or JSON) read with field-naming errors
    search     the search language served (name=..., wildcards, and/or)
    faults     errors as oVirt's <fault>, the route class that makes them
"""

from __future__ import annotations

from fastapi import APIRouter

from hostpower.api.ovirt import agents, clusters, fence, hosts, root, sso

router = APIRouter()
for _module in (sso, root, hosts, agents, fence, clusters):
    router.include_router(_module.router)
router.include_router(root.fallback)  # last: every other path is a fault
