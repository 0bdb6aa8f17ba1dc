"""Fencing readiness: can a host be fenced now, and through how many proxies?

The PM health check (fencing/readiness.py) asks each candidate proxy of a
host's chain for a status of each of its fence agents. Each (proxy, agent)
pair is a *path*: it works (the device answered on or off), fails (with the
reason), or was not tried (the proxy was not eligible, or beyond the
candidates checked per chain entry). This module turns those paths into a
verdict, with no I/O:

* a host can be fenced when one of its agent order groups can be switched
  entirely: every agent of the group has a working path (a stop must reach
  every power supply, DESIGN.md "Several agents per host");
* `paths` is how many proxies must fail before that is no longer true: with
  one agent, simply the number of proxies that work for it;
* 0 paths: `unfenceable` (ERROR), 1: `single_path` (a single point of
  failure, WARNING), 2 or more: `ready`; `unknown` while not checked (or
  power management is disabled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from itertools import product
from typing import Protocol

from hostpower.model.agentgroups import order_groups
from hostpower.model.events import Severity

# Beyond this many combinations (agents chosen one per order group) the
# exact count gives way to an upper bound; real hosts have a handful of agents.
EXACT_LIMIT = 4096


class Readiness(StrEnum):
    READY = "ready"              # two or more proxies can fence it
    SINGLE_PATH = "single_path"  # exactly one: a single point of failure
    UNFENCEABLE = "unfenceable"  # none
    UNKNOWN = "unknown"          # not checked yet, or power management disabled


class PathState(StrEnum):
    WORKS = "works"
    FAILS = "fails"
    NOT_TRIED = "not_tried"


@dataclass(frozen=True)
class PathCheck:
    """One (proxy, agent) path as the health check found it."""

    proxy: str          # a host name, or "engine"
    source: str         # the chain entry that yielded the proxy: cluster, dc, engine, a host
    agent_id: int
    agent: str          # type@address[:port], for people
    state: PathState
    message: str = ""   # the power state when it works; why, when it fails or was not tried
    duration: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"proxy": self.proxy, "source": self.source, "agent_id": self.agent_id,
                "agent": self.agent, "state": self.state.value, "message": self.message,
                "duration": self.duration}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "PathCheck":
        return cls(proxy=str(d["proxy"]), source=str(d.get("source", "")),
                   agent_id=int(d.get("agent_id", 0)),  # type: ignore[call-overload]
                   agent=str(d.get("agent", "")), state=PathState(str(d["state"])),
                   message=str(d.get("message", "")),
                   duration=float(d.get("duration", 0.0)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class HostReadiness:
    """A host's verdict: stored by the health check, read by the API and the CLI."""

    host_id: int
    host_name: str
    readiness: Readiness
    paths: int
    checks: tuple[PathCheck, ...] = ()
    message: str = ""
    checked_at: datetime | None = None
    changed_at: datetime | None = None   # when `readiness` last changed
    engine: str | None = None            # the engine that checked
    cluster: str | None = None           # the host's cluster, for readers

    @property
    def working(self) -> list[str]:
        """Proxies with at least one working path, in chain order."""
        return _unique(c.proxy for c in self.checks if c.state is PathState.WORKS)

    @property
    def failing(self) -> list[str]:
        """Proxies tried that work for none of the agents, in chain order."""
        working = set(self.working)
        return _unique(c.proxy for c in self.checks
                       if c.state is PathState.FAILS and c.proxy not in working)

    @property
    def not_tried(self) -> list[str]:
        tried = {c.proxy for c in self.checks if c.state is not PathState.NOT_TRIED}
        return _unique(c.proxy for c in self.checks
                       if c.state is PathState.NOT_TRIED and c.proxy not in tried)


    def as_dict(self) -> dict[str, object]:
        """The shape the API and `hostpower readiness --json` give."""
        return {"host_id": self.host_id, "host": self.host_name, "cluster": self.cluster,
                "readiness": self.readiness.value, "paths": self.paths,
                "working": self.working, "failing": self.failing, "not_tried": self.not_tried,
                "message": self.message,
                "checked_at": self.checked_at.isoformat() if self.checked_at else None,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None,
                "engine": self.engine, "checks": [c.as_dict() for c in self.checks]}


class _Agent(Protocol):
    id: int
    order: int


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def fence_paths(agents: Sequence[_Agent], checks: Iterable[PathCheck]) -> int:
    """How many proxies must fail before no order group can be switched
    entirely any more: the smallest set of proxies that, for some agent of
    every group, holds all of that agent's working proxies."""
    works: dict[int, frozenset[str]] = {}
    for c in checks:
        if c.state is PathState.WORKS:
            works[c.agent_id] = works.get(c.agent_id, frozenset()) | {c.proxy}
    options: list[list[frozenset[str]]] = []
    for group in order_groups(agents):
        proxies = [works.get(a.id, frozenset()) for a in group]
        if not all(proxies):
            continue  # this group cannot be switched now: it counts for nothing
        options.append(proxies)
    if not options:
        return 0
    combinations = 1
    for o in options:
        combinations *= len(o)
    if combinations > EXACT_LIMIT:
        # Upper bound: per group the agent with the fewest proxies.
        return len(frozenset().union(*(min(o, key=len) for o in options)))
    return min(len(frozenset().union(*choice)) for choice in product(*options))


def classify(paths: int) -> Readiness:
    if paths <= 0:
        return Readiness.UNFENCEABLE
    return Readiness.SINGLE_PATH if paths == 1 else Readiness.READY


def assess(host_id: int, host_name: str, agents: Sequence[_Agent],
           checks: Sequence[PathCheck]) -> HostReadiness:
    """The verdict on a checked host, with a message for people."""
    paths = fence_paths(agents, checks)
    verdict = HostReadiness(host_id, host_name, classify(paths), paths, tuple(checks))
    return replace(verdict, message=describe(verdict, agents))


def critical(agents: Sequence[_Agent], checks: Sequence[PathCheck]) -> list[str]:
    """The working proxies whose failure alone would leave the host unfenceable."""
    return [p for p in _unique(c.proxy for c in checks if c.state is PathState.WORKS)
            if fence_paths(agents, [c for c in checks if c.proxy != p]) == 0]


def through(r: HostReadiness) -> str:
    """'2 proxies (c3-h2, engine)'; with several agents the proxies that work
    may outnumber the paths."""
    working = ", ".join(r.working)
    if len(r.working) == r.paths:
        return f"{r.paths} proxies ({working})"
    return f"{r.paths} independent proxies (working: {working})"


def describe(r: HostReadiness, agents: Sequence[_Agent]) -> str:
    failing = "; ".join(f"{c.proxy} ({c.source}) with {c.agent}: {c.message or 'failed'}"
                        for c in r.checks if c.state is PathState.FAILS)
    if r.readiness is Readiness.UNFENCEABLE:
        if not agents:
            return (f"{r.host_name} cannot be fenced: power management is enabled but it has "
                    f"no fence agent")
        if not failing:
            return f"{r.host_name} cannot be fenced: no eligible proxy in its chain"
        why = ("no proxy reaches its fence agent" if len(agents) == 1 else
               "in every order group some fence agent answers through no proxy")
        return f"{r.host_name} cannot be fenced: {why} ({failing})"
    if r.readiness is Readiness.SINGLE_PATH:
        single = ", ".join(critical(agents, r.checks))
        return (f"{r.host_name} can be fenced only through {single}: a single point of failure"
                + (f" (failing: {failing})" if failing else ""))
    return f"{r.host_name} can be fenced through {through(r)}"


@dataclass(frozen=True)
class Change:
    severity: Severity
    message: str


def change(previous: Readiness | None, now: HostReadiness) -> Change | None:
    """The event a new verdict deserves: one per change of readiness. A host's
    first verdict is news only when it is bad (a fresh installation whose
    hosts are all ready stays quiet)."""
    if previous == now.readiness:
        return None
    first = previous is None or previous is Readiness.UNKNOWN
    if now.readiness is Readiness.UNFENCEABLE:
        return Change(Severity.ERROR, now.message)
    if now.readiness is Readiness.SINGLE_PATH:
        return Change(Severity.WARNING, now.message)
    if now.readiness is Readiness.READY:
        if first:
            return None
        return Change(Severity.INFO, f"{now.host_name} can be fenced again through "
                                     f"{through(now)}; it was {previous}")
    return None  # unknown: not a verdict of the health check
