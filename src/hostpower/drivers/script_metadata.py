"""A fence agent's parameter list, from `fence_<type> -o metadata` (XML).

The engine shows it to users who configure an agent of that type.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from hostpower.drivers.errors import DriverError
from hostpower.drivers.script_protocol import CHILD_ENV

METADATA_TIMEOUT = 15.0

Parameter = dict[str, object]


def read_metadata(program: Path) -> list[Parameter]:
    """Run `program -o metadata` and parse its answer; DriverError if it fails."""
    try:
        done = subprocess.run([str(program), "-o", "metadata"], stdin=subprocess.DEVNULL,
                              capture_output=True, env=CHILD_ENV, cwd="/",
                              timeout=METADATA_TIMEOUT, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"{program.name} -o metadata failed: {exc}") from exc
    if done.returncode != 0:
        raise DriverError(f"{program.name} -o metadata exited with {done.returncode}")
    return parse_metadata(done.stdout)


def parse_metadata(xml: bytes | str) -> list[Parameter]:
    """Parameters of a fence-agents metadata document.

    Each entry: name, required (bool), shortdesc, type (the content type:
    string, boolean, integer, second, select, ...), default (str or None),
    deprecated (bool), choices (list of str, for select).
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DriverError(f"unreadable agent metadata: {exc}") from exc
    params: list[Parameter] = []
    for p in root.iter("parameter"):
        content = p.find("content")
        shortdesc = p.find("shortdesc")
        params.append({
            "name": p.get("name", ""),
            "required": p.get("required") == "1",
            "shortdesc": (shortdesc.text or "").strip() if shortdesc is not None else "",
            "type": content.get("type", "string") if content is not None else "string",
            "default": content.get("default") if content is not None else None,
            "deprecated": p.get("deprecated") == "1",
            "choices": [o.get("value", "") for o in content.iter("option")]
            if content is not None else [],
        })
    return params
