"""1. Status latency on one lab BMC, side by side:
(a) `fence_ipmilan -o status` run directly on the engine machine;
(b) POST /api/hosts/{id}/fence status through a proxy host agent, native driver;
(c) the same through the script driver (fence_ipmilan spawned by the agent).
The three are sampled round-robin in one run so that they share conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.labsetup import lab_and_engine
from bench.stats import fmt, summary
from enginekit import host_id, set_chain, set_config
from hostpower.store.users import Users

HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))


def _serve(settings, port: int) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HOSTPOWER_HOME": str(settings.home), "HOSTPOWER_DB_URL": settings.db_url}
    # Plain HTTP on loopback: measures the engine, not TLS handshakes.
    return subprocess.Popen([HOSTPOWER, "serve", "--bind", f"127.0.0.1:{port}", "--plain-http"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(samples: int = 60) -> dict[str, object]:
    with lab_and_engine() as (lab, ctx, engine, settings):
        target, proxy = lab.topo.host("c1-h1"), "c1-h2"
        bmc = target.bmcs[0]
        set_config(ctx, FenceProxyImplicitPreferences="", DisableFenceAtStartupInSec="3600")
        set_chain(ctx, "c1-h1", proxy)
        with ctx.db.session() as s:
            Users(s).add("bench", "admin", "bench-password")
        hid = host_id(ctx, "c1-h1")
    # (the in-process engine is stopped; the API is measured on a real `hostpower serve`)
        from helpers import free_port
        port = free_port()
        proc = _serve(settings, port)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "engine did not start"
                time.sleep(0.1)
            client = httpx.Client(base_url=base, timeout=30)
            token = client.post("/api/auth/token", json={"username": "bench",
                                                         "password": "bench-password"}).json()
            client.headers["Authorization"] = f"Bearer {token['access_token']}"

            def direct() -> None:
                params = (f"ip={bmc.address}\nipport={bmc.port}\nusername=admin\n"
                          f"password=lab-bmc-password\nlanplus=1\naction=status\n")
                r = subprocess.run(["/usr/sbin/fence_ipmilan"], input=params, text=True,
                                   capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/bin",
                                                             "PYTHONWARNINGS": "ignore"})
                assert r.returncode == 0, r.stderr

            def api(native: bool) -> None:
                r = client.post(f"/api/hosts/{hid}/fence", json={"fence_type": "status"})
                body = r.json()
                assert body["power_state"] == "on" and body["proxy"] == proxy, body

            def set_native(native: bool) -> None:
                client.put("/api/config/PreferNativeFenceDrivers",
                           json={"value": "true" if native else "false"}).raise_for_status()

            times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
            for _ in range(3):  # warm up: connections, sessions, caches
                direct(); set_native(True); api(True); set_native(False); api(False)
            for _ in range(samples):
                t = time.perf_counter(); direct(); times["a"].append(time.perf_counter() - t)
                set_native(True)
                t = time.perf_counter(); api(True); times["b"].append(time.perf_counter() - t)
                set_native(False)
                t = time.perf_counter(); api(False); times["c"].append(time.perf_counter() - t)
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    a, b, c = (summary(times[k]) for k in "abc")
    return {
        "name": "Status latency on one lab BMC",
        "goal": "(b) at most half of (a)",
        "met": b["median"] <= a["median"] / 2 and b["p99"] <= a["p99"] / 2,
        "lines": [
            f"(a) fence_ipmilan -o status, run directly: {fmt(a)}",
            f"(b) POST /api/hosts/{{id}}/fence status via proxy agent, native driver: {fmt(b)}",
            f"(c) the same via the script driver (fence_ipmilan on the proxy): {fmt(c)}",
            f"(b)/(a): median {b['median'] / a['median']:.3f}, p99 {b['p99'] / a['p99']:.3f}",
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
