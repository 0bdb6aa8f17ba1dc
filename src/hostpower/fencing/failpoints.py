"""Named crash points for the crash-safety tests.

`HOSTPOWER_FAILPOINT=restart.after_off` makes the engine kill itself with
SIGKILL when a flow reaches that point, exactly like a power cut of the
engine machine. Unset (always, in production) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = os.environ.get("HOSTPOWER_FAILPOINT", "")


def failpoint(name: str) -> None:
    if _ACTIVE and _ACTIVE == name:
        os.kill(os.getpid(), signal.SIGKILL)
