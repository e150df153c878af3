"""RFC 8676 ``ietf-softwire-br`` configurations (with our ``lwaftr-softwire-ext``
augmentation) in XML or RFC 7951 JSON <-> the internal :class:`Config`.

Validation is libyang's (:mod:`lwaftr.config.yanglib`), except for the bulk of
a big binding table.  The fast path (:func:`_split`) finds the binding-entry
list in the text, takes every entry written the canonical way (leaves in
schema order, plain values: how we and libyang write them) with one regular
expression match each, and hands libyang the rest of the document with those
entries blanked out (line breaks kept, so libyang's line numbers stay right).
The entries' columns are then checked in bulk against the same types
libyang would apply (:func:`_entry_columns`, :func:`_bindings`), plus key
uniqueness and the port-set rules of ``bindings_check``.  Anything the fast
path is not sure of (an entry written another way, a comment among entries,
two binding tables) sends the whole file through libyang: slower, same
result.  A bad file raises :class:`ConfigError` (file, line where the format
gives one, schema path); no partial Config is ever returned.

How the RFC 8676 leaves map onto the model (docs/configuration.md):

* ``bind-instance/name`` <-> ``Config.name`` (a configuration without a name
  is written as ``lwaftr``); exactly one bind-instance per file.
* ``softwire-payload-mtu`` = internal (IPv6) MTU - 40: the largest IPv4 packet
  a softwire carries unfragmented.  ``softwire-path-mru`` <-> internal MRU.
* ``enable-hairpinning`` <-> internal hairpinning.
* ``icmpv4-errors/allow-incoming-icmpv4``, ``generate-icmpv4-errors`` <-> the
  external side's ICMP policy; ``icmpv6-errors/generate-icmpv6-errors`` and
  ``lwx:allow-incoming-icmpv6`` <-> the internal side's.
* ``icmpv6-errors/icmpv6-rate`` (ICMPv6 errors sent per second) <-> the internal
  error rate limiter: ``packets`` per ``period`` seconds; a rate alone is
  ``rate`` packets per 1 s.  ``icmpv4-rate`` limits *incoming* ICMPv4, which the
  data plane does not do: refused.
* ``softwire-num-max``: checked against the table, not kept (written as
  4294967295, "no limit").
* ``binding-table-versioning`` <-> ``Bindings.version``.
* ``binding-entry``: ``binding-ipv6info`` (an address, or a prefix of /64 or
  shorter from which the B4 address is built as RFC 7597 section 6 says,
  or a /128) <-> ``b4_ipv6``; ``binding-ipv4-addr`` <-> ``ipv4`` (required);
  ``br-ipv6-addr`` <-> the BR address (required); ``port-set``: see
  :func:`offset_of_reserved`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from lwaftr.config import yanglib
from lwaftr.config.bindings_check import (Names, Reject, br_index, check_port_sets, fmt4, ints,
                                         optional_ints, packed, pton4, pton6, uint)
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import (Bgp, BgpPeer, Bindings, Config, ControlPlane, Instance, InterfaceAddresses, Ospf,
                                 InterfacePolicy, NextHop, TableVersion)

__all__ = ["XML", "JSON", "SNABB", "sniff", "load_ietf", "loads_ietf", "dumps_ietf",
           "table_file_of", "reserved_of_offset", "offset_of_reserved", "DEFAULT_NAME"]

XML, JSON, SNABB = "xml", "json", "snabb"
#: bind-instance name written for a configuration without a name (RFC 8676 requires one)
DEFAULT_NAME = "lwaftr"
#: softwire-num-max written: "no limit"
NUM_MAX = 0xFFFFFFFF

_X = yanglib.EXT + ":"
BI = "br-instances/binding/bind-instance"
ENTRY = f"{BI}/binding-table/binding-entry"
TABLE_FILE = f"{BI}/binding-table/{_X}binding-table-file"
_TOP = f"{yanglib.BR}:br-instances"


def sniff(text: str) -> str:
    """XML, JSON or SNABB (snabb-softwire-v3 text), by the first character."""
    s = text.lstrip("\ufeff \t\r\n")
    if s.startswith("<"):
        return XML
    if s.startswith("{"):
        return JSON
    return SNABB


# --- port sets ------------------------------------------------------------------------------------
#
# Both models take the PSID from the same bits: psid = (port >> m) & (2^k - 1)
# with m = 16 - a - k.  They differ in which ports no softwire gets:
#
# * RFC 7597 section 5.1 (RFC 8676 psid-offset = a): the ports whose first a
#   bits are all zero, i.e. ports 0 .. 2^(16-a) - 1 (when a > 0);
# * Snabb (our reserved-ports-bit-count = r, with m = 16 - r - k): ports
#   0 .. 2^r - 1 (when r > 0).
#
# So the same port sets for a = r = 0 and a = r = 8, and, with psid-len 0
# (one softwire owns the address: no PSID bits to place), for r = 16 - a
# (0 < a < 16).  Nothing else maps exactly, and is refused both ways.

def reserved_of_offset(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Snabb reserved-ports-bit-count for RFC (psid-len, psid-offset); -1 where
    none gives the same port set."""
    k, a = k.astype(np.int64), a.astype(np.int64)
    r = np.full(k.shape, -1, np.int64)
    r[(a == 0) | (a == 8)] = a[(a == 0) | (a == 8)]
    whole = (k == 0) & (a > 0) & (a < 16)
    r[whole] = 16 - a[whole]
    return r


def offset_of_reserved(k: np.ndarray, r: np.ndarray) -> np.ndarray:
    """RFC psid-offset for (psid-length, reserved-ports-bit-count); -1 where none
    gives the same port set."""
    k, r = k.astype(np.int64), r.astype(np.int64)
    a = np.full(k.shape, -1, np.int64)
    a[(r == 0) | (r == 8)] = r[(r == 0) | (r == 8)]
    whole = (k == 0) & (r > 0) & (r < 16)
    a[whole] = 16 - r[whole]
    return a


_PORT_SET_RULE = ("a psid-offset A excludes ports 0..2^(16-A)-1 (RFC 7597) where the data plane "
                  "can only exclude ports 0..2^R-1 (Snabb's reserved-ports-bit-count R): the same "
                  "only for psid-offset 0 or 8, or any psid-offset below 16 with psid-len 0")


# --- loading --------------------------------------------------------------------------------------

def load_ietf(path: str | Path, *, fast: bool = True, table: bool = True) -> Config:
    """Load an RFC 8676 XML or JSON configuration file (format by content).
    ``table=False``: leave a ``binding-table-file`` unread (empty bindings)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=str(path)) from None
    return loads_ietf(text, str(path), fast=fast, table=table)


def table_file_of(config_source: str, ref: str) -> Path:
    """Where a ``binding-table-file`` reference points (relative: to the
    configuration file's directory)."""
    p = Path(ref)
    return p if p.is_absolute() else Path(config_source).parent / p


def loads_ietf(text: str, source: str = "<string>", fmt: str | None = None, *, fast: bool = True,
               table: bool = True) -> Config:
    """Parse and validate RFC 8676 (+ lwaftr-softwire-ext) ``text``.

    ``fmt``: XML or JSON (default: by content).  ``fast=False`` validates the
    whole document, binding entries included, with libyang (the reference the
    fast path is tested against).  ``table=False``: do not read a
    ``binding-table-file`` (the returned bindings are then empty)."""
    fmt = fmt or sniff(text)
    if fmt not in (XML, JSON):
        raise ConfigError("neither XML nor JSON", file=source)
    text = text.lstrip("\ufeff")
    if fmt == XML:
        text = _unwrap_netconf(text)
    split = _split(text, fmt) if fast else None
    skeleton = split[0] if split else text
    full, given = yanglib.parse(skeleton, fmt, source)
    bi = _bind_instance(full, source)
    entries = bi.get("binding-table", {}).get("binding-entry")
    if split is not None and entries:          # the fast path missed some: the slow way
        return loads_ietf(text, source, fmt, fast=False, table=table)
    if split is not None:
        cols, positions = split[1], split[2]
    elif entries:
        cols, positions = _tree_columns(entries), _entry_positions(text, fmt, len(entries))
    else:
        cols, positions = None, None
    lines = None
    if positions is not None:
        nl = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), np.uint32) == 10) \
            if not text.isascii() else np.flatnonzero(np.frombuffer(text.encode(), np.uint8) == 10)
        lines = (np.searchsorted(nl, positions) + 1).astype(np.int32)
    bindings = _bindings(cols, lines, source) if cols is not None else Bindings.empty()
    ref = bi.get("binding-table", {}).get(f"{_X}binding-table-file")
    if ref is not None:
        if cols is not None and len(cols[0]):
            raise ConfigError("binding-table-file and binding-entry are alternatives", file=source,
                              path=TABLE_FILE)
        if table:
            bindings = _load_table_file(table_file_of(source, ref))
    ver = bi.get("binding-table-versioning", {})
    if ver.get("version") is not None or ver.get("date") is not None:
        bindings.version = TableVersion(None if ver.get("version") is None else int(ver["version"]),
                                        ver.get("date"))
    config = _config(bi, _bind_instance(given, source), bindings, source)
    if ref is not None:
        config.binding_table_file = str(table_file_of(source, ref))
    return config


_NETCONF_OPEN = re.compile(r'\s*(?:<\?xml[^>]*\?>\s*)?<(config|data)\s+xmlns\s*=\s*'
                           r'(["\'])urn:ietf:params:xml:ns:netconf:base:1\.0\2\s*>')


def _unwrap_netconf(text: str) -> str:
    """The content of a NETCONF ``<config>`` (edit-config) or ``<data>`` (get-config
    reply) element, blanked in place so offsets and lines stay; else ``text``."""
    m = _NETCONF_OPEN.match(text)
    if m is None:
        return text
    end_tag = f"</{m.group(1)}>"
    close = len(text.rstrip()) - len(end_tag)
    if not text.startswith(end_tag, close):
        return text                                   # libyang will say what is wrong
    decl = re.match(r"\s*<\?xml[^>]*\?>", text[:m.end()])
    start = decl.end() if decl else 0

    def blank(s: str) -> str:
        return re.sub(r"[^\n]", " ", s)
    return text[:start] + blank(text[start:m.end()]) + text[m.end():close] + blank(text[close:])


def _bind_instance(data: dict, source: str) -> dict:
    """The one bind-instance (JSON object); ConfigError unless exactly one."""
    top = data.get(_TOP, {})
    insts = top.get("binding", {}).get("bind-instance", [])
    if len(insts) != 1:
        raise ConfigError(f"exactly one bind-instance is required, found {len(insts)}", file=source,
                          path=BI)
    return insts[0]


def _err(source: str, path: str, msg: str) -> ConfigError:
    return ConfigError(msg, file=source, path=f"{BI}/{path}")


def _config(bi: dict, given: dict, bindings: Bindings, source: str) -> Config:
    """The model from a validated bind-instance (``bi`` with defaults, ``given``
    as written)."""
    if len(bindings) > bi["softwire-num-max"]:
        raise _err(source, "softwire-num-max", f"{len(bindings)} softwires exceed softwire-num-max "
                   f"{bi['softwire-num-max']}")
    mtu6 = bi["softwire-payload-mtu"] + 40
    if mtu6 > 0xFFFF:
        raise _err(source, "softwire-payload-mtu", f"softwire-payload-mtu {mtu6 - 40} + 40 (the IPv6 "
                   f"header) exceeds 65535, the largest IPv6-side MTU")
    v4, v6 = bi["icmp-policy"]["icmpv4-errors"], bi["icmp-policy"]["icmpv6-errors"]
    if "icmpv4-rate" in v4:
        raise _err(source, "icmp-policy/icmpv4-errors/icmpv4-rate",
                   "rate limiting of incoming ICMPv4 is not implemented (the ICMPv4 errors the "
                   f"lwAFTR sends are limited by {_X}external-interface/error-rate-limiting)")
    ext, int_ = bi[f"{_X}external-interface"], bi[f"{_X}internal-interface"]
    packets6, period6 = int_["error-rate-limiting"]["packets"], int_["error-rate-limiting"]["period"]
    explicit = "error-rate-limiting" in given.get(f"{_X}internal-interface", {})
    if "icmpv6-rate" in v6:
        rate = v6["icmpv6-rate"]
        if not explicit:
            packets6, period6 = rate, 1
        elif rate * period6 != packets6:
            raise _err(source, "icmp-policy/icmpv6-errors/icmpv6-rate",
                       f"icmpv6-rate {rate} per second disagrees with {_X}internal-interface/"
                       f"error-rate-limiting ({packets6} packets per {period6} s)")
    external = InterfacePolicy(
        mtu=ext["mtu"], mru=ext["mru"], ingress_filter=ext.get("ingress-filter"),
        egress_filter=ext.get("egress-filter"), allow_incoming_icmp=v4["allow-incoming-icmpv4"],
        generate_icmp_errors=v4["generate-icmpv4-errors"], vlan_tag=ext.get("vlan-tag"),
        error_rate_limit_packets=ext["error-rate-limiting"]["packets"],
        error_rate_limit_period=ext["error-rate-limiting"]["period"],
        reassembly_max_fragments_per_packet=ext["reassembly"]["max-fragments-per-packet"],
        reassembly_max_packets=ext["reassembly"]["max-packets"])
    internal = InterfacePolicy(
        mtu=mtu6, mru=bi["softwire-path-mru"], ingress_filter=int_.get("ingress-filter"),
        egress_filter=int_.get("egress-filter"), allow_incoming_icmp=v6[f"{_X}allow-incoming-icmpv6"],
        generate_icmp_errors=v6["generate-icmpv6-errors"], vlan_tag=int_.get("vlan-tag"),
        error_rate_limit_packets=packets6, error_rate_limit_period=period6,
        reassembly_max_fragments_per_packet=int_["reassembly"]["max-fragments-per-packet"],
        reassembly_max_packets=int_["reassembly"]["max-packets"],
        flow_label=int_["flow-label"], hairpinning=bi["enable-hairpinning"])
    cp = bi[f"{_X}control-plane"]
    control = ControlPlane(mode=cp["mode"], answer_arp_for_softwires=cp["answer-arp-for-softwires"],
                           external_prefix_length=cp["external-prefix-length"],
                           internal_prefix_length=cp["internal-prefix-length"],
                           next_hop_refresh_interval=float(bi[f"{_X}next-hop-cache-refresh-interval"]))
    instances = _instances(bi.get(f"{_X}instance", []), source)
    return Config(external=external, internal=internal, bindings=bindings,
                  instances=instances, name=bi["name"], bgp=_bgp(bi.get(f"{_X}bgp", {}), instances, source),
                  ospf=_ospf(bi.get(f"{_X}ospf", {}), source),
                  control_plane=control, cpus=_cpus(bi.get(f"{_X}cpu", []), source), source=source)


def _cpus(items: list, source: str) -> tuple[int, ...]:
    """``lwx:cpu`` (a core per worker; the leaf-list's uniqueness is YANG's)."""
    return tuple(int(c) for c in items)


def _ospf(r: dict, source: str) -> Ospf:
    """``lwx:ospf`` (see :class:`Ospf`)."""
    ospf = Ospf(enable=r.get("enable", False), area=r.get("area", 0), hello_interval=r.get("hello-interval", 1),
                dead_interval=r.get("dead-interval", 4), cost=r.get("cost", 10))
    problem = ospf.problem()
    if problem is not None:
        raise _err(source, f"{_X}ospf/{problem[0]}", problem[1])
    return ospf


def _bgp(r: dict, instances: list[Instance], source: str) -> Bgp:
    """``lwx:bgp`` (see :class:`Bgp`; the same rules as the snabb-softwire-v3 leaves)."""
    import ipaddress

    def prefixes(key: str) -> tuple:
        return tuple((n.network_address.packed, n.prefixlen)
                     for n in (ipaddress.ip_network(p, strict=False) for p in r.get(key, [])))

    def addr(family: int, v: str | None) -> bytes | None:
        return None if v is None else socket.inet_pton(family, v)

    bgp = Bgp(enable=r.get("enable", False), local_as=r.get("local-as"), peer_as=r.get("peer-as"),
              hold_time=r.get("hold-time", 3), keepalive_time=r.get("keepalive-time", 1), bfd=r.get("bfd", False),
              bfd_interval=float(r.get("bfd-interval", 0.1)), bfd_multiplier=r.get("bfd-multiplier", 3),
              ipv4_prefixes=prefixes("ipv4-prefix"), ipv6_prefixes=prefixes("ipv6-prefix"),
              peers=tuple(BgpPeer(p["device"], ipv4_address=addr(socket.AF_INET, p.get("ipv4-address")),
                                  ipv4_peer_as=p.get("ipv4-peer-as"),
                                  ipv6_address=addr(socket.AF_INET6, p.get("ipv6-address")),
                                  ipv6_peer_as=p.get("ipv6-peer-as")) for p in r.get("peer", [])))
    problem = bgp.problem(instances)
    if problem is not None:
        raise _err(source, f"{_X}bgp/{problem[0]}", problem[1])
    return bgp


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def _instances(items: list[dict], source: str) -> list[Instance]:
    out = []
    for inst in items:
        for q in inst["queue"]:
            sides = []
            for side, family in (("external-interface", socket.AF_INET),
                                 ("internal-interface", socket.AF_INET6)):
                a = q[side]
                nh = a["next-hop"]
                sides.append(InterfaceAddresses(
                    ip=socket.inet_pton(family, a["ip"]), mac=_mac(a["mac"]), vlan_tag=a.get("vlan-tag"),
                    next_hop=NextHop(ip=socket.inet_pton(family, nh["ip"]) if "ip" in nh else None,
                                     mac=_mac(nh["mac"]) if "mac" in nh else None)))
            out.append(Instance(device=inst["device"], external_device=inst.get("external-device"),
                                queue_id=q["id"], external=sides[0], internal=sides[1]))
    if not out:
        raise _err(source, f"{_X}instance", "at least one instance is required")
    return out


# --- the binding entries: fast path ---------------------------------------------------------------

_V = r"([^<&\s]+)"
_XML_ENTRY = re.compile(
    r"\s*<binding-entry>\s*"
    rf"<binding-ipv6info>{_V}</binding-ipv6info>\s*"
    rf"<binding-ipv4-addr>{_V}</binding-ipv4-addr>\s*"
    rf"<port-set>\s*(?:<psid-offset>{_V}</psid-offset>\s*)?"
    rf"<psid-len>{_V}</psid-len>\s*<psid>{_V}</psid>\s*</port-set>\s*"
    rf"<br-ipv6-addr>{_V}</br-ipv6-addr>\s*"
    r"</binding-entry>")
_S = r'"([^"\\]*)"'
_N = r"(0|[1-9][0-9]*)"
_JSON_ENTRY = re.compile(
    r'\s*\{\s*'
    rf'"binding-ipv6info"\s*:\s*{_S}\s*,\s*'
    rf'"binding-ipv4-addr"\s*:\s*{_S}\s*,\s*'
    rf'"port-set"\s*:\s*\{{\s*(?:"psid-offset"\s*:\s*{_N}\s*,\s*)?'
    rf'"psid-len"\s*:\s*{_N}\s*,\s*"psid"\s*:\s*{_N}\s*\}}\s*,\s*'
    rf'"br-ipv6-addr"\s*:\s*{_S}\s*'
    r'\}\s*(?:,|(\]))')
_XML_TABLE = re.compile(r"<binding-table>")
_JSON_LIST = re.compile(r'"binding-entry"\s*:\s*\[')

Columns = list  # [binding-ipv6info, binding-ipv4-addr, psid-offset, psid-len, psid, br-ipv6-addr]


def _inside_markup(text: str, pos: int) -> bool:
    """Whether ``pos`` of XML ``text`` is inside a comment, CDATA section or PI."""
    for open_, close in (("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>")):
        o = text.rfind(open_, 0, pos)
        if o >= 0 and text.rfind(close, o, pos) < 0:
            return True
    return False


def _split(text: str, fmt: str) -> tuple[str, Columns, np.ndarray] | None:
    """(document with the canonical entries blanked out, their columns, their
    offsets in ``text``); None when the fast path does not apply."""
    return _split_xml(text) if fmt == XML else _split_json(text)


def _columns(rows: list[tuple]) -> Columns:
    flat = list(chain.from_iterable(rows))
    return [flat[j::6] for j in range(6)]


def _split_xml(text: str) -> tuple[str, Columns, np.ndarray] | None:
    found = [m for m in _XML_TABLE.finditer(text) if not _inside_markup(text, m.start())]
    if len(found) != 1:
        return None
    start = found[0].end()
    end = text.find("</binding-table>", start)
    if end < 0 or any(text.find(t, start, end) >= 0 for t in ("<!--", "<![CDATA[", "<?")):
        return None
    rows: list[tuple] = []
    pos: list[int] = []
    add_row, add_pos = rows.append, pos.append
    out = [text[:start]]
    kept = run_start = run_end = start         # text[kept:run_start] is still to copy as is
    for m in _XML_ENTRY.finditer(text, start, end):
        if m.start() != run_end:               # something else between entries: keep it
            out += [text[kept:run_start], "\n" * text.count("\n", run_start, run_end)]
            kept, run_start = run_end, m.start()
        add_row(m.groups())
        add_pos(text.index("<", m.start()))
        run_end = m.end()
    out += [text[kept:run_start], "\n" * text.count("\n", run_start, run_end), text[run_end:]]
    return "".join(out), _columns(rows), np.array(pos, np.int64)


def _split_json(text: str) -> tuple[str, Columns, np.ndarray] | None:
    found = [m for m in _JSON_LIST.finditer(text) if _unescaped(text, m.start())]
    if len(found) != 1:
        return None
    opening = found[0].end() - 1               # the '['
    rows: list[tuple] = []
    pos: list[int] = []
    add_row, add_pos = rows.append, pos.append
    at = opening + 1
    close = None
    for m in _JSON_ENTRY.finditer(text, at):
        if m.start() != at:
            return None                        # not one canonical entry after another
        g = m.groups()
        add_row(g[:6])
        add_pos(text.index("{", m.start()))
        at = m.end()
        if g[6] is not None:
            close = at
            break
    if close is None:
        if rows:
            return None
        e = re.compile(r"\s*\]").match(text, at)
        if e is None:
            return None
        close = e.end()
    skeleton = text[:opening] + "[]" + "\n" * text.count("\n", opening, close) + text[close:]
    return skeleton, _columns(rows), np.array(pos, np.int64)


def _unescaped(text: str, pos: int) -> bool:
    """Whether the '"' at ``pos`` opens a JSON string (is not escaped)."""
    k = pos
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (pos - k) % 2 == 0


def _tree_columns(entries: list[dict]) -> Columns:
    """Columns of binding entries libyang parsed (absent leaves: None)."""
    ps = [e["port-set"] for e in entries]
    return [[e["binding-ipv6info"] for e in entries], [e.get("binding-ipv4-addr") for e in entries],
            [str(p.get("psid-offset", 0)) for p in ps], [str(p["psid-len"]) for p in ps],
            [str(p["psid"]) for p in ps], [e.get("br-ipv6-addr") for e in entries]]


_XML_ENTRY_TAG = re.compile(r"<(?:[A-Za-z_][\w.\-]*:)?binding-entry[\s>]")
_XML_MARKUP = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>", re.S)
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]')


def _entry_positions(text: str, fmt: str, n: int) -> np.ndarray | None:
    """Offsets of the ``n`` binding entries in a file the fast path declined
    (for line numbers); None if they cannot be told apart."""
    if fmt == XML:
        pos = [m.start() for m in _XML_ENTRY_TAG.finditer(text)]
        markup = [(m.start(), m.end()) for m in _XML_MARKUP.finditer(text)] if "<!" in text or "<?" in text \
            else []
        if markup and pos:
            bounds = np.array(markup, np.int64).reshape(-1)       # start, end, start, end, ...
            at = np.searchsorted(bounds, np.array(pos, np.int64), "right")
            pos = [p for p, k in zip(pos, at.tolist()) if k % 2 == 0]   # not inside a span
    else:
        pos, depth, inside = [], 0, None
        for m in _JSON_TOKEN.finditer(text):
            t = m.group()
            if inside is None:
                if t[0] == '"' and t[1:-1].split(":")[-1] == "binding-entry" and \
                        re.match(r"\s*:\s*\[", text[m.end():m.end() + 64]):
                    inside, depth = 0, 0
                continue
            if t[0] == '"':
                continue
            if t in "[{":
                if t == "{" and depth == 1:
                    pos.append(m.start())
                depth += 1
            elif t in "]}":
                depth -= 1
                if depth == 0:
                    break
    return np.array(pos, np.int64) if len(pos) == n else None


# --- the binding entries: checks and conversion ---------------------------------------------------

_NAMES = Names(softwire=ENTRY, psid=f"{ENTRY}/port-set/psid", reserved=f"{ENTRY}/port-set/psid-offset",
               port_set=f"{ENTRY}/port-set", psid_length_word="psid-len", reserved_word="psid-offset")
_LEAF = {0: "binding-ipv6info", 1: "binding-ipv4-addr", 2: "port-set/psid-offset",
         3: "port-set/psid-len", 4: "port-set/psid", 5: "br-ipv6-addr"}
_CONV = {2: uint(8, 0, 16), 3: uint(8, 0, 15), 4: uint(16)}


def _bindings(cols: Columns, lines: np.ndarray | None, source: str) -> Bindings:
    n = len(cols[0])
    if n == 0:
        return Bindings.empty()
    line = lines if lines is not None else np.zeros(n, np.int32)

    def fail(i: int, j: int, msg: str) -> ConfigError:
        return ConfigError(msg, file=source, line=int(line[i]) or None, path=f"{ENTRY}/{_LEAF[j]}")

    v6info, v4s, offs, lens, psids, brs = cols
    for j in (1, 5):
        if None in cols[j]:
            i = cols[j].index(None)
            raise fail(i, j, f"missing {_LEAF[j]}: an lwAFTR softwire needs it")
    try:
        ipv4 = np.frombuffer(packed(v4s, pton4), ">u4").astype(np.uint32)
    except Reject as r:
        raise fail(r.index, 1, f"bad IPv4 address {v4s[r.index]!r}") from None
    nums = []
    for j, bits, hi in ((2, 8, 16), (3, 8, 15), (4, 16, 0xFFFF)):
        try:
            nums.append(optional_ints(cols[j], bits, hi) if j == 2 else ints(cols[j], bits, hi))
        except Reject as r:
            try:
                _CONV[j](cols[j][r.index])
                msg = f"bad value {cols[j][r.index]!r}"
            except ValueError as e:
                msg = str(e)
            raise fail(r.index, j, msg) from None
    off, plen, psid = nums
    b4, keys = _b4_addresses(v6info, ipv4, psid, fail)
    _check_unique_keys(keys, line, source)
    try:
        br_addresses, br_idx = br_index(brs)
    except Reject as r:
        raise fail(r.index, 5, f"bad IPv6 address {brs[r.index]!r}"
                   if r.index < n and _bad6(brs[r.index]) else "more than 65536 BR addresses") from None
    try:
        check_port_sets(source, ipv4, psid, plen, off, line, _NAMES)
    except ConfigError as e:
        raise ConfigError(e.message.replace(" (first at line 0)", ""), file=e.file, line=e.line or None,
                          path=e.path) from None
    rsv = reserved_of_offset(plen, off)
    bad = np.flatnonzero(rsv < 0)
    if bad.size:
        i = int(bad[0])
        raise fail(i, 2, f"psid-offset {off[i]} with psid-len {plen[i]} cannot be expressed: "
                   + _PORT_SET_RULE)
    return Bindings(ipv4=ipv4, psid=psid.astype(np.uint16), psid_length=plen.astype(np.uint8),
                    reserved_ports_bit_count=rsv.astype(np.uint8), b4_ipv6=b4, br_index=br_idx,
                    br_addresses=br_addresses, line=line.astype(np.int32))


def _bad6(s: str) -> bool:
    try:
        pton6(s)
        return False
    except (OSError, ValueError, TypeError):
        return True


def _b4_addresses(v6info: list[str], ipv4: np.ndarray, psid: np.ndarray, fail) -> tuple[np.ndarray, np.ndarray]:
    """B4 addresses (uint8[n, 16]) and list keys (uint8[n, 17]: bytes + prefix
    length, 255 for an address) from binding-ipv6info values."""
    n = len(v6info)
    prefixed = [i for i, s in enumerate(v6info) if "/" in s] if "/" in "".join(v6info[:1]) or \
        any("/" in s for s in v6info) else []
    plain = v6info
    if prefixed:
        plain = list(v6info)
        for i in prefixed:
            plain[i] = "::"
    try:
        b4 = np.frombuffer(packed(plain, pton6), np.uint8).reshape(n, 16).copy()
    except Reject as r:
        raise fail(r.index, 0, f"bad IPv6 address {v6info[r.index]!r}") from None
    keys = np.empty((n, 17), np.uint8)
    keys[:, :16] = b4
    keys[:, 16] = 255
    for i in prefixed:
        addr, _, length = v6info[i].partition("/")
        try:
            a = pton6(addr)
            if not (length.isdigit() and int(length) <= 128 and (len(length) == 1 or length[0] != "0")):
                raise ValueError
        except (OSError, ValueError):
            raise fail(i, 0, f"bad IPv6 prefix {v6info[i]!r}") from None
        bits = int(length)
        net = (int.from_bytes(a, "big") >> (128 - bits) << (128 - bits)) if bits else 0
        keys[i, :16] = np.frombuffer(net.to_bytes(16, "big"), np.uint8)
        keys[i, 16] = bits
        if bits == 128:
            b4[i] = keys[i, :16]
        elif bits <= 64:
            # RFC 7596 section 5.1 / RFC 7597 section 6: prefix, zeros to /64, then
            # 16 zero bits, the IPv4 address and the PSID (right-aligned).
            iid = (int(ipv4[i]) << 16) | int(psid[i])
            b4[i] = np.frombuffer((net | iid).to_bytes(16, "big"), np.uint8)
        else:
            raise fail(i, 0, f"prefix {v6info[i]}: the B4 address is built from a prefix of /64 or "
                       f"shorter (RFC 7597 section 6), or given as an address or a /128")
    return b4, keys


def _check_unique_keys(keys: np.ndarray, line: np.ndarray, source: str) -> None:
    """No two entries with the same binding-ipv6info (the list key)."""
    v = np.ascontiguousarray(keys).view(np.dtype((np.void, 17))).reshape(-1)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    dup = order[1:][sv[1:] == sv[:-1]]
    if dup.size:
        i = int(dup.min())
        first = int(np.flatnonzero(v == v[i])[0])
        k = keys[i]
        text = socket.inet_ntop(socket.AF_INET6, k[:16].tobytes()) + ("" if k[16] == 255 else f"/{k[16]}")
        where = f" (first at line {line[first]})" if line[first] else ""
        raise ConfigError(f"duplicate binding-entry {text}{where}", file=source,
                          line=int(line[i]) or None, path=ENTRY)


def _load_table_file(path: Path) -> Bindings:
    """The softwires of a text binding-table file or a compiled (.lwbt) one."""
    if path.suffix == ".lwbt":
        from lwaftr.bindingtable import compiled
        return bindings_of_table(compiled.load(path))
    from lwaftr.bindingtable.textformat import load_text
    return load_text(path)


def bindings_of_table(table: Any) -> Bindings:
    """The softwires of a compiled :class:`BindingTable`, sorted by (IPv4, PSID)
    (a compiled table keeps no order and no line numbers)."""
    from lwaftr.bindingtable.table import ADDR_OCCUPIED, SW_OCCUPIED
    sw = table.sw_tab
    rows = sw[(sw[:, 0] & SW_OCCUPIED) != 0]
    key = rows[:, 0] & ~SW_OCCUPIED
    rows = rows[np.argsort(key, kind="stable")]
    key = rows[:, 0] & ~SW_OCCUPIED
    n = len(rows)
    ipv4 = (key >> np.uint64(16)).astype(np.uint32)
    b4 = np.empty((n, 16), np.uint8)
    b4[:, :8] = rows[:, 1].astype(">u8").view(np.uint8).reshape(n, 8)
    b4[:, 8:] = rows[:, 2].astype(">u8").view(np.uint8).reshape(n, 8)
    words = table.addr_tab[(table.addr_tab & ADDR_OCCUPIED) != 0]
    addrs = (words >> np.uint64(32)).astype(np.uint32)
    order = np.argsort(addrs)
    at = order[np.searchsorted(addrs[order], ipv4)] if n else np.zeros(0, np.int64)
    plen = ((words[at] >> np.uint64(8)) & np.uint64(0xFF)).astype(np.uint8)
    shift = (words[at] & np.uint64(0xFF)).astype(np.int64)
    br_index_ = rows[:, 3].astype(np.uint16)
    nbr = int(br_index_.max()) + 1 if n else 0
    return Bindings(ipv4=ipv4, psid=(key & np.uint64(0xFFFF)).astype(np.uint16), psid_length=plen,
                    reserved_ports_bit_count=(16 - plen.astype(np.int64) - shift).astype(np.uint8),
                    b4_ipv6=b4, br_index=br_index_,
                    br_addresses=[table.br_tab[i].tobytes() for i in range(nbr)],
                    line=np.zeros(n, np.int32))


# --- writing --------------------------------------------------------------------------------------

def _ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes(b))


def _mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _decimal(v: float) -> str:
    """``v`` as decimal64 with 6 fraction digits; ValueError if that changes it."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if not math.isfinite(v) or float(s) != v:
        raise ValueError(f"next-hop-cache-refresh-interval {v!r} needs more than 6 decimal places")
    return s


_PLACEHOLDER = {"binding-ipv6info": "::", "binding-ipv4-addr": "0.0.0.0",
                "port-set": {"psid-len": 0, "psid": 0}, "br-ipv6-addr": "::"}


def dumps_ietf(config: Config, fmt: str = XML, binding_table_file: str | None = None) -> str:
    """``config`` as RFC 8676 (+ lwaftr-softwire-ext) XML or JSON text, checked by
    libyang; :func:`loads_ietf` reads it back equal (but for a missing name,
    written as DEFAULT_NAME).

    ``binding_table_file``: write this reference instead of inline entries (the
    caller writes the file).  ValueError, naming the setting, for what the
    target cannot express (see module docstring)."""
    if fmt not in (XML, JSON):
        raise ValueError(f"unknown format {fmt!r}")
    _check_mapped(config)
    ext, int_, cp = config.external, config.internal, config.control_plane
    if ext.flow_label != 0 or not ext.hairpinning:
        raise ValueError("the external (IPv4) side has no flow label or hairpinning setting")
    if not 0 <= int_.mtu - 40:
        raise ValueError(f"internal MTU {int_.mtu} is smaller than an IPv6 header "
                         f"(softwire-payload-mtu = MTU - 40)")
    v6: dict[str, Any] = {"generate-icmpv6-errors": int_.generate_icmp_errors,
                          f"{_X}allow-incoming-icmpv6": int_.allow_incoming_icmp}
    if int_.error_rate_limit_packets % int_.error_rate_limit_period == 0:
        v6["icmpv6-rate"] = int_.error_rate_limit_packets // int_.error_rate_limit_period
    bi: dict[str, Any] = {
        "name": config.name if config.name is not None else DEFAULT_NAME,
        "softwire-num-max": NUM_MAX,
        "softwire-payload-mtu": int_.mtu - 40,
        "softwire-path-mru": int_.mru,
        "enable-hairpinning": int_.hairpinning,
        "binding-table": {},
        "icmp-policy": {
            "icmpv4-errors": {"allow-incoming-icmpv4": ext.allow_incoming_icmp,
                              "generate-icmpv4-errors": ext.generate_icmp_errors},
            "icmpv6-errors": v6},
        f"{_X}external-interface": {"mtu": ext.mtu, "mru": ext.mru, **_side(ext, rate=True)},
        f"{_X}internal-interface": {"flow-label": int_.flow_label,
                                    **_side(int_, rate=int_.error_rate_limit_period != 1)},
        f"{_X}control-plane": {"mode": cp.mode, "answer-arp-for-softwires": cp.answer_arp_for_softwires,
                               "external-prefix-length": cp.external_prefix_length,
                               "internal-prefix-length": cp.internal_prefix_length},
        f"{_X}next-hop-cache-refresh-interval": _decimal(cp.next_hop_refresh_interval),
        f"{_X}instance": _dump_instances(config.instances),
    }
    if config.bgp != Bgp():
        bi[f"{_X}bgp"] = _dump_bgp(config.bgp)
    if config.ospf != Ospf():
        o = config.ospf
        bi[f"{_X}ospf"] = {"enable": o.enable, "area": o.area, "hello-interval": o.hello_interval,
                           "dead-interval": o.dead_interval, "cost": o.cost}
    if config.cpus:
        bi[f"{_X}cpu"] = list(config.cpus)
    b = config.bindings
    if b.version is not None:
        ver = {}
        if b.version.number is not None:
            ver["version"] = str(b.version.number)
        if b.version.date is not None:
            ver["date"] = b.version.date
        bi["binding-table-versioning"] = ver
    entries = None
    if binding_table_file is not None:
        bi["binding-table"][f"{_X}binding-table-file"] = binding_table_file
    elif len(b):
        entries = _dump_entries(b, fmt)
        bi["binding-table"]["binding-entry"] = [_PLACEHOLDER]
    text = yanglib.render({_TOP: {"binding": {"bind-instance": [bi]}}}, fmt)
    if entries is not None:
        text = _splice(text, fmt, entries)
    return text if text.endswith("\n") else text + "\n"


#: Config fields this module writes; any other must hold its default (a setting
#: added to the model but not yet to lwaftr-softwire-ext is refused, never dropped).
_MAPPED = {"external", "internal", "bindings", "instances", "name", "control_plane", "bgp", "ospf", "cpus"}


def _check_mapped(config: Config) -> None:
    for f in dataclasses.fields(Config):
        if f.name in _MAPPED or not f.compare:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(config, f.name) != default:
            raise ValueError(f"the {f.name} settings have no RFC 8676 / lwaftr-softwire-ext leaves yet")


def _dump_bgp(b: Bgp) -> dict[str, Any]:
    out: dict[str, Any] = {"enable": b.enable, "hold-time": b.hold_time, "keepalive-time": b.keepalive_time,
                           "bfd": b.bfd, "bfd-interval": f"{b.bfd_interval:.6f}".rstrip("0").rstrip("."),
                           "bfd-multiplier": b.bfd_multiplier}
    for key, value in (("local-as", b.local_as), ("peer-as", b.peer_as)):
        if value is not None:
            out[key] = value
    for key, family, prefixes in (("ipv4-prefix", socket.AF_INET, b.ipv4_prefixes),
                                  ("ipv6-prefix", socket.AF_INET6, b.ipv6_prefixes)):
        if prefixes:
            out[key] = [f"{socket.inet_ntop(family, a)}/{n}" for a, n in prefixes]
    peers = []
    for p in b.peers:
        d: dict[str, Any] = {"device": p.device}
        for key, family, value in (("ipv4-address", socket.AF_INET, p.ipv4_address),
                                   ("ipv6-address", socket.AF_INET6, p.ipv6_address)):
            if value is not None:
                d[key] = socket.inet_ntop(family, value)
        for key, value in (("ipv4-peer-as", p.ipv4_peer_as), ("ipv6-peer-as", p.ipv6_peer_as)):
            if value is not None:
                d[key] = value
        peers.append(d)
    if peers:
        out["peer"] = peers
    return out


def _side(p: InterfacePolicy, rate: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (("vlan-tag", p.vlan_tag), ("ingress-filter", p.ingress_filter),
                       ("egress-filter", p.egress_filter)):
        if value is not None:
            out[key] = value
    if rate:
        out["error-rate-limiting"] = {"packets": p.error_rate_limit_packets,
                                      "period": p.error_rate_limit_period}
    out["reassembly"] = {"max-fragments-per-packet": p.reassembly_max_fragments_per_packet,
                         "max-packets": p.reassembly_max_packets}
    return out


def _dump_instances(instances: list[Instance]) -> list[dict]:
    by_device: dict[str, list[Instance]] = {}
    for inst in instances:
        by_device.setdefault(inst.device, []).append(inst)
    out = []
    for dev, queues in by_device.items():
        if len({q.external_device for q in queues}) > 1:
            raise ValueError(f"instance {dev!r}: queues disagree on external-device")
        item: dict[str, Any] = {"device": dev}
        if queues[0].external_device is not None:
            item["external-device"] = queues[0].external_device
        item["queue"] = [{"id": q.queue_id,
                          "external-interface": _addresses(q.external, socket.AF_INET),
                          "internal-interface": _addresses(q.internal, socket.AF_INET6)}
                         for q in queues]
        out.append(item)
    return out


def _addresses(a: InterfaceAddresses, family: int) -> dict[str, Any]:
    nh = a.next_hop
    if (nh.ip is None) == (nh.mac is None):
        raise ValueError("a next-hop needs exactly one of ip and mac")
    out: dict[str, Any] = {"ip": socket.inet_ntop(family, a.ip), "mac": _mac_text(a.mac)}
    if a.vlan_tag is not None:
        out["vlan-tag"] = a.vlan_tag
    out["next-hop"] = {"ip": socket.inet_ntop(family, nh.ip)} if nh.ip is not None \
        else {"mac": _mac_text(nh.mac)}
    return out


def _softwire_text(b: Bindings, i: int) -> str:
    return f"softwire {fmt4(b.ipv4[i])} psid {b.psid[i]}"


def _dump_entries(b: Bindings, fmt: str) -> list[str]:
    """One line per binding entry; ValueError for what binding-entry cannot say."""
    n = len(b)
    k, r = b.psid_length.astype(np.int64), b.reserved_ports_bit_count.astype(np.int64)
    bad = np.flatnonzero(k > 15)
    if bad.size:
        raise ValueError(f"{_softwire_text(b, int(bad[0]))}: psid-length {k[bad[0]]} exceeds RFC 8676's "
                         f"psid-len range 0..15; keep the table in a binding-table file")
    off = offset_of_reserved(k, r)
    bad = np.flatnonzero(off < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{_softwire_text(b, i)}: reserved-ports-bit-count {r[i]} with psid-length {k[i]} "
                         f"has no RFC 8676 psid-offset ({_PORT_SET_RULE}); keep the table in a "
                         f"binding-table file")
    b4 = np.ascontiguousarray(b.b4_ipv6, np.uint8)
    v = b4.view(np.dtype((np.void, 16))).reshape(-1)
    order = np.argsort(v, kind="stable")
    dup = order[1:][v[order][1:] == v[order][:-1]]
    if dup.size:
        i = int(dup.min())
        first = int(np.flatnonzero(v == v[i])[0])
        raise ValueError(f"{_softwire_text(b, i)} and {_softwire_text(b, first)} share the B4 address "
                         f"{_ntop6(b4[i].tobytes())}, the key of RFC 8676's binding-entry list; keep "
                         f"the table in a binding-table file")
    brs = [_ntop6(a) for a in b.br_addresses]
    raw4 = b.ipv4.astype(">u4").tobytes()
    raw6 = b4.tobytes()
    ntop4 = socket.inet_ntop
    out = []
    add = out.append
    if fmt == XML:
        for i, (p, pl, a, bi) in enumerate(zip(b.psid.tolist(), k.tolist(), off.tolist(),
                                                b.br_index.tolist())):
            add(f"<binding-entry><binding-ipv6info>{ntop4(socket.AF_INET6, raw6[16 * i:16 * i + 16])}"
                f"</binding-ipv6info><binding-ipv4-addr>{ntop4(socket.AF_INET, raw4[4 * i:4 * i + 4])}"
                f"</binding-ipv4-addr><port-set>{f'<psid-offset>{a}</psid-offset>' if a else ''}"
                f"<psid-len>{pl}</psid-len><psid>{p}</psid></port-set>"
                f"<br-ipv6-addr>{brs[bi]}</br-ipv6-addr></binding-entry>")
    else:
        for i, (p, pl, a, bi) in enumerate(zip(b.psid.tolist(), k.tolist(), off.tolist(),
                                                b.br_index.tolist())):
            add(f'{{"binding-ipv6info": "{ntop4(socket.AF_INET6, raw6[16 * i:16 * i + 16])}", '
                f'"binding-ipv4-addr": "{ntop4(socket.AF_INET, raw4[4 * i:4 * i + 4])}", '
                f'"port-set": {{{f"{chr(34)}psid-offset{chr(34)}: {a}, " if a else ""}'
                f'"psid-len": {pl}, "psid": {p}}}, "br-ipv6-addr": "{brs[bi]}"}}')
    assert len(out) == n
    return out


def _splice(text: str, fmt: str, entries: list[str]) -> str:
    """Put ``entries`` where libyang printed the placeholder entry."""
    if fmt == XML:
        start = text.index("<binding-entry>")
        end = text.index("</binding-entry>", start) + len("</binding-entry>")
        sep = "\n"
    else:
        key = text.index('"binding-ipv6info": "::"')
        start = text.rindex("{", 0, key)
        end = text.index("}", text.index("}", key) + 1) + 1
        sep = ",\n"
    indent = text[text.rindex("\n", 0, start) + 1:start]
    return text[:start] + (sep + indent).join(entries) + text[end:]
