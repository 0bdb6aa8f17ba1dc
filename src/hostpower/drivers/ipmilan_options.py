"""Which fence_ipmilan options the native IPMI driver honours, and what it takes from them.

Anything else, or a value outside these, and the native path cannot run the
spec (the engine then uses the script driver):
* lanplus: absent or true. An explicit false asks for IPMI 1.5, which the
  native driver cannot force.
* cipher: 3 or 17 (pyghmi negotiates 17, else 3).
* privlvl: callback, user, operator, administrator. Absent: administrator,
  falling back to operator if the BMC refuses it.
* method: onoff. (cycle reports success before the host is verified on.)
* power_wait: seconds to wait after switching before the first status poll
  (default 0 here; fence_ipmilan's default of 2 s only delays the same
  verification).
* power_timeout: seconds to wait for the verified state (default 20).
* hexadecimal_kg: the BMC key Kg, in hex.
The plug field is not used by IPMI: a spec with a plug goes to the script.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostpower.model.power import AgentSpec

NATIVE_TYPES = frozenset({"ipmilan", "ipmilanplus"})
IPMI_PORT = 623
DEFAULT_POWER_TIMEOUT = 20.0
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}
_PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4}


@dataclass(frozen=True)
class NativeSettings:
    """What the native path takes from a spec's options."""

    port: int = IPMI_PORT
    privlevel: int | None = None
    kg: bytes | None = None
    power_wait: float = 0.0
    power_timeout: float = DEFAULT_POWER_TIMEOUT


def native_settings(spec: AgentSpec) -> NativeSettings:
    """The settings for this spec; ValueError saying why the native path cannot honour it."""
    if spec.type not in NATIVE_TYPES:
        raise ValueError(f"agent type {spec.type!r} is not IPMI")
    if spec.plug:
        raise ValueError("IPMI has no plug")
    values: dict[str, object] = {}
    if spec.port is not None:
        values["port"] = int(spec.port)
    for key, raw in spec.options:
        value = raw.strip().lower()
        if key == "lanplus":
            if value in _FALSE:
                raise ValueError("lanplus=0 asks for IPMI 1.5")
            if value not in _TRUE:
                raise ValueError(f"lanplus={raw!r} is not a boolean")
        elif key == "cipher":
            if value not in {"3", "17"}:
                raise ValueError(f"cipher suite {raw!r} is not supported (3 or 17)")
        elif key == "privlvl":
            if value not in _PRIVILEGES:
                raise ValueError(f"unknown privilege level {raw!r}")
            values["privlevel"] = _PRIVILEGES[value]
        elif key == "method":
            if value != "onoff":
                raise ValueError(f"method {raw!r} is not supported (onoff)")
        elif key in ("power_wait", "power_timeout"):
            values[key] = _seconds(key, raw)
        elif key == "hexadecimal_kg":
            try:
                values["kg"] = bytes.fromhex(raw.strip())
            except ValueError:
                raise ValueError("hexadecimal_kg is not hexadecimal") from None
        else:
            raise ValueError(f"option {key!r} is not supported natively")
    return NativeSettings(**values)  # type: ignore[arg-type]


def _seconds(key: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{key}={raw!r} is out of range")
    return seconds
