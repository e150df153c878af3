"""A NETCONF server (RFC 6241 over SSH, RFC 6242) for a running lwAFTR instance.

``lwaftr netconf --host-key FILE --users FILE [--listen ADDR:PORT] [--name NAME]``
(:mod:`lwaftr.cli.netconf`) serves the ``netconf`` SSH subsystem (asyncssh).
The data is the RFC 8676 ``ietf-softwire-br`` model with our
``lwaftr-softwire-ext`` augmentation (:mod:`lwaftr.config.ietf`), plus the
per-reason counters as operational state (``lwaftr-softwire-state``,
:mod:`lwaftr.mgmt.netconf_data`).  The server keeps no configuration of its
own: the ``running`` datastore is the running instance's, read through its
control socket, and an operation costs what it touches:

* the configuration without its softwires is asked for with the generation
  number last seen, and parsed again only when it changed;
* a filter that can select only entries chosen by key (``binding-ipv6info``)
  or IPv4 address (and PSID), or none (:func:`entry_selection`), gets those
  entries straight from the table (``softwires`` requests);
* an ``edit-config`` of binding entries by key (:func:`edited_entry_keys`)
  fetches those entries, applies the edit to them and validates them
  (libyang and the loader, on the small tree; the table's own rules in the
  instance) and sends only the softwire changes (:meth:`NetconfServer._targeted_edit`);
* a whole ``get-config`` or ``get`` is streamed (:class:`Streamed`): the
  entries are listed a page at a time and written as they come.

Anything else (a policy change, the candidate, a filter selecting every entry
in part) goes the whole way: the new configuration is built from the current
one written as RFC 8676 XML (``dumps_ietf``) with the edit merged into it,
then validated whole by libyang and the loader (``loads_ietf``); a refusal is
an ``rpc-error`` naming the node (``error-path``) and nothing is sent to the
instance.  Then, against the running configuration:

* only softwires changed: ``remove``, ``set`` and ``add`` requests on
  ``/softwire-config/binding-table/softwire`` (applied in place between two
  batches); should one be refused, those already made are undone;
* anything else changed: one ``load-config`` request carrying the whole new
  configuration (``dump_snabb``), which the instance validates and swaps in
  whole or refuses;
* instances, interfaces, addresses or the control plane changed: refused
  (they need a restart of the instance), as the instance itself would.

The instance acknowledges a change once it is in its journal on disk
(:mod:`lwaftr.config.journal`): ``running`` is persistent, and there is no
``startup`` datastore.  ``commit`` may be confirmed (RFC 6241 section 8.4):
running is put back unless confirmed in time (:meth:`NetconfServer.tick`).

Requests are handled one at a time, in arrival order across sessions (one
worker thread), so two sessions' edits never interleave.  A message is only
handled once it has arrived whole: a client that disconnects mid-message
changes nothing, and one that disconnects while its edit is being applied
does not stop the edit half way.

Datastores: ``running`` (writable) and ``candidate`` (shared by the sessions,
a copy of running until edited; ``commit`` applies it as above, ``discard-
changes`` drops it).  Locks (``lock``/``unlock``) guard against the other
NETCONF sessions, not against ``lwaftr reload`` or other control-socket
clients.
"""
from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from lxml import etree

from lwaftr.config.errors import ConfigError
from lwaftr.config.model import Bindings, Config
from lwaftr.mgmt.netconf_auth import READ_WRITE, UsersFile, asyncssh_module
from lwaftr.mgmt.netconf_data import BR_NS, EXT_NS, NC_OPERATION, STATE_NS, Schema
from lwaftr.mgmt.netconf_proto import (BASE_10, BASE_11, CANDIDATE, CONFIRMED_COMMIT, EOM, MONITORING, NC, NCEVENT,
                                       NCM, NCN, NCWD, NOTIFICATION, WITH_DEFAULTS, XML_DECL, tostring, ROLLBACK_ON_ERROR, VALIDATE,
                                       VALIDATE_10, WRITABLE_RUNNING, Framer, FramingError, MalformedMessage,
                                       RpcError, elements, error_reply, frame, hello, local, ns_of,
                                       parse_hello, parse_xml, qn, reply)

log = logging.getLogger("lwaftr.netconf")

DEFAULT_LISTEN = "127.0.0.1:830"
SOFTWIRES = "/softwire-config/binding-table/softwire"
#: more softwire changes than this in one edit go as one load-config request
BULK_CHANGES = 1000
HELLO_TIMEOUT = 60.0
#: What a read-only user may do (NACM, RFC 8341: a fixed subset of its rules).
READ_OPERATIONS = frozenset({"get", "get-config", "get-schema", "validate", "close-session", "create-subscription"})
#: RFC 6241's default confirm-timeout (seconds).
CONFIRM_TIMEOUT = 600
#: A streamed reply waits while more than this is queued for the client.
WRITE_HIGH = 4 << 20
CONTROL_TIMEOUT = 120.0
RUNNING, CANDIDATE_DS = "running", "candidate"


# --- the running instance -------------------------------------------------------------------------

class Instance:
    """A running ``lwaftr run`` instance, through its control socket and shared-memory counters."""

    def __init__(self, name: str | None = None,
                 requester: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self._name = name
        self._requester = requester

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        from lwaftr.io import state
        running = state.instances()
        if len(running) != 1:
            raise RpcError("operation-failed", "no lwaftr instance is running" if not running else
                           f"several lwaftr instances are running ({', '.join(running)}): "
                           f"start lwaftr netconf with --name")
        return running[0]

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        if self._requester is not None:
            return self._requester(req)
        from lwaftr.io import control, state
        name = self.name
        sock = state.run_dir() / name / "control.sock"
        try:
            return control.request(sock, req, timeout=CONTROL_TIMEOUT)
        except (OSError, ValueError) as e:
            raise RpcError("operation-failed", f"lwaftr instance {name!r} does not answer on {sock}: {e}") from None

    def config_text(self) -> str:
        """The running configuration as snabb-softwire-v3 text (softwires included)."""
        r = self.request({"op": "get-config"})
        if not r.get("ok"):
            raise RpcError("operation-failed", f"the instance refused get-config: {r.get('error')}")
        return r["text"]

    def rest(self, generation: int | None) -> tuple[str | None, int, int]:
        """``(text, generation, softwires)``: the configuration without its softwires,
        or text None when it is still ``generation``."""
        r = self.request({"op": "get-config", "bindings": False, "if_generation": generation})
        if not r.get("ok"):
            raise RpcError("operation-failed", f"the instance refused get-config: {r.get('error')}")
        return (None if r.get("unchanged") else r["text"]), r.get("generation", -1), r.get("softwires", 0)

    def softwires(self, **query) -> list[list]:
        """Softwires by ``b4=[...]`` or ``ipv4=[...]`` (and ``psid``), straight from the table."""
        r = self.request({"op": "softwires", **query})
        if not r.get("ok"):
            raise RpcError("operation-failed", f"the instance refused a softwire lookup: {r.get('error')}")
        return r["entries"]

    def pages(self) -> Iterator[list[list]]:
        """Every softwire, a page at a time, in table order."""
        row: int | None = 0
        while row is not None:
            r = self.request({"op": "softwires", "from": row, "max": PAGE})
            if not r.get("ok"):
                raise RpcError("operation-failed", f"the instance refused to list its softwires: {r.get('error')}")
            row = r.get("next")
            if r["entries"]:
                yield r["entries"]

    @staticmethod
    def parse(text: str) -> Config:
        from lwaftr.config.snabb import loads_snabb
        try:
            return loads_snabb(text, "<running>")
        except ConfigError as e:
            raise RpcError("operation-failed", f"the running configuration does not load: {e}") from None

    def config(self) -> Config:
        """The running configuration (softwires included)."""
        return self.parse(self.config_text())

    def alarms(self) -> dict[tuple[str, str], str]:
        """The alarms raised and not cleared: (worker, alarm) -> text (the workers'
        ``alarms.json``, or the instance's own when it runs alone)."""
        import json
        from lwaftr.io import state
        from lwaftr.mgmt import snapshot
        top = state.run_dir() / self.name
        out: dict[tuple[str, str], str] = {}
        for f in [top / state.ALARMS, *sorted((top / snapshot.WORKERS).glob(f"*/{state.ALARMS}"))]:
            try:
                raised = json.loads(f.read_text())
            except (OSError, ValueError):
                continue                     # not there, or a worker starting or stopping
            worker = "0" if f.parent == top else f.parent.name
            out.update({(worker, str(a)): str(t) for a, t in raised.items()})
        return out

    def counters(self) -> tuple[dict[str, int], float | None]:
        """The counters (summed over workers) and when the instance started."""
        from lwaftr.mgmt import snapshot
        try:
            snap = snapshot.read(self.name)
        except (LookupError, OSError, ValueError) as e:
            raise RpcError("operation-failed", f"cannot read the counters: {e}") from None
        return snap.totals(), snap.started

    # -- applying --------------------------------------------------------------------------------
    def apply(self, old: Config, new: Config) -> str:
        """Make the instance run ``new`` instead of ``old``: a summary of what was
        done, or RpcError with nothing changed."""
        from lwaftr.config.ietf import DEFAULT_NAME
        if old.name is None and new.name == DEFAULT_NAME:
            new = replace(new, name=None)       # the name the instance did not have, written for RFC 8676
        if (new.instances, new.control_plane) != (old.instances, old.control_plane):
            what = "lwx:instance" if new.instances != old.instances else \
                "lwx:next-hop-cache-refresh-interval" if \
                replace(new.control_plane, next_hop_refresh_interval=0) == \
                replace(old.control_plane, next_hop_refresh_interval=0) else "lwx:control-plane"
            raise RpcError("operation-failed", "changes to instances, interfaces, addresses or the control "
                           "plane need a restart of the instance", path=_bi_path(old, what),
                           nsmap={"softwire-br": BR_NS, "lwx": EXT_NS})
        empty = Bindings.empty()
        rest_same = replace(old, bindings=empty) == replace(new, bindings=empty) \
            and old.bindings.version == new.bindings.version
        if rest_same:
            removes, sets, adds = softwire_changes(old.bindings, new.bindings)
            n = len(removes) + len(sets) + len(adds)
            if n == 0:
                return "no change"
            if n <= BULK_CHANGES:
                self._softwires(removes, sets, adds)
                return f"softwires: {len(adds)} added, {len(removes)} removed, {len(sets)} changed"
        from lwaftr.config.snabb import dump_snabb
        try:
            text = dump_snabb(new)
        except ValueError as e:
            raise RpcError("operation-failed", f"the instance cannot run this configuration: {e}") from None
        r = self.request({"op": "load-config", "text": text})
        if not r.get("ok"):
            raise RpcError("operation-failed", f"the instance refused the configuration: {r.get('error')}")
        return "whole configuration loaded"

    def _softwires(self, removes: list[tuple], sets: list[tuple], adds: list[tuple]) -> None:
        """The requests, in an order where each table in between is consistent."""
        steps = [({"op": "remove", "path": _sw_path(o)}, {"op": "add", "path": SOFTWIRES, "value": _sw_text(o)})
                 for o in removes]
        steps += [({"op": "set", "path": _sw_path(n), "value": _sw_text(n)},
                   {"op": "set", "path": _sw_path(o), "value": _sw_text(o)}) for o, n in sets]
        if adds:
            steps.append(({"op": "add", "path": SOFTWIRES, "value": " ".join(_sw_text(n) for n in adds)},
                          None))
        # One batch request: applied whole between two batches of frames, or not at all.
        r = self.request({"op": "batch", "requests": [req for req, _ in steps]})
        if not r.get("ok"):
            raise RpcError("operation-failed", f"the instance refused the change: {r.get('error')}")


def _bi_path(cfg: Config, tail: str) -> str:
    from lwaftr.config.ietf import DEFAULT_NAME
    name = cfg.name if cfg.name is not None else DEFAULT_NAME
    q = "'" if "'" not in name else '"'
    return (f"/softwire-br:br-instances/softwire-br:binding/softwire-br:bind-instance"
            f"[softwire-br:name={q}{name}{q}]/{tail}")


def _rows(b: Bindings) -> dict[tuple[int, int], tuple[int, int, bytes, bytes]]:
    """``{(ipv4, psid): (psid-length, reserved-ports-bit-count, b4, br)}``."""
    b4 = b.b4_ipv6.tobytes() if len(b) else b""
    br = b.br_rows().tobytes() if len(b) else b""
    return {(ip, p): (k, r, b4[16 * i:16 * i + 16], br[16 * i:16 * i + 16])
            for i, (ip, p, k, r) in enumerate(zip(b.ipv4.tolist(), b.psid.tolist(), b.psid_length.tolist(),
                                                  b.reserved_ports_bit_count.tolist()))}


def softwire_changes(old: Bindings, new: Bindings) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(removed, [(old, new) changed in place], added) softwires, each ``(ipv4, psid,
    psid-length, reserved, b4, br)``.  A softwire whose port-set layout changes is
    removed and added again (the table allows one layout per address)."""
    a, b = _rows(old), _rows(new)
    removes, sets, adds = [], [], []
    for key, v in a.items():
        w = b.get(key)
        if w is None:
            removes.append(key + v)
        elif w != v:
            if w[:2] == v[:2]:
                sets.append((key + v, key + w))
            else:
                removes.append(key + v)
                adds.append(key + w)
    adds += [key + w for key, w in b.items() if key not in a]
    return removes, sets, adds


def _ip4(v: int) -> str:
    import ipaddress
    return str(ipaddress.IPv4Address(v))


def _ip6(b: bytes) -> str:
    import ipaddress
    return str(ipaddress.IPv6Address(b))


def _sw_path(sw: tuple) -> str:
    return f"{SOFTWIRES}[ipv4={_ip4(sw[0])}][psid={sw[1]}]"


def _sw_text(sw: tuple) -> str:
    ip, psid, k, r, b4, br = sw
    ps = f"psid-length {k};" + (f" reserved-ports-bit-count {r};" if r else "")
    return f"{{ ipv4 {_ip4(ip)}; psid {psid}; b4-ipv6 {_ip6(b4)}; br-address {_ip6(br)}; port-set {{ {ps} }} }}"


# --- what a filter or an edit touches of the binding table ------------------------------------------

#: The path from the top to the binding entries.
ENTRY_PATH = ("br-instances", "binding", "bind-instance", "binding-table", "binding-entry")


def _kids(e: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in elements(e) if local(c.tag) == name and ns_of(c.tag) in (BR_NS, None, "")]


def _content(e: etree._Element, name: str) -> str | None:
    """The text of content-match child ``name`` of ``e``, if there is one."""
    for c in _kids(e, name):
        if not elements(c) and (c.text or "").strip():
            return c.text.strip()
    return None


def _ours(e: etree._Element, name: str) -> bool:
    """Whether filter or edit node ``e`` is ``name`` of ietf-softwire-br (or of no namespace)."""
    return local(e.tag) == name and ns_of(e.tag) in (BR_NS, NC, None, "")


def _is_content_match(e: etree._Element) -> bool:
    return not elements(e) and bool((e.text or "").strip())


def entry_selection(flt: etree._Element | None) -> tuple[set[str], set[tuple[str, int | None]]] | None:
    """Which binding entries a subtree filter can select (RFC 6241 section 6):
    ``(B4 keys, {(IPv4, PSID or None)})``, both empty for none at all, or None
    for any (the whole table is needed).  A superset is fine: the filter itself
    is applied to what is fetched."""
    if flt is None:
        return None
    b4s: set[str] = set()
    ipv4s: set[tuple[str, int | None]] = set()
    last = len(ENTRY_PATH) - 1

    def walk(e: etree._Element, depth: int) -> bool:
        """False when ``e`` may select any entry."""
        kids = elements(e)
        if not kids:
            return False                    # a selection node: everything below it
        if depth == last:
            key = _content(e, "binding-ipv6info")
            if key is not None:
                try:
                    b4s.add(str(ipaddress.IPv6Address(key)))
                except ValueError:
                    return False            # a prefix key: looked for the whole way
                return True
            ip = _content(e, "binding-ipv4-addr")
            if ip is None:
                return False
            psid = None
            for ps in _kids(e, "port-set"):
                v = _content(ps, "psid")
                if v is not None and v.isdigit():
                    psid = int(v)
            try:
                ipv4s.add((str(ipaddress.IPv4Address(ip)), psid))
            except ValueError:
                return False
            return True
        if all(_is_content_match(c) for c in kids):
            return False                    # only content-match nodes: the whole subtree
        return all(walk(c, depth + 1) for c in kids if _ours(c, ENTRY_PATH[depth + 1]))

    for top in elements(flt):
        if _ours(top, ENTRY_PATH[0]) and not walk(top, 0):
            return None
    return b4s, ipv4s


def edited_entry_keys(config: etree._Element, default: str) -> set[str] | None:
    """The B4 keys of the binding entries an ``<edit-config>`` names, or None when it
    may touch anything else (an operation above the entries, a replace, another
    node, a key that is a prefix or missing)."""
    if default == "replace":
        return None
    keys: set[str] = set()
    last = len(ENTRY_PATH) - 1

    def walk(e: etree._Element, depth: int) -> bool:
        if NC_OPERATION in e.attrib:
            return False
        for c in elements(e):
            if ns_of(c.tag) == BR_NS and local(c.tag) == ENTRY_PATH[depth + 1]:
                if depth + 1 == last:
                    k = _content(c, "binding-ipv6info")
                    if k is None or "/" in k:
                        return False
                    try:
                        keys.add(str(ipaddress.IPv6Address(k)))
                    except ValueError:
                        return False
                elif not walk(c, depth + 1):
                    return False
            elif not (depth + 1 == 3 and ns_of(c.tag) == BR_NS and local(c.tag) == "name"
                      and NC_OPERATION not in c.attrib):
                return False                # anything but the bind-instance's name
        return True

    tops = elements(config)
    if not tops or not all(ns_of(t.tag) == BR_NS and local(t.tag) == ENTRY_PATH[0] and walk(t, 0) for t in tops):
        return None
    return keys


def _entries_config(cfg: Config, entries: list[list]) -> etree._Element:
    """A ``<config>`` merging these softwires (``softwires`` replies) as binding entries."""
    from lwaftr.config.ietf import DEFAULT_NAME
    import numpy as np
    from lwaftr.config.ietf import offset_of_reserved
    k = np.array([e[2] for e in entries], np.int64)
    r = np.array([e[3] for e in entries], np.int64)
    off = offset_of_reserved(k, r).tolist()
    root = etree.Element(qn(NC, "config"), nsmap={None: NC})
    top = etree.SubElement(root, qn(BR_NS, "br-instances"), nsmap={None: BR_NS})
    bi = etree.SubElement(etree.SubElement(top, qn(BR_NS, "binding")), qn(BR_NS, "bind-instance"))
    etree.SubElement(bi, qn(BR_NS, "name")).text = cfg.name if cfg.name is not None else DEFAULT_NAME
    bt = etree.SubElement(bi, qn(BR_NS, "binding-table"))
    for (ip, psid, plen, _, b4, br), a in zip(entries, off):
        if a < 0:
            raise RpcError("operation-failed", f"softwire {ip} psid {psid}: its port set has no RFC 8676 "
                           f"psid-offset")
        be = etree.SubElement(bt, qn(BR_NS, "binding-entry"))
        etree.SubElement(be, qn(BR_NS, "binding-ipv6info")).text = b4
        etree.SubElement(be, qn(BR_NS, "binding-ipv4-addr")).text = ip
        ps = etree.SubElement(be, qn(BR_NS, "port-set"))
        if a:
            etree.SubElement(ps, qn(BR_NS, "psid-offset")).text = str(a)
        etree.SubElement(ps, qn(BR_NS, "psid-len")).text = str(plen)
        etree.SubElement(ps, qn(BR_NS, "psid")).text = str(psid)
        etree.SubElement(be, qn(BR_NS, "br-ipv6-addr")).text = br
    return root


#: Softwires asked of the instance at a time when the whole table is written (a page
#: costs the instance ~10 ms between two batches).
PAGE = 2000
ENTRIES_MARK = "lwaftr:entries"


@dataclass
class Streamed:
    """A reply written piece by piece: ``data`` holds a comment where the binding
    entries go, and ``entries`` yields them as XML text, a page at a time."""
    data: etree._Element
    entries: Iterator[bytes]


def _entries_text(entries: list[list]) -> bytes:
    import numpy as np
    from lwaftr.config.ietf import offset_of_reserved
    off = offset_of_reserved(np.array([e[2] for e in entries], np.int64),
                             np.array([e[3] for e in entries], np.int64)).tolist()
    out = []
    for (ip, psid, plen, _, b4, br), a in zip(entries, off):
        if a < 0:
            raise RpcError("operation-failed", f"softwire {ip} psid {psid}: its port set has no RFC 8676 "
                           f"psid-offset")
        out.append(f"<binding-entry><binding-ipv6info>{b4}</binding-ipv6info><binding-ipv4-addr>{ip}"
                   f"</binding-ipv4-addr><port-set>{f'<psid-offset>{a}</psid-offset>' if a else ''}"
                   f"<psid-len>{plen}</psid-len><psid>{psid}</psid></port-set><br-ipv6-addr>{br}"
                   f"</br-ipv6-addr></binding-entry>")
    return "".join(out).encode()


def _without_entries(tree: etree._Element) -> bytes:
    """``tree`` written without its binding entries (to tell whether anything else changed)."""
    t = copy.deepcopy(tree)
    for e in list(t.iter(qn(BR_NS, "binding-entry"))):
        e.getparent().remove(e)
    for e in list(t.iter(qn(BR_NS, "binding-table"))):
        if not len(e):
            e.getparent().remove(e)
    return etree.tostring(t, method="c14n")


# --- sessions and operations ----------------------------------------------------------------------

@dataclass(eq=False)
class Session:
    id: int
    username: str
    peer: str = ""
    chunked: bool = False           # base:1.1 framing (and error tags) after the hellos
    hello_done: bool = False
    alive: bool = True
    closing: bool = False           # close once the reply is sent
    close: Callable[[], None] = lambda: None     # ends the transport (from the event loop)
    started: float = field(default_factory=time.time)
    notify: Callable[[bytes], None] | None = None   # sends a notification (set by the transport)
    subscribed: bool = False        # create-subscription done (RFC 5277)


def _pieces(text: bytes, entries: Iterator[bytes]) -> Iterator[bytes]:
    head, tail = text.split(f"<!--{ENTRIES_MARK}-->".encode(), 1)
    yield head
    yield from entries
    yield tail


@dataclass
class Pending:
    """A confirmed commit awaiting its confirmation."""
    saved: Config                   # running before it: what a rollback restores
    deadline: float                 # time.monotonic()
    session: int
    persist: str | None             # its <persist> token, if any (then any session may follow up)


def _data_wrapper() -> etree._Element:
    return etree.Element(qn(NC, "data"), nsmap={None: NC})


class NetconfServer:
    """Sessions, datastores and locks, and the operations (sans SSH).

    :meth:`handle` takes one whole message of a session and returns the reply;
    the caller runs every call on the same thread."""

    def __init__(self, instance: Instance, schema: Schema | None = None,
                 group: Callable[[str], str] = lambda user: READ_WRITE) -> None:
        """``group``: a user's access group (:mod:`lwaftr.mgmt.netconf_auth`)."""
        self.instance = instance
        self.group = group
        self.schema = schema or Schema()
        self.sessions: dict[int, Session] = {}
        self.locks: dict[str, int] = {}
        self.candidate: etree._Element | None = None        # None: the same as running
        self.candidate_editors: set[int] = set()
        self._next_id = 1
        self._ids = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cache: tuple[str, Config, etree._Element] | None = None   # the running text, parsed
        self._rest: tuple[int, Config, etree._Element, int] | None = None   # (generation, config, tree, count)
        self.pending: Pending | None = None                  # a confirmed commit not yet confirmed
        self._alarms: dict[tuple[str, str], str] | None = None     # raised at the last tick

    def warm_up(self) -> None:
        """Run the paths of a first edit and read once (libyang, the loader, the
        filters), so that the first operation of a session is as fast as the next."""
        from lwaftr.examples import example_config
        tree = self._tree_of(example_config())
        self.schema.config_of(tree)
        self.schema.filter(tree, etree.fromstring(f'<filter xmlns="{NC}"><br-instances xmlns="{BR_NS}"><binding>'
                                                  f'<bind-instance><name/></bind-instance></binding></br-instances>'
                                                  f'</filter>'))
        self.schema.edit(copy.deepcopy(tree), _entries_config(example_config(), [["192.0.2.9", 0, 0, 0, "::1",
                                                                                   "::2"]]), "merge")

    def capabilities(self) -> list[str]:
        caps = [BASE_10, BASE_11, WRITABLE_RUNNING, CANDIDATE, VALIDATE_10, VALIDATE, ROLLBACK_ON_ERROR,
                CONFIRMED_COMMIT, WITH_DEFAULTS, MONITORING, NOTIFICATION]
        for name, rev, ns, feats in self.schema.modules:
            c = f"{ns}?module={name}" + (f"&revision={rev}" if rev else "")
            if feats:
                c += "&features=" + ",".join(feats)
            caps.append(c)
        return caps

    def open_session(self, username: str, peer: str = "", close: Callable[[], None] = lambda: None) -> Session:
        with self._ids:
            sid = self._next_id
            self._next_id += 1
        s = Session(sid, username, peer, close=close)
        self.sessions[sid] = s
        log.info("session %d opened", sid, extra={"fields": {"user": username, "peer": peer}})
        return s

    def hello(self, s: Session) -> bytes:
        return hello(self.capabilities(), s.id)

    def client_hello(self, s: Session, msg: bytes) -> None:
        """The client's hello (MalformedMessage ends the session)."""
        caps = parse_hello(msg)
        s.hello_done = True
        s.chunked = BASE_11 in caps

    def end_session(self, s: Session) -> None:
        """The session is gone: its locks are released, its candidate changes dropped if it held
        the candidate's lock (RFC 6241 8.3.5.2)."""
        if s.id not in self.sessions:
            return
        s.alive = False
        del self.sessions[s.id]
        if self.pending is not None and self.pending.persist is None and self.pending.session == s.id:
            self._rollback(f"session {s.id} ended before confirming")
        if self.locks.get(CANDIDATE_DS) == s.id:
            self.candidate, self.candidate_editors = None, set()
        for ds in [d for d, owner in self.locks.items() if owner == s.id]:
            del self.locks[ds]
        log.info("session %d closed", s.id, extra={"fields": {"user": s.username}})

    # -- messages --------------------------------------------------------------------------------
    def handle(self, s: Session, msg: bytes) -> bytes | None:
        """The reply to one message of session ``s`` (None if the session is gone), whole."""
        out = self.handle_stream(s, msg)
        return out if out is None or isinstance(out, bytes) else b"".join(out)

    def handle_stream(self, s: Session, msg: bytes) -> bytes | Iterator[bytes] | None:
        """The reply to one message of session ``s``: bytes, or pieces for a big one
        (an error while they are written ends the session: the reply cannot be taken back)."""
        if not s.alive:
            return None
        try:
            root = parse_xml(msg)
        except MalformedMessage as e:
            return error_reply(None, [self._malformed(s, str(e))])
        if root.tag != qn(NC, "rpc"):
            return error_reply(None, [self._malformed(s, f"expected <rpc>, got <{local(root.tag)}>")])
        attrs = {k: v for k, v in root.attrib.items()}
        if "message-id" not in attrs:
            return error_reply(attrs, [RpcError("missing-attribute", "<rpc> needs a message-id", type="rpc",
                                                info=[("bad-attribute", "message-id"), ("bad-element", "rpc")])])
        ops = elements(root)
        try:
            if len(ops) != 1:
                raise RpcError("missing-element" if not ops else "unknown-element",
                               "an <rpc> holds exactly one operation", type="protocol",
                               info=[("bad-element", "rpc" if not ops else local(ops[1].tag))])
            op = ops[0]
            handler = getattr(self, "_op_" + local(op.tag).replace("-", "_"), None)
            if ns_of(op.tag) == NCM and local(op.tag) == "get-schema":
                handler = self._get_schema
            elif ns_of(op.tag) == NCEVENT and local(op.tag) == "create-subscription":
                handler = self._create_subscription
            elif ns_of(op.tag) != NC:
                handler = None
            if handler is None:
                raise RpcError("operation-not-supported", f"operation {local(op.tag)!r} is not supported",
                               type="protocol", info=[("bad-element", local(op.tag))])
            if local(op.tag) not in READ_OPERATIONS and self.group(s.username) != READ_WRITE:
                raise RpcError("access-denied", f"user {s.username!r} ({self.group(s.username)}) may not "
                               f"{local(op.tag)}", type="protocol", info=[("bad-element", local(op.tag))])
            body = handler(s, op)
        except RpcError as e:
            log.info("session %d: %s refused: %s", s.id, local(ops[0].tag) if ops else "rpc", e)
            return error_reply(attrs, [e])
        except Exception as e:          # never let a request end the server
            log.exception("session %d: %s failed", s.id, local(ops[0].tag))
            return error_reply(attrs, [RpcError("operation-failed", f"internal error: {e}")])
        if isinstance(body, Streamed):
            return _pieces(reply(attrs, body.data), body.entries)
        return reply(attrs, body)

    def _malformed(self, s: Session, message: str) -> RpcError:
        # malformed-message is base:1.1's; a base:1.0 client gets operation-failed
        return RpcError("malformed-message" if s.chunked else "operation-failed", message, type="rpc")

    # -- parameters ------------------------------------------------------------------------------
    @staticmethod
    def _params(op: etree._Element, allowed: set[str]) -> dict[str, etree._Element]:
        out = {}
        for c in elements(op):
            name = local(c.tag)
            if ns_of(c.tag) != NC or name not in allowed or name in out:
                raise RpcError("unknown-element", f"unexpected <{name}> in <{local(op.tag)}>", type="protocol",
                               info=[("bad-element", name)])
            out[name] = c
        return out

    @staticmethod
    def _datastore(p: dict[str, etree._Element], which: str, allowed: tuple[str, ...]) -> tuple[str, Any]:
        """(name, element) of the ``<source>``/``<target>`` parameter."""
        e = p.get(which)
        if e is None:
            raise RpcError("missing-element", f"<{which}> is required", type="protocol",
                           info=[("bad-element", which)])
        kids = elements(e)
        if len(kids) != 1 or ns_of(kids[0].tag) != NC:
            raise RpcError("invalid-value", f"<{which}> names one datastore", type="protocol",
                           info=[("bad-element", which)])
        name = local(kids[0].tag)
        if name not in allowed:
            raise RpcError("operation-not-supported" if name in ("startup", "url", "running", "candidate",
                                                                   "config") else "invalid-value",
                           f"<{name}> is not supported as <{which}> here", type="protocol",
                           info=[("bad-element", name)])
        return name, kids[0]

    @staticmethod
    def _text(p: dict[str, etree._Element], name: str, default: str, allowed: tuple[str, ...]) -> str:
        e = p.get(name)
        if e is None:
            return default
        v = (e.text or "").strip()
        if v not in allowed:
            raise RpcError("invalid-value", f"<{name}> is one of {', '.join(allowed)}", type="protocol",
                           info=[("bad-element", name)])
        return v

    def _filter(self, p: dict[str, etree._Element]) -> etree._Element | None:
        f = p.get("filter")
        if f is None:
            return None
        t = f.get("type", f.get(qn(NC, "type"), "subtree"))
        if t != "subtree":
            raise RpcError("operation-not-supported", f"filter type {t!r} is not supported (subtree only)",
                           type="protocol", info=[("bad-attribute", "type"), ("bad-element", "filter")])
        return f

    # -- datastores ------------------------------------------------------------------------------
    def _tree_of(self, cfg: Config) -> etree._Element:
        from lwaftr.config.ietf import dumps_ietf
        from lwaftr.mgmt.netconf_data import _DATA_PARSER
        try:
            text = dumps_ietf(cfg)
        except ValueError as e:
            raise RpcError("operation-failed", f"the running configuration cannot be written as RFC 8676: {e}") \
                from None
        data = _data_wrapper()
        data.append(etree.fromstring(text.encode(), _DATA_PARSER))
        return data

    def _running(self, copy_: bool = True) -> tuple[Config, etree._Element]:
        """The running configuration and its tree, read from the instance every time (parsed
        again only when its text changed).  Trees kept here are never changed in place:
        ``copy_=False`` only for reading."""
        text = self.instance.config_text()
        if self._cache is None or self._cache[0] != text:
            self._cache = None
            cfg = self.instance.parse(text)
            self._cache = (text, cfg, self._tree_of(cfg))
        _, cfg, tree = self._cache
        return cfg, copy.deepcopy(tree) if copy_ else tree

    # -- targeted reads and edits: what they touch, not the whole table --------------------------
    def _rest_of_running(self) -> tuple[Config, etree._Element, int]:
        """The running configuration without its softwires, its tree (never changed in
        place), and how many softwires it has; fetched again only when it changed."""
        gen = self._rest[0] if self._rest is not None else None
        text, gen, count = self.instance.rest(gen)
        if text is not None or self._rest is None:
            if text is None:
                text, gen, count = self.instance.rest(None)
            cfg = self.instance.parse(text)
            self._rest = (gen, cfg, self._tree_of(cfg), count)
        _, cfg, tree, _ = self._rest
        return cfg, tree, count

    def _with_entries(self, tree: etree._Element, cfg: Config, entries: list[list]) -> etree._Element:
        """A copy of ``tree`` with these softwires as binding-entry items."""
        out = copy.deepcopy(tree)
        if entries:
            self.schema.edit(out, _entries_config(cfg, entries), "merge")
        return out

    def _selected(self, flt: etree._Element | None) -> tuple[Config, etree._Element, int] | None:
        """The running tree with the softwires a filter can select (by key or IPv4
        address), or None when it may select any (the whole table is needed)."""
        sel = entry_selection(flt)
        if sel is None:
            return None
        cfg, tree, count = self._rest_of_running()
        b4s, ipv4s = sel
        entries: list[list] = []
        if b4s:
            entries += self.instance.softwires(b4=sorted(b4s))
        for ip, psid in sorted(ipv4s, key=str):
            entries += self.instance.softwires(ipv4=[ip], **({} if psid is None else {"psid": psid}))
        seen, unique = set(), []
        for e in entries:
            if e[4] not in seen:
                seen.add(e[4])
                unique.append(e)
        return cfg, self._with_entries(tree, cfg, unique), count

    def _streamed(self, state: bool) -> Streamed:
        """The whole running configuration (and state), its softwires written as
        they are read from the instance: never the whole table in memory."""
        cfg, tree, count = self._rest_of_running()
        data = self._with_entries(tree, cfg, [["0.0.0.0", 0, 0, 0, "::", "::"]])
        mark = next(data.iter(qn(BR_NS, "binding-entry")))
        mark.getparent().replace(mark, etree.Comment(ENTRIES_MARK))
        if state:
            counters, started = self.instance.counters()
            self.schema.add_state(data, counters, started, count)
        return Streamed(data, (_entries_text(page) for page in self.instance.pages()))

    def _targeted_edit(self, s: Session, config: etree._Element, default: str, test: str) -> bool:
        """An edit of binding entries only, by key: applied with the entries it names
        fetched from the instance, validated (libyang and the loader on them, the
        table's own rules in the instance) and sent as softwire changes.  False when
        the edit may touch anything else (the caller does it the whole way)."""
        keys = edited_entry_keys(config, default)
        if keys is None:
            return False
        cfg, tree, _ = self._rest_of_running()
        entries = self.instance.softwires(b4=sorted(keys)) if keys else []
        if len({e[4] for e in entries}) != len(entries):
            return False                        # one B4 with several softwires: not RFC 8676 data
        before = self._with_entries(tree, cfg, entries)
        after = copy.deepcopy(before)
        self.schema.edit(after, config, default)
        if _without_entries(after) != _without_entries(before):
            return False
        new = self.schema.config_of(after)
        if test == "test-only":
            return True
        self._check_lock(s, RUNNING)
        old = self.schema.config_of(before)
        removes, sets, adds = softwire_changes(old.bindings, new.bindings)
        if removes or sets or adds:
            self.instance._softwires(removes, sets, adds)
            gone = {sw[4] for sw in removes} - {sw[4] for sw in adds}
            edits = [("delete", b4) for b4 in sorted(map(_ip6, gone))]
            edits += [("replace", _ip6(n[4])) for _, n in sets]
            edits += [("create" if sw[4] not in {o[4] for o in removes} else "replace", _ip6(sw[4])) for sw in adds]
            self._config_changed(s, cfg, edits)
        log.info("session %d (%s) edit-config on running: %d softwires added, %d removed, %d changed", s.id,
                 s.username, len(adds), len(removes), len(sets))
        return True

    # -- notifications (RFC 5277, RFC 6470) ------------------------------------------------------
    def _create_subscription(self, s: Session, op: etree._Element) -> None:
        p = {local(c.tag): c for c in elements(op) if ns_of(c.tag) == NCEVENT}
        if s.subscribed:
            raise RpcError("operation-failed", "this session has a subscription already", type="protocol")
        stream = p.get("stream")
        if stream is not None and (stream.text or "").strip() != "NETCONF":
            raise RpcError("invalid-value", "the only stream is NETCONF", type="protocol",
                           info=[("bad-element", "stream")])
        for replay in ("startTime", "stopTime"):
            if replay in p:
                raise RpcError("operation-failed", "replay is not supported (no startTime or stopTime)",
                               type="protocol", info=[("bad-element", replay)])
        s.subscribed = True
        return None

    def _config_changed(self, s: Session | None, cfg: Config | None, edits: list[tuple[str, str]]) -> None:
        """``netconf-config-change`` to the subscribed sessions: running changed
        (``edits``: (operation, B4 key) of binding entries, if known)."""
        targets = [t for t in self.sessions.values() if t.subscribed and t.notify is not None and t.alive]
        if not targets:
            return
        root = etree.Element(qn(NCEVENT, "notification"), nsmap={None: NCEVENT})
        etree.SubElement(root, qn(NCEVENT, "eventTime")).text = \
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ch = etree.SubElement(root, qn(NCN, "netconf-config-change"), nsmap={None: NCN})
        by = etree.SubElement(ch, qn(NCN, "changed-by"))
        if s is None:
            etree.SubElement(by, qn(NCN, "server"))
        else:
            etree.SubElement(by, qn(NCN, "username")).text = s.username
            etree.SubElement(by, qn(NCN, "session-id")).text = str(s.id)
        etree.SubElement(ch, qn(NCN, "datastore")).text = "running"
        if cfg is not None:
            from lwaftr.config.ietf import DEFAULT_NAME
            name = cfg.name if cfg.name is not None else DEFAULT_NAME
            for operation, b4 in edits:
                e = etree.SubElement(ch, qn(NCN, "edit"))
                t = etree.SubElement(e, qn(NCN, "target"), nsmap={"softwire-br": BR_NS})
                t.text = (f"/softwire-br:br-instances/softwire-br:binding/softwire-br:bind-instance"
                          f"[softwire-br:name='{name}']/softwire-br:binding-table/softwire-br:binding-entry"
                          f"[softwire-br:binding-ipv6info='{b4}']")
                etree.SubElement(e, qn(NCN, "operation")).text = operation
        self._send(XML_DECL + tostring(root))

    def _read(self, ds: str, copy_: bool = True) -> etree._Element:
        if ds == CANDIDATE_DS and self.candidate is not None:
            return copy.deepcopy(self.candidate) if copy_ else self.candidate
        return self._running(copy_)[1]

    def _check_lock(self, s: Session, ds: str) -> None:
        owner = self.locks.get(ds)
        if owner is not None and owner != s.id:
            raise RpcError("lock-denied", f"the {ds} datastore is locked by session {owner}", type="protocol",
                           info=[("session-id", str(owner))])

    def _inline(self, e: etree._Element) -> etree._Element:
        """An inline ``<config>`` as a data tree (checked against the schema)."""
        data = _data_wrapper()
        self.schema.edit(data, e, "merge")
        return data

    def _write_running(self, s: Session, new_tree: etree._Element, old: Config | None = None, what: str = "") -> None:
        self._check_lock(s, RUNNING)
        new = self.schema.config_of(new_tree)
        old = old if old is not None else self.instance.config()
        summary = self.instance.apply(old, new)
        if summary != "no change":
            self._config_changed(s, None, [])
        log.info("session %d (%s) %s on running: %s", s.id, s.username, what, summary)

    # -- operations ------------------------------------------------------------------------------
    @staticmethod
    def _with_defaults(op: etree._Element) -> None:
        """RFC 6243 basic mode report-all: the only mode, so the parameter only
        names it (taken out of ``op``)."""
        for c in elements(op):
            if ns_of(c.tag) == NCWD and local(c.tag) == "with-defaults":
                if (c.text or "").strip() != "report-all":
                    raise RpcError("invalid-value", f"with-defaults {c.text!r}: only report-all (every value, "
                                   f"defaults included) is supported", type="protocol",
                                   info=[("bad-element", "with-defaults")])
                op.remove(c)

    def _get_schema(self, s: Session, op: etree._Element) -> etree._Element:
        """RFC 6022 get-schema: the YANG text of one of the modules in the hello."""
        p = {local(c.tag): (c.text or "").strip() for c in elements(op) if ns_of(c.tag) == NCM}
        ident, version, fmt = p.get("identifier"), p.get("version"), p.get("format", "yang")
        if not ident:
            raise RpcError("missing-element", "<identifier> is required", type="protocol",
                           info=[("bad-element", "identifier")])
        if fmt.rpartition(":")[2] != "yang":
            raise RpcError("invalid-value", f"format {fmt!r}: only yang", type="protocol",
                           info=[("bad-element", "format")])
        known = {name: rev for name, rev, _, _ in self.schema.modules}
        if ident not in known or (version and version != known[ident]):
            raise RpcError("invalid-value", f"no schema {ident!r}" + (f" revision {version}" if version else ""),
                           type="protocol", info=[("bad-element", "identifier")])
        text = self.schema.module_text(ident, known[ident])
        out = etree.Element(qn(NCM, "data"), nsmap={None: NCM})
        out.text = text
        return out

    def _op_get_config(self, s: Session, op: etree._Element) -> etree._Element:
        self._with_defaults(op)
        p = self._params(op, {"source", "filter"})
        ds, _ = self._datastore(p, "source", (RUNNING, CANDIDATE_DS))
        flt = self._filter(p)
        if (ds == RUNNING or self.candidate is None) and flt is None:
            return self._streamed(state=False)
        if ds == RUNNING or self.candidate is None:
            part = self._selected(flt)
            if part is not None:
                return self.schema.filter(part[1], flt)
        return self.schema.filter(self._read(ds, copy_=False), flt)

    def _op_get(self, s: Session, op: etree._Element) -> etree._Element:
        self._with_defaults(op)
        p = self._params(op, {"filter"})
        flt = self._filter(p)
        if flt is None:
            return self._streamed(state=True)
        part = self._selected(flt)
        if part is not None:
            _, data, count = part
        else:
            cfg, data = self._running()
            count = len(cfg.bindings)
        counters, started = self.instance.counters()
        self.schema.add_state(data, counters, started, count)
        return self.schema.filter(data, flt)

    def _op_edit_config(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"target", "default-operation", "test-option", "error-option", "config", "url"})
        ds, _ = self._datastore(p, "target", (RUNNING, CANDIDATE_DS))
        default = self._text(p, "default-operation", "merge", ("merge", "replace", "none"))
        test = self._text(p, "test-option", "test-then-set", ("test-then-set", "set", "test-only"))
        # stop-on-error and rollback-on-error are the same here (an edit is all or nothing), and
        # continue-on-error never finds a second error: the first one refuses the edit whole
        self._text(p, "error-option", "stop-on-error", ("stop-on-error", "continue-on-error", "rollback-on-error"))
        if "url" in p:
            raise RpcError("operation-not-supported", "<url> is not supported", type="protocol",
                           info=[("bad-element", "url")])
        if "config" not in p:
            raise RpcError("missing-element", "<config> is required", type="protocol",
                           info=[("bad-element", "config")])
        self._check_lock(s, ds)
        if ds == RUNNING and self._targeted_edit(s, p["config"], default, test):
            return None
        if ds == RUNNING:
            old, tree = self._running()
            self.schema.edit(tree, p["config"], default)
            if test == "test-only":
                self.schema.config_of(tree)
                return None
            self._write_running(s, tree, old, "edit-config")
            return None
        tree = self._read(CANDIDATE_DS)
        self.schema.edit(tree, p["config"], default)
        if test != "set":
            self.schema.config_of(tree)
        if test != "test-only":
            self.candidate = tree
            self.candidate_editors.add(s.id)
        return None

    def _op_copy_config(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"target", "source"})
        dst, _ = self._datastore(p, "target", (RUNNING, CANDIDATE_DS))
        src, e = self._datastore(p, "source", (RUNNING, CANDIDATE_DS, "config"))
        if src == dst:
            return None
        tree = self._inline(e) if src == "config" else self._read(src)
        self._check_lock(s, dst)
        if dst == RUNNING:
            self._write_running(s, tree, None, f"copy-config from {src}")
        else:
            self.candidate = tree
            self.candidate_editors.add(s.id)
        return None

    def _op_delete_config(self, s: Session, op: etree._Element) -> None:
        raise RpcError("operation-not-supported", "only the running and candidate datastores exist, and "
                       "neither can be deleted", type="protocol")

    def _op_validate(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"source"})
        src, e = self._datastore(p, "source", (RUNNING, CANDIDATE_DS, "config"))
        self.schema.config_of(self._inline(e) if src == "config" else self._read(src, copy_=False))
        return None

    def _op_commit(self, s: Session, op: etree._Element) -> None:
        """Commit the candidate; ``<confirmed/>``: roll back unless confirmed in time
        (RFC 6241 section 8.4, :confirmed-commit:1.1)."""
        p = self._params(op, {"confirmed", "confirm-timeout", "persist", "persist-id"})
        self._check_lock(s, CANDIDATE_DS)
        self._may_follow_up(s, p)
        pending = self.pending
        if "confirmed" in p:
            timeout = self._timeout(p)
            saved = pending.saved if pending is not None else self.instance.config()
            if self.candidate is not None:
                self._write_running(s, self.candidate, saved, "confirmed commit")
                self.candidate, self.candidate_editors = None, set()
            persist = p.get("persist")
            self.pending = Pending(saved, time.monotonic() + timeout, s.id,
                                   (persist.text or "").strip() if persist is not None else None)
            log.info("session %d (%s): confirmed commit, rolled back in %d s unless confirmed", s.id, s.username,
                     timeout)
            return None
        if self.candidate is not None:
            self._write_running(s, self.candidate, None, "commit")
            self.candidate, self.candidate_editors = None, set()
        if pending is not None:
            self.pending = None
            log.info("session %d (%s) confirmed the commit", s.id, s.username)
        return None

    @staticmethod
    def _timeout(p: dict[str, etree._Element]) -> int:
        e = p.get("confirm-timeout")
        try:
            t = int((e.text or "").strip()) if e is not None else CONFIRM_TIMEOUT
            if not 1 <= t <= 0xFFFFFFFF:
                raise ValueError
        except ValueError:
            raise RpcError("invalid-value", "<confirm-timeout> is 1..4294967295 seconds", type="protocol",
                           info=[("bad-element", "confirm-timeout")]) from None
        return t

    def _may_follow_up(self, s: Session, p: dict[str, etree._Element]) -> None:
        """A pending confirmed commit is followed up on its session, or with its persist-id."""
        pending = self.pending
        given = p.get("persist-id")
        if pending is None:
            if given is not None:
                raise RpcError("invalid-value", "no confirmed commit is pending", type="protocol",
                               info=[("bad-element", "persist-id")])
            return
        if pending.persist is not None:
            if given is None or (given.text or "").strip() != pending.persist:
                raise RpcError("invalid-value", "a persistent confirmed commit is pending: give its <persist-id>",
                               type="protocol", info=[("bad-element", "persist-id")])
        elif pending.session != s.id:
            raise RpcError("in-use", f"a confirmed commit of session {pending.session} is pending",
                           type="protocol", info=[("session-id", str(pending.session))])

    def _op_cancel_commit(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"persist-id"})
        if self.pending is None:
            raise RpcError("operation-failed", "no confirmed commit is pending", type="protocol")
        self._may_follow_up(s, p)
        self._rollback(f"cancelled by session {s.id}")
        return None

    def _rollback(self, why: str) -> None:
        """Put running back as it was before the pending confirmed commit."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        try:
            summary = self.instance.apply(self.instance.config(), pending.saved)
        except RpcError as e:
            log.error("rollback of the confirmed commit failed (%s): %s", why, e)
            return
        self.candidate, self.candidate_editors = None, set()
        self._config_changed(None, None, [])
        log.warning("confirmed commit rolled back (%s): %s", why, summary)

    def tick(self, now: float | None = None) -> None:
        """Call every second or so: a confirmed commit not confirmed in time is rolled
        back; alarms raised or cleared since the last call are notified."""
        if self.pending is not None and (now if now is not None else time.monotonic()) >= self.pending.deadline:
            self._rollback("not confirmed in time")
        try:
            raised = self.instance.alarms()
        except RpcError:
            return                          # no instance running (yet)
        if self._alarms is not None:
            for key in sorted(raised.keys() - self._alarms.keys()):
                self._alarm(*key, "raised", raised[key])
            for key in sorted(self._alarms.keys() - raised.keys()):
                self._alarm(*key, "cleared", self._alarms[key])
        self._alarms = raised

    def _alarm(self, worker: str, name: str, what: str, text: str) -> None:
        root = etree.Element(qn(NCEVENT, "notification"), nsmap={None: NCEVENT})
        etree.SubElement(root, qn(NCEVENT, "eventTime")).text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        a = etree.SubElement(root, qn(STATE_NS, "alarm"), nsmap={None: STATE_NS})
        for leaf, value in (("worker", worker), ("name", name), ("state", what), ("text", text)):
            etree.SubElement(a, qn(STATE_NS, leaf)).text = value
        self._send(XML_DECL + tostring(root))

    def _send(self, msg: bytes) -> None:
        """A notification to every subscribed session."""
        for t in [t for t in self.sessions.values() if t.subscribed and t.notify is not None and t.alive]:
            try:
                t.notify(msg)
            except Exception as e:          # noqa: BLE001 (a session going away)
                log.debug("session %d: notification not sent: %s", t.id, e)

    def _op_discard_changes(self, s: Session, op: etree._Element) -> None:
        self._params(op, set())
        self._check_lock(s, CANDIDATE_DS)
        self.candidate, self.candidate_editors = None, set()
        return None

    def _op_lock(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"target"})
        ds, _ = self._datastore(p, "target", (RUNNING, CANDIDATE_DS))
        owner = self.locks.get(ds)
        if owner is not None:
            raise RpcError("lock-denied", f"the {ds} datastore is locked by session {owner}", type="protocol",
                           info=[("session-id", str(owner))])
        if ds == CANDIDATE_DS and self.candidate is not None and self.candidate_editors - {s.id}:
            raise RpcError("lock-denied", "the candidate datastore has changes not committed or discarded",
                           type="protocol", info=[("session-id", "0")])
        self.locks[ds] = s.id
        log.info("session %d (%s) locked %s", s.id, s.username, ds)
        return None

    def _op_unlock(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"target"})
        ds, _ = self._datastore(p, "target", (RUNNING, CANDIDATE_DS))
        if self.locks.get(ds) != s.id:
            raise RpcError("operation-failed", f"this session does not hold the lock of {ds}", type="protocol")
        del self.locks[ds]
        log.info("session %d (%s) unlocked %s", s.id, s.username, ds)
        return None

    def _op_close_session(self, s: Session, op: etree._Element) -> None:
        self._params(op, set())
        s.closing = True
        return None

    def _op_kill_session(self, s: Session, op: etree._Element) -> None:
        p = self._params(op, {"session-id"})
        e = p.get("session-id")
        if e is None:
            raise RpcError("missing-element", "<session-id> is required", type="protocol",
                           info=[("bad-element", "session-id")])
        try:
            sid = int((e.text or "").strip())
        except ValueError:
            sid = -1
        if sid == s.id:
            raise RpcError("invalid-value", "a session cannot kill itself: use close-session", type="protocol")
        target = self.sessions.get(sid)
        if target is None:
            raise RpcError("invalid-value", f"no session {e.text!r}", type="protocol",
                           info=[("bad-element", "session-id")])
        log.info("session %d (%s) kills session %d (%s)", s.id, s.username, sid, target.username)
        self.end_session(target)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(target.close)
        else:
            target.close()
        return None


# --- SSH ------------------------------------------------------------------------------------------

def _ssh_classes():
    asyncssh = asyncssh_module()

    class Channel(asyncssh.SSHServerSession):
        """One NETCONF session on an SSH channel (the ``netconf`` subsystem only)."""

        def __init__(self, nc: "SSHFrontend", username: str, peer: str) -> None:
            self.nc, self.username, self.peer = nc, username, peer
            self.chan = None
            self.framer = Framer()
            self.queue: asyncio.Queue = asyncio.Queue()
            self.session: Session | None = None
            self.closed = False
            self.task: asyncio.Task | None = None
            self.timer = None
            self.streaming: list[bytes] | None = None     # notifications held during a streamed reply

        def connection_made(self, chan) -> None:
            self.chan = chan

        def pty_requested(self, *args) -> bool:
            return False

        def shell_requested(self) -> bool:
            return False

        def exec_requested(self, command: str) -> bool:
            return False

        def subsystem_requested(self, subsystem: str) -> bool:
            return subsystem == "netconf"

        def session_started(self) -> None:
            loop = asyncio.get_running_loop()
            self.session = self.nc.server.open_session(self.username, self.peer, close=self._close)
            self.session.notify = lambda msg: loop.call_soon_threadsafe(self._notify, msg)
            self._write(self.nc.server.hello(self.session), chunked=False)
            self.timer = loop.call_later(HELLO_TIMEOUT, self._hello_timeout)
            self.task = loop.create_task(self._run())

        def _notify(self, msg: bytes) -> None:
            """A notification, between two whole messages (held while a reply is streamed)."""
            if self.streaming is not None:
                self.streaming.append(msg)
            else:
                self._write(msg)

        def _hello_timeout(self) -> None:
            if self.session is not None and not self.session.hello_done:
                log.info("session %d: no hello within %.0f s", self.session.id, HELLO_TIMEOUT)
                self._close()

        def data_received(self, data: bytes, datatype) -> None:
            if self.closed or self.session is None:
                return
            s = self.session
            self.framer.feed(data)
            try:
                while not self.closed:
                    msg = self.framer.next()
                    if msg is None:
                        break
                    if not s.hello_done:
                        try:
                            self.nc.server.client_hello(s, msg)
                        except MalformedMessage as e:
                            log.info("session %d: bad hello: %s", s.id, e)
                            self._close()
                            return
                        self.framer.chunked = s.chunked
                        continue
                    self.queue.put_nowait(msg)
                    if self.queue.qsize() >= 8:
                        self.chan.pause_reading()
            except FramingError as e:
                log.info("session %d: framing error: %s", s.id, e)
                self._write(error_reply(None, [RpcError("malformed-message" if s.chunked else "operation-failed",
                                                        f"framing error: {e}", type="rpc")]))
                self._close()

        def eof_received(self) -> bool:
            self.queue.put_nowait(None)         # answer what came whole, then close
            return True

        def connection_lost(self, exc) -> None:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
            self.queue.put_nowait(None)

        def _write(self, msg: bytes, chunked: bool | None = None) -> None:
            if self.closed or self.chan is None:
                return
            if chunked is None:
                chunked = self.session.chunked if self.session else False
            self.chan.write(frame(msg, chunked))

        def _close(self) -> None:
            if not self.closed and self.chan is not None:
                self.closed = True
                self.chan.close()
            self.queue.put_nowait(None)

        async def _stream(self, pieces: Iterator[bytes]) -> bool:
            """Write a reply piece by piece, as fast as the client reads it (False: the
            session must end)."""
            loop = asyncio.get_running_loop()
            chunked = self.session.chunked
            self.streaming = []
            try:
                return await self._pieces(loop, pieces, chunked)
            finally:
                held, self.streaming = self.streaming, None
                for msg in held:
                    self._write(msg)

        async def _pieces(self, loop, pieces: Iterator[bytes], chunked: bool) -> bool:
            while True:
                try:
                    piece = await loop.run_in_executor(self.nc.executor, next, pieces, None)
                except Exception as e:          # noqa: BLE001 (half a reply is out: end the session)
                    log.error("session %d: reply cut short: %s", self.session.id, e)
                    return False
                if piece is None or self.closed:
                    break
                if piece:
                    self.chan.write(b"\n#%d\n" % len(piece) + piece if chunked else piece)
                while not self.closed and self.chan.get_write_buffer_size() > WRITE_HIGH:
                    await asyncio.sleep(0.005)
            if not self.closed:
                self.chan.write(b"\n##\n" if chunked else EOM)
            return not self.closed

        async def _run(self) -> None:
            loop = asyncio.get_running_loop()
            s = self.session
            try:
                while True:
                    msg = await self.queue.get()
                    if msg is None or self.closed or not s.alive:
                        break
                    if self.queue.qsize() < 4 and self.chan is not None:
                        self.chan.resume_reading()
                    out = await loop.run_in_executor(self.nc.executor, self.nc.server.handle_stream, s, msg)
                    if isinstance(out, bytes):
                        self._write(out)
                    elif out is not None and not await self._stream(out):
                        break
                    if s.closing:
                        break
            finally:
                if not self.closed and self.chan is not None:
                    self.closed = True
                    self.chan.close()
                await loop.run_in_executor(self.nc.executor, self.nc.server.end_session, s)

    class Server(asyncssh.SSHServer):
        def __init__(self, nc: "SSHFrontend") -> None:
            self.nc = nc
            self.conn = None
            self.peer = ""

        def connection_made(self, conn) -> None:
            self.conn = conn
            peer = conn.get_extra_info("peername") or ("", 0)
            self.peer = f"{peer[0]}:{peer[1]}"

        def begin_auth(self, username: str) -> bool:
            return True                         # always authenticate: never anonymous

        def password_auth_supported(self) -> bool:
            return True

        async def validate_password(self, username: str, password: str) -> bool:
            loop = asyncio.get_running_loop()
            try:
                ok = await loop.run_in_executor(self.nc.auth_executor, self.nc.users.check_password,
                                                username, password)
            except (OSError, ValueError) as e:
                log.error("users file: %s", e)
                ok = False
            if not ok:
                log.warning("password refused", extra={"fields": {"user": username, "peer": self.peer}})
            return ok

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key) -> bool:
            try:
                return self.nc.users.check_key(username, key)
            except (OSError, ValueError) as e:
                log.error("users file: %s", e)
                return False

        def kbdint_auth_supported(self) -> bool:
            return False

        def session_requested(self):
            return Channel(self.nc, self.conn.get_extra_info("username"), self.peer)

    return Server


class SSHFrontend:
    """The SSH side: host key, users, listening socket; sessions handed to :class:`NetconfServer`."""

    def __init__(self, server: NetconfServer, users, host_key) -> None:
        self.server = server
        self.users = users
        self.host_key = host_key
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netconf")
        self.auth_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="netconf-auth")
        self.acceptor = None

    async def start(self, host: str, port: int):
        asyncssh = asyncssh_module()
        self.server.loop = asyncio.get_running_loop()
        server_cls = _ssh_classes()
        self.acceptor = await asyncssh.listen(
            host, port, server_factory=lambda: server_cls(self), server_host_keys=[self.host_key],
            encoding=None, allow_scp=False, sftp_factory=None, agent_forwarding=False,
            x11_forwarding=False, kbdint_auth=False, login_timeout=60, keepalive_interval=30)
        return self.acceptor

    async def tick(self) -> None:
        """Timers of the server (confirmed commits), every second, in turn with the requests."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            await loop.run_in_executor(self.executor, self.server.tick)

    def close(self) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        self.executor.shutdown(wait=True)
        self.auth_executor.shutdown(wait=False)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected ADDR:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def host_key(path: str | os.PathLike):
    """The SSH host key at ``path``, made (Ed25519, mode 0600, with ``PATH.pub``) if missing."""
    asyncssh = asyncssh_module()
    p = Path(path)
    if not p.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="lwaftr netconf")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        p.with_name(p.name + ".pub").write_bytes(key.export_public_key())
        log.info("generated host key %s", p)
        return key
    return asyncssh.read_private_key(str(p))


def serve(listen: str, name: str | None, host_key_path: str, users_path: str,
          ready: Callable[[tuple[str, int]], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    host, port = parse_listen(listen)
    users = UsersFile(users_path)
    key = host_key(host_key_path)
    server = NetconfServer(Instance(name), group=users.group)
    server.warm_up()
    front = SSHFrontend(server, users, key)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        acceptor = await front.start(host, port)
        ticker = loop.create_task(front.tick())
        bound = acceptor.sockets[0].getsockname()[:2] if acceptor.sockets else (host, port)
        log.info("NETCONF over SSH on %s port %d", bound[0], bound[1],
                 extra={"fields": {"fingerprint": key.get_fingerprint()}})
        if ready is not None:
            ready(bound)
        await stop.wait()
        ticker.cancel()
        acceptor.close()
        await acceptor.wait_closed()

    try:
        asyncio.run(main())
    finally:
        front.close()
    return 0
