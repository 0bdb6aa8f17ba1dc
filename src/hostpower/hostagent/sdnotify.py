"""The systemd notification protocol (sd_notify(3)), for `Type=notify` units.

A service started by systemd with `Type=notify` finds a datagram socket's
path in NOTIFY_SOCKET and tells the manager, one `KEY=value` line per
datagram, when it is ready (`READY=1`), when it stops (`STOPPING=1`) and, under
`WatchdogSec=`, that it is still alive (`WATCHDOG=1`, more often than
WATCHDOG_USEC). Outside systemd NOTIFY_SOCKET is unset and every call does
nothing, so the engine and the agent call these unconditionally.

Twenty lines of socket code instead of a dependency (python-systemd needs
libsystemd headers to build).
"""

from __future__ import annotations

import os
import socket


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to the service manager; False when not
    under one or when the message could not be sent (never raises: being
    unable to tell systemd must not stop the service)."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "@/":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path  # "@": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half the manager's WatchdogSec), or None
    when the manager expects no pings from this process."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
