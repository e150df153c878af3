"""Snabb-style configuration paths over YANG data text, sans I/O.

Paths name nodes of a configuration the way ``snabb config`` does::

    /softwire-config/external-interface/mtu
    /softwire-config/binding-table/softwire[ipv4=192.0.2.1][psid=1]
    /softwire-config/instance[device=eth0]/queue[id=0]/external-interface/ip
    /lwaftr/next-hop-cache-refresh-interval

A :class:`Tree` is a mutable copy of parsed data text (keyword, value,
children) that :func:`get_text`, :func:`set_at`, :func:`add_at` and
:func:`remove_at` read and change; :func:`emit` writes it back as text for
the loader to validate.  All errors are :class:`PathError` naming the path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lwaftr.config.yangdata import Node, parse, quote


class PathError(ValueError):
    """A path that does not parse, or names nothing (or too much)."""


@dataclass
class Tree:
    keyword: str
    value: str | None = None
    children: list["Tree"] | None = None     # None: a leaf

    def leaf(self, name: str) -> str | None:
        for c in self.children or ():
            if c.keyword == name and c.children is None:
                return c.value
        return None


@dataclass(frozen=True)
class Step:
    name: str
    keys: dict[str, str] = field(default_factory=dict)


_STEP_RE = re.compile(r"([A-Za-z_][\w.-]*)((?:\[[^\]=]+=[^\]]*\])*)")
_KEY_RE = re.compile(r"\[([^\]=]+)=([^\]]*)\]")


def parse_path(path: str) -> list[Step]:
    """``/a/b[k=v][k2=v2]/c`` -> steps; ``/`` -> []."""
    if not path.startswith("/"):
        raise PathError(f"{path!r}: a path starts with '/'")
    steps = []
    for part in [p for p in re.split(r"/(?![^\[]*\])", path[1:]) if p]:
        m = _STEP_RE.fullmatch(part)
        if m is None:
            raise PathError(f"{path!r}: cannot parse {part!r}")
        keys = {k.strip(): v.strip() for k, v in _KEY_RE.findall(m.group(2))}
        steps.append(Step(m.group(1), keys))
    return steps


def from_nodes(nodes: list[Node]) -> list[Tree]:
    return [Tree(n.keyword, n.value, None if n.children is None else from_nodes(list(n.children)))
            for n in nodes]


def from_text(text: str, source: str = "<value>") -> list[Tree]:
    """Data text -> trees (syntax errors are ConfigError from the parser)."""
    return from_nodes(parse(text, source).children)


def emit(trees: list[Tree], indent: int = 0) -> str:
    out = []
    pad = "  " * indent
    for t in trees:
        head = t.keyword if t.value is None else f"{t.keyword} {quote(t.value)}"
        if t.children is None:
            out.append(f"{pad}{head};\n")
        else:
            out.append(f"{pad}{head} {{\n{emit(t.children, indent + 1)}{pad}}}\n")
    return "".join(out)


def _matches(t: Tree, step: Step) -> bool:
    return t.keyword == step.name and all(t.leaf(k) == v for k, v in step.keys.items())


def _where(root: list[Tree], steps: list[Step], path: str) -> tuple[list[Tree], list[Tree]]:
    """(the sibling list holding the last step's nodes, those nodes)."""
    siblings = root
    found: list[Tree] = []
    for i, step in enumerate(steps):
        found = [t for t in siblings if _matches(t, step)]
        if not found:
            raise PathError(f"{path}: nothing at {_show(steps[:i + 1])}")
        if i < len(steps) - 1:
            if len(found) > 1:
                raise PathError(f"{path}: {_show(steps[:i + 1])} is a list: give its keys")
            if found[0].children is None:
                raise PathError(f"{path}: {_show(steps[:i + 1])} is a leaf")
            siblings = found[0].children
    return siblings, found


def _show(steps: list[Step]) -> str:
    return "/" + "/".join(s.name + "".join(f"[{k}={v}]" for k, v in s.keys.items()) for s in steps)


def get_text(root: list[Tree], path: str) -> str:
    """The value of a leaf, or the data text of what the path names."""
    steps = parse_path(path)
    if not steps:
        return emit(root)
    _, found = _where(root, steps, path)
    if len(found) == 1 and found[0].children is None:
        return found[0].value or ""
    return "".join(emit(t.children or []) if len(found) == 1 else emit([t]) for t in found)


def set_at(root: list[Tree], path: str, value: str) -> None:
    """Set a leaf to ``value``, or replace a container's contents with the data text ``value``.
    A leaf that is absent (a default) is created when its parent exists."""
    steps = parse_path(path)
    if not steps:
        raise PathError("cannot set '/'")
    try:
        siblings, found = _where(root, steps, path)
    except PathError:
        # Absent (defaults): create the missing containers and the node itself.
        if any(st.keys for st in steps):
            raise
        target = root
        for st in steps[:-1]:
            nxt = [t for t in target if t.keyword == st.name]
            if len(nxt) > 1 or (nxt and nxt[0].children is None):
                raise
            if not nxt:
                nxt = [Tree(st.name, None, [])]
                target.append(nxt[0])
            target = nxt[0].children
        body = value.strip()
        target.append(Tree(steps[-1].name, None, from_text(body[1:-1])) if body.startswith("{")
                      else Tree(steps[-1].name, value, None))
        return
    if len(found) > 1:
        raise PathError(f"{path}: names a list: give its keys")
    t = found[0]
    if t.children is None:
        t.value = value
    else:
        body = value.strip()
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]
        t.children = from_text(body)


def add_at(root: list[Tree], path: str, value: str) -> list[Tree]:
    """Add list entries: ``path`` names the list (``.../softwire``), ``value`` is
    one or more entries, each ``{ ... }`` or ``NAME { ... }``.  Returns them."""
    steps = parse_path(path)
    if not steps or steps[-1].keys:
        raise PathError(f"{path}: 'add' takes the path of a list, without keys")
    name = steps[-1].name
    entries = parse_entries(value, name)
    if len(steps) > 1:
        _, parent = _where(root, steps[:-1], path)
        if len(parent) != 1 or parent[0].children is None:
            raise PathError(f"{path}: the parent must be one container")
        parent[0].children.extend(entries)
    else:
        root.extend(entries)
    return entries


def parse_entries(value: str, name: str) -> list[Tree]:
    """``{ ... } { ... }`` or ``NAME { ... } ...`` -> entries named ``name``."""
    text = value.strip()
    text = re.sub(r"(^|\})\s*\{", lambda m: f"{m.group(1)} {name} {{", text)
    entries = from_text(text)
    if not entries or any(e.keyword != name or e.children is None for e in entries):
        raise PathError(f"expected one or more '{name} {{ ... }}' entries")
    return entries


def remove_at(root: list[Tree], path: str) -> None:
    """Remove what ``path`` names (one list entry with its keys, or a leaf/container)."""
    steps = parse_path(path)
    if not steps:
        raise PathError("cannot remove '/'")
    siblings, found = _where(root, steps, path)
    if len(found) > 1:
        raise PathError(f"{path}: names several entries: give the list keys")
    siblings.remove(found[0])
