"""Which fence_redfish options the native Redfish driver honours, and what it takes from them.

Anything else, or a value outside these, and the native path cannot run the
spec (the engine then uses the script driver, fence_redfish):
* ssl, ssl_secure: a true value or absent (Redfish is always HTTPS here, as
  in fence_redfish; the certificate is verified).
* ssl_insecure: a true value skips verifying the BMC's certificate (as
  fence_redfish's `--ssl-insecure`). A false value is refused: fence_redfish
  treats the option as a flag set by its mere presence, so `ssl_insecure=0`
  would still skip verification there; remove the option instead.
* systems_uri: the ComputerSystem to switch, e.g. /redfish/v1/Systems/1;
  absent, it is discovered from the service root (the last member of the
  Systems collection, as fence_redfish picks it).
* redfish_uri: the service root (default /redfish/v1).
* power_wait: seconds to wait after a reset before the first status poll
  (default 0, as fence_redfish).
* power_timeout: seconds to wait for the verified state (default 20, as
  fence_redfish).
Redfish has no plug: a spec with one goes to the script (which ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass

from hostpower.model.power import AgentSpec

NATIVE_TYPES = frozenset({"redfish"})
REDFISH_PORT = 443
DEFAULT_POWER_TIMEOUT = 20.0
DEFAULT_REDFISH_URI = "/redfish/v1"
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}


@dataclass(frozen=True)
class RedfishSettings:
    """What the native path takes from a spec."""

    port: int = REDFISH_PORT
    insecure: bool = False
    systems_uri: str | None = None
    redfish_uri: str = DEFAULT_REDFISH_URI
    power_wait: float = 0.0
    power_timeout: float = DEFAULT_POWER_TIMEOUT


def skips_verification(spec_options: tuple[tuple[str, str], ...]) -> bool:
    """Whether these options make fence_redfish (and so this product) skip
    verifying the BMC's certificate: `ssl_insecure` with any value."""
    return any(key == "ssl_insecure" for key, _ in spec_options)


def redfish_settings(spec: AgentSpec) -> RedfishSettings:
    """The settings for this spec; ValueError saying why the native path cannot honour it."""
    if spec.type not in NATIVE_TYPES:
        raise ValueError(f"agent type {spec.type!r} is not Redfish")
    if spec.plug:
        raise ValueError("Redfish has no plug")
    address, port = split_address(spec.address)
    if not address:
        raise ValueError("the BMC address is empty")
    values: dict[str, object] = {}
    if port is not None:
        values["port"] = port
    if spec.port is not None:
        values["port"] = int(spec.port)
    for key, raw in spec.options:
        value = raw.strip().lower()
        if key in ("ssl", "ssl_secure"):
            if value not in _TRUE:
                raise ValueError(f"{key}={raw!r}: Redfish is spoken over HTTPS only")
        elif key == "ssl_insecure":
            if value in _FALSE:
                raise ValueError("ssl_insecure=0 still skips verification in fence_redfish "
                                 "(a flag set by its presence): remove the option to verify")
            if value not in _TRUE:
                raise ValueError(f"ssl_insecure={raw!r} is not a boolean")
            values["insecure"] = True
        elif key in ("systems_uri", "redfish_uri"):
            values[key] = _uri_path(key, raw)
        elif key in ("power_wait", "power_timeout"):
            values[key] = _seconds(key, raw)
        else:
            raise ValueError(f"option {key!r} is not supported natively")
    return RedfishSettings(**values)  # type: ignore[arg-type]


def split_address(address: str) -> tuple[str, int | None]:
    """fence_redfish's backwards-compatible `ip:port` address (one colon only:
    an IPv6 literal is left whole)."""
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"address {address!r}: {port!r} is not a TCP port")
        return host, int(port)
    return address.strip("[]"), None


def _uri_path(key: str, raw: str) -> str:
    path = raw.strip()
    if not path.startswith("/") or any(c in path for c in " ?#\\") or "//" in path:
        raise ValueError(f"{key}={raw!r} is not an absolute URI path like /redfish/v1/...")
    return path.rstrip("/") or "/"


def _seconds(key: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{key}={raw!r} is out of range")
    return seconds
