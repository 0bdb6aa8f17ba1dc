"""The command a lab host's sshd runs for every SSH command of the engine.

It is the forced command (`command="..."`) of the engine's key in the host's
authorized_keys (lab/ssh.py). It runs in the host's network namespace, so it
reaches the lab through a Unix socket (the file system is shared across
namespaces): it sends the host's name and SSH_ORIGINAL_COMMAND, the lab runs
what a real host would (`systemctl restart hostpower-agent` restarts that
host's agent), and it prints the answer and exits with its status.

Standard library only, run as a script (`python -I .../sshcommand.py`):
started for every command, it must start fast.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: sshcommand.py SOCKET HOST", file=sys.stderr)
        return 2
    path, host = argv
    request = {"host": host, "command": os.environ.get("SSH_ORIGINAL_COMMAND", "")}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall((json.dumps(request) + "\n").encode())
            answer = json.loads(s.makefile("rb").readline() or b"{}")
    except (OSError, ValueError) as exc:
        print(f"lab: cannot reach the lab supervisor: {exc}", file=sys.stderr)
        return 255
    sys.stdout.write(str(answer.get("stdout", "")))
    sys.stderr.write(str(answer.get("stderr", "")))
    return int(answer.get("exit", 1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
