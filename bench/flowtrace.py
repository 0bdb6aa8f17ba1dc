"""Where a restart flow's time goes: the engine's waits timed call by call.

`traced()` wraps, for the time of a benchmark, the calls a flow waits on
(the journal's writes and reads, the device turns, the agent commands) and
adds up their wall time; `lines(flows)` says what each costs per restart.
The wrappers cost a few microseconds a call; the benchmark's own figures
come from the journal's timestamps, not from here.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hostpower.fencing.devicegate import DeviceGate
from hostpower.fencing.gateway import EngineGateway
from hostpower.hostagent.client import AgentClient

# (class, method, label of the wait it is)
_WAITS = (
    (EngineGateway, "finish_flow", "the flow's end committed"),
    (DeviceGate, "acquire", "device turns taken"),
    (DeviceGate, "release", "device turns given back"),
    (AgentClient, "fence", "agent commands (round trip, BMC included)"),
)


class Waits:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] += seconds
        self.calls[label] += 1

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def lines(self, flows: int, prefix: str) -> list[str]:
        return [f"{prefix}{label}: {self.seconds[label] / flows * 1000:.2f} ms per restart "
                f"({self.calls[label] / flows:g} calls)"
                for label in sorted(self.seconds, key=lambda k: -self.seconds[k])]


@contextmanager
def traced() -> Iterator[Waits]:
    waits = Waits()
    saved: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str, label: Any) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                chosen = label(*args, **kwargs) if callable(label) else label
                waits.add(chosen, time.perf_counter() - started)
        saved.append((cls, name, original))
        setattr(cls, name, timed)

    def step_kind(*args: Any, changes_power: bool = True, **_: Any) -> str:
        return ("off/on steps committed before their command" if changes_power
                else "status steps' reservation checks (reads)")

    for cls, name, label in _WAITS:
        wrap(cls, name, label)
    wrap(EngineGateway, "start_step", step_kind)
    try:
        yield waits
    finally:
        for cls, name, original in reversed(saved):
            setattr(cls, name, original)
