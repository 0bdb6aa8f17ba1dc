"""The proxy preference chain: grammar, validation and implicit completion.

A chain is a comma-separated list of entries, case-insensitive, white space
around an entry ignored:

    cluster | dc | other_dc | engine | <host name, FQDN or IP address>

Rules (DESIGN.md, "The proxy chain"):
* a host with no chain of its own uses FenceProxyDefaultPreferences;
* the entries of FenceProxyImplicitPreferences that the chain lacks are
  appended in that order (an empty implicit list: exactly the chain given);
* unknown words, empty entries and duplicates are refused; so are, when a
  chain is saved on a host, the host itself and hosts that do not exist.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hostpower.model.errors import ValidationError
from hostpower.model.inventory import Host


class ProxySource(StrEnum):
    CLUSTER = "cluster"
    DC = "dc"
    OTHER_DC = "other_dc"
    ENGINE = "engine"
    HOST = "host"


KEYWORDS: tuple[ProxySource, ...] = (
    ProxySource.CLUSTER, ProxySource.DC, ProxySource.OTHER_DC, ProxySource.ENGINE,
)

# Spellings people reach for that are not part of the grammar; refusing them
# with a hint beats silently treating them as a host name.
_ALIASES = {
    "datacenter": "dc", "data_center": "dc", "data-center": "dc",
    "otherdc": "other_dc", "other-dc": "other_dc", "other_datacenter": "other_dc",
    "other-datacenter": "other_dc", "local": "engine", "manager": "engine",
}

_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ProxyEntry:
    """One entry of a chain: a source keyword, or one named host."""

    source: ProxySource
    host: str | None = None  # as written, for source HOST

    @property
    def text(self) -> str:
        return self.host if self.source is ProxySource.HOST else self.source.value  # type: ignore[return-value]

    @property
    def key(self) -> str:
        """Identity for duplicate detection: host names compare case-insensitively."""
        return self.text.lower() if self.source is ProxySource.HOST else self.source.value

    def __str__(self) -> str:
        return self.text


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    """True when a and b differ by at most one insertion, deletion,
    substitution or transposition of neighbours."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (len(diffs) == 2 and diffs[1] == diffs[0] + 1
                and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    for i in range(len(long_)):
        if long_[:i] + long_[i + 1:] == short:
            return True
    return False


def _likely_keyword(word: str) -> str | None:
    """The keyword a mistyped entry most likely meant, if any."""
    if word in _ALIASES:
        return _ALIASES[word]
    if "." in word or len(word) < 4:  # short names such as dc1 are real host names
        return None
    for kw in KEYWORDS:
        if len(kw.value) >= 4 and _edit_distance_at_most_one(word, kw.value):
            return kw.value
    return None


def is_host_name_or_ip(text: str) -> bool:
    """A host name or FQDN (RFC 1123 labels), or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    if len(text) > 253:
        return False
    labels = text.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        return False
    # All-numeric dotted text that is not an IP address is a typo, not a name.
    return not all(label.isdigit() for label in labels)


def parse_entry(raw: str, position: int, field: str = "pm_proxies") -> ProxyEntry:
    """Parse one entry; `position` is 1-based, for the error message."""
    text = raw.strip()
    if not text:
        raise ValidationError(field, f"entry {position} is empty")
    word = text.lower()
    for kw in KEYWORDS:
        if word == kw.value:
            return ProxyEntry(kw)
    hint = _likely_keyword(word)
    if hint is not None:
        raise ValidationError(
            field, f"entry {position} {text!r} is an unknown word (did you mean {hint!r}?)"
        )
    if not is_host_name_or_ip(text):
        raise ValidationError(
            field,
            f"entry {position} {text!r} is neither a proxy source "
            f"(cluster, dc, other_dc, engine) nor a valid host name or IP address",
        )
    return ProxyEntry(ProxySource.HOST, text)


def parse_chain(spec: str | None, field: str = "pm_proxies") -> tuple[ProxyEntry, ...]:
    """Parse a chain as written. An empty or blank spec is the empty chain."""
    if spec is None or not spec.strip():
        return ()
    return check_entries([parse_entry(raw, i) for i, raw in enumerate(spec.split(","), 1)], field)


def check_entries(entries: Sequence[ProxyEntry], field: str = "pm_proxies") -> tuple[ProxyEntry, ...]:
    """Refuse duplicates; return the entries as a tuple."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries, 1):
        if entry.key in seen:
            raise ValidationError(
                field, f"entry {i} {entry.text!r} duplicates entry {seen[entry.key]}"
            )
        seen[entry.key] = i
    return tuple(entries)


def parse_source_list(spec: str, field: str) -> tuple[ProxyEntry, ...]:
    """A chain of source keywords only, as the configuration keys hold."""
    entries = parse_chain(spec, field)
    for i, entry in enumerate(entries, 1):
        if entry.source is ProxySource.HOST:
            raise ValidationError(
                field, f"entry {i} {entry.text!r}: only cluster, dc, other_dc and engine "
                       f"are allowed here, not host names"
            )
    return entries


def format_chain(entries: Iterable[ProxyEntry]) -> str:
    """The canonical spelling: keywords in lower case, hosts as written."""
    return ",".join(e.text for e in entries)


def complete_chain(
    entries: Sequence[ProxyEntry],
    default: Sequence[ProxyEntry],
    implicit: Sequence[ProxyEntry],
) -> tuple[ProxyEntry, ...]:
    """The effective chain: the host's own (or the default), then every
    implicit entry it lacks, in the implicit order."""
    chain = list(entries) if entries else list(default)
    present = {e.key for e in chain}
    for entry in implicit:
        if entry.key not in present:
            chain.append(entry)
            present.add(entry.key)
    return tuple(chain)


def check_chain_hosts(
    entries: Sequence[ProxyEntry], target: Host | None, hosts: Sequence[Host],
    field: str = "pm_proxies",
) -> None:
    """Refuse host entries that name no defined host, the target itself, or a
    host another entry already names (by its other name or address)."""
    named: dict[int, int] = {}
    for i, entry in enumerate(entries, 1):
        if entry.source is not ProxySource.HOST:
            continue
        assert entry.host is not None
        found = next((h for h in hosts if h.matches(entry.host)), None)
        if found is None:
            raise ValidationError(field, f"entry {i} {entry.text!r} is not a defined host")
        if target is not None and found.id == target.id:
            raise ValidationError(field, f"entry {i} {entry.text!r} is the host itself")
        if found.id in named:
            raise ValidationError(
                field, f"entry {i} {entry.text!r} names the same host as entry {named[found.id]}"
            )
        named[found.id] = i
