"""Named crash points for the crash-safety and high-availability tests.

`HOSTPOWER_FAILPOINT=restart.after_off` makes the engine kill itself with
SIGKILL when a flow reaches that point, exactly like a power cut of the
engine machine. `HOSTPOWER_FAILPOINT=restart.after_off:pause` stops it there
with SIGSTOP instead, like a virtual machine paused or a process starved:
it goes on where it was when someone sends SIGCONT. Unset (always, in
production) it costs one comparison.
"""

from __future__ import annotations

import os
import signal

_ACTIVE, _, _MODE = os.environ.get("HOSTPOWER_FAILPOINT", "").partition(":")
_SIGNALS = {"": signal.SIGKILL, "kill": signal.SIGKILL, "pause": signal.SIGSTOP}


def failpoint(name: str) -> None:
    if _ACTIVE and _ACTIVE == name:
        os.kill(os.getpid(), _SIGNALS[_MODE])
