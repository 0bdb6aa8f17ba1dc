"""A host's pm_proxies as an oVirt client sees and writes them.

oVirt's PmProxyType has three values, `cluster`, `dc` and `other_dc`, which
are hostpower's sources of the same names. hostpower's chain may also hold
`engine` and named hosts, which no oVirt client can read or write (the SDK
reads a type it does not know as None, and would write it back as a proxy
without a type). So:

* read: ``pm_proxies`` lists the oVirt-typed entries of the host's own chain,
  in order; `engine` and named hosts are left out (the native API shows them,
  and the effective chain);
* write: the oVirt-typed entries the client sends take the places of the
  oVirt-typed entries of the stored chain, in the order sent (extra ones are
  appended); `engine` and named hosts stay where they are. So reordering
  ``[cluster, dc]`` to ``[dc, cluster]`` in ``host9,cluster,engine,dc`` gives
  ``host9,dc,engine,cluster``, and an empty list removes only the oVirt-typed
  entries.

The merged chain is then checked like any chain (api/convert.chain_in, and
the inventory when it is saved): duplicates, unknown words, missing hosts.
"""

from __future__ import annotations

from hostpower.api import schemas as S
from hostpower.model.errors import ValidationError
from hostpower.model.proxychain import ProxySource, parse_chain

OVIRT_TYPES = (ProxySource.CLUSTER, ProxySource.DC, ProxySource.OTHER_DC)
FIELD = "power_management.pm_proxies"


def visible(chain: str) -> list[str]:
    """The oVirt-typed entries of a stored chain, in order."""
    return [e.source.value for e in parse_chain(chain) if e.source in OVIRT_TYPES]


def ovirt_type(raw: str | None, position: int) -> str:
    word = (raw or "").strip().lower()
    if word in {t.value for t in OVIRT_TYPES}:
        return word
    raise ValidationError(FIELD, f"entry {position}: type {raw!r} is not an oVirt proxy type "
                                 f"(cluster, dc, other_dc); hostpower's engine and named-host "
                                 f"entries are set through /api/hosts/{{id}}/power_management")


def merged(chain: str, wanted: list[str]) -> list[S.PmProxy]:
    """The stored chain with its oVirt-typed entries replaced by `wanted`."""
    queue = list(wanted)
    out: list[S.PmProxy] = []
    for e in parse_chain(chain):
        if e.source in OVIRT_TYPES:
            if queue:
                out.append(S.PmProxy(type=queue.pop(0)))  # type: ignore[arg-type]
        else:
            out.append(S.PmProxy(type=e.source.value, host=e.host))  # type: ignore[arg-type]
    out.extend(S.PmProxy(type=t) for t in queue)  # type: ignore[arg-type]
    return out
