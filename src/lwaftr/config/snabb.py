"""Load and write Snabb lwAFTR ``snabb-softwire-v3`` configuration data files.

The file holds one ``softwire-config { ... }`` container (schema:
``snabb-softwire-v3.yang``).  Loading is all-or-nothing: any syntax, schema or
consistency problem raises :class:`ConfigError` naming the file, the line and
the leaf path; no partial :class:`Config` is ever returned.

Everything but the binding table goes through a small schema-driven walker
(:func:`_walk`).  The binding table, which may hold millions of softwires,
takes a fast path: the parser turns each softwire written the way Snabb
writes it into one compact row of leaf strings (:class:`Compact`), the
columns are converted in bulk, and the cross-softwire checks (duplicates,
overlapping port sets) are numpy sorts.  When a bulk conversion fails, the
offending softwire goes through the walker, which produces the precise error.
Softwires written any other way (leaf order, quoting, comments inside) are
accepted too, about five times slower.
"""
from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any, Callable

import numpy as np

from lwaftr.config.bindings_check import (Names, Reject as _Reject, br_index as _br_index,
                                         check_port_sets, fmt4 as _fmt4, ints as _ints,
                                         ipv4 as _ipv4, ipv6 as _ipv6,
                                         optional_ints as _optional_ints, packed as _packed,
                                         pton4 as _pton4, pton6 as _pton6, uint as _uint)
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import (BUILT_IN, KERNEL, Bgp, BgpPeer, Bindings, Config, ControlPlane, Instance, Ospf,
                                 InterfaceAddresses, InterfacePolicy, NextHop, TableVersion)
from lwaftr.config.yangdata import Compact, Document, Node, no_gc, parse, quote

log = logging.getLogger(__name__)

__all__ = ["load_snabb", "loads_snabb", "dump_snabb", "validate_br_addresses"]

ROOT = "softwire-config"
#: Our extensions, in a second optional top-level container Snabb does not know
#: (delete it to take a file back to Snabb).
EXT = "lwaftr"
SOFTWIRE = f"{ROOT}/binding-table/softwire"


# --- leaf types: str -> value, ValueError with a message on bad input --------------------------

_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def _boolean(s: str) -> bool:
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError(f"expected boolean (true or false), got {s!r}")


def _string(s: str) -> str:
    return s


def _mac(s: str) -> bytes:
    if not _MAC_RE.fullmatch(s):
        raise ValueError(f"bad MAC address {s!r}")
    return bytes.fromhex(s.replace(":", ""))


def _mode(s: str) -> str:
    if s not in (KERNEL, BUILT_IN):
        raise ValueError(f"expected {KERNEL} or {BUILT_IN}, got {s!r}")
    return s


def _seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"expected seconds (a decimal number), got {s!r}") from None
    if not 0.01 <= v <= 3600:
        raise ValueError(f"{s} out of range 0.01..3600 seconds")
    return v


def _prefix(version: int) -> Callable[[str], tuple[bytes, int]]:
    """A converter ``ADDRESS/LENGTH`` -> (wire bytes, length); no host bits allowed."""
    import ipaddress

    def conv(s: str) -> tuple[bytes, int]:
        try:
            net = ipaddress.ip_network(s, strict=True)
        except ValueError as e:
            raise ValueError(f"bad IPv{version} prefix {s!r} ({e})") from None
        if net.version != version:
            raise ValueError(f"bad IPv{version} prefix {s!r}")
        return net.network_address.packed, net.prefixlen
    return conv


def _date_and_time(s: str) -> str:
    if not _DATE_RE.fullmatch(s):
        raise ValueError(f"bad date-and-time {s!r}")
    return s


_u8, _u16, _u32, _u64 = _uint(8), _uint(16), _uint(32), _uint(64)
_vlan = _uint(16, 0, 4095)


# --- schema --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    conv: Callable[[str], Any]
    default: Any = None
    mandatory: bool = False


@dataclass(frozen=True)
class Container:
    children: dict[str, "Leaf | Container | ListOf"]


@dataclass(frozen=True)
class LeafList:
    """A YANG leaf-list: the keyword repeated, one value each (a list of values)."""
    conv: Callable[[str], Any]


@dataclass(frozen=True)
class ListOf:
    """A YANG list; ``raw`` lists keep their entries as parse nodes (binding table)."""
    entry: Container
    raw: bool = False


def _policy_schema(internal: bool) -> Container:
    c: dict[str, Leaf | Container | ListOf] = {
        "mtu": Leaf(_u16, 1500 if internal else 1460),
        "mru": Leaf(_u16, 1460),
        "ingress-filter": Leaf(_string),
        "egress-filter": Leaf(_string),
        "allow-incoming-icmp": Leaf(_boolean, True),
        "generate-icmp-errors": Leaf(_boolean, True),
        "error-rate-limiting": Container({"packets": Leaf(_u32, 200),
                                          "period": Leaf(_uint(32, 1), 2)}),
        "reassembly": Container({"max-fragments-per-packet": Leaf(_uint(32, 1), 20),
                                 "max-packets": Leaf(_u32, 20000)}),
    }
    if internal:
        # The schema says uint32; an IPv6 flow label has 20 bits.
        c |= {"flow-label": Leaf(_uint(32, 0, 0xFFFFF), 0), "vlan-tag": Leaf(_vlan),
              "hairpinning": Leaf(_boolean, True)}
    return Container(c)


def _addresses_schema(ip: Callable[[str], bytes]) -> Container:
    # next-hop is a mandatory choice of ip | mac, checked in _next_hop.
    return Container({"ip": Leaf(ip, mandatory=True), "mac": Leaf(_mac, mandatory=True),
                      "vlan-tag": Leaf(_vlan),
                      "next-hop": Container({"ip": Leaf(ip), "mac": Leaf(_mac)})})


_SOFTWIRE = Container({
    "ipv4": Leaf(_ipv4, mandatory=True),
    "padding": Leaf(_u16, 0),
    "br-address": Leaf(_ipv6, mandatory=True),
    "b4-ipv6": Leaf(_ipv6, mandatory=True),
    "psid": Leaf(_u16, mandatory=True),
    "port-set": Container({"psid-length": Leaf(_uint(8, 0, 16), mandatory=True),
                           "reserved-ports-bit-count": Leaf(_uint(8, 0, 16), 0)}),
})

_SCHEMA = Container({
    "name": Leaf(_string),
    "external-interface": _policy_schema(False),
    "internal-interface": _policy_schema(True),
    "binding-table": Container({
        "softwire": ListOf(_SOFTWIRE, raw=True),
        "version": Container({"number": Leaf(_u64), "date": Leaf(_date_and_time)}),
    }),
    "instance": ListOf(Container({
        "device": Leaf(_string, mandatory=True),
        "external-device": Leaf(_string),
        "queue": ListOf(Container({
            "id": Leaf(_u8, mandatory=True),
            "external-interface": _addresses_schema(_ipv4),
            "internal-interface": _addresses_schema(_ipv6),
        })),
    })),
})

_EXT_SCHEMA = Container({
    "control-plane": Container({
        "mode": Leaf(_mode, KERNEL),
        "answer-arp-for-softwires": Leaf(_boolean, False),
        "external-prefix-length": Leaf(_uint(8, 1, 32), 32),
        "internal-prefix-length": Leaf(_uint(8, 1, 128), 128),
    }),
    "next-hop-cache-refresh-interval": Leaf(_seconds, 1.0),
    "cpu": LeafList(_u16),
    "bgp": Container({
        "enable": Leaf(_boolean, False),
        "local-as": Leaf(_uint(32, 1)),
        "peer-as": Leaf(_uint(32, 1)),
        "hold-time": Leaf(_uint(16, 3), 3),
        "keepalive-time": Leaf(_uint(16, 1), 1),
        "bfd": Leaf(_boolean, False),
        "bfd-interval": Leaf(_seconds, 0.1),
        "bfd-multiplier": Leaf(_uint(8, 1), 3),
        "ipv4-prefix": LeafList(_prefix(4)),
        "ipv6-prefix": LeafList(_prefix(6)),
        "peer": ListOf(Container({
            "device": Leaf(_string, mandatory=True),
            "ipv4-address": Leaf(_ipv4),
            "ipv4-peer-as": Leaf(_uint(32, 1)),
            "ipv6-address": Leaf(_ipv6),
            "ipv6-peer-as": Leaf(_uint(32, 1)),
        })),
    }),
    "ospf": Container({
        "enable": Leaf(_boolean, False),
        "area": Leaf(_uint(32), 0),
        "hello-interval": Leaf(_uint(16, 1), 1),
        "dead-interval": Leaf(_uint(32, 2), 4),
        "cost": Leaf(_uint(16, 1), 10),
    }),
})


# --- generic walker ------------------------------------------------------------------------------

class Rec(dict):
    """A walked container: keyword -> value (leaf value, Rec, or list); ``pos`` of each
    present child and ``at``, the offset of the container itself."""
    __slots__ = ("pos", "at")

    def __init__(self, at: int | None) -> None:
        super().__init__()
        self.at = at
        self.pos: dict[str, int] = {}


def _kind(node: Node) -> str:
    return "leaf" if node.children is None else "container"


def _walk(doc: Document, node: Node, schema: Container, path: str) -> Rec:
    """Check ``node``'s children against ``schema``; convert leaves; apply defaults."""
    node = doc.expand(node)
    rec = Rec(node.pos)
    known = schema.children
    children = node.children or ()
    raw = [kw for kw, sub in known.items() if type(sub) is ListOf and sub.raw]
    if raw and children:
        children = _take_raw(doc, rec, children, raw, path)
    for ch in children:
        kw = ch.keyword
        sub = known.get(kw)
        p = f"{path}/{kw}"
        if sub is None:
            raise doc.error(f"unknown {_kind(ch)} '{kw}'", ch.pos, p)
        if isinstance(sub, Leaf):
            if ch.children is not None:
                raise doc.error(f"'{kw}' is a leaf, not a container", ch.pos, p)
            if kw in rec:
                raise doc.error(f"duplicate leaf '{kw}' (first at line {doc.line_of(rec.pos[kw])})",
                                ch.pos, p)
            if ch.value is None:
                raise doc.error(f"leaf '{kw}' has no value", ch.pos, p)
            try:
                rec[kw] = sub.conv(ch.value)
            except ValueError as e:
                raise doc.error(str(e), ch.pos, p) from None
            rec.pos[kw] = ch.pos
            continue
        if isinstance(sub, LeafList):
            if ch.children is not None or ch.value is None:
                raise doc.error(f"'{kw}' is a leaf-list: give '{kw} VALUE;' once per value", ch.pos, p)
            try:
                rec.setdefault(kw, []).append(sub.conv(ch.value))
            except ValueError as e:
                raise doc.error(str(e), ch.pos, p) from None
            rec.pos.setdefault(kw, ch.pos)
            continue
        _check_block(doc, ch, sub, p)
        if isinstance(sub, ListOf):
            entry = _walk(doc, ch, sub.entry, p)
            rec[kw].append(entry) if kw in rec else _first_entry(rec, kw, entry)
        else:
            if kw in rec:
                raise doc.error(f"duplicate container '{kw}' (first at line {doc.line_of(rec.pos[kw])})",
                                ch.pos, p)
            rec[kw] = _walk(doc, ch, sub, p)
            rec.pos[kw] = ch.pos
    for kw, sub in schema.children.items():
        if kw in rec:
            continue
        if isinstance(sub, Leaf):
            if sub.mandatory:
                raise doc.error(f"missing mandatory leaf '{kw}'", node.pos, f"{path}/{kw}")
            if sub.default is not None:
                rec[kw] = sub.default
        elif isinstance(sub, Container):   # absent non-presence container: its defaults
            rec[kw] = _walk(doc, Node(kw, None, node.pos, []), sub, f"{path}/{kw}")
        else:
            rec[kw] = []
    return rec


def _first_entry(rec: Rec, kw: str, entry: Any) -> None:
    rec[kw] = [entry]
    rec.pos[kw] = entry.pos if isinstance(entry, Node) else entry.at


def _check_block(doc: Document, ch: Node, sub: "Container | ListOf", p: str) -> None:
    """A container or list entry must be ``keyword { ... }``."""
    what = "list" if isinstance(sub, ListOf) else "container"
    if ch.children is None:
        raise doc.error(f"'{ch.keyword}' is a {what}, not a leaf", ch.pos, p)
    if ch.value is not None:
        raise doc.error(f"unexpected argument {ch.value!r} to {what} '{ch.keyword}'", ch.pos, p)


def _take_raw(doc: Document, rec: Rec, children: list[Node], raw: list[str], path: str) -> list[Node]:
    """Put the entries of raw (bulk) lists into ``rec`` as nodes, in file order, with
    list comprehensions rather than the walker's loop; return the other children."""
    for kw in raw:
        entries = [c for c in children if c.keyword == kw]
        if not entries:
            continue
        for c in [c for c in entries if type(c.children) is not tuple]:
            _check_block(doc, c, ListOf(Container({})), f"{path}/{kw}")
        rec[kw] = entries
        rec.pos[kw] = entries[0].pos
        children = [c for c in children if c.keyword != kw] if len(entries) < len(children) else []
    return children


# --- mapping onto the model ----------------------------------------------------------------------

def loads_snabb(text: str, source: str = "<string>") -> Config:
    """Parse and validate snabb-softwire-v3 data text."""
    with no_gc():
        doc = parse(text, source, _SOFTWIRE_COMPACT)
        root, ext = _roots(doc)
        rec = _walk(doc, root, _SCHEMA, ROOT)
        ext_rec = _walk(doc, ext, _EXT_SCHEMA, EXT)
        instances = _instances(doc, rec)
        config = Config(external=_policy(rec["external-interface"], internal=False),
                        internal=_policy(rec["internal-interface"], internal=True),
                        instances=instances, bgp=_bgp(doc, ext_rec["bgp"], instances),
                        ospf=_ospf(doc, ext_rec["ospf"]),
                        bindings=_bindings(doc, rec["binding-table"]["softwire"],
                                           rec["binding-table"]["version"]),
                        name=rec.get("name"), control_plane=_control_plane(ext_rec),
                        cpus=_cpus(doc, ext_rec), source=source)
        del doc, rec    # free the (acyclic) tree by reference counting, before the GC sees it
    return config


def _roots(doc: Document) -> tuple[Node, Node]:
    """The one top-level ``softwire-config`` container and our optional ``lwaftr`` one."""
    found: dict[str, Node] = {}
    for n in doc.children:
        if n.keyword not in (ROOT, EXT):
            raise doc.error(f"unknown {_kind(n)} '{n.keyword}'", n.pos, n.keyword)
        if n.keyword in found:
            raise doc.error(f"duplicate container '{n.keyword}'", n.pos, n.keyword)
        if n.children is None:
            raise doc.error(f"'{n.keyword}' is a container, not a leaf", n.pos, n.keyword)
        if n.value is not None:
            raise doc.error(f"unexpected argument {n.value!r} to container '{n.keyword}'", n.pos, n.keyword)
        found[n.keyword] = n
    if ROOT not in found:
        raise ConfigError(f"no '{ROOT}' container", file=doc.source, path=ROOT)
    return found[ROOT], found.get(EXT) or Node(EXT, None, 0, [])


def _control_plane(r: Rec) -> ControlPlane:
    cp = r["control-plane"]
    return ControlPlane(mode=cp["mode"], answer_arp_for_softwires=cp["answer-arp-for-softwires"],
                        external_prefix_length=cp["external-prefix-length"],
                        internal_prefix_length=cp["internal-prefix-length"],
                        next_hop_refresh_interval=r["next-hop-cache-refresh-interval"])


def _cpus(doc: Document, r: Rec) -> tuple[int, ...]:
    """``lwaftr { cpu N; ... }``: a core per worker, none twice."""
    cpus = tuple(r["cpu"])
    for i, c in enumerate(cpus):
        if c in cpus[:i]:
            raise doc.error(f"cpu {c} is given twice: one worker per core", r.pos.get("cpu", r.at), f"{EXT}/cpu")
    return cpus


def _bgp(doc: Document, r: Rec, instances: list[Instance]) -> Bgp:
    path = f"{EXT}/bgp"
    peers: dict[str, BgpPeer] = {}
    where = {}
    for p in r["peer"]:
        dev = p["device"]
        if dev in peers:
            raise doc.error(f"duplicate bgp peer for device {dev!r}", p.pos["device"], f"{path}/peer/device")
        where[dev] = p.pos["device"]
        peers[dev] = BgpPeer(dev, ipv4_address=p.get("ipv4-address"), ipv4_peer_as=p.get("ipv4-peer-as"),
                             ipv6_address=p.get("ipv6-address"), ipv6_peer_as=p.get("ipv6-peer-as"))
    bgp = Bgp(enable=r["enable"], local_as=r.get("local-as"), peer_as=r.get("peer-as"),
              hold_time=r["hold-time"], keepalive_time=r["keepalive-time"], bfd=r["bfd"],
              bfd_interval=r["bfd-interval"], bfd_multiplier=r["bfd-multiplier"],
              ipv4_prefixes=tuple(r["ipv4-prefix"]), ipv6_prefixes=tuple(r["ipv6-prefix"]),
              peers=tuple(peers.values()))
    problem = bgp.problem(instances)
    if problem is not None:
        leaf, msg = problem
        at = r.pos.get(leaf, r.at)
        if leaf == "peer/device":           # the first entry naming no instance's device
            at = next(where[p.device] for p in bgp.peers if p.device not in {i.device for i in instances})
        raise doc.error(msg, at, f"{path}/{leaf}")
    return bgp


def _ospf(doc: Document, r: Rec) -> Ospf:
    ospf = Ospf(enable=r["enable"], area=r["area"], hello_interval=r["hello-interval"],
                dead_interval=r["dead-interval"], cost=r["cost"])
    problem = ospf.problem()
    if problem is not None:
        raise doc.error(problem[1], r.pos.get(problem[0], r.at), f"{EXT}/ospf/{problem[0]}")
    return ospf


def load_snabb(path: str) -> Config:
    """Load a snabb-softwire-v3 data file."""
    try:
        with open(path, encoding="utf-8-sig") as fh:   # (a BOM is dropped)
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=str(path)) from None
    return loads_snabb(text, str(path))


def _policy(r: Rec, internal: bool) -> InterfacePolicy:
    erl, ras = r["error-rate-limiting"], r["reassembly"]
    extra = dict(flow_label=r["flow-label"], hairpinning=r["hairpinning"],
                 vlan_tag=r.get("vlan-tag")) if internal else {}
    return InterfacePolicy(
        mtu=r["mtu"], mru=r["mru"], ingress_filter=r.get("ingress-filter"),
        egress_filter=r.get("egress-filter"), allow_incoming_icmp=r["allow-incoming-icmp"],
        generate_icmp_errors=r["generate-icmp-errors"],
        error_rate_limit_packets=erl["packets"], error_rate_limit_period=erl["period"],
        reassembly_max_fragments_per_packet=ras["max-fragments-per-packet"],
        reassembly_max_packets=ras["max-packets"], **extra)


def _instances(doc: Document, rec: Rec) -> list[Instance]:
    out: list[Instance] = []
    seen: dict[str, int] = {}
    path = f"{ROOT}/instance"
    for inst in rec["instance"]:
        dev = inst["device"]
        if dev in seen:
            raise doc.error(f"duplicate instance device {dev!r} (first at line {seen[dev]})",
                            inst.pos["device"], f"{path}/device")
        seen[dev] = doc.line_of(inst.at)
        if not inst["queue"]:
            raise doc.error(f"instance {dev!r} has no queue", inst.at, f"{path}/queue")
        ids: dict[int, int] = {}
        for q in inst["queue"]:
            if q["id"] in ids:
                raise doc.error(f"duplicate queue id {q['id']} (first at line {ids[q['id']]})",
                                q.pos["id"], f"{path}/queue/id")
            ids[q["id"]] = doc.line_of(q.at)
            out.append(Instance(
                device=dev, external_device=inst.get("external-device"), queue_id=q["id"],
                external=_addresses(doc, q["external-interface"], f"{path}/queue/external-interface"),
                internal=_addresses(doc, q["internal-interface"], f"{path}/queue/internal-interface")))
    if not out:
        raise doc.error("at least one instance is required", rec.at, path)
    return out


def _addresses(doc: Document, r: Rec, path: str) -> InterfaceAddresses:
    return InterfaceAddresses(ip=r["ip"], mac=r["mac"], vlan_tag=r.get("vlan-tag"),
                              next_hop=_next_hop(doc, r["next-hop"], f"{path}/next-hop"))


def _next_hop(doc: Document, r: Rec, path: str) -> NextHop:
    """The mandatory choice: exactly one of ``ip`` (resolve) and ``mac`` (static)."""
    if "ip" in r and "mac" in r:
        second = max(("ip", "mac"), key=r.pos.__getitem__)
        raise doc.error("'ip' and 'mac' are alternatives: give only one", r.pos[second],
                        f"{path}/{second}")
    if "ip" not in r and "mac" not in r:
        raise doc.error("missing next-hop: one of 'ip' or 'mac' is required", r.at, path)
    return NextHop(mac=r.get("mac"), ip=r.get("ip"))


# --- binding table -------------------------------------------------------------------------------

#: How Snabb (and dump_snabb) write a softwire: parsed with one regex match each.
#: Snabb prints list keys, then the other members in alphabetical order, defaults omitted.
_SOFTWIRE_COMPACT = Compact("softwire", ("ipv4", "psid", "b4-ipv6", "br-address", "padding?",
                                         ("port-set", ("psid-length", "reserved-ports-bit-count?"))))


_NAMES = Names(softwire=SOFTWIRE, psid=f"{SOFTWIRE}/psid",
               reserved=f"{SOFTWIRE}/port-set/reserved-ports-bit-count", port_set=f"{SOFTWIRE}/port-set")
_SW_KEYS = frozenset(_SOFTWIRE.children)
_PS_KEYS = frozenset(_SOFTWIRE.children["port-set"].children)


def _bindings(doc: Document, nodes: list[Node], version: Rec | None = None) -> Bindings:
    try:
        b = _bindings_fast(doc, nodes)
    except _Reject as r:
        _walk(doc, nodes[r.index], _SOFTWIRE, SOFTWIRE)        # raises the precise error
        raise doc.error("invalid softwire", nodes[r.index].pos, SOFTWIRE) from None
    if version:
        b.version = TableVersion(version.get("number"), version.get("date"))
    return b


_COLUMNS = 7     # ipv4, psid, b4-ipv6, br-address, padding, psid-length, reserved-ports-bit-count


def _collect(doc: Document, nodes: list[Node]) -> list[list[str | None]]:
    """The leaf strings of every softwire as columns, in file order (see _COLUMNS;
    None for an absent optional leaf).  Canonical softwires arrive as compact rows;
    others are checked one by one and turned into rows."""
    rows = list(map(attrgetter("children"), nodes))
    if set(map(type, rows)) != {tuple}:
        for i, r in enumerate(rows):
            if type(r) is not tuple:
                rows[i] = _softwire_row(doc, doc.expand(nodes[i]))
    flat = list(chain.from_iterable(rows))
    return [flat[j::_COLUMNS] for j in range(_COLUMNS)]


def _softwire_row(doc: Document, sw: Node) -> tuple[str | None, ...]:
    """The compact row of a softwire written some other way (leaf order, quoting, comments)."""
    ch = sw.children
    d = {c.keyword: c for c in ch}
    ps = d.get("port-set")
    if (len(d) == len(ch) and d.keys() <= _SW_KEYS and sw.value is None and ps is not None
            and type(ps.children) is list):
        pd = {c.keyword: c for c in ps.children}
        if len(pd) == len(ps.children) and pd.keys() <= _PS_KEYS and {"ipv4", "psid", "b4-ipv6",
                                                                        "br-address"} <= d.keys():
            leaves = (d["ipv4"], d["psid"], d["b4-ipv6"], d["br-address"], d.get("padding"),
                      pd.get("psid-length"), pd.get("reserved-ports-bit-count"))
            if leaves[5] is not None and all(c is None or (c.children is None and c.value is not None)
                                             for c in leaves):
                return tuple(None if c is None else c.value for c in leaves)
    _walk(doc, sw, _SOFTWIRE, SOFTWIRE)          # raises the precise error
    raise doc.error("invalid softwire", sw.pos, SOFTWIRE)


def _bindings_fast(doc: Document, nodes: list[Node]) -> Bindings:
    n = len(nodes)
    if n == 0:
        return Bindings.empty()
    v4s, psids, b4s, brs, pads, lens, rsvs = _collect(doc, nodes)
    ipv4 = np.frombuffer(_packed(v4s, _pton4), ">u4").astype(np.uint32)
    b4 = np.frombuffer(_packed(b4s, _pton6), np.uint8).reshape(n, 16).copy()
    psid, plen = _ints(psids, 16, 0xFFFF), _ints(lens, 8, 16)
    rsv = _optional_ints(rsvs, 8, 16)
    _optional_ints(pads, 16, 0xFFFF)          # checked, not kept
    br_addresses, br_index = _br_index(brs)
    line = doc.lines_of(np.fromiter(map(attrgetter("pos"), nodes), np.int64, n))
    unfit = psid >= (np.int64(1) << plen)
    if unfit.any():
        # Snabb's schema takes any uint16 psid, and its own generate-configuration writes
        # psid 2^k for psid-length k.  No port maps to such a softwire, and with reserved
        # ports it would catch those (a reserved port's psid is 2^k here and in Snabb), so
        # it is left out of the table: said once, not refused.
        i = int(np.flatnonzero(unfit)[0])
        log.warning("%s:%d: %d softwire(s) with a psid that does not fit their psid-length (here psid %d, "
                    "psid-length %d) can carry no traffic: left out", doc.source or "<config>", int(line[i]),
                    int(unfit.sum()), int(psid[i]), int(plen[i]))
        keep = ~unfit
        ipv4, b4, psid, plen, rsv = ipv4[keep], b4[keep], psid[keep], plen[keep], rsv[keep]
        br_index, line = br_index[keep], line[keep]
    check_port_sets(doc.source, ipv4, psid, plen, rsv, line, _NAMES)
    return Bindings(ipv4=ipv4, psid=psid.astype(np.uint16), psid_length=plen.astype(np.uint8),
                    reserved_ports_bit_count=rsv.astype(np.uint8), b4_ipv6=b4,
                    br_index=br_index, br_addresses=br_addresses, line=line)


def validate_br_addresses(config: Config, allowed: set[bytes],
                          path: str = f"{SOFTWIRE}/br-address") -> None:
    """Raise ConfigError if a softwire names a BR address (16 bytes) not in ``allowed``.

    snabb-softwire-v3 has no list of BR addresses (the softwires' br-address
    values define it), so :func:`loads_snabb` does not call this; sources that
    do list them (RFC 8676) do.
    """
    b = config.bindings
    bad = [i for i, a in enumerate(b.br_addresses) if a not in allowed]
    if not bad or not len(b):
        return
    rows = np.flatnonzero(np.isin(b.br_index, bad))
    if not rows.size:
        return
    i = int(rows[0])
    line = int(b.line[i]) if b.line is not None and b.line[i] > 0 else None
    br = socket.inet_ntop(socket.AF_INET6, b.br_addresses[int(b.br_index[i])])
    raise ConfigError(f"softwire {_fmt4(b.ipv4[i])} psid {b.psid[i]}: br-address {br} "
                      f"is not one of the BR's addresses", file=config.source, line=line, path=path)


# --- writing -------------------------------------------------------------------------------------

def _ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes(b))


def _mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _bool(v: bool) -> str:
    return "true" if v else "false"


def dump_snabb(config: Config) -> str:
    """``config`` as snabb-softwire-v3 data text; :func:`loads_snabb` reads it back equal.

    ValueError if ``config`` holds what the format cannot say (an external-side
    VLAN tag, flow label or hairpinning setting; one device with two
    external devices).
    """
    out = [f"{ROOT} {{"]
    if config.name is not None:
        out.append(f"  name {quote(config.name)};")
    out += _dump_bindings(config.bindings)
    out += _dump_policy("external-interface", config.external, internal=False)
    out += _dump_policy("internal-interface", config.internal, internal=True)
    out += _dump_instances(config.instances)
    out.append("}")
    out += _dump_extensions(config.control_plane, config.bgp, config.ospf, config.cpus)
    return "\n".join(out) + "\n"


def _dump_extensions(cp: ControlPlane, bgp: Bgp = Bgp(), ospf: Ospf = Ospf(), cpus: tuple[int, ...] = ()) -> list[str]:
    """Our ``lwaftr`` container, only when something differs from the defaults
    (so a plain Snabb configuration is written back as Snabb can read it)."""
    if cp == ControlPlane() and bgp == Bgp() and ospf == Ospf() and not cpus:
        return []
    return [f"{EXT} {{", "  control-plane {", f"    mode {cp.mode};",
            f"    answer-arp-for-softwires {_bool(cp.answer_arp_for_softwires)};",
            f"    external-prefix-length {cp.external_prefix_length};",
            f"    internal-prefix-length {cp.internal_prefix_length};", "  }",
            f"  next-hop-cache-refresh-interval {cp.next_hop_refresh_interval:g};",
            *(f"  cpu {c};" for c in cpus),
            *(_dump_bgp(bgp) if bgp != Bgp() else []),
            *(["  ospf {", f"    enable {_bool(ospf.enable)};", f"    area {ospf.area};",
               f"    hello-interval {ospf.hello_interval};", f"    dead-interval {ospf.dead_interval};",
               f"    cost {ospf.cost};", "  }"] if ospf != Ospf() else []), "}"]


def _dump_bgp(b: Bgp) -> list[str]:
    out = ["  bgp {", f"    enable {_bool(b.enable)};"]
    out += [f"    {k} {v};" for k, v in (("local-as", b.local_as), ("peer-as", b.peer_as)) if v is not None]
    out += [f"    hold-time {b.hold_time};", f"    keepalive-time {b.keepalive_time};",
            f"    bfd {_bool(b.bfd)};", f"    bfd-interval {b.bfd_interval:g};",
            f"    bfd-multiplier {b.bfd_multiplier};"]
    for kw, family, prefixes in (("ipv4-prefix", socket.AF_INET, b.ipv4_prefixes),
                                 ("ipv6-prefix", socket.AF_INET6, b.ipv6_prefixes)):
        out += [f"    {kw} {quote(f'{socket.inet_ntop(family, a)}/{n}')};" for a, n in prefixes]
    for p in b.peers:
        out += ["    peer {", f"      device {quote(p.device)};"]
        if p.ipv4_address is not None:
            out.append(f"      ipv4-address {socket.inet_ntop(socket.AF_INET, p.ipv4_address)};")
        if p.ipv4_peer_as is not None:
            out.append(f"      ipv4-peer-as {p.ipv4_peer_as};")
        if p.ipv6_address is not None:
            out.append(f"      ipv6-address {_ntop6(p.ipv6_address)};")
        if p.ipv6_peer_as is not None:
            out.append(f"      ipv6-peer-as {p.ipv6_peer_as};")
        out.append("    }")
    out.append("  }")
    return out


def _dump_bindings(b: Bindings) -> list[str]:
    if not len(b) and b.version is None:
        return []
    brs = [_ntop6(a) for a in b.br_addresses]
    raw4 = b.ipv4.astype(">u4").tobytes()
    raw6 = np.ascontiguousarray(b.b4_ipv6, np.uint8).tobytes()
    out = ["  binding-table {"]
    if b.version is not None:
        out.append("    version {")
        if b.version.number is not None:
            out.append(f"      number {b.version.number};")
        if b.version.date is not None:
            out.append(f"      date {quote(b.version.date)};")
        out.append("    }")
    for i, (p, pl, rb, bi) in enumerate(zip(b.psid.tolist(), b.psid_length.tolist(),
                                             b.reserved_ports_bit_count.tolist(), b.br_index.tolist())):
        out.append(
            f"    softwire {{\n"
            f"      ipv4 {socket.inet_ntop(socket.AF_INET, raw4[4 * i:4 * i + 4])};\n"
            f"      psid {p};\n"
            f"      b4-ipv6 {socket.inet_ntop(socket.AF_INET6, raw6[16 * i:16 * i + 16])};\n"
            f"      br-address {brs[bi]};\n"
            f"      port-set {{\n"
            f"        psid-length {pl};\n"
            + (f"        reserved-ports-bit-count {rb};\n" if rb else "")
            + "      }\n    }")
    out.append("  }")
    return out


def _dump_policy(name: str, p: InterfacePolicy, internal: bool) -> list[str]:
    if not internal and (p.vlan_tag is not None or p.flow_label != 0 or not p.hairpinning):
        raise ValueError("snabb-softwire-v3 external-interface has no vlan-tag, flow-label "
                         "or hairpinning")
    out = [f"  {name} {{", f"    mtu {p.mtu};", f"    mru {p.mru};"]
    if p.ingress_filter is not None:
        out.append(f"    ingress-filter {quote(p.ingress_filter)};")
    if p.egress_filter is not None:
        out.append(f"    egress-filter {quote(p.egress_filter)};")
    out += [f"    allow-incoming-icmp {_bool(p.allow_incoming_icmp)};",
            f"    generate-icmp-errors {_bool(p.generate_icmp_errors)};",
            "    error-rate-limiting {", f"      packets {p.error_rate_limit_packets};",
            f"      period {p.error_rate_limit_period};", "    }",
            "    reassembly {", f"      max-fragments-per-packet {p.reassembly_max_fragments_per_packet};",
            f"      max-packets {p.reassembly_max_packets};", "    }"]
    if internal:
        out.append(f"    flow-label {p.flow_label};")
        if p.vlan_tag is not None:
            out.append(f"    vlan-tag {p.vlan_tag};")
        out.append(f"    hairpinning {_bool(p.hairpinning)};")
    out.append("  }")
    return out


def _dump_instances(instances: list[Instance]) -> list[str]:
    by_device: dict[str, list[Instance]] = {}
    for inst in instances:
        by_device.setdefault(inst.device, []).append(inst)
    out = []
    for dev, queues in by_device.items():
        ext = {q.external_device for q in queues}
        if len(ext) > 1:
            raise ValueError(f"instance {dev!r}: queues disagree on external-device")
        out += ["  instance {", f"    device {quote(dev)};"]
        if queues[0].external_device is not None:
            out.append(f"    external-device {quote(queues[0].external_device)};")
        for q in queues:
            out += ["    queue {", f"      id {q.queue_id};"]
            out += _dump_addresses("external-interface", q.external, socket.AF_INET)
            out += _dump_addresses("internal-interface", q.internal, socket.AF_INET6)
            out.append("    }")
        out.append("  }")
    return out


def _dump_addresses(name: str, a: InterfaceAddresses, family: int) -> list[str]:
    out = [f"      {name} {{", f"        ip {socket.inet_ntop(family, a.ip)};",
           f"        mac {_mac_text(a.mac)};"]
    if a.vlan_tag is not None:
        out.append(f"        vlan-tag {a.vlan_tag};")
    nh = a.next_hop
    if (nh.ip is None) == (nh.mac is None):
        raise ValueError(f"{name} next-hop needs exactly one of ip and mac")
    out += ["        next-hop {",
            f"          ip {socket.inet_ntop(family, nh.ip)};" if nh.ip is not None
            else f"          mac {_mac_text(nh.mac)};",
            "        }", "      }"]
    return out
