"""libyang (CESNET's C library, through its ``libyang`` CFFI binding) with the
YANG modules we ship: RFC 8676 ``ietf-softwire-br`` (feature ``binding-mode``)
and our augmentation ``lwaftr-softwire-ext`` (``yang/``, package data).

:func:`parse` validates instance data (XML as NETCONF carries it, or RFC 7951
JSON) and returns it as an RFC 7951 JSON object with every default filled in;
:func:`render` goes the other way (JSON object -> validated XML or JSON text).
libyang's errors become :class:`ConfigError` with the file, libyang's line
number where it gives one, and the node's schema path written the way the
rest of the project writes paths (``br-instances/binding/bind-instance/
binding-table/binding-entry/port-set/psid``; nodes of another module than
their parent's carry its name, ``.../lwaftr-softwire-ext:instance/queue/id``).

Debian bookworm ships libyang 2.1.30 (library version 2.29); the last
binding release that builds against it is 2.8.0 (2.8.1 and later need 2.37).
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from lwaftr.config.errors import ConfigError

__all__ = ["YANG_DIR", "BR", "EXT", "context", "parse", "render", "schema_path"]

YANG_DIR = Path(__file__).with_name("yang")
BR = "ietf-softwire-br"
EXT = "lwaftr-softwire-ext"

_lock = threading.Lock()
_ctx: Any = None


def context():
    """The process's libyang context with our modules loaded (built once)."""
    global _ctx
    with _lock:
        if _ctx is None:
            try:
                import libyang
                from _libyang import ffi, lib
            except ImportError as e:          # pragma: no cover - a broken install
                raise ConfigError(f"the libyang Python binding is not installed ({e}); "
                                  f"run scripts/setup.sh") from None
            lib.ly_log_options(lib.LY_LOSTORE)      # keep every error, print none
            lib.ly_set_log_clb(ffi.NULL, True)      # ... with its data path and line
            ctx = libyang.Context(str(YANG_DIR))
            ctx.load_module(BR).feature_enable("binding-mode")
            ctx.load_module(EXT)
            _ctx = ctx
        return _ctx


# --- errors ---------------------------------------------------------------------------------------

_LINE_RE = re.compile(r"line number (\d+)")
_DATA_RE = re.compile(r'[Dd]ata location "([^"]*)"')
_SCHEMA_RE = re.compile(r'[Ss]chema location "([^"]*)"')
_PRED_RE = re.compile(r"\[(?:[^\]'\"]|'[^']*'|\"[^\"]*\")*\]")
#: choice and case nodes that schema paths name and data paths do not
_CHOICES = ((re.compile(r"/br-type/binding/binding/"), "/binding/"),
            (re.compile(r"/next-hop/address/(?:ip|mac)/"), "/next-hop/"))


_BI = ["ietf-softwire-br:br-instances", "binding", "bind-instance"]
_ROOTS = {"bind-instance": _BI, "binding-table": _BI + ["binding-table"],
          "instance": _BI + [f"{EXT}:instance"], "queue": _BI + [f"{EXT}:instance", "queue"]}


def schema_path(libyang_path: str) -> str:
    """A libyang data or schema path as our ConfigError path: no predicates, no
    choice/case nodes, no leading '/', module names only where the module changes."""
    p = _PRED_RE.sub("", libyang_path)
    for rx, repl in _CHOICES:
        p = rx.sub(repl, p)
    out, module = [], None
    segs = p.strip("/").split("/")
    if segs and segs[0].split(":")[-1] in _ROOTS:       # libyang roots some paths at the list
        segs = _ROOTS[segs[0].split(":")[-1]] + segs[1:]
    for seg in segs:
        if ":" in seg:
            mod, name = seg.split(":", 1)
            if mod != module and module is not None:
                name = f"{mod}:{name}"
            module = mod
        else:
            name = seg
        out.append(name)
    return "/".join(out)


def _error(ctx: Any, source: str | None, default: str) -> ConfigError:
    """The first error libyang stored, as a ConfigError (and clear them all)."""
    from _libyang import ffi, lib
    msg, where = default, ""
    err = lib.ly_err_first(ctx.cdata)
    if err:
        msg = ffi.string(err.msg).decode() if err.msg else default
        where = ffi.string(err.path).decode() if err.path else ""
    lib.ly_err_clean(ctx.cdata, ffi.NULL)
    line = _LINE_RE.search(where)
    m = _DATA_RE.search(where) or _SCHEMA_RE.search(where)
    return ConfigError(msg.rstrip("."), file=source, line=int(line.group(1)) if line else None,
                       path=schema_path(m.group(1)) if m else "")


# --- parsing and printing ------------------------------------------------------------------------

def _parse_tree(ctx: Any, text: str, fmt: str) -> Any:
    """lyd_parse_data on ``text``, strict, configuration only: the tree (a DNode,
    or None for an empty document), or None plus libyang's errors left stored
    (the binding's own parse_data consumes them into a flat message)."""
    from _libyang import ffi, lib
    from libyang.data import DNode, data_format, parser_flags, validation_flags
    inp = ffi.new("struct ly_in **")
    raw = text.encode("utf-8")
    if lib.ly_in_new_memory(raw, inp) != lib.LY_SUCCESS:
        raise ConfigError("libyang cannot read the input")
    out = ffi.new("struct lyd_node **")
    try:
        ret = lib.lyd_parse_data(ctx.cdata, ffi.NULL, inp[0], data_format(fmt),
                                 parser_flags(no_state=True, strict=True),
                                 validation_flags(no_state=True), out)
    finally:
        lib.ly_in_free(inp[0], 0)
    if ret != lib.LY_SUCCESS:
        if out[0] != ffi.NULL:
            lib.lyd_free_all(out[0])
        return False
    return DNode.new(ctx, out[0]) if out[0] != ffi.NULL else None


def parse(text: str, fmt: str, source: str | None = None) -> tuple[dict, dict]:
    """Validate configuration data ``text`` (``fmt``: "xml" or "json") against
    ietf-softwire-br + lwaftr-softwire-ext.  Return it twice as RFC 7951 JSON
    objects: with every default filled in, and as given (explicit values only);
    ({}, {}) for an empty document.  ConfigError if invalid."""
    ctx = context()
    with _lock:
        tree = _parse_tree(ctx, text, fmt)
        if tree is False:
            raise _error(ctx, source, "invalid data")
        if tree is None:
            return {}, {}
        try:
            full = tree.print_mem("json", with_siblings=True, pretty=False, include_implicit_defaults=True)
            given = tree.print_mem("json", with_siblings=True, pretty=False)
        finally:
            tree.free()
    return json.loads(full or "{}"), json.loads(given or "{}")


def render(data: dict, fmt: str) -> str:
    """RFC 7951 JSON object ``data`` validated and printed as ``fmt`` ("xml" or
    "json"), explicit values only; ValueError (with libyang's reason) if invalid."""
    ctx = context()
    with _lock:
        tree = _parse_tree(ctx, json.dumps(data), "json")
        if tree is False:
            e = _error(ctx, None, "invalid data")
            raise ValueError(f"{e.path}: {e.message}" if e.path else e.message)
        if tree is None:
            return ""
        try:
            return tree.print_mem(fmt, with_siblings=True, pretty=True)
        finally:
            tree.free()
