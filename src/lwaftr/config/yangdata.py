"""Tokenizer / parser for YANG data text as Snabb writes it.

The syntax (Snabb ``lib/yang/parser.lua``, RFC 7950 section 6 lexically)::

    softwire-config {            // a container or list entry
      name "my lwaftr";          /* a leaf: keyword, argument, ';' */
      binding-table { ... }
    }

An argument is an unquoted run of characters other than whitespace and
``;{}"'/``, or one or more quoted strings joined by ``+``: double-quoted
with the escapes ``\\n \\t \\" \\\\`` (any other backslash stays literal), or
single-quoted with no escapes.  A line break inside a quoted string drops the
next line's indentation up to the column after the opening quote.

The parser is schema-less: it only builds the tree.  One compiled regular
expression matches a whole statement head (keyword, argument and ``;`` or
``{``) or a ``}``, including the whitespace and comments after it, so the
Python loop runs once per statement, never per character.  A :class:`Compact`
shape (the binding table's softwire entries) goes further: a whole entry in
its canonical form is one match and one node.  Nodes keep the character
offset of their keyword; :meth:`Document.line_of` turns offsets into line
numbers (a numpy index of the newlines, built on first use).
"""
from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, NamedTuple

import numpy as np

from lwaftr.config.errors import ConfigError

__all__ = ["Compact", "Node", "Document", "parse", "quote", "no_gc"]

# Whitespace and comments; possessive so a failing match never backtracks into it.
_WS = r"(?:\s++|//[^\n]*+|/\*.*?\*/)"
_SKIP = r"\s*+(?:(?://[^\n]*+|/\*.*?\*/)\s*+)*+"    # = _WS*, faster in the usual case
_SKIP1 = _WS + _SKIP
_IDENT = r"[A-Za-z_][A-Za-z0-9_.\-]*+"
_UNQUOTED = r"""[^\s;{}"'/]++"""
_DQ = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_SQ = r"'[^']*+'"
_QUOTED = rf"(?:{_DQ}|{_SQ})(?:{_SKIP}\+{_SKIP}(?:{_DQ}|{_SQ}))*+"

_GENERIC = rf"""
      ({_IDENT})                                  # keyword
      (?:{_SKIP1}(?:({_UNQUOTED})|({_QUOTED})))?  # unquoted | quoted argument
      {_SKIP}([;{{])                              # terminator
    | (\}})                                       # end of block
    | (.)                                         # anything else: an error
"""
_SKIP_RE = re.compile(_SKIP, re.S)
_IDENT_RE = re.compile(_IDENT)
_ARG_RE = re.compile(rf"{_UNQUOTED}|{_QUOTED}", re.S)
_QPART_RE = re.compile(rf"{_DQ}|{_SQ}", re.S)
_PLUS_RE = re.compile(rf"{_SKIP}\+{_SKIP}", re.S)
_ESCAPE_RE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
_SAFE_UNQUOTED = re.compile(r"""[^\s;{}"'/]+""")


class Node(NamedTuple):
    """One statement: ``keyword value;`` (children None) or ``keyword [value] { ... }``.

    ``children`` of a *compact* entry (see :class:`Compact`) is a tuple of its
    leaf values instead of a list of nodes; :meth:`Document.expand` gives the
    ordinary node.
    """
    keyword: str
    value: str | None
    pos: int                         # character offset of the keyword in the text
    children: "list[Node] | tuple[str | None, ...] | None"


@dataclass(frozen=True)
class Compact:
    """The canonical shape of a bulky list entry, parsed with one regex match.

    ``body`` items: a leaf name (``"name?"``: optional), or ``(container, body)``.
    A ``keyword { ... }`` statement whose body is exactly those leaves, in that
    order, with unquoted values, becomes ``Node(keyword, None, pos, values)``
    where ``values`` has one entry per leaf (None for an absent optional one).
    Anything else (comments inside, other order, quoting) parses the ordinary
    way, so this changes speed, never meaning.
    """
    keyword: str
    body: tuple

    def pattern(self) -> str:
        return rf"({re.escape(self.keyword)}){_SKIP}\{{{_SKIP}{_compact_body(self.body)}\}}"


def _compact_body(body: tuple) -> str:
    out = []
    for item in body:
        if isinstance(item, tuple):
            name, sub = item
            out.append(rf"{re.escape(name)}{_SKIP}\{{{_SKIP}{_compact_body(sub)}\}}{_SKIP}")
        else:
            name = item.rstrip("?")
            leaf = rf"{re.escape(name)}{_SKIP1}({_UNQUOTED}){_SKIP};{_SKIP}"
            out.append(f"(?:{leaf})?" if item.endswith("?") else leaf)
    return "".join(out)


@lru_cache(maxsize=8)
def _token_re(compact: Compact | None) -> tuple[re.Pattern, int]:
    """The master pattern, and how many groups the compact alternative uses."""
    head = compact.pattern() if compact else "((?!))"     # a group that never matches
    k = re.compile(head, re.S).groups
    return re.compile(rf"(?:{head}|{_GENERIC}){_SKIP}", re.X | re.S), k


class Document:
    """A parsed file: the top-level statements plus what is needed for line numbers."""

    def __init__(self, children: list[Node], text: str, source: str) -> None:
        self.children = children
        self.text = text
        self.source = source
        self._newlines: np.ndarray | None = None

    def _nl(self) -> np.ndarray:
        if self._newlines is None:
            t = self.text
            if t.isascii():     # one byte per character: scan in cache-sized chunks
                step = 1 << 22
                self._newlines = np.concatenate(
                    [np.flatnonzero(np.frombuffer(t[i:i + step].encode("ascii"), np.uint8) == 10) + i
                     for i in range(0, len(t), step)] or [np.zeros(0, np.int64)])
            else:
                self._newlines = np.fromiter((m.start() for m in re.finditer("\n", t)), np.int64)
        return self._newlines

    def line_of(self, pos: int) -> int:
        """1-based line of character offset ``pos``."""
        return int(np.searchsorted(self._nl(), pos, "left")) + 1

    def lines_of(self, positions: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`line_of` (int32)."""
        return (np.searchsorted(self._nl(), positions, "left") + 1).astype(np.int32)

    def error(self, message: str, pos: int | None, path: str = "") -> ConfigError:
        """A :class:`ConfigError` at offset ``pos`` (None: no line)."""
        return ConfigError(message, file=self.source, line=None if pos is None else self.line_of(pos),
                           path=path)

    def expand(self, node: Node) -> Node:
        """``node`` with ordinary children (re-parses a compact entry; others returned as is)."""
        if type(node.children) is not tuple:
            return node
        return _run(self, None, node.pos, single=True)[0]


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC: building millions of small acyclic objects otherwise
    triggers collections whose cost grows with the heap (3x slower parsing)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse(text: str, source: str = "<string>", compact: Compact | None = None) -> Document:
    """Parse YANG data text into a :class:`Document`; syntax errors raise ConfigError."""
    doc = Document([], text, source)
    with no_gc():
        doc.children = _run(doc, compact, _SKIP_RE.match(text).end())
    return doc


def _run(doc: Document, compact: Compact | None, pos: int, single: bool = False) -> list[Node]:
    """Parse statements from ``pos`` to the end (``single``: just one statement)."""
    pattern, k = _token_re(compact)
    text, new = doc.text, tuple.__new__
    root: list[Node] = []
    stack: list[tuple[list[Node], Node]] = []
    siblings = root
    append = siblings.append
    for m in pattern.finditer(text, pos):
        g = m.groups()
        if g[0] is not None:
            append(new(Node, (g[0], None, m.start(), g[1:k])))
        else:
            kw, arg, quoted, term, close, bad = g[k:]
            if kw is not None:
                if quoted is not None:
                    arg = _unquote(text, m.start(k + 3), quoted)
                if term == ";":
                    append(new(Node, (kw, arg, m.start(), None)))
                else:
                    node = new(Node, (kw, arg, m.start(), []))
                    append(node)
                    stack.append((siblings, node))
                    siblings = node.children
                    append = siblings.append
                    continue
            elif close is not None:
                if not stack:
                    raise doc.error("unexpected '}'", m.start())
                siblings = stack.pop()[0]
                append = siblings.append
            else:
                _syntax_error(doc, m.start(), stack)
        if single and not stack:
            return root
    if stack:
        node = stack[-1][1]
        raise doc.error(f"'{node.keyword} {{' is never closed", node.pos, _stack_path(stack[:-1]))
    return root


def _stack_path(stack: list[tuple[list[Node], Node]]) -> str:
    return "/".join(n.keyword for _, n in stack)


def _syntax_error(doc: Document, pos: int, stack: list) -> None:
    """Explain why no statement starts at ``pos`` and raise."""
    text, path = doc.text, _stack_path(stack)
    ch = text[pos]
    if ch in "\"'":
        raise doc.error("unterminated quoted string", pos, path)
    if text.startswith("/*", pos):
        raise doc.error("unterminated comment", pos, path)
    m = _IDENT_RE.match(text, pos)
    if m is None:
        what = "a keyword expected before ';'" if ch == ";" else \
               "a keyword expected before '{'" if ch == "{" else f"unexpected character {ch!r}"
        raise doc.error(what, pos, path)
    kw = m.group()
    path = f"{path}/{kw}" if path else kw
    p = _SKIP_RE.match(text, m.end()).end()
    if p < len(text) and p > m.end():
        a = _ARG_RE.match(text, p)
        if a is None:
            if text[p] in "\"'":
                raise doc.error("unterminated quoted string", p, path)
        else:
            p = _SKIP_RE.match(text, a.end()).end()
    if p >= len(text):
        raise doc.error(f"unexpected end of file in statement '{kw}'", pos, path)
    raise doc.error(f"expected ';' or '{{' in statement '{kw}', got {text[p]!r}", p, path)


def _unquote(text: str, pos: int, quoted: str) -> str:
    """The value of one or more ``+``-joined quoted strings starting at ``text[pos]``."""
    if quoted[0] == '"' and "\\" not in quoted and "\n" not in quoted and quoted.count('"') == 2:
        return quoted[1:-1]
    parts, i, end = [], pos, pos + len(quoted)
    while True:
        m = _QPART_RE.match(text, i)
        parts.append(_unquote_part(text, m.start(), m.group()))
        if m.end() >= end:
            return "".join(parts)
        i = _PLUS_RE.match(text, m.end()).end()


def _column(text: str, pos: int) -> int:
    """Display column of ``text[pos]`` (tabs to multiples of 8), as Snabb counts."""
    col = 0
    for ch in text[text.rfind("\n", 0, pos) + 1:pos]:
        col = (col + 8) // 8 * 8 if ch == "\t" else col + 1
    return col


def _unquote_part(text: str, pos: int, q: str) -> str:
    body, start_col = q[1:-1], _column(text, pos) + 1
    lines = body.split("\n")
    for k in range(1, len(lines)):
        line, col, j = lines[k], 0, 0
        while col < start_col and j < len(line) and line[j] in " \t":
            col = (col + 8) // 8 * 8 if line[j] == "\t" else col + 1
            j += 1
        lines[k] = " " * max(col - start_col, 0) + line[j:]
    if q[0] == '"':
        lines = [_ESCAPE_RE.sub(lambda m: _ESCAPES.get(m[1], m[0]), ln) for ln in lines]
    return "\n".join(lines)


def quote(value: str) -> str:
    """``value`` as a data-file argument: bare when that reads back the same, else double-quoted."""
    if _SAFE_UNQUOTED.fullmatch(value):
        return value
    esc = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{esc}"'
