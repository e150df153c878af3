"""Next-hop resolution and neighbour answering: ARP (RFC 826) and NDP (RFC 4861).

Slow-path stages, one untagged Ethernet frame at a time, behaving as Snabb's
``apps/ipv4/arp.lua`` and ``apps/lwaftr/ndp.lua`` do in the lwAFTR
(``program/lwaftr/setup.lua``):

* northbound (:meth:`from_wire`): ARP / NDP frames are consumed (answered,
  learned from, or silently dropped); everything else goes north untouched.
* southbound (:meth:`to_wire`): Ethernet source := own MAC, destination :=
  the next hop's MAC.  While the next hop is unresolved, Snabb does not read
  its southbound link at all, so frames wait there (up to the link's 1023
  packets) and leave once the next hop is known; frames beyond that are
  dropped by the full link.  The stages do the same: up to ``hold_limit``
  frames are held (FIFO) and released by :meth:`flush` / :meth:`poll`; only
  overflow is dropped, counted in ``drop-no-next-hop-ipv4/ipv6-packets``.
* :meth:`poll`: the ARP request / Neighbour Solicitation for the next hop,
  first at the first call, then every :data:`RETRY_INTERVAL` seconds while
  unresolved (Snabb sends it at the start of each ``push``, i.e. before the
  breath's frames); once resolved, the held frames.

Counters are added exactly where Snabb's apps add them.
"""
from __future__ import annotations

import struct
from collections import deque

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.control import HOLD_LIMIT, RETRY_INTERVAL  # noqa: F401
from lwaftr.dataplane.icmp import checksum, ipv6_pseudo_sum


MAC_LEN = 6
MAC_BROADCAST = b"\xff" * MAC_LEN
MAC_UNKNOWN = b"\x00" * MAC_LEN

# ARP over Ethernet for IPv4 (RFC 826, "Packet format").
ARP_HLEN = 28
ETH_ARP_LEN = W.ETH_HLEN + ARP_HLEN                # 42
O_ARP_HTYPE = 0
O_ARP_PTYPE = 2
O_ARP_HLEN = 4
O_ARP_PLEN = 5
O_ARP_OPER = 6
O_ARP_SHA = 8
O_ARP_SPA = 14
O_ARP_THA = 18
O_ARP_TPA = 24
ARP_HTYPE_ETHERNET = 1
ARP_PTYPE_IPV4 = W.ETHERTYPE_IPV4
ARP_PLEN_IPV4 = 4
ARP_OPER_REQUEST = 1
ARP_OPER_REPLY = 2

# NDP (RFC 4861 section 4).  Offsets from the start of the ICMPv6 header.
ICMPV6_RS = 133          # lowest NDP type (Router Solicitation)
ICMPV6_REDIRECT = 137    # highest NDP type
NDP_HOP_LIMIT = 255      # RFC 4861 7.1.1 / 7.1.2: must be 255
O_NDP_FLAGS = 4
O_NDP_TARGET = 8
NDP_NSNA_LEN = 24        # ICMP header + flags/reserved + target (RFC 4861 4.3, 4.4)
NDP_OPT_UNIT = 8         # option lengths count 8-octet units (RFC 4861 4.6)
OPT_SOURCE_LLA = 1
OPT_TARGET_LLA = 2
LLA_OPT_UNITS = 1        # an Ethernet link-layer address option is 8 octets (RFC 4861 4.6.1)
NA_FLAG_ROUTER = 1 << 31
NA_FLAG_SOLICITED = 1 << 30
NA_FLAG_OVERRIDE = 1 << 29   # not set: Snabb's NAs carry R|S only (the vectors agree)

ETH_IPV6_LEN = W.ETH_HLEN + W.IPV6_HLEN            # 54
ETH_NDP_MIN = ETH_IPV6_LEN + 4                     # Ethernet + IPv6 + ICMPv6 type/code/checksum
ETH_NSNA_MIN = ETH_IPV6_LEN + NDP_NSNA_LEN         # 78
O_FRAME_HOP_LIMIT = W.ETH_HLEN + W.O_IPV6_HOP_LIMIT
O_FRAME_SRC6 = W.ETH_HLEN + W.O_IPV6_SRC
O_FRAME_DST6 = W.ETH_HLEN + W.O_IPV6_DST

IPV6_UNSPECIFIED = b"\x00" * 16
IPV6_ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
MAC_ALL_NODES = b"\x33\x33\x00\x00\x00\x01"        # RFC 2464 7: 33:33 + last 32 bits
#: ff02::1:ff00:0/104 (RFC 4291 2.7.1): the first 13 bytes of a solicited-node address.
SOLICITED_NODE_PREFIX = bytes.fromhex("ff02" + "00" * 9 + "01ff")
IPV6_MULTICAST_FIRST_BYTE = 0xFF


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address of ``addr`` (RFC 4291 2.7.1)."""
    return SOLICITED_NODE_PREFIX + addr[13:]


def multicast_mac(group: bytes) -> bytes:
    """Ethernet address of an IPv6 multicast group (RFC 2464 section 7)."""
    return b"\x33\x33" + group[12:]


def _rewrite(frame: bytes, dst: bytes, src: bytes) -> bytes:
    # Like Snabb, a (theoretical) frame shorter than the header keeps its length.
    return (dst + src + frame[2 * MAC_LEN:])[:len(frame)]


class _NeighborStage:
    """What ARP and NDP share: the southbound side, holding and the request timer."""

    _C_OUT_REQ_BYTES: int
    _C_OUT_REQ_PACKETS: int
    _C_DROP_NO_NEXT_HOP: int

    def __init__(self, counters: np.ndarray, self_ip: bytes, self_mac: bytes,
                 next_ip: bytes | None, next_mac: bytes | None, hold_limit: int) -> None:
        if next_mac is None and next_ip is None:
            raise ValueError("a next hop needs a MAC address or an IP address to resolve")
        self.c = counters
        self.self_ip = bytes(self_ip)
        self.self_mac = bytes(self_mac)
        self.next_ip = None if next_ip is None else bytes(next_ip)
        self.next_mac: bytes | None = None if next_mac is None else bytes(next_mac)
        self.hold_limit = hold_limit
        self._held: deque[bytes] = deque()
        self.next_request: float | None = None     #: when (s) to ask for the next hop again; None: at once

    @property
    def resolved(self) -> bool:
        """Whether the next hop's MAC is known (configured or learned)."""
        return self.next_mac is not None

    @property
    def held(self) -> int:
        """Southbound frames waiting for the next hop to resolve."""
        return len(self._held)

    def _request(self) -> bytes:
        raise NotImplementedError

    def poll(self, now: float) -> list[bytes]:
        """Frames to send on their own, at ``now`` (seconds).

        Unresolved: the request for the next hop at the first call and then
        every :data:`RETRY_INTERVAL` seconds (Snabb sends it at the start of
        each ``push``, before that breath's frames).  Resolved: the frames
        held while it was not (see :meth:`flush`).
        """
        if self.next_mac is not None:
            return self.flush()
        if self.next_request is None:
            self.next_request = now
        if self.next_request > now:
            return []
        req = self._request()
        self.c[self._C_OUT_REQ_BYTES] += len(req)
        self.c[self._C_OUT_REQ_PACKETS] += 1
        self.next_request = now + RETRY_INTERVAL
        return [req]

    def flush(self) -> list[bytes]:
        """Once resolved, the held frames, rewritten, oldest first (else [])."""
        if self.next_mac is None or not self._held:
            return []
        out = [_rewrite(f, self.next_mac, self.self_mac) for f in self._held]
        self._held.clear()
        return out

    def to_wire(self, frame: bytes) -> bytes | None:
        """Southbound: Ethernet destination := next hop, source := own MAC.

        ``None`` while the next hop is unresolved (or older frames still wait):
        the frame is held for :meth:`flush`, or, with ``hold_limit`` frames
        already held, dropped and counted in ``drop-no-next-hop-*``.
        """
        if self.next_mac is not None and not self._held:
            return _rewrite(frame, self.next_mac, self.self_mac)
        if len(self._held) >= self.hold_limit:
            self.c[self._C_DROP_NO_NEXT_HOP] += 1
            return None
        self._held.append(frame)
        self.c[C.NEXT_HOP_HELD_PACKETS] += 1
        return None


class ArpStage(_NeighborStage):
    """IPv4 side: answers ARP requests for ``self_ip`` (and ``proxy_ips``),
    resolves ``next_ip`` from ARP replies (RFC 826), sets MACs southbound.

    As Snabb: frames shorter than an Ethernet ARP packet (42 bytes), or not
    ARP, go north (Snabb silently drops runts under 14 bytes here; we pass
    them on so that the core drops and counts them as malformed);
    ARP that is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4) is
    dropped uncounted; requests and replies are counted whether or not they
    concern us; other operations are dropped uncounted.  Only replies teach
    the next hop's MAC (every reply from ``next_ip``, even when known).
    """

    _C_OUT_REQ_BYTES = C.OUT_ARP_REQUEST_BYTES
    _C_OUT_REQ_PACKETS = C.OUT_ARP_REQUEST_PACKETS
    _C_DROP_NO_NEXT_HOP = C.DROP_NO_NEXT_HOP_IPV4_PACKETS

    def __init__(self, counters: np.ndarray, self_ip: bytes, self_mac: bytes,
                 next_ip: bytes | None, next_mac: bytes | None,
                 proxy_ips: frozenset[bytes] = frozenset(), *, hold_limit: int = HOLD_LIMIT) -> None:
        super().__init__(counters, self_ip, self_mac, next_ip, next_mac, hold_limit)
        #: Extra IPv4 addresses to answer ARP for, as ``self_mac`` (off by default).
        self.proxy_ips = frozenset(bytes(a) for a in proxy_ips)

    @staticmethod
    def _arp(eth_dst: bytes, eth_src: bytes, oper: int, sha: bytes, spa: bytes,
             tha: bytes, tpa: bytes) -> bytes:
        return (eth_dst + eth_src + struct.pack("!H", W.ETHERTYPE_ARP)
                + struct.pack("!HHBBH", ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, MAC_LEN, ARP_PLEN_IPV4, oper)
                + sha + spa + tha + tpa)

    def _request(self) -> bytes:
        """Broadcast "who has next_ip, tell self_ip" (RFC 826)."""
        assert self.next_ip is not None
        return self._arp(MAC_BROADCAST, self.self_mac, ARP_OPER_REQUEST,
                         self.self_mac, self.self_ip, MAC_UNKNOWN, self.next_ip)

    def from_wire(self, frame: bytes, now: float) -> tuple[bytes | None, list[bytes]]:
        """Northbound: ``(frame for the next stage or None, frames to send south)``."""
        n = len(frame)
        if n < ETH_ARP_LEN or frame[W.O_ETH_TYPE:W.ETH_HLEN] != b"\x08\x06":
            return frame, []
        a = W.ETH_HLEN
        htype, ptype, hlen, plen, oper = struct.unpack_from("!HHBBH", frame, a + O_ARP_HTYPE)
        if htype != ARP_HTYPE_ETHERNET or ptype != ARP_PTYPE_IPV4 or hlen != MAC_LEN or plen != ARP_PLEN_IPV4:
            return None, []
        sha = frame[a + O_ARP_SHA:a + O_ARP_SPA]
        spa = frame[a + O_ARP_SPA:a + O_ARP_THA]
        tpa = frame[a + O_ARP_TPA:a + ARP_HLEN]
        if oper == ARP_OPER_REQUEST:
            self.c[C.IN_ARP_REQUEST_BYTES] += n
            self.c[C.IN_ARP_REQUEST_PACKETS] += 1
            if tpa == self.self_ip or tpa in self.proxy_ips:
                # RFC 826: swap, fill in our address, opcode := reply, send
                # to the requester's hardware address (from the ARP body).
                reply = self._arp(sha, self.self_mac, ARP_OPER_REPLY, self.self_mac, tpa, sha, spa)
                self.c[C.OUT_ARP_REPLY_BYTES] += len(reply)
                self.c[C.OUT_ARP_REPLY_PACKETS] += 1
                return None, [reply]
        elif oper == ARP_OPER_REPLY:
            self.c[C.IN_ARP_REPLY_BYTES] += n
            self.c[C.IN_ARP_REPLY_PACKETS] += 1
            if self.next_ip is not None and spa == self.next_ip:
                self.next_mac = bytes(sha)
        return None, []


class NdpStage(_NeighborStage):
    """IPv6 side: answers Neighbour Solicitations for ``self_ip``, resolves
    ``next_ip`` from solicited Neighbour Advertisements (RFC 4861 7.2), sets
    MACs southbound.

    Every NDP message (ICMPv6 133-137 directly after the IPv6 header, frame at
    least 58 bytes) is consumed; other frames go north.  Messages failing the
    generic checks of RFC 4861 7.1 (hop limit 255, code 0, ICMPv6 checksum,
    IPv6 payload within the frame) are dropped uncounted; NS and NA are then
    counted, and dropped if too short (24 bytes), with a multicast target
    (NS), not solicited or not for ``next_ip`` (NA), or with a zero-length or
    overlong option (RFC 4861 4.6).  Only NS and NA are acted on.
    """

    _C_OUT_REQ_BYTES = C.OUT_NDP_NS_BYTES
    _C_OUT_REQ_PACKETS = C.OUT_NDP_NS_PACKETS
    _C_DROP_NO_NEXT_HOP = C.DROP_NO_NEXT_HOP_IPV6_PACKETS

    def __init__(self, counters: np.ndarray, self_ip: bytes, self_mac: bytes,
                 next_ip: bytes | None, next_mac: bytes | None, *, hold_limit: int = HOLD_LIMIT) -> None:
        super().__init__(counters, self_ip, self_mac, next_ip, next_mac, hold_limit)

    @staticmethod
    def _ndp(eth_dst: bytes, eth_src: bytes, ip_src: bytes, ip_dst: bytes, icmp_type: int,
             flags: int, target: bytes, opt_type: int, opt_mac: bytes) -> bytes:
        """An NS or NA with one link-layer address option, hop limit 255."""
        body = bytearray(struct.pack("!BBHI16sBB6s", icmp_type, 0, 0, flags, target,
                                     opt_type, LLA_OPT_UNITS, opt_mac))
        s = ipv6_pseudo_sum(ip_src, ip_dst, len(body), W.PROTO_ICMPV6)
        struct.pack_into("!H", body, W.O_ICMP_CHECKSUM, checksum(body, s))
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(body), W.PROTO_ICMPV6, NDP_HOP_LIMIT, ip_src, ip_dst)
        return eth_dst + eth_src + struct.pack("!H", W.ETHERTYPE_IPV6) + ip + bytes(body)

    def _request(self) -> bytes:
        """NS for ``next_ip`` to its solicited-node multicast address, with our
        source link-layer address (RFC 4861 7.2.2, 4.3)."""
        assert self.next_ip is not None
        group = solicited_node(self.next_ip)
        return self._ndp(multicast_mac(group), self.self_mac, self.self_ip, group,
                         W.ICMPV6_NS, 0, self.next_ip, OPT_SOURCE_LLA, self.self_mac)

    def from_wire(self, frame: bytes, now: float) -> tuple[bytes | None, list[bytes]]:
        """Northbound: ``(frame for the next stage or None, frames to send south)``."""
        if (len(frame) < ETH_NDP_MIN or frame[W.O_ETH_TYPE:W.ETH_HLEN] != b"\x86\xdd"
                or frame[W.ETH_HLEN + W.O_IPV6_NEXT_HEADER] != W.PROTO_ICMPV6
                or not ICMPV6_RS <= frame[ETH_IPV6_LEN] <= ICMPV6_REDIRECT):
            return frame, []
        return None, self._handle(frame)

    def _options_ok(self, frame: bytes, end: int, on_option) -> bool:
        """Walk the options (RFC 4861 4.6); False on a zero-length or overlong one."""
        off = ETH_NSNA_MIN
        while off < end:
            if off + 2 > end:
                return False
            otype, olen = frame[off], frame[off + 1]
            if olen == 0 or off + olen * NDP_OPT_UNIT > end:
                return False
            if not on_option(otype, olen, off):
                return False
            off += olen * NDP_OPT_UNIT
        return True

    def _handle(self, frame: bytes) -> list[bytes]:
        # Generic validity (RFC 4861 7.1.1 / 7.1.2); failures are not counted.
        icmp = ETH_IPV6_LEN
        if frame[O_FRAME_HOP_LIMIT] != NDP_HOP_LIMIT or frame[icmp + W.O_ICMP_CODE] != 0:
            return []
        plen = struct.unpack_from("!H", frame, W.ETH_HLEN + W.O_IPV6_PAYLOAD_LENGTH)[0]
        end = icmp + plen
        src = frame[O_FRAME_SRC6:O_FRAME_SRC6 + 16]
        dst = frame[O_FRAME_DST6:O_FRAME_DST6 + 16]
        if end > len(frame) or checksum(frame[icmp:end], ipv6_pseudo_sum(src, dst, plen, W.PROTO_ICMPV6)):
            return []
        kind = frame[icmp]
        if kind == W.ICMPV6_NA:
            self._neighbour_advertisement(frame, end)
            return []
        if kind == W.ICMPV6_NS:
            return self._neighbour_solicitation(frame, end, src, dst)
        return []

    def _neighbour_advertisement(self, frame: bytes, end: int) -> None:
        """Learn the next hop's MAC from a solicited NA (RFC 4861 7.2.5):
        its target link-layer address option, else the Ethernet source."""
        self.c[C.IN_NDP_NA_BYTES] += len(frame)
        self.c[C.IN_NDP_NA_PACKETS] += 1
        if self.next_mac is not None or end < ETH_NSNA_MIN:
            return
        flags = struct.unpack_from("!I", frame, ETH_IPV6_LEN + O_NDP_FLAGS)[0]
        target = frame[ETH_IPV6_LEN + O_NDP_TARGET:ETH_NSNA_MIN]
        if not flags & NA_FLAG_SOLICITED or target != self.next_ip:
            return

        def option(otype: int, olen: int, off: int) -> bool:
            if otype == OPT_TARGET_LLA:
                if olen != LLA_OPT_UNITS:
                    return False
                self._learn(frame[off + 2:off + 2 + MAC_LEN])
            return True

        if self._options_ok(frame, end, option):
            self._learn(frame[W.O_ETH_SRC:W.O_ETH_SRC + MAC_LEN])

    def _learn(self, mac: bytes) -> None:
        if self.next_mac is None:    # the first address found wins (Snabb)
            self.next_mac = bytes(mac)

    def _neighbour_solicitation(self, frame: bytes, end: int, src: bytes, dst: bytes) -> list[bytes]:
        """Answer an NS for ``self_ip`` with an NA (RFC 4861 7.2.3, 7.2.4)."""
        self.c[C.IN_NDP_NS_BYTES] += len(frame)
        self.c[C.IN_NDP_NS_PACKETS] += 1
        if end < ETH_NSNA_MIN:
            return []
        target = frame[ETH_IPV6_LEN + O_NDP_TARGET:ETH_NSNA_MIN]
        if target[0] == IPV6_MULTICAST_FIRST_BYTE or target != self.self_ip:
            return []
        unspecified = src == IPV6_UNSPECIFIED
        # RFC 4861 7.1.1: from "::" (DAD), only to a solicited-node group and
        # without a source link-layer address option.
        if unspecified and dst[:len(SOLICITED_NODE_PREFIX)] != SOLICITED_NODE_PREFIX:
            return []
        if not self._options_ok(frame, end, lambda t, _l, _o: not (unspecified and t == OPT_SOURCE_LLA)):
            return []
        if unspecified:   # 7.2.4: to all nodes, Solicited flag clear
            eth_dst, ip_dst, flags = MAC_ALL_NODES, IPV6_ALL_NODES, NA_FLAG_ROUTER
        else:             # back to the solicitor, as Snabb: to its Ethernet source
            eth_dst, ip_dst = frame[W.O_ETH_SRC:W.O_ETH_SRC + MAC_LEN], src
            flags = NA_FLAG_ROUTER | NA_FLAG_SOLICITED
        na = self._ndp(eth_dst, self.self_mac, self.self_ip, ip_dst, W.ICMPV6_NA, flags,
                       self.self_ip, OPT_TARGET_LLA, self.self_mac)
        self.c[C.OUT_NDP_NA_BYTES] += len(na)
        self.c[C.OUT_NDP_NA_PACKETS] += 1
        return [na]
