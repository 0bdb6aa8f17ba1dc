"""Soft fencing against the lab: each simulated host runs Debian's OpenSSH
sshd in its namespace (lab/ssh.py), the engine's monitor finds a host whose
agent stopped answering and, before any power action, restarts the agent's
service over SSH (fencing/softfencing.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from conftest import require
from enginekit import (
    EngineThread, events, host_id, last_event_id, reset, scenario_world, set_config, status_of,
)
from helpers import wait_until
from hostpower.lab import ssh as lab_ssh
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import HostStatus
from hostpower.model.sshkey import fingerprint
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal
from labkit import counts, fence_via, wait_all_agents, wait_counts

pytestmark = pytest.mark.lab
POWER_ACTIONS = ("on", "off", "reset", "cycle")
# Long enough for a restarted agent to listen again on a busy machine.
SOFT = {"TimeoutToResetHostInSeconds": "4"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    require(lab_ssh.available(), "the lab's SSH servers need Debian's openssh-server "
                                 "(scripts/install-system-deps.sh installs it)")
    with scenario_world(tmp_path_factory.mktemp("soft"), monitor=True, ssh_access=True) as world:
        lab, engine = world
        set_config(engine.ctx, **SOFT)
        yield world


@pytest.fixture
def lab(world) -> Iterator[RunningLab]:  # type: ignore[no-untyped-def]
    lab, engine = world
    yield lab
    assert lab.ssh is not None
    for h in lab.topo.hosts:
        lab.lab.fault(h.name, "ssh_down", clear=True)
        for fault in ("agent_crash", "agent_hang"):
            lab.lab.fault(h.name, fault, clear=True)
        for bmc in h.bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(p.name for p in lab.topo.hosts
                            if p.cluster == h.cluster and p.name != h.name)
                fence_via(lab, peer, bmc, "on")
    wait_all_agents(lab)
    for h in lab.topo.hosts:
        lab.ssh.wait_ready(h.name)
    reset(engine.ctx, lab)
    pin(engine, lab, {h.name: lab.ssh.host_key(h.name) for h in lab.topo.hosts})
    set_config(engine.ctx, **SOFT)
    wait_until(lambda: all(status_of(engine.ctx, h.name) is HostStatus.UP
                           for h in lab.topo.hosts), 15, "every host up again")


@pytest.fixture
def engine(world) -> EngineThread:  # type: ignore[no-untyped-def]
    return world[1]


def pin(engine: EngineThread, lab: RunningLab, keys: dict[str, str]) -> None:
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        for name, key in keys.items():
            h = inv.find_host(name)
            inv.update_host(h.id, ssh=replace(h.ssh, host_key=key))


def operations(engine: EngineThread, name: str):  # type: ignore[no-untyped-def]
    with engine.ctx.db.session() as s:
        return Journal(s).list(host_id(engine.ctx, name))


def power_actions(lab: RunningLab, bmc: str) -> dict[str, int]:
    return {k: v for k, v in counts(lab, bmc).items() if k in POWER_ACTIONS}


def ssh_commands(lab: RunningLab, host: str) -> int:
    return int(lab.lab.status()["hosts"][host]["ssh"]["commands"])


def kinds(engine: EngineThread, host: str, since: int, *wanted: str) -> list[str]:
    return [e.kind for e in events(engine.ctx, host, since_id=since) if e.kind in wanted]


def wait_finished_restart(engine: EngineThread, host: str,  # type: ignore[no-untyped-def]
                          since: int):
    return wait_until(lambda: next((o for o in operations(engine, host)
                                    if o.origin == "automatic" and not o.running
                                    and o.id > since), None),
                      60, f"the automatic restart of {host} to finish")


def last_op_id(engine: EngineThread, host: str) -> int:
    return max((o.id for o in operations(engine, host)), default=0)


def test_soft_hung_agent_is_healed_over_ssh_without_a_power_action(
        lab: RunningLab, engine: EngineThread) -> None:
    since = last_event_id(engine.ctx)
    before = power_actions(lab, "c1-h2-bmc")
    status_before = lab.lab.status()["hosts"]["c1-h2"]
    lab.lab.fault("c1-h2", "agent_hang")
    [healed] = wait_until(lambda: events(engine.ctx, "c1-h2", "soft_fencing.healed", since),
                          40, "soft fencing to heal c1-h2")
    assert "no power action" in healed.message
    assert healed.details["command"] == "systemctl restart hostpower-agent"
    wait_until(lambda: status_of(engine.ctx, "c1-h2") is HostStatus.UP, 10, "c1-h2 up")
    time.sleep(2.5)  # a few more monitor rounds: nothing may fence it now
    after = lab.lab.status()["hosts"]["c1-h2"]
    # The lab's sshd really ran the command: the hung agent was replaced by a
    # new process, on the same boot (the service restarted, not the host).
    assert after["agent"] == "running" and after["pid"] != status_before["pid"]
    assert after["agent_restarts"] == status_before["agent_restarts"] + 1
    assert after["boots"] == status_before["boots"]
    assert after["ssh"]["commands"] == status_before["ssh"]["commands"] + 1
    # No power action reached the BMC (PM status was asked, that is all).
    assert power_actions(lab, "c1-h2-bmc") == before
    story = kinds(engine, "c1-h2", since, "soft_fencing.started", "soft_fencing.healed",
                  "treatment.spared", "fence.started", "host.rebooted")
    assert story == ["soft_fencing.started", "soft_fencing.healed", "treatment.spared"]
    assert not [o for o in operations(engine, "c1-h2") if o.origin == "automatic"]


def test_soft_ssh_refused_then_hard_fencing_follows(lab: RunningLab, engine: EngineThread) -> None:
    since, op_since = last_event_id(engine.ctx), last_op_id(engine, "c1-h1")
    before = counts(lab, "c1-h1-bmc")
    lab.lab.fault("c1-h1", "ssh_down")
    lab.lab.fault("c1-h1", "agent_hang")
    op = wait_finished_restart(engine, "c1-h1", op_since)
    assert op.state == "succeeded", op.message
    [failed] = events(engine.ctx, "c1-h1", "soft_fencing.failed", since)
    assert failed.details["reason"] == "refused"
    assert "refused" in failed.message and "hard fencing" in failed.message
    wait_counts(lab, "c1-h1-bmc", before, off=1, on=1)
    assert kinds(engine, "c1-h1", since, "soft_fencing.started", "soft_fencing.failed",
                 "fence.started", "fence.succeeded") == [
        "soft_fencing.started", "soft_fencing.failed", "fence.started", "fence.succeeded"]
    wait_until(lambda: status_of(engine.ctx, "c1-h1") is HostStatus.UP, 20, "c1-h1 up again")


def test_soft_host_off_is_not_soft_fenced(lab: RunningLab, engine: EngineThread) -> None:
    since, op_since = last_event_id(engine.ctx), last_op_id(engine, "c1-h2")
    commands = ssh_commands(lab, "c1-h2")
    fence_via(lab, "c1-h1", lab.topo.host("c1-h2").bmcs[0], "off")  # the host loses power
    op = wait_finished_restart(engine, "c1-h2", op_since)
    assert op.state == "succeeded", op.message
    [skipped] = events(engine.ctx, "c1-h2", "soft_fencing.skipped", since)
    assert skipped.message == "soft fencing of c1-h2 skipped: PM status says off"
    assert not events(engine.ctx, "c1-h2", "soft_fencing.started", since)
    assert ssh_commands(lab, "c1-h2") == commands
    # The restart flow found it verified off: no second off, then on.
    assert "already verified off" in " ".join(
        e.message for e in events(engine.ctx, "c1-h2", "fence.note", since))
    wait_until(lambda: status_of(engine.ctx, "c1-h2") is HostStatus.UP, 20, "c1-h2 up again")


def test_soft_host_key_mismatch_refuses_to_connect_and_hard_fencing_follows(
        lab: RunningLab, engine: EngineThread) -> None:
    assert lab.ssh is not None
    real, other = lab.ssh.host_key("c1-h1"), lab.ssh.host_key("c1-h3")
    pin(engine, lab, {"c1-h1": other})  # as if c1-h1's address now led to another machine
    since, op_since = last_event_id(engine.ctx), last_op_id(engine, "c1-h1")
    commands = ssh_commands(lab, "c1-h1")
    before = counts(lab, "c1-h1-bmc")
    lab.lab.fault("c1-h1", "agent_hang")
    op = wait_finished_restart(engine, "c1-h1", op_since)
    assert op.state == "succeeded", op.message
    [failed] = events(engine.ctx, "c1-h1", "soft_fencing.failed", since)
    assert failed.details == {"reason": "host_key_mismatch",
                              "seen_fingerprint": fingerprint(real),
                              "pinned_fingerprint": fingerprint(other)}
    assert fingerprint(real) in failed.message and fingerprint(other) in failed.message
    assert ssh_commands(lab, "c1-h1") == commands  # never logged in, nothing ran
    wait_counts(lab, "c1-h1-bmc", before, off=1, on=1)
    wait_until(lambda: status_of(engine.ctx, "c1-h1") is HostStatus.UP, 20, "c1-h1 up again")
