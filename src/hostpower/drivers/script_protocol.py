"""How a fence-agents program is spoken to, and how its answer is read.

Parameters go on stdin, one `key=value` per line, action last. Stdin, and
not argv or the environment, is the only channel that does not expose the
password to other users of the machine (/proc/PID/cmdline and
/proc/PID/environ). The program runs with a small clean environment.

fence-agents exit codes: 0 success (status: on), 2 status off, anything else
a failure. `off` exits 0 only after the agent verified the device off.
"""

from __future__ import annotations

import re

from hostpower.drivers.errors import DriverError
from hostpower.model.errors import ValidationError
from hostpower.model.power import AgentSpec, FenceAction, Outcome, validate_option

# The only environment an agent sees: no credentials, no proxy settings, no
# locale surprises, and no Python DeprecationWarning noise on stderr.
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "PYTHONWARNINGS": "ignore"}
MESSAGE_MAX = 300
# fencing.py prefixes its log lines with "2024-01-02 03:04:05,678 ".
_LOG_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+")
_MASK = "********"
# fencing.py's fail_usage() ends every failure with this line, which says
# nothing about the failure; the line before it does.
_USAGE_HINT = "Please use '-h' for usage"


def agent_input(spec: AgentSpec, action: FenceAction) -> str:
    """The stdin of the agent: one key=value per line, action last.

    Refuses (DriverError) anything that could add a line of its own: every
    user option goes through validate_option, and the driver's own fields
    may not hold line breaks or NUL bytes.
    """
    lines: list[tuple[str, str]] = []
    if spec.address:
        lines.append(("ip", spec.address))
    if spec.port is not None:
        lines.append(("ipport", str(int(spec.port))))
    if spec.username:
        lines.append(("username", spec.username))
    if spec.password:
        lines.append(("password", spec.password.reveal()))
    if spec.plug:
        lines.append(("plug", spec.plug))
    for key, value in lines:
        if any(c in value for c in "\n\r\x00"):
            # Never echo the value: it may be the password.
            raise DriverError(f"{key}: must not contain a line break or NUL byte")
    for key, value in spec.options:
        try:
            validate_option(key, value)
        except ValidationError as exc:
            raise DriverError(str(exc)) from exc
        lines.append((key, value))
    lines.append(("action", FenceAction(action).value))
    return "".join(f"{k}={v}\n" for k, v in lines)


def outcome_for(action: FenceAction, exit_code: int, stderr: str = "") -> Outcome:
    """Map an agent's exit code to what the device answered."""
    if action is FenceAction.STATUS:
        return {0: Outcome.ON, 2: Outcome.OFF}.get(exit_code, Outcome.ERROR)
    if exit_code != 0:
        return Outcome.ERROR
    if action is FenceAction.OFF:
        return Outcome.OFF  # fence agents exit 0 for off only once verified off
    if action is FenceAction.REBOOT and "timed out waiting to power on" in stderr.lower():
        # fencing.py reports a reboot whose power-on failed as a success; the
        # device is not verified back on, so it is not ON.
        return Outcome.ERROR
    return Outcome.ON


def clean_output(data: bytes | None, secret: str) -> str:
    """An output stream as text, the password masked should the agent echo it."""
    text = (data or b"").decode("utf-8", "replace")
    if secret:
        text = text.replace(secret, _MASK)
    return text


def result_message(outcome: Outcome, exit_code: int, stdout: str, stderr: str) -> str:
    """The agent's last meaningful line: stdout on success, stderr first on failure."""
    if outcome is Outcome.ERROR:
        text = _last_line(stderr) or _last_line(stdout)
        if exit_code < 0:
            return text or f"killed by signal {-exit_code}"
        return text or f"agent failed with exit code {exit_code}"
    return _last_line(stdout) or _last_line(stderr)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        line = _LOG_TIME_RE.sub("", line.strip())
        if line and not line.endswith(_USAGE_HINT):
            return line[:MESSAGE_MAX]
    return ""
