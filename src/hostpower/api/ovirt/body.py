"""Request bodies in oVirt's XML or JSON, read into one shape: a dict per
element (attributes as keys, children by tag), text as str, and a list for
the list elements oVirt has here (``<pm_proxies>``, ``<options>``).

JSON bodies follow oVirt's JSON (``{"pm_proxies": {"pm_proxy": [...]}}``);
values may be JSON strings, as oVirt writes them, or JSON numbers and
booleans. Every reader names the field at fault (ValidationError, 400).
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import Request

from hostpower.model.errors import ValidationError

MAX_BODY = 1 << 20  # no representation of ours comes near a megabyte
# oVirt's list elements we read, with their item tag.
LISTS = {"pm_proxies": "pm_proxy", "options": "option", "agents": "agent"}

Body = dict[str, Any]


def _from_xml(el: ET.Element) -> Any:
    if el.tag in LISTS:
        return [_from_xml(c) for c in el if c.tag == LISTS[el.tag]]
    children = list(el)
    if not children and not el.attrib:
        return (el.text or "").strip()
    out: Body = dict(el.attrib)
    for c in children:
        out[c.tag] = _from_xml(c)
    return out


def _from_json(tag: str, v: Any) -> Any:
    if tag in LISTS:
        items = v.get(LISTS[tag], []) if isinstance(v, dict) else v
        if not isinstance(items, list):
            raise ValidationError(tag, f"must hold a list of {LISTS[tag]}")
        return [_from_json(LISTS[tag], i) for i in items]
    if isinstance(v, dict):
        return {k: _from_json(k, x) for k, x in v.items()}
    return v


async def read(request: Request, root: str) -> Body:
    """The body, whose root element must be `root` (``<host>``, ``<action>``, ...)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationError(root, f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if "json" in request.headers.get("content-type", "").lower():
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ValidationError(root, f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValidationError(root, "the body must be a JSON object")
        return {k: _from_json(k, v) for k, v in doc.items()}
    if b"<!DOCTYPE" in raw.upper():
        # oVirt's bodies have no DTD; entities are a way to make the parser work hard.
        raise ValidationError(root, "a document type declaration (DTD) is not accepted")
    try:
        el = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ValidationError(root, f"the body is not valid XML: {exc}") from None
    if el.tag != root:
        raise ValidationError(root, f"expected a <{root}> element, got <{el.tag}>")
    doc = _from_xml(el)
    return doc if isinstance(doc, dict) else {}


def _dotted(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def section(doc: Body, key: str, path: str = "") -> Body | None:
    v = doc.get(key)
    if v is None or v == "":
        return None if v is None else {}
    if not isinstance(v, dict):
        raise ValidationError(_dotted(path, key), "must be an element with children")
    return v


def text(doc: Body, key: str, path: str = "") -> str | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool | dict | list):
        raise ValidationError(_dotted(path, key), "must be text")
    if "\x00" in str(v):
        raise ValidationError(_dotted(path, key), "must not hold a NUL character")
    return str(v)


def boolean(doc: Body, key: str, path: str = "") -> bool | None:
    v = doc.get(key)
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValidationError(_dotted(path, key), "must be true or false")


def integer(doc: Body, key: str, path: str = "") -> int | None:
    v = doc.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise ValidationError(_dotted(path, key), "must be an integer")
    try:
        return int(str(v).strip())
    except ValueError:
        raise ValidationError(_dotted(path, key), "must be an integer") from None


def items(doc: Body, key: str, path: str = "") -> list[Body] | None:
    v = doc.get(key)
    if v is None:
        return None
    if v == "":
        return []
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        raise ValidationError(_dotted(path, key), f"must be a list of {LISTS.get(key, 'items')}")
    return v


def ref_id(doc: Body, key: str, path: str = "") -> int | None:
    """The id of a reference such as ``<cluster id="3"/>``: oVirt's ids are text."""
    ref = section(doc, key, path)
    if ref is None:
        return None
    return integer(ref, "id", _dotted(path, key))
