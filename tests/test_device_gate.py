"""The device gate (fencing/devicegate.py): one command at a time per
device, spaced, within one engine and across processes sharing a database
(store/deviceturns.py), on SQLite and on PostgreSQL; a crashed holder's
claim expires."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devicekit import shared_gate

from hostpower.fencing.devicegate import DeviceGate, Turn
from hostpower.fencing.executor import ChainExecutor
from hostpower.model.devices import DeviceKey
from hostpower.model.errors import DeviceBusy, EngineNotReady
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.proxychain import parse_chain
from hostpower.proxies import Candidate
from hostpower.store.db import Database
from hostpower.store.deviceturns import DeviceTurns

DEVICEKIT = str(Path(__file__).with_name("devicekit.py"))
PDU = DeviceKey("192.0.2.10", 161)
OTHER = DeviceKey("192.0.2.11", 161)


def _no_overlap(turns: list[tuple[float, float]], interval: float) -> None:
    """Turns one after the other, each starting `interval` after the previous
    one ended (2 ms of tolerance: SQLite's clock counts milliseconds)."""
    turns = sorted(turns)
    for (_, end), (start, _) in zip(turns, turns[1:]):
        assert start - end >= interval - 0.002, turns


# -- the claims in the database --------------------------------------------------------

def test_device_turns_claim_release_and_expiry(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    try:
        def do(fn):  # type: ignore[no-untyped-def]
            with db.session() as s:
                return fn(DeviceTurns(s))
        assert do(lambda t: t.claim("pdu:161", "engine a", "a1", 30)) is not None
        assert do(lambda t: t.claim("pdu:161", "engine b", "b1", 30)) is None   # held
        assert do(lambda t: t.claim("other:161", "engine b", "b1", 30)) is not None
        held = do(lambda t: t.state("pdu:161"))
        assert held.holder == "engine a" and held.held and 29 < held.free_in <= 30
        assert do(lambda t: t.release("pdu:161", "b1", 0.3)) is None   # not b's claim
        assert do(lambda t: t.release("pdu:161", "a1", 0.3)) is not None
        spaced = do(lambda t: t.state("pdu:161"))
        assert not spaced.held and 0 < spaced.free_in <= 0.3
        assert do(lambda t: t.claim("pdu:161", "engine b", "b2", 30)) is None   # spacing
        time.sleep(0.35)
        assert do(lambda t: t.claim("pdu:161", "engine b", "b2", 0.2)) is not None
        time.sleep(0.25)  # b2 expired: whoever comes next takes it
        assert do(lambda t: t.claim("pdu:161", "engine c", "c1", 30)) is not None
        assert do(lambda t: t.release("pdu:161", "b2", 0)) is None   # too late for b
        assert do(lambda t: t.state("pdu:161")).holder == "engine c"
    finally:
        db.dispose()


# -- one engine --------------------------------------------------------------------------

def test_device_gate_one_command_at_a_time_spaced_other_devices_free() -> None:
    async def main() -> tuple[list[tuple[float, float]], list[Turn]]:
        gate = DeviceGate()
        spans: list[tuple[float, float]] = []

        async def command(key: DeviceKey, label: str) -> Turn:
            turn = await gate.acquire(key, label, 5.0, 0.1)
            start = time.monotonic()
            await asyncio.sleep(0.05)
            if key == PDU:
                spans.append((start, time.monotonic()))
            await gate.release(turn)
            return turn
        turns = await asyncio.gather(*(command(PDU, f"outlet {i}") for i in range(4)),
                                     command(OTHER, "another PDU"))
        return spans, list(turns)
    spans, turns = asyncio.run(main())
    assert len(spans) == 4
    _no_overlap(spans, 0.1)
    other = turns[-1]
    assert other.waited < 0.05 and other.busy_with is None   # not behind the first PDU
    assert turns[1].busy_with == "outlet 0" and turns[1].waited >= 0.15


def test_device_gate_busy_names_device_and_holder_and_frees_nothing() -> None:
    async def main() -> None:
        gate = DeviceGate()
        held = await gate.acquire(PDU, "off of h1 via h2", 5.0, 0.0)
        with pytest.raises(DeviceBusy) as busy:
            await gate.acquire(PDU, "status of h3 via h2", 0.2, 0.0)
        assert "192.0.2.10:161" in str(busy.value) and "off of h1 via h2" in str(busy.value)
        assert "not sent" in str(busy.value) and busy.value.waited >= 0.2
        # A waiter cancelled meanwhile leaves the device to the next one.
        waiter = asyncio.create_task(gate.acquire(PDU, "cancelled", 5.0, 0.0))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.busy(PDU) == "off of h1 via h2"
        await gate.release(held)
        assert gate.busy(PDU) is None
        again = await gate.acquire(PDU, "next", 0.2, 0.0)
        await gate.release(again)
    asyncio.run(main())


def test_device_gate_spacing_past_the_deadline_is_busy() -> None:
    async def main() -> None:
        gate = DeviceGate()
        await gate.release(await gate.acquire(PDU, "first", 1.0, 0.5))
        with pytest.raises(DeviceBusy, match="spacing"):
            await gate.acquire(PDU, "second", 0.1, 0.5)
    asyncio.run(main())


class _SlowDispatch:
    """Stands in for a proxy: each command runs until the test lets it end."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finish = asyncio.Event()

    async def run(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                  timeout: float) -> FenceResult:
        self.started.append(spec.plug or "")
        await self.finish.wait()
        return FenceResult(action, Outcome.OFF)


def test_device_gate_a_sent_command_keeps_its_turn_when_its_task_is_cancelled() -> None:
    """Cancelling a command that reached its proxy stops the engine waiting,
    not the proxy: the device stays busy until the answer is in."""
    async def main() -> None:
        dispatch = _SlowDispatch()

        async def no_state():  # type: ignore[no-untyped-def]
            raise AssertionError("not used")
        executor = ChainExecutor(no_state, dispatch, lambda e: None, {"apc_snmp"})  # type: ignore[arg-type]
        engine = Candidate(parse_chain("engine")[0], None)
        outlet = [AgentSpec("apc_snmp", "192.0.2.10", plug=str(n)) for n in (1, 2)]
        first = asyncio.create_task(executor._try(engine, outlet[0], FenceAction.OFF, 5.0, 0.0,
                                                  "off outlet 1"))
        while not dispatch.started:
            await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        second = asyncio.create_task(executor._try(engine, outlet[1], FenceAction.OFF, 5.0, 0.0,
                                                   "off outlet 2"))
        await asyncio.sleep(0.2)
        assert dispatch.started == ["1"]           # outlet 2 waits: outlet 1 is under way
        assert executor.gate.busy(PDU) == "off outlet 1"
        dispatch.finish.set()
        result, turn = await asyncio.wait_for(second, 5)
        assert dispatch.started == ["1", "2"] and result.outcome is Outcome.OFF
        assert turn.busy_with == "off outlet 1"
        await executor.close()
    asyncio.run(main())


def test_device_gate_an_engine_that_may_no_longer_act_stops_claiming(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    db.upgrade()
    with db.session() as s:
        DeviceTurns(s).claim(PDU.text, "engine e2", "e2-token", 30)   # another engine holds it
    asked = []

    def may_act() -> None:
        asked.append(1)
        if len(asked) > 2:
            raise EngineNotReady("the engine lease was last renewed 9 s ago")

    async def main() -> None:
        gate = shared_gate(db)
        with pytest.raises(EngineNotReady):
            await gate.acquire(PDU, "off of h1 via h2", 5.0, 0.0, may_act=may_act)
        assert gate.busy(PDU) is None   # nothing kept
    try:
        asyncio.run(main())
        with db.session() as s:
            assert DeviceTurns(s).state(PDU.text).holder == "engine e2"   # never taken
    finally:
        db.dispose()
    assert len(asked) == 3


# -- several processes on one database -------------------------------------------------------

def _racer(db_url: str, n: int, hold: float, interval: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, DEVICEKIT, "race", db_url, PDU.text, str(n),
                             str(hold), str(interval)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent)


def test_device_gate_two_processes_never_overlap_and_are_spaced(db_url: str) -> None:
    Database(db_url).upgrade()
    interval = 0.15
    racers = [_racer(db_url, 4, 0.05, interval) for _ in range(2)]
    try:
        for r in racers:
            assert r.stdout is not None and json.loads(r.stdout.readline()) == {"ready": True}
        for r in racers:
            assert r.stdin is not None
            r.stdin.write("go\n")
            r.stdin.flush()
        outputs = [r.communicate(timeout=60)[0] for r in racers]
    finally:
        for r in racers:
            if r.poll() is None:
                r.kill()
                r.wait(10)
    assert [r.returncode for r in racers] == [0, 0]
    turns = [json.loads(line) for out in outputs for line in out.splitlines()]
    assert len(turns) == 8
    _no_overlap([(t["start"], t["end"]) for t in turns], interval)
    # They did contend: each process waited for the other at least once.
    per_process = [[json.loads(line) for line in out.splitlines()] for out in outputs]
    assert all(any(t["waited"] >= interval for t in ts) for ts in per_process)


def test_device_gate_claim_of_a_crashed_holder_expires(db_url: str) -> None:
    Database(db_url).upgrade()
    timeout, margin = 1.0, 0.5            # the claim lasts 1.5 s
    holder = subprocess.Popen([sys.executable, DEVICEKIT, "hold", db_url, PDU.text,
                               str(timeout), str(margin)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent)
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == {"held": True}
        held_at = time.monotonic()
        holder.kill()                       # crashed: it never releases
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    db = Database(db_url)

    async def main() -> tuple[str, float]:
        gate = shared_gate(db)
        with pytest.raises(DeviceBusy) as busy:
            await gate.acquire(PDU, "status of h1 via engine", 0.3, 0.0)
        turn = await gate.acquire(PDU, "status of h1 via engine", 5.0, 0.0)
        got = time.monotonic()
        await gate.release(turn)
        return str(busy.value), got
    try:
        message, got = asyncio.run(main())
    finally:
        db.dispose()
    assert f"held by racer pid {holder.pid}: a command that never ends" in message
    assert PDU.text in message
    # Not before the claim expired (it was made just before "held" was
    # printed), and soon after.
    assert held_at + timeout + margin - 0.3 <= got <= held_at + timeout + margin + 1.0
