"""Which engine owns which host: a consistent hash ring over the live engines.

Only a host's owner heartbeats it, treats it automatically and takes over
its orphaned flows. The ring is uhashring's (ketama-compatible, pure Python,
no dependencies) rather than tooz's, whose hash ring drags in the oslo
libraries for one class. Adding or losing an engine moves only that
engine's share of the hosts. Every engine builds the same ring from the
same list of live engines (read from the database), so they agree on
owners whenever they agree on who is alive; when they briefly disagree, the
journal's one-flow-per-host rule and the fencing tokens keep that harmless.
"""

from __future__ import annotations

from collections.abc import Iterable

from uhashring import HashRing

# Points per engine on the ring: more points, more even shares (3 engines
# over 10,000 hosts: within about 5 % of a third each at 400).
VNODES = 400


class Ownership:
    def __init__(self, engines: Iterable[str]) -> None:
        self.engines = tuple(sorted(set(engines)))
        self._ring = HashRing(nodes={name: {"vnodes": VNODES} for name in self.engines})
        self._single = self.engines[0] if len(self.engines) == 1 else None

    def owner(self, host_id: int) -> str | None:
        """The engine that owns the host (None when no engine is alive)."""
        if self._single is not None:
            return self._single
        if not self.engines:
            return None
        return self._ring.get_node(str(host_id))

    def shares(self, host_ids: Iterable[int]) -> dict[str, int]:
        """How many of the hosts each engine owns."""
        counts = dict.fromkeys(self.engines, 0)
        for host_id in host_ids:
            name = self.owner(host_id)
            if name is not None:
                counts[name] += 1
        return counts
