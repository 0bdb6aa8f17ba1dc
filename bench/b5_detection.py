"""5. Detection to fenced: a lab host's agent is killed; the time until its
BMC has received the off command, with a 5 s grace period and the default
3 s heartbeat interval. The kill lands at a random phase of the round."""

from __future__ import annotations

import random
import threading
import time

from bench.labsetup import lab_and_engine
from bench.stats import summary
from enginekit import set_config, status_of
from hostpower.model.inventory import HostStatus
from helpers import wait_until
from labkit import wait_all_agents

GRACE, INTERVAL = 5, 3


def run(samples: int = 5) -> dict[str, object]:
    delays = []
    with lab_and_engine(monitor=True) as (lab, ctx, engine, _):
        set_config(ctx, TimeoutToResetHostInSeconds=str(GRACE), HostHeartbeatIntervalInSec=str(INTERVAL),
                   HostHeartbeatTimeoutInSec="2", HostAttemptsToResetCount="2")
        rnd = random.Random(5)
        for i in range(samples):
            target = lab.topo.hosts[i % 3].name
            off_at: list[float] = []
            got_off = threading.Event()

            def listener(event: dict) -> None:  # type: ignore[type-arg]
                if event == {"event": "command", "bmc": f"{target}-bmc", "command": "off"}:
                    off_at.append(time.monotonic())
                    got_off.set()
            time.sleep(rnd.uniform(0, INTERVAL))
            lab.lab.add_listener(listener)
            killed = time.monotonic()
            lab.lab.fault(target, "agent_crash")
            assert got_off.wait(60), f"{target} was not fenced"
            lab.lab._listeners.remove(listener)
            delays.append(off_at[0] - killed)
            wait_all_agents(lab, 30)
            wait_until(lambda: status_of(ctx, target) is HostStatus.UP, 30, f"{target} up")
            set_config(ctx, FenceQuietTimeBetweenOperationsInSec="0")
    s = summary(delays, scale=1.0)
    bound = GRACE + INTERVAL + 1
    return {
        "name": "Detection to fenced",
        "goal": f"within grace + 1 heartbeat interval + 1 s = {bound} s",
        "met": s["max"] <= bound,
        "lines": [
            f"grace {GRACE} s (TimeoutToResetHostInSeconds), interval {INTERVAL} s, "
            f"{samples} kills at random phases of the heartbeat round",
            f"agent killed -> BMC received off: min {s['min']:.2f} s, median {s['median']:.2f} s, "
            f"max {s['max']:.2f} s",
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
