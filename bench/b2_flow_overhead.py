"""2. Restart flow with the status delays at 0: engine overhead = flow time
minus the time spent inside BMC commands (each driver's own measured
duration, as the proxy agents report it)."""

from __future__ import annotations

import statistics

from bench.labsetup import lab_and_engine
from bench.stats import fmt, summary
from enginekit import host_id, set_chain, set_config
from hostpower.model.operations import FlowAction, Origin


def run(samples: int = 20) -> dict[str, object]:
    overheads, flows, bmc_times = [], [], []
    with lab_and_engine() as (lab, ctx, engine, _):
        set_config(ctx, FenceProxyImplicitPreferences="", FenceStopStatusDelayBetweenRetriesInSec="0",
                   FenceStartStatusDelayBetweenRetriesInSec="0")
        set_chain(ctx, "c1-h1", "c1-h2")
        hid = host_id(ctx, "c1-h1")
        for i in range(samples + 2):
            op, _ = engine.call(engine.service.request(hid, FlowAction.RESTART, Origin.API))
            op = engine.call(engine.service.wait(op.id, 60))
            assert op.state == "succeeded", op.message
            flow = (op.finished_at - op.created_at).total_seconds()
            inside = sum(a["duration"] for st in op.steps for c in st.proxies
                         for a in c["attempts"] if a["outcome"] in ("on", "off"))
            if i >= 2:  # the first two warm up pools and sessions
                flows.append(flow)
                bmc_times.append(inside)
                overheads.append(flow - inside)
            steps = len(op.steps)
    o = summary(overheads)
    return {
        "name": "Restart flow overhead",
        "goal": "engine overhead under 50 ms",
        "met": o["median"] < 50,
        "lines": [
            f"restart of one host through one proxy agent (native ipmilan), {steps} agent commands "
            f"per flow, {samples} flows",
            f"flow time: {fmt(summary(flows))}",
            f"inside BMC commands: median {statistics.median(bmc_times) * 1000:.2f} ms",
            f"engine overhead (flow - BMC): {fmt(o)}",
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
