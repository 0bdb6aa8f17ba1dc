"""A lost wake-up in pyghmi's IPMI client, closed.

pyghmi (1.6) receives every UDP packet in one I/O thread. A command's thread
sends its request, then registers to be woken when a packet from its BMC
arrives (`session._io_wait`). When the answer is faster than that
registration, the I/O thread queues the answer before the waiter exists;
the waiter is then woken only by the next packet from that BMC or by its
deadline, and pyghmi retransmits the request on that deadline: the command
takes 0.5 to 1.5 s instead of a millisecond. Fast BMCs and a busy engine
(a mass failure: benchmark 6 saw 5 to 11 % of the commands wait so) make it
frequent.

`install()` replaces `_io_wait` with the same registration followed by one
more look: a caller waiting for its BMC whose answer is already queued
returns at once, and pyghmi processes the queued answer. The I/O thread
queues answers before it wakes registered waiters, so a registration it
missed always finds the answer queued.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

try:
    from pyghmi.ipmi.private import session as _session
except ImportError:  # the native driver then reports that it cannot run
    _session = None  # type: ignore[assignment]

# What `_io_wait` relies on in pyghmi's session module.
_NEEDED = ("ioqueue", "iosockets", "myself", "selectdeadline", "_monotonic_time", "Session")


def _answer_queued(address: Any) -> bool:
    """Whether a packet from `address` waits in a client session's queue."""
    sessions = _session.Session.bmc_handlers.get(address)
    return bool(sessions) and any(s.pktqueue for s in list(sessions.values()))


def _io_wait(timeout: float, myaddr: Any = None, evq: list[threading.Event] | None = None) -> None:
    """pyghmi's `_io_wait`, plus: an answer that came before the waiter
    registered ends the wait (a caller waiting on `evq` waits for another
    thread's command and is not concerned)."""
    event = threading.Event()
    if evq is not None:
        evq.append(event)
    deadline = timeout + _session._monotonic_time()
    _session.ioqueue.append((deadline, event, myaddr))
    if deadline < _session.selectdeadline:
        # Break into the I/O thread's select so that it sees the shorter deadline.
        own = _session.iosockets[0]
        wake = getattr(own, "fd", own)
        wake.sendto(b"\x01", (_session.myself, own.getsockname()[1]))
    if myaddr is not None and evq is None and _answer_queued(myaddr):
        return
    event.wait()


def install() -> bool:
    """Patch pyghmi's client (once per process); False when pyghmi is
    missing or not the version this patch was written for."""
    if _session is None:
        return False
    if _session._io_wait is _io_wait:
        return True
    if not all(hasattr(_session, name) for name in _NEEDED):
        log.warning("pyghmi's session module is not as expected: its lost wake-up is not "
                    "patched (commands may wait for a retransmission)")
        return False
    _session._io_wait = _io_wait
    return True
