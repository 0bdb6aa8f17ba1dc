"""Deployment: the systemd units (`hostpower deploy systemd`), the engine
as a `Type=notify` service, and the wheel `make dist` builds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
from conftest import require
from helpers import free_port
from servekit import NotifySocket, run_hostpower, running_engine

ROOT = Path(__file__).resolve().parents[1]
BINDIR = Path(sys.executable).parent
UNITS = ("hostpower-engine.service", "hostpower-agent.service")


def test_deploy_systemd_writes_units_naming_this_installation(tmp_path: Path) -> None:
    r = run_hostpower(dict(os.environ), "deploy", "systemd", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    engine = (tmp_path / UNITS[0]).read_text()
    agent = (tmp_path / UNITS[1]).read_text()
    assert f"ExecStart={BINDIR / 'hostpower'} serve --bind ${{HOSTPOWER_BIND}}" in engine
    assert f"ExecStart={BINDIR / 'hostpower'} agent " in agent
    for unit in (engine, agent):
        for line in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=true",
                     "RestartPreventExitStatus=2", "WatchdogSec="):
            assert line in unit
    assert "User=hostpower\n" in engine and "ReadWritePaths=-/var/lib/hostpower" in engine
    assert "User=hostpower-agent\n" in agent
    assert "@BINDIR@" not in engine + agent


def test_deploy_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser finds nothing to complain about (it prints every
    unknown key or bad value it ignores, and still exits 0: so stderr is checked)."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is missing (Debian package systemd)")
    assert run_hostpower(dict(os.environ), "deploy", "systemd", "--out",
                         str(tmp_path)).returncode == 0
    r = subprocess.run([str(analyze), "verify", *(str(tmp_path / u) for u in UNITS)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    # ... and it would have said so: a unit with a typo is reported.
    bad = tmp_path / "bad.service"
    bad.write_text((tmp_path / UNITS[0]).read_text().replace("ProtectSystem=", "ProtectSystm="))
    r = subprocess.run([str(analyze), "verify", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert "Unknown key 'ProtectSystm'" in r.stderr


def test_deploy_systemd_refuses_to_overwrite_and_names_a_bad_option(tmp_path: Path) -> None:
    env = dict(os.environ)
    assert run_hostpower(env, "deploy", "systemd", "--out", str(tmp_path)).returncode == 0
    again = run_hostpower(env, "deploy", "systemd", "--out", str(tmp_path))
    assert again.returncode == 1 and "--force replaces" in again.stderr
    assert run_hostpower(env, "deploy", "systemd", "--out", str(tmp_path),
                         "--force").returncode == 0
    missing = run_hostpower(env, "deploy", "systemd", "--out", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--out" in missing.stderr
    nobin = run_hostpower(env, "deploy", "systemd", "--out", str(tmp_path),
                          "--bindir", str(tmp_path), "--force")
    assert nobin.returncode == 2 and "--bindir" in nobin.stderr and "no hostpower" in nobin.stderr


def test_engine_tells_systemd_it_is_ready_alive_and_stopping(tmp_path: Path) -> None:
    """As under `Type=notify` and `WatchdogSec=`: READY=1 only once the API
    answers, WATCHDOG=1 pings while it runs, STOPPING=1 on SIGTERM."""
    manager = NotifySocket(tmp_path / "notify")
    env = manager.env({**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home"),
                       "HOSTPOWER_DB_URL": f"sqlite:///{tmp_path / 'hostpower.db'}"},
                      watchdog_usec=400_000)
    url = f"http://127.0.0.1:{free_port()}"
    try:
        with running_engine(env, url, tmp_path / "engine.log", "--plain-http") as proc:
            manager.expect("READY=1")
            assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
            manager.received.clear()
            manager.expect("WATCHDOG=1", timeout=5)
            manager.received.clear()
            manager.expect("WATCHDOG=1", timeout=5)
            proc.send_signal(signal.SIGTERM)
            manager.expect("STOPPING=1", timeout=20)
            # uvicorn shuts down cleanly, then dies of the signal it caught;
            # systemd counts death by SIGTERM as a clean stop.
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        manager.close()


def test_engine_outside_systemd_sends_nothing_and_still_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(HOSTPOWER_HOME=str(tmp_path / "home"),
               HOSTPOWER_DB_URL=f"sqlite:///{tmp_path / 'hostpower.db'}")
    url = f"http://127.0.0.1:{free_port()}"
    with running_engine(env, url, tmp_path / "engine.log", "--plain-http"):
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200


def test_the_wheel_holds_every_file_of_the_package(tmp_path: Path) -> None:
    """`make dist` builds it the same way: the console's files, the migrations,
    the lab's topology and the systemd units travel with the code."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("hostpower-*.whl")
    package = ROOT / "src" / "hostpower"
    wanted = {f"hostpower/{p.relative_to(package)}" for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(wheel) as z:
        shipped = set(z.namelist())
        entry_points = z.read(next(n for n in shipped if n.endswith("entry_points.txt"))).decode()
    assert wanted - shipped == set()
    assert "hostpower = hostpower.cli:main" in entry_points


def test_sd_notify_speaks_to_abstract_sockets_and_stays_quiet_outside_systemd() -> None:
    import socket

    from hostpower.hostagent import sdnotify

    name = f"hostpower-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(5)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert manager.recv(100) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({}) is None
