"""The part of oVirt's search language served: ``name=h1``, ``name=east-*``,
``status=up and cluster=c1``, ``name=a or name=b``, with an optional
``Hosts:`` prefix as oVirt's own clients write it.

A term is FIELD=VALUE or FIELD!=VALUE; VALUE may hold `*` wildcards and may be
quoted ("..."). Terms join with `and` (binding first) and `or`. Anything else
(`sortby`, `page`, `<`, `>`, parentheses, a field the collection has not) is a
ValidationError naming `search`: the client learns at once that its query
was not understood, instead of getting a list filtered by less than it asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hostpower.model.errors import ValidationError

T = TypeVar("T")
FIELD = "search"
_TERM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(!=|=)\s*(?:"([^"]*)"|([^\s"()<>=!]+))')
_JOIN = re.compile(r"\s+(and|or)\s+", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*([A-Za-z_]+)\s*:")
_NOT_SERVED = ("sortby", "page")


@dataclass(frozen=True)
class Term:
    field: str
    negated: bool
    pattern: str


def _parse(query: str) -> list[list[Term]]:
    """OR of ANDs of terms."""
    groups: list[list[Term]] = [[]]
    pos = 0
    while True:
        m = _TERM.match(query, pos)
        if m is None:
            rest = query[pos:].strip()
            word = (rest.split() or [""])[0].lower()
            if word in _NOT_SERVED:
                raise ValidationError(FIELD, f"{word!r} is not served")
            raise ValidationError(FIELD, f"cannot read {rest!r}: the terms served are "
                                         f"FIELD=VALUE and FIELD!=VALUE joined by and/or")
        value = m.group(3) if m.group(3) is not None else m.group(4)
        groups[-1].append(Term(m.group(1).lower(), m.group(2) == "!=", value))
        pos = m.end()
        if not query[pos:].strip():
            return groups
        j = _JOIN.match(query, pos)
        if j is None:
            rest = query[pos:].strip()
            word = rest.split()[0].lower()
            hint = (f"{word!r} is not served" if word in _NOT_SERVED
                    else f"expected 'and' or 'or' before {rest!r}")
            raise ValidationError(FIELD, hint)
        if j.group(1).lower() == "or":
            groups.append([])
        pos = j.end()


def _regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    body = ".*".join(re.escape(p) for p in pattern.split("*"))
    return re.compile(f"^{body}$", 0 if case_sensitive else re.IGNORECASE)


@dataclass
class Search(Generic[T]):
    """A parsed query over one collection: `fields` maps each searchable
    field to what it reads of an object (its text, or several texts)."""

    collection: str
    fields: dict[str, Callable[[T], str | list[str]]]
    query: str
    case_sensitive: bool = True

    def __post_init__(self) -> None:
        query = self.query
        prefix = _PREFIX.match(query)
        if prefix is not None:
            if prefix.group(1).lower() != self.collection:
                raise ValidationError(FIELD, f"{prefix.group(1)!r}: this collection is "
                                             f"{self.collection}")
            query = query[prefix.end():]
        if not query.strip():
            self._groups: list[list[tuple[Term, re.Pattern[str]]]] = []
            return
        groups = _parse(query)
        for term in (t for g in groups for t in g):
            if term.field not in self.fields:
                raise ValidationError(FIELD, f"{term.field!r} is not a field served for "
                                             f"{self.collection} (served: "
                                             f"{', '.join(sorted(self.fields))})")
        self._groups = [[(t, _regex(t.pattern, self.case_sensitive)) for t in g]
                        for g in groups]

    def _holds(self, obj: T, term: Term, rx: re.Pattern[str]) -> bool:
        got = self.fields[term.field](obj)
        texts = got if isinstance(got, list) else [got]
        hit = any(rx.match(t) for t in texts)
        return not hit if term.negated else hit

    def matches(self, obj: T) -> bool:
        if not self._groups:
            return True
        return any(all(self._holds(obj, t, rx) for t, rx in g) for g in self._groups)

    def filter(self, objs: list[T], limit: int | None = None) -> list[T]:
        found = [o for o in objs if self.matches(o)]
        return found if limit is None else found[:limit]
