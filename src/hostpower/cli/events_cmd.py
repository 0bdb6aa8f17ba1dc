"""`hostpower events`: what the engine did and why.

Reads the database directly, like `hostpower config`, so it works while the
engine is down (which is when an operator most wants to know what happened).
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime, timedelta

from hostpower.cli.common import CliError, open_existing_context
from hostpower.cli.fence_cmd import _seconds
from hostpower.context import EngineContext
from hostpower.model.errors import NotFoundError
from hostpower.model.events import Event, Severity
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory

FOLLOW_WINDOW = timedelta(seconds=60)  # events may commit a little out of time order
MAX_EVENTS = 5000
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("events", help="what the engine did and why (reads the database)")
    e.add_argument("--host", help="only this host (name, address or id)")
    e.add_argument("--severity", choices=[s.value for s in Severity],
                   help="at least this severe")
    e.add_argument("--user", help="only what this engine user did or what is about them "
                                  "(logins, writes, power requests)")
    when = e.add_mutually_exclusive_group()
    when.add_argument("--since", type=_aware_time,
                      help="ISO time with a zone, e.g. 2026-01-01T00:00:00Z")
    when.add_argument("--last", type=_duration, help="a recent span: 30s, 10m, 2h, 1d")
    e.add_argument("--limit", type=_limit, default=100,
                   help=f"at most this many, the newest (1-{MAX_EVENTS}, default %(default)s)")
    e.add_argument("--follow", action="store_true", help="keep printing new events until Ctrl-C")
    e.add_argument("--interval", type=_interval, default=1.0,
                   help="--follow: seconds between polls (0.2-60, default %(default)g)")
    e.set_defaults(func=events)


# -- argument types: argparse names the option and exits 2 --------------------------------

def _interval(text: str) -> float:
    value = _seconds(text)
    if not 0.2 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (0.2-60 s)")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(f"{value} is out of range (1-{MAX_EVENTS})")
    return value


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time, e.g. 2026-01-01T00:00:00Z") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a time zone, e.g. 2026-01-01T00:00:00Z")
    # Compared in UTC: the SQLite store compares stored UTC wall-clock text.
    return value.astimezone(UTC)


def _duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})



# -- hostpower events --------------------------------------------------------------------

def events(args: argparse.Namespace) -> int:
    ctx = open_existing_context()
    try:
        host_id = _host_filter(ctx, args.host)
        severity = Severity(args.severity) if args.severity else None
        since = args.since or (datetime.now(UTC) - args.last if args.last else None)
        with ctx.db.session() as s:
            shown = Events(s).query(host_id, severity, since, user=args.user, limit=args.limit)
        print(f"{'TIME':<20}  {'SEVERITY':<8}  {'HOST':<15}  {'USER':<12}  MESSAGE")
        for e in shown:
            print(event_line(e), flush=True)
        if args.follow:
            try:
                follow(ctx, host_id, severity, since, shown, args.interval, args.user)
            except KeyboardInterrupt:
                return 0
        return 0
    finally:
        ctx.close()


def _host_filter(ctx: EngineContext, host: str | None) -> int | None:
    if host is None:
        return None
    with ctx.db.session() as s:
        try:
            return Inventory(s, ctx.box).find_host(host).id
        except NotFoundError:
            raise CliError(f"--host: host {host!r} not found", 2) from None


def event_line(e: Event) -> str:
    at = (e.created_at or datetime.now(UTC)).astimezone(UTC)
    # A user name tried at a failed login is whatever the client sent: shown quoted
    # when it could break the columns.
    user = e.user or "-"
    if not user.isprintable() or " " in user:
        user = repr(user)
    return (f"{at:%Y-%m-%dT%H:%M:%SZ}  {e.severity.value:<8}  {e.host_name or '-':<15}  "
            f"{user:<12}  {e.message}")


def follow(ctx: EngineContext, host_id: int | None, severity: Severity | None,
           since: datetime | None, shown: list[Event], interval: float,
           user: str | None = None) -> None:
    """Poll for events not printed yet. Each poll looks back FOLLOW_WINDOW before the
    newest event seen, and remembers ids, so a late commit is not missed nor repeated."""
    seen: dict[int, datetime] = {e.id: e.created_at for e in shown
                                 if e.id is not None and e.created_at is not None}
    newest = max(seen.values(), default=datetime.now(UTC))
    while True:
        time.sleep(interval)
        start = newest - FOLLOW_WINDOW
        if since is not None:
            start = max(start, since)
        with ctx.db.session() as s:
            found = Events(s).query(host_id, severity, start, user=user, limit=MAX_EVENTS)
        for e in sorted((e for e in found if e.id not in seen), key=lambda e: e.id or 0):
            print(event_line(e), flush=True)
            if e.id is not None and e.created_at is not None:
                seen[e.id] = e.created_at
                newest = max(newest, e.created_at)
        seen = {i: t for i, t in seen.items() if t >= newest - FOLLOW_WINDOW}
