"""10. Redfish: the native driver beside fence_redfish, on one lab Redfish BMC
(sushy-tools behind the lab's session layer, HTTPS from the lab's device CA).

(a) `fence_redfish` status, spawned by the script driver (as a proxy runs it),
    certificate verified against the lab's CA (REQUESTS_CA_BUNDLE);
(b) the native Redfish driver's status, in-process, on its pooled session.
Sampled round-robin in one run so that they share conditions. Then the
sessions each opens per 100 commands (90 statuses, 5 offs, 5 ons), as the
BMC counts them: goal 1 for the native driver. fence_redfish opens none but
sends the password with every request (HTTP basic): that count is given too.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml
from labkit import REDFISH_LAB, counts, wait_counts

from bench.stats import fmt, summary
from hostpower.drivers.redfish import NativeRedfishDriver
from hostpower.drivers.script import ScriptDriver
from hostpower.lab.runner import load_topology, start_lab
from hostpower.model.power import AgentSpec, FenceAction, Outcome
from hostpower.model.secret import Secret
from hostpower.settings import Settings

HOST = "k1-r"


def _mix(i: int) -> FenceAction:
    """100 commands: a status, with an off and an on every 20."""
    return {10: FenceAction.OFF, 11: FenceAction.ON}.get(i % 20, FenceAction.STATUS)


def run(samples: int = 60) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as tmp:
        settings = Settings(home=Path(tmp) / "home", db_url=f"sqlite:///{Path(tmp) / 'e.db'}")
        lab = start_lab(settings, load_topology(yaml.safe_load(REDFISH_LAB), loopback=False),
                        log=lambda m: None)
        try:
            bmc = lab.topo.host(HOST).bmcs[0]
            bundle = str(lab.redfish_ca_bundle)
            spec = AgentSpec(type="redfish", address=bmc.address, port=bmc.port,
                             username=lab.topo.bmc_username,
                             password=Secret(lab.topo.bmc_password),
                             options=(("systems_uri", bmc.systems_uri),))
            script = ScriptDriver(ca_bundle=bundle)
            native = NativeRedfishDriver(ca_bundle=bundle, poll_interval=0.05)
            times: dict[str, list[float]] = {"a": [], "b": []}
            try:
                for _ in range(3):  # warm up: the session, the connection, caches
                    assert script.run(spec, FenceAction.STATUS, 30).outcome is Outcome.ON
                    assert native.run(spec, FenceAction.STATUS, 30).outcome is Outcome.ON
                for _ in range(samples):
                    for key, driver in (("a", script), ("b", native)):
                        t = time.perf_counter()
                        result = driver.run(spec, FenceAction.STATUS, 30)
                        times[key].append(time.perf_counter() - t)
                        assert result.outcome is Outcome.ON, result.message

                def hundred(driver: ScriptDriver | NativeRedfishDriver) -> dict[str, int]:
                    before = counts(lab, bmc.name)
                    for i in range(100):
                        result = driver.run(spec, _mix(i), 30)
                        assert result.ok, result.message
                    after = wait_counts(lab, bmc.name, before, status=90)
                    return {k: after[k] - before[k] for k in after}

                native.close()  # a fresh driver: its first command logs in
                native = NativeRedfishDriver(ca_bundle=bundle, poll_interval=0.05)
                start = counts(lab, bmc.name)
                by_native = hundred(native)
                native.close()
                closed = (wait_counts(lab, bmc.name, start, logout=1)["logout"]
                          - start["logout"] - by_native["logout"])
                by_script = hundred(script)
            finally:
                native.close()
        finally:
            lab.stop()
    a, b = summary(times["a"]), summary(times["b"])
    requests = by_script["status"] + by_script["on"] + by_script["off"]
    return {
        "name": "Redfish: native driver beside fence_redfish",
        "goal": "1 session per 100 commands (native); status at most half of fence_redfish's",
        "met": by_native["login"] == 1 and b["median"] <= a["median"] / 2,
        "lines": [
            f"(a) fence_redfish status, spawned by the script driver: {fmt(a)}",
            f"(b) native Redfish driver status, pooled session: {fmt(b)}",
            f"(b)/(a): median {b['median'] / a['median']:.3f}, p99 {b['p99'] / a['p99']:.3f}",
            (f"sessions opened per 100 commands (90 status, 5 off, 5 on), counted by the BMC: "
             f"native {by_native['login']} (logged out while running: {by_native['logout']}, "
             f"at close: {closed}), fence_redfish {by_script['login']}"),
            (f"requests refused (401) during them: native {by_native['refused']}, "
             f"fence_redfish {by_script['refused']}; fence_redfish sent the password with every "
             f"request (at least {requests} power reads and resets counted)"),
        ],
        "analysis": (
            "Method: one lab Redfish BMC (sushy-tools' fake driver behind the lab's session "
            "layer, Flask over HTTPS, on this machine, no power delay), `systems_uri` given to "
            "both. A fence_redfish status is a Python start-up, a TLS handshake and one GET "
            "authenticated with the password; a native status is one GET on a kept-open TLS "
            "connection with the session's X-Auth-Token, so what (b) measures is mostly the "
            "emulator's own request time. The session counts are the BMC's (lab counts "
            "`login`, `logout`, `refused`), not the driver's. A real BMC answers slower "
            "than the emulator and checks a password (basic auth) far slower than a token, "
            "which widens the gap."),
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
