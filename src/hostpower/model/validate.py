"""Field checks shared by the API, the CLI and the store.

Each raises ValidationError naming the field; none echoes a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set

from hostpower.model.agenttypes import NOT_POWER_SWITCHING, TYPE_RE
from hostpower.model.errors import ValidationError
from hostpower.model.power import validate_option
from hostpower.model.proxychain import KEYWORDS, is_host_name_or_ip

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def name(value: str, field: str = "name") -> str:
    """Names of data centers, clusters and hosts: letters, digits, . _ -"""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must not be empty")
    value = value.strip()
    if not NAME_RE.match(value):
        raise ValidationError(
            field, f"{value!r} is invalid: use letters, digits, '.', '_' and '-' "
                   f"(at most 255, starting with a letter or digit)")
    return value


ENGINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def engine_name(value: str, field: str = "--engine-name") -> str:
    """An engine's name among the engines sharing a database: like other
    names, and ':' too (the default is HOSTNAME:PORT)."""
    value = value.strip() if isinstance(value, str) else ""
    if not ENGINE_NAME_RE.match(value):
        raise ValidationError(field, f"{value!r} is invalid: use letters, digits, '.', '_', "
                                     f"':' and '-' (at most 128, starting with a letter or digit)")
    return value


def host_name(value: str, field: str = "name") -> str:
    value = name(value, field)
    if value.lower() in {k.value for k in KEYWORDS}:
        raise ValidationError(
            field, f"{value!r} is a proxy source keyword; a host so named could not be "
                   f"told apart from it in a proxy chain")
    return value


def address(value: str, field: str = "address") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must not be empty")
    value = value.strip()
    if not is_host_name_or_ip(value):
        raise ValidationError(field, f"{value!r} is not a valid host name or IP address")
    return value


def port(value: int | None, field: str = "port") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValidationError(field, f"{value!r} is out of range (1-65535)")
    return value


def agent_type(value: str, known: Set[str], field: str = "type") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must not be empty")
    value = value.strip().lower()
    if value.startswith("fence_"):
        value = value[len("fence_"):]
    if not TYPE_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a fence agent type")
    if value in NOT_POWER_SWITCHING:
        raise ValidationError(field, f"fence_{value} does not switch power")
    if value not in known:
        raise ValidationError(field, f"unknown fence agent type {value!r}")
    return value


def single_line(value: str, field: str, secret: bool = False, max_len: int = 255) -> str:
    """Usernames and passwords go onto an agent's stdin: one line each."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    shown = "" if secret else f" {value!r}"
    if any(c in value for c in "\n\r\x00"):
        raise ValidationError(field, f"value{shown} must not contain a line break or NUL byte")
    if len(value) > max_len:
        raise ValidationError(field, f"is longer than {max_len} characters")
    return value


def order(value: int, field: str = "order") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValidationError(field, f"{value!r} is out of range (1-1000)")
    return value


def percent(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValidationError(field, f"{value!r} is not a percentage (0-100)")
    return value


def options(pairs: Iterable[tuple[str, str]], field: str = "options") -> tuple[tuple[str, str], ...]:
    seen: set[str] = set()
    result = []
    for key, value in pairs:
        if isinstance(key, str) and "=" in key:
            raise ValidationError(field, f"option name {key!r} must not contain '='")
        if isinstance(key, str) and any(c in key for c in "\n\r"):
            raise ValidationError(field, f"option name {key!r} must not contain a line break")
        validate_option(key, value, field)
        if key in seen:
            raise ValidationError(field, f"option {key!r} is given twice")
        seen.add(key)
        result.append((key, value))
    return tuple(result)


def bind_address(text: str, example: str, field: str = "--bind",
                 allow_any_port: bool = False) -> tuple[str, int]:
    """ADDRESS:PORT with a literal IP address; IPv6 in brackets ([::1]:8080).
    `allow_any_port`: port 0 lets the kernel pick one."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValidationError(field, f"{text!r} is not ADDRESS:PORT (e.g. {example})") from None
    lowest = 0 if allow_any_port else 1
    if not sep or not lowest <= number < 65536:
        raise ValidationError(field, f"port of {text!r} is out of range ({lowest}-65535)")
    return host, number
