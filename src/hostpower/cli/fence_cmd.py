"""`hostpower fence HOST ACTION`: a client of a running engine.

It goes through the REST API so the engine's one-flow-per-host rule, its
journal and its proxy chain apply, and it shows the flow's steps live by
polling the operation.

Exit codes: 0 the operation succeeded, 1 it failed or the engine is
unreachable (or its certificate does not verify), 2 bad input (unknown host,
refused request): nothing was done.

Over https the engine's certificate is verified: see trust.py for which CAs.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from hostpower.cli.common import CliError
from hostpower.cli.transport import is_loopback
from hostpower.cli.trust import CA_FILE_ENV, Trust, client_trust, tls_failure
from hostpower.model.operations import FenceType, OperationState
from hostpower.settings import Settings

ACTIONS = tuple(FenceType)
DEFAULT_URL = "https://127.0.0.1:8080"  # `hostpower serve`'s default
POLL_SECONDS = 0.25           # operation polling: steps appear within a quarter second
CONNECT_SECONDS = 10.0
MIN_REQUEST_SECONDS = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fence", help="run a power operation through a running engine (REST API)",
        description="Ask a running engine for a power operation on HOST and show its steps "
                    "as they happen. The password comes from HOSTPOWER_PASSWORD, else a "
                    "prompt (terminal) or one line of stdin; never from the command line.")
    f.add_argument("host", help="host name, address or id")
    f.add_argument("action", choices=ACTIONS, metavar="ACTION", help="|".join(ACTIONS))
    f.add_argument("--url", default=os.environ.get("HOSTPOWER_URL") or DEFAULT_URL,
                   type=_url, help="engine URL (env HOSTPOWER_URL, default %(default)s)")
    f.add_argument("--ca-file", metavar="FILE", default=os.environ.get(CA_FILE_ENV) or None,
                   help="verify an https engine against the CAs in FILE (env HOSTPOWER_CA_FILE; "
                        "default: the system trust store and HOSTPOWER_HOME/pki/ca.crt)")
    f.add_argument("--user", default=os.environ.get("HOSTPOWER_USER") or "admin",
                   help="engine user (env HOSTPOWER_USER, default %(default)s)")
    f.add_argument("--timeout", type=_seconds, default=600.0,
                   help="give up watching after this many seconds (default %(default)g)")
    f.add_argument("--yes", action="store_true", help="manual: do not ask for confirmation")
    f.set_defaults(func=fence)


# -- argument types: argparse names the option and exits 2 --------------------------------

def _url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s):// URL")
    return text.rstrip("/")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (0-86400 s)")
    return value


# -- the engine's REST API ---------------------------------------------------------------

class EngineApi:
    """A logged-in session with a running engine; every failure becomes a CliError
    an operator can act on (which URL, what the engine said)."""

    def __init__(self, url: str, read_timeout: float, trust: Trust | None = None) -> None:
        self.url = url
        self.trust = trust
        self.http = httpx.Client(base_url=url, verify=trust.context if trust else True,
                                 timeout=httpx.Timeout(read_timeout, connect=CONNECT_SECONDS))

    def login(self, user: str, password: str) -> None:
        body = self.call("POST", "/api/auth/token", {"username": user, "password": password})
        self.http.headers["Authorization"] = f"Bearer {body['access_token']}"

    def close(self) -> None:
        """Revoke the token (it would otherwise stay valid until it expires)."""
        try:
            if "Authorization" in self.http.headers:
                self.http.delete("/api/auth/token")
        except httpx.HTTPError:
            pass
        self.http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CliError(f"the engine at {self.url} did not answer {method} {path} in time",
                           1) from None
        except httpx.TransportError as exc:
            tls = tls_failure(exc, self.url, self.trust)
            if tls:
                raise CliError(tls, 1) from None
            hint = "is `hostpower serve` running there?"
            if not _is_https(self.url) and isinstance(exc, httpx.RemoteProtocolError):
                hint += " if it serves https, use an https:// URL;"  # it hung up on plain HTTP
            raise CliError(f"cannot reach the engine at {self.url}: {exc or type(exc).__name__} "
                           f"({hint} see --url / HOSTPOWER_URL)", 1) from None
        if r.status_code >= 400:
            detail = _detail(r)
            # 4xx: the request was refused, nothing was done; 5xx: the engine failed.
            raise CliError(f"{detail} (HTTP {r.status_code})", 2 if r.status_code < 500 else 1)
        try:
            return r.json()
        except ValueError:
            raise CliError(f"{self.url} answered {method} {path} with something else than "
                           f"JSON: is it a hostpower engine?", 1) from None


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's own format, should a route ever use it
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or r.reason_phrase or "request failed")


def read_password(user: str, url: str) -> str:
    """HOSTPOWER_PASSWORD, else a prompt without echo, else one line of stdin."""
    password = os.environ.get("HOSTPOWER_PASSWORD")
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password of {user} at {url}: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password: set HOSTPOWER_PASSWORD, or type it or pipe it on stdin", 2)
    return password


def find_host(api: EngineApi, wanted: str) -> dict[str, Any]:
    """By name or address (case-insensitive), else by id, as the engine resolves it."""
    hosts = api.call("GET", "/api/hosts")
    key = wanted.strip().lower()
    for host in hosts:
        if key in (host["name"].lower(), host["address"].lower()):
            return host
    for host in hosts:
        if key.isdigit() and host["id"] == int(key):
            return host
    raise CliError(f"host {wanted!r} not found at {api.url}", 2)


# -- hostpower fence ---------------------------------------------------------------------

def fence(args: argparse.Namespace) -> int:
    trust = client_trust(args.ca_file, Settings.from_env()) if _is_https(args.url) else None
    warn_if_in_clear(args.url)
    password = read_password(args.user, args.url)
    # A short --timeout bounds the watching; one request still gets a fair chance.
    api = EngineApi(args.url, max(args.timeout, MIN_REQUEST_SECONDS), trust)
    try:
        api.login(args.user, password)
        host = find_host(api, args.host)
        if args.action == "status":
            return show_status(api, host)
        if args.action == "manual":
            return manual(api, host, args.yes)
        return run_flow(api, host, args.action, args.timeout)
    finally:
        api.close()


def _is_https(url: str) -> bool:
    return url.lower().startswith("https://")


def warn_if_in_clear(url: str) -> None:
    """The password is about to be sent: say so when it leaves the machine unencrypted."""
    if _is_https(url):
        return
    host = httpx.URL(url).host
    if not is_loopback(host):
        print(f"WARNING: {url} is plain HTTP: your password and token cross the network in "
              f"clear; use the engine's https:// URL", file=sys.stderr, flush=True)


def _post_fence(api: EngineApi, host: dict[str, Any], fence_type: str) -> Any:
    return api.call("POST", f"/api/hosts/{host['id']}/fence", {"fence_type": fence_type})


def show_status(api: EngineApi, host: dict[str, Any]) -> int:
    """Power state, the proxy that answered, and each agent's own answer."""
    result = _post_fence(api, host, "status")
    proxy = f"proxy {result['proxy']}" if result["proxy"] else "no proxy answered"
    print(f"{host['name']}: power {result['power_state']} ({proxy})")
    for c in result["commands"]:
        print(f"  {c['agent']}: {c['outcome']}" + (f" via {c['proxy']}" if c["proxy"] else "")
              + (f" - {c['message']}" if c["message"] else ""))
        for line in _failovers(c):
            print(line)
    if result["power_state"] in ("on", "off"):
        return 0
    raise CliError(f"status of {host['name']} is {result['power_state']}"
                   + (f": {result['message']}" if result["message"] else ""), 1)


def manual(api: EngineApi, host: dict[str, Any], yes: bool) -> int:
    """Clearing a host's state tells the engine it was rebooted by hand: confirm first."""
    if not yes and not confirm(f"{host['name']} is {host['status']}. Confirm it was rebooted "
                               f"by hand and clear its state? [y/N] "):
        raise CliError("not confirmed: nothing was changed (use --yes to skip the question)", 1)
    body = _post_fence(api, host, "manual")
    print(f"{host['name']}: {body.get('detail', 'host state cleared')}")
    return 0


def confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        print(file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")


def run_flow(api: EngineApi, host: dict[str, Any], action: str, timeout: float) -> int:
    op = _post_fence(api, host, action)
    if op["joined"]:
        print(f"{action} of {host['name']}: operation {op['id']} ({op['action']}, "
              f"{_requester(op)}) is already running: joined it", flush=True)
    else:
        print(f"{action} of {host['name']}: operation {op['id']} started "
              f"{_requester(op)}", flush=True)
    try:
        final = watch(api, op, timeout)
    except KeyboardInterrupt:
        print(f"\nstopped watching: operation {op['id']} goes on in the engine", file=sys.stderr)
        raise
    if final["state"] == OperationState.SUCCEEDED:
        print(f"{final['action']} of {host['name']} succeeded: {final['message']}")
        return 0
    raise CliError(f"{final['action']} of {host['name']} failed (operation {final['id']}): "
                   f"{final['message']}", 1)


def _requester(op: dict[str, Any]) -> str:
    """`by alice`, or how it started when no user asked (automatic fencing)."""
    return f"by {op['requested_by']}" if op.get("requested_by") else op["origin"]


def watch(api: EngineApi, op: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Print each step once it is done, until the operation ends or `timeout` passes."""
    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        for step in _done_steps(op["steps"])[shown:]:
            print(step_line(step), flush=True)
            for line in (f for c in step["proxies"] for f in _failovers(c)):
                print(line, flush=True)
            shown += 1
        if op["state"] != OperationState.RUNNING:
            return op
        if time.monotonic() >= deadline:
            raise CliError(f"gave up watching after {timeout:g} s: operation {op['id']} still "
                           f"runs (phase {op['phase']}); see {api.url}/api/operations/{op['id']}",
                           1)
        time.sleep(POLL_SECONDS)
        op = api.call("GET", f"/api/operations/{op['id']}")


def _done_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished steps before the first one still running (steps run one at a time)."""
    done = []
    for step in steps:
        if step["state"] == "running":
            break
        done.append(step)
    return done


def step_line(step: dict[str, Any]) -> str:
    """`  10:00:01  verify_off  off    dummy@10.1.0.1 via engine  poll 1/19`"""
    at = datetime.fromisoformat(step["finished_at"] or step["started_at"]).astimezone()
    agents = "; ".join(_via(c) for c in step["proxies"]) or "no agent"
    line = f"  {at:%H:%M:%S}  {step['name']:<11} {step['outcome'] or '-':<7} {agents}"
    return line + (f"  {step['message']}" if step["message"] else "")


def _via(command: dict[str, Any]) -> str:
    """`agent via proxy`, or which proxies were tried when none executed the command."""
    if command.get("proxy"):
        return f"{command['agent']} via {command['proxy']}"
    tried = ", ".join(a["proxy"] for a in command.get("attempts", []))
    if command.get("outcome") == "cancelled":  # another agent of its group settled the step
        return f"{command['agent']} cancelled" + (f" (under way via {tried})" if tried else "")
    return f"{command['agent']} " + (f"failed on {tried}" if tried else "found no eligible proxy")


def _failovers(command: dict[str, Any]) -> Iterator[str]:
    """Proxies that failed before one answered (when none did, the message says it all)."""
    if command.get("proxy") is None:
        return
    for a in command.get("attempts", []):
        if a["outcome"] == "error":
            yield f"      {a['proxy']} ({a['source']}) failed first: {a['message']}"
