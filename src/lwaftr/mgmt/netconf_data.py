"""NETCONF data, sans I/O: the schema, ``<edit-config>``, subtree filters, error paths, state.

The datastores hold RFC 8676 ``ietf-softwire-br`` (+ ``lwaftr-softwire-ext``)
XML as lxml trees under a ``<data>`` wrapper.  :class:`Schema` is what the
edits and filters need of the YANG modules (from libyang, built once): for
every data node its namespace, kind, list keys, ``config`` and the choice
case it belongs to.

* :meth:`Schema.edit` applies an ``<edit-config>`` ``<config>`` to a tree
  (RFC 6241 section 7.2: merge, replace, create, delete, remove and the
  default operations merge, replace and none), list entries matched by their
  keys compared in canonical form, new nodes placed in schema order, a node
  of one case of a choice removing the nodes of the other cases.  It raises
  :class:`RpcError` naming the node (``error-path``); the caller works on a
  copy, so a refused edit changes nothing.
* :meth:`Schema.filter` is RFC 6241 section 6 subtree filtering (namespace
  selection, containment, selection and content-match nodes; list entries
  keep their keys).
* :meth:`Schema.config_of` validates a tree by writing it as text and loading
  it with :func:`lwaftr.config.ietf.loads_ietf` (libyang and the lwAFTR's own
  rules); a ConfigError becomes an RpcError whose ``error-path`` names the
  offending node with its list keys (found by libyang's line number).
* :func:`state_module` is the YANG module of our per-reason counters
  (``lwaftr-softwire-state``, generated from :mod:`lwaftr.counters`), and
  :meth:`Schema.state` the operational state of a bind-instance: RFC 8676
  ``traffic-stat`` where our counters map onto its leaves, and every counter
  under ``lwaftr-softwire-state:softwire-state``.
"""
from __future__ import annotations

import copy
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from lxml import etree

from lwaftr import counters as C
from lwaftr.config import yanglib
from lwaftr.config.errors import ConfigError
from lwaftr.mgmt.netconf_proto import NC, RpcError, elements, local, ns_of, qn

BR_NS = "urn:ietf:params:xml:ns:yang:ietf-softwire-br"
EXT_NS = "urn:lwaftr:softwire-ext"
STATE_MODULE = "lwaftr-softwire-state"
STATE_NS = "urn:lwaftr:softwire-state"
STATE_REVISION = "2026-11-29"
NC_OPERATION = qn(NC, "operation")
OPERATIONS = ("merge", "replace", "create", "delete", "remove")

#: RFC 8676 traffic-stat leaves -> our counters (the ones that count the same thing)
TRAFFIC_STAT: dict[str, str] = dict(zip((
    "sent-ipv4-packets", "sent-ipv4-bytes", "sent-ipv6-packets", "sent-ipv6-bytes",
    "rcvd-ipv4-packets", "rcvd-ipv4-bytes", "rcvd-ipv6-packets", "rcvd-ipv6-bytes",
    "dropped-ipv4-packets", "dropped-ipv4-bytes", "dropped-ipv6-packets", "dropped-ipv6-bytes",
    "out-icmpv4-error-packets", "out-icmpv4-error-bytes", "out-icmpv6-error-packets", "out-icmpv6-error-bytes",
    "dropped-icmpv4-packets", "dropped-icmpv4-bytes", "hairpin-ipv4-packets", "hairpin-ipv4-bytes",
), C.names(
    C.OUT_IPV4_PACKETS, C.OUT_IPV4_BYTES, C.OUT_IPV6_PACKETS, C.OUT_IPV6_BYTES,
    C.IN_IPV4_PACKETS, C.IN_IPV4_BYTES, C.IN_IPV6_PACKETS, C.IN_IPV6_BYTES,
    C.DROP_ALL_IPV4_IFACE_PACKETS, C.DROP_ALL_IPV4_IFACE_BYTES, C.DROP_ALL_IPV6_IFACE_PACKETS,
    C.DROP_ALL_IPV6_IFACE_BYTES,
    C.OUT_ICMPV4_ERROR_PACKETS, C.OUT_ICMPV4_ERROR_BYTES, C.OUT_ICMPV6_ERROR_PACKETS, C.OUT_ICMPV6_ERROR_BYTES,
    C.DROP_IN_BY_POLICY_ICMPV4_PACKETS, C.DROP_IN_BY_POLICY_ICMPV4_BYTES,
    C.HAIRPIN_IPV4_PACKETS, C.HAIRPIN_IPV4_BYTES,
), strict=True))

_DATA_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True,
                               load_dtd=False, huge_tree=True)


def _yang_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def state_module() -> str:
    """The YANG module of the per-reason counters (one leaf per :data:`lwaftr.counters.COUNTERS`)."""
    leaves = "".join(
        f"      leaf {name} {{\n        type yang:zero-based-counter64;\n"
        f"        description\n          {_yang_string(desc)};\n      }}\n"
        for name, desc in C.COUNTERS)
    return f"""module {STATE_MODULE} {{
  yang-version 1.1;
  namespace "{STATE_NS}";
  prefix lws;

  import ietf-yang-types {{
    prefix yang;
  }}
  import ietf-softwire-br {{
    prefix softwire-br;
  }}

  organization
    "The lwaftr project";
  contact
    "See the project's README.";
  description
    "The lwAFTR's per-reason counters (the softwire-state leaves of
     snabb-softwire-v3 and our own), as operational state of an
     RFC 8676 binding instance.  Counted since the instance started
     (traffic-stat/discontinuity-time).";

  revision {STATE_REVISION} {{
    description
      "Initial revision.";
  }}

  augment "/softwire-br:br-instances/softwire-br:br-type/softwire-br:binding"
        + "/softwire-br:binding/softwire-br:bind-instance" {{
    description
      "Per-reason counters of a binding instance.";
    container softwire-state {{
      config false;
      description
        "Counters of the running instance, summed over its workers.";
{leaves}    }}
  }}

  notification alarm {{
    description
      "An alarm of the instance (lwaftr.mgmt.alarms) raised or cleared.";
    leaf worker {{
      type string;
      description
        "The worker that raised it (0 for an instance of one process).";
    }}
    leaf name {{
      type string;
      description
        "The alarm.";
    }}
    leaf state {{
      type enumeration {{
        enum raised;
        enum cleared;
      }}
      description
        "Raised or cleared.";
    }}
    leaf text {{
      type string;
      description
        "What the instance logged when it was raised.";
    }}
  }}
}}
"""


# --- the schema -----------------------------------------------------------------------------------

def _canon_ip(v: str) -> str:
    """An IPv4 or IPv6 address (or prefix) as inet_ntop writes it, as dumps_ietf does."""
    v = v.strip()
    addr, slash, length = v.partition("/")
    for family in (socket.AF_INET6, socket.AF_INET) if ":" in addr else (socket.AF_INET,):
        try:
            out = socket.inet_ntop(family, socket.inet_pton(family, addr))
        except (OSError, ValueError):
            continue
        if slash:
            return f"{out}/{int(length)}" if length.isdigit() else v
        return out
    return v


def _canon_int(v: str) -> str:
    v = v.strip()
    try:
        return str(int(v))
    except ValueError:
        return v


def _canon_str(v: str) -> str:
    return v


@dataclass(eq=False)
class SNode:
    """A data node of the schema."""
    name: str
    ns: str
    prefix: str
    kind: str                               # container, list, leaf, leaf-list
    config: bool
    order: int                              # position among its parent's children
    keys: tuple[str, ...] = ()
    case: tuple[int, int] | None = None     # (choice, case) identities when under a choice
    canon: Callable[[str], str] = _canon_str
    children: dict[str, "SNode"] = field(default_factory=dict)   # by Clark tag

    @property
    def tag(self) -> str:
        return qn(self.ns, self.name)

    def step(self, keys: dict[str, str] | None = None) -> str:
        out = f"{self.prefix}:{self.name}"
        for k, v in (keys or {}).items():
            q = "'" if "'" not in v else '"'
            out += f"[{self.prefix}:{k}={q}{v}{q}]"
        return out


Step = tuple[SNode, dict]


def xpath(steps: list[Step]) -> tuple[str, dict[str, str]]:
    """An absolute XPath with key predicates, and the prefixes it uses."""
    return "/" + "/".join(sn.step(keys) for sn, keys in steps), {sn.prefix: sn.ns for sn, _ in steps}


def _err(tag: str, message: str, steps: list[Step] | None = None, **kw) -> RpcError:
    if steps:
        path, nsmap = xpath(steps)
        return RpcError(tag, message, path=path, nsmap=nsmap, **kw)
    return RpcError(tag, message, **kw)


class Schema:
    """The data nodes of ietf-softwire-br (feature binding-mode), lwaftr-softwire-ext
    and lwaftr-softwire-state, from libyang."""

    def __init__(self) -> None:
        import libyang
        from _libyang import ffi, lib

        yanglib.context()                   # libyang's logging set up as the loaders want it
        ctx = libyang.Context(str(yanglib.YANG_DIR))
        ctx.load_module(yanglib.BR).feature_enable("binding-mode")
        ctx.load_module(yanglib.EXT)
        ctx.parse_module_str(state_module())
        self.ctx = ctx
        #: (module, revision, namespace, features) of every module, for the hello
        self.modules: list[tuple[str, str | None, str, list[str]]] = []
        self.prefixes: dict[str, str] = {}
        for name in ("ietf-inet-types", "ietf-yang-types", "ietf-softwire-common", yanglib.BR,
                     yanglib.EXT, STATE_MODULE):
            m = ctx.get_module(name)
            ns = ffi.string(m.cdata.ns).decode()
            rev = m.revision() if hasattr(m, "revision") else None
            if rev is None:
                revs = list(m.revisions())
                rev = str(revs[0].date()) if revs else None
            feats = [f.name() for f in m.features() if f.state()]
            self.modules.append((name, rev, ns, feats))
            self.prefixes[ns] = m.prefix()
        self._ffi, self._lib = ffi, lib
        self.top: dict[str, SNode] = {}
        for name in (yanglib.BR,):
            for i, sn in enumerate(ctx.get_module(name).children()):
                if sn.nodetype() in (libyang.SNode.CONTAINER, libyang.SNode.LIST, libyang.SNode.LEAF,
                                     libyang.SNode.LEAFLIST):
                    node = self._node(sn, i)
                    self.top[node.tag] = node

    def module_text(self, name: str, revision: str | None) -> str:
        """The YANG text of one of :attr:`modules` (what get-schema sends)."""
        if name == STATE_MODULE:
            return state_module()
        for path in (yanglib.YANG_DIR / f"{name}@{revision}.yang", yanglib.YANG_DIR / f"{name}.yang"):
            if path.exists():
                return path.read_text()
        raise RpcError("operation-failed", f"the text of module {name} is not installed")

    def _node(self, sn, order: int) -> SNode:
        import libyang
        ffi, lib = self._ffi, self._lib
        kinds = {libyang.SNode.CONTAINER: "container", libyang.SNode.LIST: "list",
                 libyang.SNode.LEAF: "leaf", libyang.SNode.LEAFLIST: "leaf-list"}
        mod = sn.module()
        ns = ffi.string(mod.cdata.ns).decode()
        case = None
        p = sn.cdata.parent
        if p != ffi.NULL and p.nodetype == lib.LYS_CASE:
            case = (int(ffi.cast("uintptr_t", p.parent)), int(ffi.cast("uintptr_t", p)))
        node = SNode(name=sn.name(), ns=ns, prefix=mod.prefix(), kind=kinds[sn.nodetype()],
                     config=not sn.config_false(), order=order)
        if node.kind in ("leaf", "leaf-list"):
            node.canon = _canonicalizer(sn.type())
        if node.kind == "list":
            node.keys = tuple(k.name() for k in sn.keys())
        node.case = case
        for i, c in enumerate(sn.children() if node.kind in ("container", "list") else ()):
            if c.nodetype() in kinds:
                child = self._node(c, i)
                node.children[child.tag] = child
        return node

    # -- names -----------------------------------------------------------------------------------
    def _lookup(self, snodes: dict[str, SNode], e: etree._Element, steps: list[Step]) -> SNode:
        sn = snodes.get(e.tag)
        if sn is not None:
            return sn
        ns = ns_of(e.tag)
        known = {s.ns for s in snodes.values()} | set(self.prefixes)
        if ns not in known:
            raise _err("unknown-namespace", f"unknown namespace {ns!r} for element {local(e.tag)!r}", steps,
                       info=[("bad-element", local(e.tag)), ("bad-namespace", ns)], type="protocol")
        raise _err("unknown-element", f"unknown element {local(e.tag)!r}"
                   + (f" in {steps[-1][0].name!r}" if steps else ""), steps,
                   info=[("bad-element", local(e.tag))])

    def _keys(self, e: etree._Element, sn: SNode, steps: list[Step]) -> dict[str, str]:
        keys = {}
        for k in sn.keys:
            ks = sn.children[qn(sn.ns, k)]
            found = [c for c in elements(e) if c.tag == ks.tag]
            if len(found) != 1 or len(elements(found[0])):
                raise _err("missing-element", f"list entry {sn.name!r} needs its key {k!r}", steps + [(sn, {})],
                           info=[("bad-element", k)], type="protocol")
            keys[k] = ks.canon(found[0].text or "")
        return keys

    # -- edit-config -----------------------------------------------------------------------------
    def edit(self, data: etree._Element, config: etree._Element, default_operation: str = "merge") -> None:
        """Apply the ``<config>`` element ``config`` to ``data`` (the ``<data>`` wrapper), in place."""
        if default_operation == "replace":
            for c in elements(data):
                data.remove(c)
            default_operation = "merge"
        _Editor(self).children(data, config, self.top, default_operation, [])

    # -- subtree filter --------------------------------------------------------------------------
    def filter(self, data: etree._Element, flt: etree._Element | None) -> etree._Element:
        """A ``<data>`` element with what the subtree filter ``flt`` selects of ``data``
        (everything when ``flt`` is None)."""
        out = etree.Element(qn(NC, "data"), nsmap={None: NC})
        if flt is None:
            for c in elements(data):
                out.append(copy.deepcopy(c))
            return out
        picked = _filter_level(elements(data), elements(flt), self.top)
        for c in picked or ():
            out.append(c)
        return out

    # -- validation ------------------------------------------------------------------------------
    def text_of(self, data: etree._Element) -> str:
        """The configuration of ``data`` as XML text (one element a line, in the loader's form)."""
        tops = elements(data)
        return "".join(etree.tostring(t, pretty_print=True, encoding=str) for t in tops)

    def config_of(self, data: etree._Element, source: str = "<netconf>"):
        """The :class:`Config` of ``data``, validated (RpcError naming the node if invalid)."""
        from lwaftr.config.ietf import XML, loads_ietf
        tops = elements(data)
        if not tops:
            raise RpcError("data-missing", "the configuration is empty: exactly one bind-instance is required",
                           path="/softwire-br:br-instances", nsmap={"softwire-br": BR_NS})
        for e in data.iter(qn(EXT_NS, "binding-table-file")):
            raise RpcError("operation-not-supported", "binding-table-file is not accepted over NETCONF (the "
                           "server would read a file of its host): give binding-entry items",
                           path="/softwire-br:br-instances/softwire-br:binding/softwire-br:bind-instance"
                                "/softwire-br:binding-table/lwx:binding-table-file",
                           nsmap={"softwire-br": BR_NS, "lwx": EXT_NS})
        text = self.text_of(data)
        try:
            return loads_ietf(text, source, XML, table=False)
        except ConfigError as e:
            raise self.config_error(e, text) from None

    def config_error(self, e: ConfigError, text: str) -> RpcError:
        """A loader's ConfigError on ``text`` as an rpc-error with the node's path and keys."""
        steps = self._steps_at(text, e.path, e.line)
        msg = e.message
        low = msg.lower()
        app_tag = None
        if "mandatory" in low or "missing" in low or "required" in low or "needs" in low:
            tag = "data-missing"
        elif "duplicate" in low:
            tag, app_tag = "operation-failed", "data-not-unique"
        elif "exactly one" in low or "at least one" in low:
            tag = "operation-failed"
            app_tag = "too-many-elements" if "exactly one" in low else "too-few-elements"
        else:
            tag = "invalid-value"
        return _err(tag, msg, steps or None, app_tag=app_tag)

    def _steps_at(self, text: str, cfg_path: str, line: int | None) -> list[Step]:
        """The nodes a loader's path names, the list entries chosen by line number."""
        segs = [s.split(":")[-1] for s in cfg_path.split("/") if s]
        if not segs:
            return []
        try:
            root = etree.fromstring(("<data>" + text + "</data>").encode(), _DATA_PARSER)
        except etree.XMLSyntaxError:
            root = None
        level: list[etree._Element] = elements(root) if root is not None else []
        snodes, steps = self.top, []
        for seg in segs:
            sn = next((s for s in snodes.values() if s.name == seg), None)
            if sn is None:
                break
            found = [c for c in level if c.tag == sn.tag]
            pick = None
            if len(found) == 1:
                pick = found[0]
            elif found and line is not None:
                before = [c for c in found if c.sourceline is not None and c.sourceline <= line]
                pick = before[-1] if before else None
            keys: dict[str, str] = {}
            if pick is not None and sn.kind == "list":
                for k in sn.keys:
                    kv = pick.find(qn(sn.ns, k))
                    if kv is not None:
                        keys[k] = kv.text or ""
            steps.append((sn, keys))
            snodes = sn.children
            level = elements(pick) if pick is not None else []
        return steps

    # -- state ------------------------------------------------------------------------------------
    def add_state(self, data: etree._Element, counters: dict[str, int], started: float | None,
                  softwires: int) -> None:
        """Add the operational state to every bind-instance of ``data``, in place."""
        br = qn(BR_NS, "br-instances")
        for top in data.findall(br):
            for bi in top.iterfind(f"{{{BR_NS}}}binding/{{{BR_NS}}}bind-instance"):
                ts = etree.SubElement(bi, qn(BR_NS, "traffic-stat"))
                etree.SubElement(ts, qn(BR_NS, "discontinuity-time")).text = _date_and_time(started)
                for leaf, name in TRAFFIC_STAT.items():
                    etree.SubElement(ts, qn(BR_NS, leaf)).text = str(counters.get(name, 0))
                etree.SubElement(ts, qn(BR_NS, "active-softwire-num")).text = str(softwires)
                st = etree.SubElement(bi, qn(STATE_NS, "softwire-state"), nsmap={None: STATE_NS})
                for name in C.NAMES:
                    etree.SubElement(st, qn(STATE_NS, name)).text = str(counters.get(name, 0))


def _date_and_time(t: float | None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _canonicalizer(t) -> Callable[[str], str]:
    import libyang
    names = [t.name()] + ([u.name() for u in t.union_types()] if t.base() == libyang.Type.UNION else [])
    if any("ipv4" in n or "ipv6" in n or "ip-address" in n or "ip-prefix" in n for n in names):
        return _canon_ip
    if t.basename() in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        return _canon_int
    if "mac-address" in t.name():
        return lambda v: v.strip().lower()
    return _canon_str


# --- the edit -------------------------------------------------------------------------------------

class _Editor:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        # (id(parent), list tag) -> (parent, {key: entry}); holding the parent keeps
        # its lxml proxy, so its id, alive
        self._index: dict[tuple[int, str], tuple[etree._Element, dict[tuple, etree._Element]]] = {}

    # list entries by key, per (parent, list): built on first use, kept up to date
    def _entries(self, parent: etree._Element, sn: SNode) -> dict[tuple, etree._Element]:
        k = (id(parent), sn.tag)
        hit = self._index.get(k)
        if hit is None:
            if len(sn.keys) == 1:           # the common case, in C: a million entries in about a second
                ktag = qn(sn.ns, sn.keys[0])
                idx = {(c.findtext(ktag),): c for c in parent.iterchildren(sn.tag)}
            else:
                idx = {self._key_of(c, sn, canonical=True): c for c in parent.iterchildren(sn.tag)}
            self._index[k] = hit = (parent, idx)
        return hit[1]

    @staticmethod
    def _key_of(e: etree._Element, sn: SNode, canonical: bool = False) -> tuple:
        """The entry's keys in canonical form (``canonical``: as written, for trees whose keys
        are: dumps_ietf's, and the ones this editor writes)."""
        out = []
        for k in sn.keys:
            kv = e.find(qn(sn.ns, k))
            text = kv.text or "" if kv is not None else None
            out.append(text if canonical or text is None else sn.children[qn(sn.ns, k)].canon(text))
        return tuple(out)

    def _find(self, parent: etree._Element, sn: SNode, keys: dict[str, str]) -> etree._Element | None:
        if sn.kind == "list":
            return self._entries(parent, sn).get(tuple(keys[k] for k in sn.keys))
        for c in parent:
            if c.tag == sn.tag:
                return c
        return None

    def _forget(self, parent: etree._Element, sn: SNode, e: etree._Element) -> None:
        if sn.kind == "list":
            self._entries(parent, sn).pop(self._key_of(e, sn), None)
        self._drop_index(e)
        parent.remove(e)

    def _drop_index(self, e: etree._Element) -> None:
        for sub in e.iter():
            for key in [k for k in self._index if k[0] == id(sub)]:
                del self._index[key]

    def _place(self, parent: etree._Element, e: etree._Element, sn: SNode, snodes: dict[str, SNode]) -> None:
        """Move ``e`` (a child of ``parent``) to its place in schema order; drop other cases."""
        parent.remove(e)
        pos = 0
        for i, c in enumerate(parent):
            o = snodes.get(c.tag)
            if o is not None and o.order <= sn.order:
                pos = i + 1
        parent.insert(pos, e)
        if sn.case is not None:
            for c in list(parent):
                o = snodes.get(c.tag)
                if o is not None and o.case is not None and o.case[0] == sn.case[0] and o.case[1] != sn.case[1]:
                    self._forget(parent, o, c)
        if sn.kind == "list":
            self._entries(parent, sn)[self._key_of(e, sn)] = e

    @staticmethod
    def _new(parent: etree._Element, sn: SNode) -> etree._Element:
        nsmap = {None: sn.ns} if ns_of(parent.tag) != sn.ns else None
        return etree.SubElement(parent, sn.tag, nsmap=nsmap)

    def _build(self, parent: etree._Element, e: etree._Element, sn: SNode, steps: list[Step],
               is_key: bool = False) -> etree._Element:
        """A copy of edit element ``e`` under ``parent`` (appended), checked against the schema
        (list keys written in canonical form)."""
        new = self._new(parent, sn)
        if sn.kind in ("leaf", "leaf-list"):
            if len(elements(e)):
                raise _err("invalid-value", f"{sn.name!r} is a leaf: it holds a value, not elements", steps)
            new.text = sn.canon(e.text or "") if is_key else e.text or ""
            return new
        seen: set[tuple] = set()
        for c in elements(e):
            csn = self.schema._lookup(sn.children, c, steps)
            op = c.get(NC_OPERATION)
            if op in ("delete", "remove"):
                raise _err("bad-attribute", f"operation {op!r} inside a node being created or replaced",
                           steps + [(csn, {})], info=[("bad-attribute", "operation"), ("bad-element", csn.name)],
                           type="protocol")
            if op is not None and op not in OPERATIONS:
                raise _bad_op(op, csn, steps)
            keys = self.schema._keys(c, csn, steps) if csn.kind == "list" else {}
            if not csn.config:
                raise _err("invalid-value", f"{csn.name!r} is state data, not configuration", steps + [(csn, keys)])
            ident = (c.tag, tuple(keys.values())) if csn.kind == "list" else (c.tag, (c.text or "")) \
                if csn.kind == "leaf-list" else (c.tag,)
            if ident in seen:
                raise _err("invalid-value", f"{csn.name!r} given twice", steps + [(csn, keys)])
            seen.add(ident)
            child = self._build(new, c, csn, steps + [(csn, keys)], is_key=csn.name in sn.keys)
            self._place(new, child, csn, sn.children)
        return new

    def children(self, target: etree._Element, edit: etree._Element, snodes: dict[str, SNode],
                 inherited: str, steps: list[Step]) -> None:
        for e in elements(edit):
            sn = self.schema._lookup(snodes, e, steps)
            op = e.get(NC_OPERATION, inherited)
            if op not in OPERATIONS and not (op == "none" and e.get(NC_OPERATION) is None):
                raise _bad_op(op, sn, steps)
            keys = self.schema._keys(e, sn, steps) if sn.kind == "list" else {}
            here = steps + [(sn, keys)]
            if not sn.config:
                raise _err("invalid-value", f"{sn.name!r} is state data, not configuration", here)
            if sn.kind == "leaf-list":
                keys = {"": sn.canon(e.text or "")}
                existing = next((c for c in target if c.tag == sn.tag and sn.canon(c.text or "") == keys[""]), None)
            else:
                existing = self._find(target, sn, keys)
            if (parent_sn := steps[-1][0] if steps else None) is not None and parent_sn.kind == "list" \
                    and sn.kind == "leaf" and sn.name in parent_sn.keys:
                if op in ("delete", "remove", "replace", "create") and e.get(NC_OPERATION) is not None:
                    raise _err("invalid-value", f"the list key {sn.name!r} cannot be changed on its own", here)
                continue                    # the entry was matched by it
            if op == "create":
                if existing is not None:
                    raise _err("data-exists", f"{sn.name!r} already exists", here)
                self._place(target, self._build(target, e, sn, here), sn, snodes)
            elif op == "replace":
                new = self._build(target, e, sn, here)
                if existing is not None:
                    self._forget(target, sn, existing)
                self._place(target, new, sn, snodes)
            elif op in ("delete", "remove"):
                if existing is None:
                    if op == "delete":
                        raise _err("data-missing", f"{sn.name!r} does not exist", here)
                    continue
                self._forget(target, sn, existing)
            elif sn.kind in ("leaf", "leaf-list"):       # merge or none
                if op == "none":
                    continue
                if len(elements(e)):
                    raise _err("invalid-value", f"{sn.name!r} is a leaf: it holds a value, not elements", here)
                if existing is None:
                    self._place(target, self._build(target, e, sn, here), sn, snodes)
                else:
                    existing.text = e.text or ""
            else:                                         # merge or none into a container or list entry
                created = existing is None
                if created:
                    existing = self._new(target, sn)
                    for k in sn.keys:
                        kn = sn.children[qn(sn.ns, k)]
                        src = e.find(kn.tag)
                        etree.SubElement(existing, kn.tag).text = kn.canon(src.text or "")
                    if sn.kind == "list":       # indexed only once placed
                        target.remove(existing)
                        target.append(existing)
                self.children(existing, e, sn.children, op, here)
                if created:
                    if op == "none" and len(existing) == len(sn.keys):
                        target.remove(existing)      # nothing was asked of it
                    else:
                        self._place(target, existing, sn, snodes)


def _bad_op(op: str | None, sn: SNode, steps: list[Step]) -> RpcError:
    return _err("bad-attribute", f"unknown operation {op!r}", steps + [(sn, {})],
                info=[("bad-attribute", "operation"), ("bad-element", sn.name)], type="protocol")


# --- subtree filter -------------------------------------------------------------------------------

def _matches(f: etree._Element, d: etree._Element) -> bool:
    if local(f.tag) != local(d.tag):
        return False
    fns = ns_of(f.tag)
    return not fns or fns == ns_of(d.tag)


def _filter_level(data: list[etree._Element], flt: list[etree._Element],
                  snodes: dict[str, SNode]) -> list[etree._Element] | None:
    """Copies of what the sibling filter nodes ``flt`` select of the sibling data
    nodes ``data``; None when a content match fails (the parent is not selected)."""
    content = [f for f in flt if not len(elements(f)) and (f.text or "").strip()]
    others = [f for f in flt if f not in content]
    picked: dict[int, etree._Element] = {}
    for f in content:
        hits = []
        for d in data:
            if _matches(f, d) and not len(elements(d)):
                sn = snodes.get(d.tag)
                canon = sn.canon if sn is not None else str.strip
                if canon((d.text or "").strip()) == canon(f.text.strip()):
                    hits.append(d)
        if not hits:
            return None
        for d in hits:
            picked[id(d)] = copy.deepcopy(d)
    if not others:
        return [copy.deepcopy(d) for d in data]      # only content matches: the whole sibling set
    for f in others:
        for d in data:
            if id(d) in picked or not _matches(f, d):
                continue
            if not len(elements(f)):                 # selection node
                picked[id(d)] = copy.deepcopy(d)
                continue
            sn = snodes.get(d.tag)                   # containment node
            sub = _filter_level(elements(d), elements(f), sn.children if sn is not None else {})
            if not sub:
                continue
            shell = etree.Element(d.tag, nsmap=d.nsmap)
            names = {c.tag for c in sub}
            if sn is not None and sn.kind == "list":  # an entry keeps its keys
                for k in reversed(sn.keys):
                    kt = qn(sn.ns, k)
                    kv = d.find(kt)
                    if kt not in names and kv is not None:
                        sub.insert(0, copy.deepcopy(kv))
            for c in sub:
                shell.append(c)
            picked[id(d)] = shell
    return [picked[id(d)] for d in data if id(d) in picked]
