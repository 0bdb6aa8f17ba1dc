"""The documented two-step set-up of a real host: `hostpower host enroll` on
the engine, then `hostpower agent` on the host with that bundle; the engine
then heartbeats it over mutual TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509

from helpers import free_port
from hostpower.hostagent.client import AgentClient
from hostpower.hostagent.pki import CertificateAuthority, ensure_engine_certificate

HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))
INVENTORY = """
data_centers:
  - name: d
    clusters:
      - name: c
        hosts: [{name: node7, address: 127.0.7.7, agent_port: %d}]
"""


def test_enrolled_host_agent_is_trusted_by_the_engine(tmp_path: Path) -> None:
    port = free_port("127.0.7.7")
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "engine")}
    env.pop("HOSTPOWER_DB_URL", None)
    assert subprocess.run([HOSTPOWER, "inventory", "load", "-"], input=INVENTORY % port, env=env,
                          text=True, capture_output=True, timeout=60).returncode == 0
    out = tmp_path / "node7-certs"
    r = subprocess.run([HOSTPOWER, "host", "enroll", "node7", "--out", str(out)], env=env,
                       text=True, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "enrolled node7 (127.0.7.7)" in r.stdout
    assert stat.S_IMODE(os.stat(out / "agent.key").st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "agent.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.7.7" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]

    agent = subprocess.Popen([HOSTPOWER, "agent", "--host-name", "node7", "--cert-dir", str(out),
                              "--bind", f"127.0.7.7:{port}"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        ca = CertificateAuthority.load_or_create(tmp_path / "engine" / "pki")
        engine = ensure_engine_certificate(ca, tmp_path / "engine" / "pki" / "engine")

        async def beat() -> str:
            async with AgentClient(engine.ca, engine.cert, engine.key) as client:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        return (await client.heartbeat("127.0.7.7", port, 2)).host
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
        assert asyncio.run(beat()) == "node7"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
    assert agent.returncode == 0


def test_enrolling_an_unknown_host_fails_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "engine")}
    env.pop("HOSTPOWER_DB_URL", None)
    r = subprocess.run([HOSTPOWER, "host", "enroll", "ghost", "--out", str(tmp_path / "x")],
                       env=env, text=True, capture_output=True, timeout=60)
    assert r.returncode == 2 and "host 'ghost' not found" in r.stderr
    assert not (tmp_path / "x").exists()
