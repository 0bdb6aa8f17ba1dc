"""oVirt's representations: one tree of nodes, written as XML (the default)
or as JSON (``Accept: application/json``), the way oVirt's engine writes them.

XML: ``<host href="/ovirt-engine/api/hosts/7" id="7"><name>h7</name>...``.
JSON: the same tree with oVirt's conventions: attributes become keys, every
value is a string (``"enabled": "true"``, ``"port": "623"``), a list is an
object holding one array named for its items (``"pm_proxies": {"pm_proxy":
[...]}``; a whole collection answers ``{"host": [...]}``), and links are one
``"link"`` array.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from fastapi import Request, Response

BASE = "/ovirt-engine/api"
XML_TYPE = "application/xml;charset=UTF-8"
JSON_TYPE = "application/json;charset=UTF-8"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


@dataclass
class Node:
    """An element: attributes (id, href, rel), a text or children. `many`
    marks a list (``<pm_proxies>`` holding ``<pm_proxy>`` items)."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    text: str | None = None
    many: bool = False
    item: str = ""  # the item tag of an empty list (JSON needs it)

    def add(self, *nodes: Node | None) -> Node:
        self.children.extend(n for n in nodes if n is not None)
        return self


def value(tag: str, v: object) -> Node | None:
    """A leaf; None (unknown) gives no element at all, as oVirt omits unset values."""
    if v is None:
        return None
    if isinstance(v, bool):
        return Node(tag, text="true" if v else "false")
    return Node(tag, text=str(v))


def ref(tag: str, collection: str, obj_id: int) -> Node:
    """A reference to another object: ``<cluster href="..." id="3"/>``."""
    return Node(tag, {"href": f"{BASE}/{collection}/{obj_id}", "id": str(obj_id)})


def link(rel: str, href: str) -> Node:
    return Node("link", {"href": href, "rel": rel})


def listing(tag: str, item: str, nodes: list[Node]) -> Node:
    return Node(tag, children=nodes, many=True, item=item)


# -- XML -----------------------------------------------------------------------

def _element(node: Node) -> ET.Element:
    el = ET.Element(node.tag, node.attrs)
    if node.text is not None:
        el.text = node.text
    for child in node.children:
        el.append(_element(child))
    return el


def to_xml(node: Node) -> bytes:
    return _XML_DECLARATION + ET.tostring(_element(node), encoding="utf-8")


# -- JSON ----------------------------------------------------------------------

def _json(node: Node) -> object:
    if node.many:
        item = node.children[0].tag if node.children else node.item
        body: dict[str, object] = dict(node.attrs)
        body[item] = [_json(c) for c in node.children]
        return body
    if node.text is not None and not node.children:
        return node.text
    out: dict[str, object] = dict(node.attrs)
    links: list[object] = []
    for child in node.children:
        if child.tag == "link":
            links.append(_json(child))
        else:
            out[child.tag] = _json(child)
    if links:
        out["link"] = links
    return out


def to_json(node: Node) -> bytes:
    return json.dumps(_json(node), indent=2).encode()


def wants_json(request: Request) -> bool:
    """JSON when the client asks for it and not for XML (oVirt's default is XML)."""
    accept = request.headers.get("accept", "").lower()
    return "json" in accept and "xml" not in accept


def answer(request: Request, node: Node, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    if wants_json(request):
        return Response(to_json(node), status, headers, media_type=JSON_TYPE)
    return Response(to_xml(node), status, headers, media_type=XML_TYPE)
