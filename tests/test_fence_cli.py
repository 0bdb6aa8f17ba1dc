"""`hostpower fence` and `hostpower events` as an operator runs them: a real
`hostpower serve` subprocess on 127.0.0.1, real HTTPS (the engine-issued
certificate, verified by the command against HOSTPOWER_HOME/pki/ca.crt with no
option, as on the engine's machine), real exit codes, and the
real `fence_dummy` agent run by the engine itself (chain `engine`), whose
"device" is a file holding `on` or `off`.

One engine per backend serves the whole module (starting one costs seconds);
every test works on hosts of its own, so the tests stay independent.
"""

from __future__ import annotations

import fcntl
import os
import pty
import queue
import re
import select
import signal
import ssl
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from helpers import dummy_host, free_port
from conftest import _create_pg_database, _drop_pg_database, require
from servekit import HOSTPOWER, engine_ca, running_engine

FENCE_DUMMY = Path("/usr/sbin/fence_dummy")
PASSWORD = "admin-password"
SECRET = "Dummy-BMC-Secret-pw"
STEP_RE = re.compile(r"^  \d\d:\d\d:\d\d  (?P<name>\S+)\s+(?P<outcome>\S+)\s+(?P<agents>.*)$")


def require_fence_dummy() -> None:
    """The device of these tests; skipped on a developer machine without it, fatal in CI."""
    require(FENCE_DUMMY.is_file() and os.access(FENCE_DUMMY, os.X_OK),
            f"needs {FENCE_DUMMY} (Debian package fence-agents)")


# Fast flows, and no automatic fencing of our hosts (they never answer heartbeats).
CONFIG = {
    "FenceStopStatusDelayBetweenRetriesInSec": "0",
    "FenceStartStatusDelayBetweenRetriesInSec": "0",
    "FenceStopStatusRetries": "3",
    "FenceStartStatusRetries": "3",
    "FenceCommandTimeoutInSec": "15",
    "FindFenceProxyRetries": "0",
    "DisableFenceAtStartupInSec": "86400",
}


def host_n(n: int, power: Path, **options: str) -> dict[str, Any]:
    """Host hN (address 127.0.0.1N), fenced by fence_dummy through the engine."""
    return dummy_host(f"h{n}", f"127.0.0.{10 + n}", power, SECRET, **options)


@dataclass
class Served:
    """A running engine and the environment the `hostpower` command needs."""

    url: str
    env: dict[str, str]
    power: dict[str, Path]
    verify: ssl.SSLContext | bool = True
    token: str | None = None

    def run(self, *args: str, stdin: str | None = None, password: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
        e = {**self.env, **({"HOSTPOWER_PASSWORD": PASSWORD} if password else {}), **env}
        return subprocess.run(HOSTPOWER + list(args), env=e, input=stdin, capture_output=True,
                              text=True, timeout=60)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The engine's REST API as admin, for what the command under test does not show."""
        if self.token is None:
            self.token = httpx.post(f"{self.url}/api/auth/token", verify=self.verify, json={
                "username": "admin", "password": PASSWORD}).json()["access_token"]
        r = httpx.request(method, f"{self.url}{path}", json=body, verify=self.verify,
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert r.status_code < 300, r.text
        return r.json()

    def host_id(self, name: str) -> int:
        return next(h["id"] for h in self.api("GET", "/api/hosts") if h["name"] == name)


def prepare(env: dict[str, str], tmp: Path) -> dict[str, Path]:
    """The inventory, configuration and users, as an operator sets them up."""
    power = {f"h{n}": tmp / f"h{n}.power" for n in range(1, 9)}
    for path in power.values():
        path.write_text("on")
    hosts = [host_n(n, power[f"h{n}"]) for n in (1, 2, 4, 5, 7)]
    # h3: its device cannot be switched (the status file's directory is missing).
    power["h3"] = tmp / "missing" / "h3.power"
    hosts.append(host_n(3, power["h3"]))
    # h6, h8: a stop takes about three seconds (fence_dummy delay=2): time to act on a
    # running flow even on a busy machine.
    hosts += [host_n(n, power[f"h{n}"], delay="2") for n in (6, 8)]
    doc = {"config": CONFIG,
           "data_centers": [{"name": "dc1", "clusters": [{"name": "c1", "hosts": hosts}]}]}
    steps = [(("inventory", "load", "-"), yaml.safe_dump(doc)),
             # Only the engine proxy is tried: the chains are exactly `engine`.
             (("config", "set", "FenceProxyImplicitPreferences", ""), None),
             (("user", "add", "admin", "--role", "admin"), PASSWORD + "\n")]
    for args, stdin in steps:
        r = subprocess.run(HOSTPOWER + list(args), env=env, input=stdin, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, (args, r.stderr)
    return power


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_fence_dummy()
    tmp = tmp_path_factory.mktemp(f"fence-cli-{request.param}")
    pg: tuple[str, str] | None = None
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp / 'hostpower.db'}"
    else:
        admin_dsn = request.getfixturevalue("pg_server")
        pg = (admin_dsn, _create_pg_database(admin_dsn))
        db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg[1]}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOSTPOWER_")}
    env.update(HOSTPOWER_HOME=str(tmp / "home"), HOSTPOWER_DB_URL=db_url)
    try:
        power = prepare(env, tmp)
        url = f"https://127.0.0.1:{free_port()}"
        with running_engine(env, url, tmp / "engine.log"):
            yield Served(url, {**env, "HOSTPOWER_URL": url}, power, engine_ca(tmp / "home"))
    finally:
        if pg is not None:
            _drop_pg_database(*pg)


def steps_of(out: str) -> list[tuple[str, str, str]]:
    """(step, outcome, agents) of each step line the command printed."""
    return [(m["name"], m["outcome"], m["agents"]) for line in out.splitlines()
            if (m := STEP_RE.match(line))]


class LineReader:
    """The lines a running subprocess prints, read without blocking the test."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def until(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        pytest.fail(f"no line with {text!r} within {timeout} s")


def run_alone(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with no engine and no database behind it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPOWER_")}
    env.update(HOSTPOWER_HOME=str(tmp_path / "home"), HOSTPOWER_PASSWORD=PASSWORD)
    return subprocess.run(HOSTPOWER + list(args), env=env, capture_output=True, text=True,
                          timeout=60)


def read_terminal(master: int, proc: subprocess.Popen[bytes], answer: tuple[bytes, bytes],
                  timeout: float = 20.0) -> str:
    """What the command wrote on its terminal, typing answer[1] once answer[0] shows."""
    screen, typed = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        screen += chunk
        if not typed and answer[0] in screen:
            os.write(master, answer[1])
            typed = True
    return screen.decode(errors="replace")


# -- hostpower fence ----------------------------------------------------------------------

def test_restart_shows_each_step_with_its_proxy_and_succeeds(served: Served) -> None:
    r = served.run("fence", "h1", "restart")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"restart of h1: operation \d+ started by admin", lines[0])
    assert [(name, outcome) for name, outcome, _ in steps_of(r.stdout)] == [
        ("check", "on"), ("stop", "off"), ("verify_off", "off"), ("start", "on"),
        ("verify_on", "on")]
    assert all(agents.startswith("dummy@10.99.0.1 via engine")
               for _, _, agents in steps_of(r.stdout))
    assert sum("poll 1/4" in line for line in lines) == 2  # 3 retries: 1 + 3 polls
    assert lines[-1] == "restart of h1 succeeded: h1 was restarted"
    assert served.power["h1"].read_text() == "on"
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
def test_a_restart_while_one_runs_joins_it_and_shows_its_steps_live(served: Served) -> None:
    """h6's stop is slow: the command joins the running flow, says so, and prints the
    steps while the flow still runs (not all at the end)."""
    running = served.api("POST", f"/api/hosts/{served.host_id('h6')}/fence",
                         {"fence_type": "restart"})
    e = {**served.env, "HOSTPOWER_PASSWORD": PASSWORD}
    proc = subprocess.Popen(HOSTPOWER + ["fence", "h6", "restart"], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = LineReader(proc.stdout)  # type: ignore[arg-type]
        assert out.until("joined") == (f"restart of h6: operation {running['id']} (restart, "
                                       f"by admin) is already running: joined it\n")
        assert " check " in out.until(" check ")
        assert served.api("GET", f"/api/operations/{running['id']}")["state"] == "running"
        assert out.until("succeeded") == "restart of h6 succeeded: h6 was restarted\n"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
def test_watching_gives_up_after_the_timeout(served: Served) -> None:
    """Bounded: the command stops watching, the engine goes on with the flow."""
    r = served.run("fence", "h8", "restart", "--timeout", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    op_id = int(re.findall(r"operation (\d+) started", r.stdout)[0])
    assert f"gave up watching after 1 s: operation {op_id} still runs (phase " in r.stderr
    assert f"/api/operations/{op_id}" in r.stderr
    assert served.api("GET", f"/api/operations/{op_id}")["state"] == "running"


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
def test_status_prints_the_power_state_and_the_proxy(served: Served) -> None:
    r = served.run("fence", "h2", "status")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == ["h2: power on (proxy engine)",
                                     "  dummy@10.99.0.1: on via engine - Status: ON"]
    served.power["h2"].write_text("off")
    # The password may come as one line of stdin, too.
    r = served.run("fence", "127.0.0.12", "status", stdin=PASSWORD + "\n", password=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "h2: power off (proxy engine)"


def test_a_failing_restart_exits_1_with_the_operations_message(served: Served) -> None:
    r = served.run("fence", "h3", "restart")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("check", "off") in [(n, o) for n, o, _ in steps_of(r.stdout)]
    assert ("start", "error") in [(n, o) for n, o, _ in steps_of(r.stdout)]
    [message] = r.stderr.splitlines()
    assert re.match(r"hostpower: restart of h3 failed \(operation \d+\): start of h3 failed: ",
                    message)
    assert "No such file or directory" in message
    errors = served.run("events", "--host", "h3", "--severity", "error").stdout.splitlines()
    assert any("restart of h3 failed: start of h3 failed" in line for line in errors)
    assert all(line.split()[1] == "error" for line in errors[1:])


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
def test_manual_asks_for_confirmation(served: Served) -> None:
    r = served.run("fence", "h4", "manual", stdin="n\n")
    assert r.returncode == 1
    assert "h4 is maintenance. Confirm it was rebooted by hand" in r.stderr
    assert "not confirmed: nothing was changed" in r.stderr
    r = served.run("fence", "h4", "manual", "--yes")
    assert (r.returncode, r.stdout) == (0, "h4: host state cleared\n")
    assert served.api("GET", f"/api/hosts/{served.host_id('h4')}")["status"] == "down"


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
@pytest.mark.parametrize("args, env, message", [
    (("ghost", "status"), {}, "host 'ghost' not found at https://127.0.0.1:"),
    (("h2", "status"), {"HOSTPOWER_PASSWORD": "wrong-password"},
     "wrong user name or password (HTTP 401)"),
])
def test_bad_input_exits_2(served: Served, args: tuple[str, ...], env: dict[str, str],
                           message: str) -> None:
    r = served.run("fence", *args, **env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)  # client-side behaviour
def test_a_viewer_is_refused_a_restart_with_exit_2(served: Served) -> None:
    added = served.run("user", "add", "watcher", "--role", "viewer", stdin="viewer-password\n")
    assert added.returncode == 0, added.stderr
    r = served.run("fence", "h2", "restart", HOSTPOWER_USER="watcher",
                   HOSTPOWER_PASSWORD="viewer-password")
    assert (r.returncode, r.stdout) == (2, "")
    assert "user 'watcher' has role viewer: admin role required (HTTP 403)" in r.stderr


def test_an_unreachable_engine_exits_1_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = run_alone(tmp_path, "fence", "h1", "restart", "--url", url)
    assert r.returncode == 1
    assert f"cannot reach the engine at {url}" in r.stderr


def test_the_password_prompt_on_a_terminal_does_not_echo(tmp_path: Path) -> None:
    """Without HOSTPOWER_PASSWORD on a terminal: a prompt, and what is typed never shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPOWER_")}
    env["HOSTPOWER_HOME"] = str(tmp_path / "home")
    url = f"http://127.0.0.1:{free_port()}"
    master, slave = pty.openpty()
    proc = subprocess.Popen(  # the pty becomes the command's controlling terminal
        HOSTPOWER + ["fence", "h1", "status", "--url", url], env=env, stdin=slave,
        stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    try:
        screen = read_terminal(master, proc, answer=(b"password of admin at", b"typed-secret\n"))
        assert proc.wait(timeout=10) == 1
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert f"password of admin at {url}: " in screen
    assert f"cannot reach the engine at {url}" in screen
    assert "typed-secret" not in screen


@pytest.mark.parametrize("args, message", [
    (("h1", "reboot"), "argument ACTION: invalid choice: 'reboot'"),
    (("h1", "status", "--url", "127.0.0.1:8080"),
     "argument --url: '127.0.0.1:8080' is not an http(s):// URL"),
])
def test_a_bad_command_line_exits_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = run_alone(tmp_path, "fence", *args)
    assert r.returncode == 2
    assert message in r.stderr


# -- hostpower events ---------------------------------------------------------------------

def test_events_list_a_hosts_flow(served: Served) -> None:
    assert served.run("fence", "h5", "stop").returncode == 0
    r = served.run("events", "--host", "h5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TIME", "SEVERITY", "HOST", "USER", "MESSAGE"]
    assert all(line.split()[2] == "h5" for line in lines[1:])
    # Who powered h5 off: the user is on every line of the flow, down to the attempts.
    assert all(line.split()[3] == "admin" for line in lines[1:]), r.stdout
    text = r.stdout
    for story in ("stop of h5 started by admin (api)", "off of h5 via engine (engine) with "
                  "dummy@10.99.0.1: off", "h5 was stopped"):
        assert story in text
    assert text.index("stop of h5 started") < text.index("h5 was stopped")
    # A time in any zone (the SQLite store compares UTC text: the command converts).
    earlier = (datetime.now(UTC) - timedelta(minutes=10)).astimezone(timezone(timedelta(hours=-7)))
    newest = served.run("events", "--host", "h5", "--since", earlier.isoformat(), "--limit", "1")
    assert newest.stdout.count("\n") == 2 and "h5 was stopped" in newest.stdout
    assert "stop of h5 started" in served.run("events", "--host", "h5", "--last", "10m").stdout
    # By user: the admin's login and the flow; nothing for a user who did nothing.
    mine = served.run("events", "--user", "admin").stdout
    assert "admin logged in (token)" in mine and "stop of h5 started by admin" in mine
    assert served.run("events", "--user", "nobody").stdout.count("\n") == 1


def test_events_follow_prints_new_events_until_ctrl_c(served: Served) -> None:
    proc = subprocess.Popen(HOSTPOWER + ["events", "--follow", "--host", "h7", "--interval", "0.2"],
                            env=served.env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out = LineReader(proc.stdout)  # type: ignore[arg-type]
        out.until("MESSAGE")
        assert served.run("fence", "h7", "status").returncode == 0
        line = out.until("status of h7")
        assert "status of h7 via engine (engine) with dummy@10.99.0.1: on" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_events_refuse_an_unknown_host_naming_the_option(served: Served) -> None:
    r = served.run("events", "--host", "ghost")
    assert (r.returncode, r.stdout) == (2, "")
    assert "hostpower: --host: host 'ghost' not found" in r.stderr


@pytest.mark.parametrize("args, message", [
    (("--since", "2026-01-01T00:00:00"),
     "argument --since: '2026-01-01T00:00:00' needs a time zone"),
    (("--since", "yesterday"), "argument --since: 'yesterday' is not an ISO time"),
    (("--last", "10x"), "argument --last: '10x' is not a duration like 30s, 10m, 2h or 1d"),
    (("--severity", "fatal"), "argument --severity: invalid choice: 'fatal'"),
    (("--limit", "0"), "argument --limit: 0 is out of range"),
])
def test_events_refuse_bad_filters_naming_the_option(tmp_path: Path, args: tuple[str, ...],
                                                      message: str) -> None:
    r = run_alone(tmp_path, "events", *args)
    assert (r.returncode, r.stdout) == (2, "")
    assert message in r.stderr
    assert not (tmp_path / "home").exists()  # refused before touching anything
