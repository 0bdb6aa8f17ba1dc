"""Which fence-agents programs a machine has: the one place that reads the
fence-agents directory (FenceAgentsPath on the engine, --fence-agents-path
on a host agent).

An agent type `t` is installed when `<directory>/fence_t` is an executable
file. Type names are checked before they become a path, so that no type can
point outside the directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from hostpower.drivers.errors import UnsupportedType
from hostpower.model.agenttypes import TYPE_RE

PROGRAM_PREFIX = "fence_"


def agent_program(fence_agents_path: str, agent_type: str) -> Path:
    """Path of the program for that type; UnsupportedType for a malformed type name."""
    if not isinstance(agent_type, str) or not TYPE_RE.match(agent_type):
        raise UnsupportedType(f"invalid agent type {agent_type!r}: use [a-z0-9_]+")
    return Path(fence_agents_path, PROGRAM_PREFIX + agent_type)


def is_installed(fence_agents_path: str, agent_type: str) -> bool:
    """Whether fence_<type> is an executable file in the directory (False for a bad name)."""
    try:
        path = agent_program(fence_agents_path, agent_type)
    except UnsupportedType:
        return False
    return path.is_file() and os.access(path, os.X_OK)


def installed_agent_types(fence_agents_path: str) -> tuple[str, ...]:
    """The installed agent types, sorted; none when the directory cannot be read."""
    try:
        names = os.listdir(fence_agents_path)
    except OSError:
        return ()
    types = (n.removeprefix(PROGRAM_PREFIX) for n in names if n.startswith(PROGRAM_PREFIX))
    return tuple(sorted(t for t in types if is_installed(fence_agents_path, t)))
