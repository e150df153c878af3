"""The lwAFTR proper, one frame at a time: the slow path and the reference.

This is the complete RFC 7596 behaviour on ``bytes`` frames (Ethernet, no
VLAN tag).  The compiled kernels in :mod:`lwaftr.dataplane.kernels` take the
common cases; every frame they decline comes here, and tests check that both
give the same bytes and counters.

A batch is processed like a Snabb breath: the B4 side first (frames either
answered at once or queued for a binding-table lookup, then the queue is
flushed), then the Internet side, then the hairpin queue (decapsulated
frames for another B4, and ICMP errors addressed to a B4).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.model import Config
from lwaftr.dataplane import icmp
from lwaftr.dataplane.icmperr import RL_V4, RL_V6, new_rate_state, rate_allow

FROM_INET = 1
HAIRPINNED = 2

_ZERO_MACS = b"\0" * 12
_ETH_V4 = _ZERO_MACS + struct.pack("!H", W.ETHERTYPE_IPV4)
_ETH_V6 = _ZERO_MACS + struct.pack("!H", W.ETHERTYPE_IPV6)


@dataclass
class RateLimiter:
    """At most ``packets`` per ``period`` seconds, in fixed windows (as Snabb).

    The state is row ``row`` of an array shared with the compiled kernels
    (:mod:`lwaftr.dataplane.icmperr`), so both paths draw on one budget."""
    packets: int
    period: float
    state: np.ndarray = field(default_factory=new_rate_state)
    row: int = RL_V4

    def allow(self, now: float) -> bool:
        return rate_allow(self.state, self.row, self.packets, self.period, now)


@dataclass
class CoreOutput:
    """Frames the core emits in one batch, in order, per destination."""
    v4: list[bytes] = field(default_factory=list)
    v6: list[bytes] = field(default_factory=list)


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "big")


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 2], "big")


def ipv4_header_ok(frame: bytes) -> bool:
    """Well-formed IPv4 after the Ethernet header: version, IHL, lengths, checksum."""
    n = len(frame) - W.ETH_HLEN
    if n < W.IPV4_HLEN:
        return False
    vihl = frame[W.ETH_HLEN]
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < W.IPV4_HLEN or ihl > n:
        return False
    total = _u16(frame, W.ETH_HLEN + W.O_IPV4_TOTAL_LENGTH)
    if total < ihl or total > n:
        return False
    return icmp.checksum(frame[W.ETH_HLEN:W.ETH_HLEN + ihl]) == 0


def ipv6_header_ok(frame: bytes) -> bool:
    n = len(frame) - W.ETH_HLEN
    if n < W.IPV6_HLEN or frame[W.ETH_HLEN] >> 4 != 6:
        return False
    return W.IPV6_HLEN + _u16(frame, W.ETH_HLEN + W.O_IPV6_PAYLOAD_LENGTH) <= n


def strip_tunnel_encap_limit(frame: bytes) -> bytes | None:
    """Remove a Destination Options header that holds only the Tunnel
    Encapsulation Limit option (RFC 2473 4.1.1; Linux ip6tnl adds it) and
    pads, when it is followed by IPv4.  None if the header holds anything
    else or is malformed."""
    o = W.ETH_HLEN + W.IPV6_HLEN
    if len(frame) < o + 8:
        return None
    nh, hlen = frame[o], (frame[o + 1] + 1) * 8
    if nh != W.PROTO_IPV4 or len(frame) < o + hlen:
        return None
    i, seen_tel = o + 2, False
    while i < o + hlen:
        t = frame[i]
        if t == W.IPV6_OPT_PAD1:
            i += 1
            continue
        if i + 2 > o + hlen:
            return None
        ln = frame[i + 1]
        if t == W.IPV6_OPT_TUNNEL_ENCAP_LIMIT and ln == 1 and not seen_tel:
            seen_tel = True
        elif t != W.IPV6_OPT_PADN:
            return None
        i += 2 + ln
    if i != o + hlen or not seen_tel:
        return None
    hdr = bytearray(frame[:o])
    struct.pack_into("!H", hdr, W.ETH_HLEN + W.O_IPV6_PAYLOAD_LENGTH,
                     _u16(frame, W.ETH_HLEN + W.O_IPV6_PAYLOAD_LENGTH) - hlen)
    hdr[W.ETH_HLEN + W.O_IPV6_NEXT_HEADER] = W.PROTO_IPV4
    return bytes(hdr) + frame[o + hlen:]


class LwAftrCore:
    """RFC 7596 lwAFTR logic: decapsulation, encapsulation, hairpinning, ICMP."""

    def __init__(self, config: Config, table: BindingTable, counters: np.ndarray,
                 rate_state: np.ndarray | None = None) -> None:
        """``rate_state``: the ICMP error rate limiters' state, shared with the kernels."""
        self.config = config
        self.table = table
        self.c = counters
        inst = config.instance
        self.ext, self.int = config.external, config.internal
        self.ext_ip: bytes = inst.external.ip
        self.rate_state = rate_state if rate_state is not None else new_rate_state()
        self.icmpv4_limit = RateLimiter(self.ext.error_rate_limit_packets, self.ext.error_rate_limit_period,
                                        self.rate_state, RL_V4)
        self.icmpv6_limit = RateLimiter(self.int.error_rate_limit_packets, self.int.error_rate_limit_period,
                                        self.rate_state, RL_V6)

    # -- counting helpers ---------------------------------------------------
    def _add(self, idx: int, n: int = 1) -> None:
        self.c[idx] += n

    def _drop_ipv4(self, frame: bytes, src: int) -> None:
        if src == FROM_INET:
            self._add(C.DROP_ALL_IPV4_IFACE_BYTES, len(frame))
            self._add(C.DROP_ALL_IPV4_IFACE_PACKETS)
        else:  # hairpinned: count the IPv6 packet it came in as
            self._add(C.DROP_ALL_IPV6_IFACE_BYTES, len(frame) + W.IPV6_HLEN)
            self._add(C.DROP_ALL_IPV6_IFACE_PACKETS)

    def _drop_ipv6(self, frame: bytes, bytes_idx: int | None, packets_idx: int | None) -> None:
        if bytes_idx is not None:
            self._add(bytes_idx, len(frame))
        if packets_idx is not None:
            self._add(packets_idx)
        self._add(C.DROP_ALL_IPV6_IFACE_BYTES, len(frame))
        self._add(C.DROP_ALL_IPV6_IFACE_PACKETS)

    # -- batch entry point --------------------------------------------------
    def process(self, from_b4: list[bytes], from_inet: list[bytes], now: float) -> CoreOutput:
        out = CoreOutput()
        hairpin: list[bytes] = []
        queue: list[tuple[bytes, int, int]] = []
        for f in from_b4:
            self._from_b4(f, queue, out, hairpin, now)
        self._flush_decap(queue, out, hairpin, now)
        equeue: list[tuple[bytes, int, int]] = []
        for f in from_inet:
            if _u16(f, W.O_ETH_TYPE) == W.ETHERTYPE_IPV4 and len(f) >= W.ETH_HLEN:
                self._add(C.IN_IPV4_BYTES, len(f))
                self._add(C.IN_IPV4_PACKETS)
                self._from_inet(f, FROM_INET, equeue, out, hairpin, now)
            else:
                self._add(C.DROP_MISPLACED_NOT_IPV4_BYTES, len(f))
                self._add(C.DROP_MISPLACED_NOT_IPV4_PACKETS)
                self._drop_ipv4(f, FROM_INET)
        self._flush_encap(equeue, FROM_INET, out, hairpin, now)
        while hairpin:
            batch, hairpin = hairpin, []
            hq: list[tuple[bytes, int, int]] = []
            for f in batch:
                self._from_inet(f, HAIRPINNED, hq, out, hairpin, now)
            self._flush_encap(hq, HAIRPINNED, out, hairpin, now)
        return out

    # -- B4 -> Internet ------------------------------------------------------
    def _from_b4(self, f: bytes, queue, out: CoreOutput, hairpin, now: float) -> None:
        if len(f) < W.ETH_HLEN or _u16(f, W.O_ETH_TYPE) != W.ETHERTYPE_IPV6:
            self._drop_ipv6(f, C.DROP_MISPLACED_NOT_IPV6_BYTES, C.DROP_MISPLACED_NOT_IPV6_PACKETS)
            return
        self._add(C.IN_IPV6_BYTES, len(f))
        self._add(C.IN_IPV6_PACKETS)
        if not ipv6_header_ok(f):
            self._drop_ipv6(f, C.DROP_MALFORMED_IPV6_BYTES, C.DROP_MALFORMED_IPV6_PACKETS)
            return
        proto = f[W.ETH_HLEN + W.O_IPV6_NEXT_HEADER]
        if proto == W.PROTO_FRAGMENT:
            # Reassembly precedes us; a fragment here means reassembly is off.
            self._drop_ipv6(f, None, C.DROP_IPV6_FRAG_DISABLED)
            return
        orig = f
        if proto == W.PROTO_DSTOPTS:
            stripped = strip_tunnel_encap_limit(f)
            if stripped is not None:
                f, proto = stripped, W.PROTO_IPV4
        if proto != W.PROTO_IPV4:
            if proto == W.PROTO_ICMPV6:
                if not self.int.allow_incoming_icmp:
                    self._drop_ipv6(f, C.DROP_IN_BY_POLICY_ICMPV6_BYTES, C.DROP_IN_BY_POLICY_ICMPV6_PACKETS)
                else:
                    self._icmpv6_incoming(f, out, hairpin, now)
            else:
                self._drop_ipv6(f, C.DROP_UNKNOWN_PROTOCOL_IPV6_BYTES, C.DROP_UNKNOWN_PROTOCOL_IPV6_PACKETS)
            return
        o4 = W.ETH_HLEN + W.IPV6_HLEN
        inner = f[W.ETH_HLEN + W.IPV6_HLEN:]
        if not _inner_ipv4_ok(inner):
            self._drop_ipv6(orig, C.DROP_MALFORMED_IPV6_BYTES, C.DROP_MALFORMED_IPV6_PACKETS)
            return
        ihl = (f[o4] & 0xF) * 4
        if f[o4 + W.O_IPV4_PROTO] == W.PROTO_ICMP:
            t = f[o4 + ihl]
            if t == W.ICMPV4_ECHO_REQUEST:
                port = _u16(f, o4 + ihl + W.O_ICMP_ECHO_ID)
            elif t == W.ICMPV4_ECHO_REPLY:
                port = 0
            else:
                emb = o4 + ihl + W.ICMP_HLEN
                port = _u16(f, emb + (f[emb] & 0xF) * 4) if len(f) >= emb + 1 else 0
        else:
            port = _u16(f, o4 + ihl)
        queue.append((f, _u32(f, o4 + W.O_IPV4_SRC), port, len(orig)))

    def _flush_decap(self, queue, out: CoreOutput, hairpin, now: float) -> None:
        for f, ipv4, port, orig_len in queue:
            hit = self.table.lookup(ipv4, port)
            src = f[W.ETH_HLEN + W.O_IPV6_SRC:W.ETH_HLEN + W.O_IPV6_SRC + 16]
            dst = f[W.ETH_HLEN + W.O_IPV6_DST:W.ETH_HLEN + W.O_IPV6_DST + 16]
            if hit is not None and hit[0] == src and hit[1] == dst:
                self._transmit_ipv4(_ETH_V4 + f[W.ETH_HLEN + W.IPV6_HLEN:], out, hairpin)
            else:
                self._add(C.DROP_NO_SOURCE_SOFTWIRE_IPV6_BYTES, orig_len)
                self._add(C.DROP_NO_SOURCE_SOFTWIRE_IPV6_PACKETS)
                self._add(C.DROP_ALL_IPV6_IFACE_BYTES, orig_len)
                self._add(C.DROP_ALL_IPV6_IFACE_PACKETS)
                # RFC 7596 5.1: ICMPv6 type 1 code 5 back to the sender.
                if not self.int.generate_icmp_errors:
                    self._add(C.DROP_OUT_BY_POLICY_ICMPV6_PACKETS)
                    continue
                br = hit[1] if hit is not None else dst
                err = icmp.icmpv6_error(br, src, W.ICMPV6_DST_UNREACHABLE, W.ICMPV6_CODE_POLICY_FAILED, f)
                self._transmit_icmpv6(err, out, now)

    def _transmit_ipv4(self, f: bytes, out: CoreOutput, hairpin) -> None:
        dst = _u32(f, W.ETH_HLEN + W.O_IPV4_DST)
        if self.int.hairpinning and self.table.is_managed(dst):
            self._add(C.HAIRPIN_IPV4_BYTES, len(f))
            self._add(C.HAIRPIN_IPV4_PACKETS)
            hairpin.append(f)
        else:
            self._add(C.OUT_IPV4_BYTES, len(f))
            self._add(C.OUT_IPV4_PACKETS)
            out.v4.append(f)

    def _transmit_icmpv6(self, err: bytes, out: CoreOutput, now: float) -> None:
        if self.icmpv6_limit.allow(now):
            self._add(C.OUT_ICMPV6_ERROR_BYTES, len(err))
            self._add(C.OUT_ICMPV6_ERROR_PACKETS)
            self._add(C.OUT_IPV6_BYTES, len(err))
            self._add(C.OUT_IPV6_PACKETS)
            out.v6.append(err)
        else:
            self._add(C.DROP_OVER_RATE_LIMIT_ICMPV6_BYTES, len(err))
            self._add(C.DROP_OVER_RATE_LIMIT_ICMPV6_PACKETS)

    def _icmpv6_incoming(self, f: bytes, out: CoreOutput, hairpin, now: float) -> None:
        """ICMPv6 errors about tunnelled packets -> ICMPv4 for the sender (RFC 2473 8.3)."""
        o = W.ETH_HLEN + W.IPV6_HLEN
        if len(f) < o + W.ICMP_HLEN:
            self._drop_ipv6(f, C.DROP_MALFORMED_IPV6_BYTES, C.DROP_MALFORMED_IPV6_PACKETS)
            return
        t, code = f[o], f[o + 1]
        if t == W.ICMPV6_PACKET_TOO_BIG:
            if code != 0:
                self._drop_ipv6(f, C.DROP_TOO_BIG_TYPE_BUT_NOT_CODE_ICMPV6_BYTES,
                                C.DROP_TOO_BIG_TYPE_BUT_NOT_CODE_ICMPV6_PACKETS)
                return
            mtu = _u16(f, o + W.O_ICMP_MTU) - W.IPV6_HLEN
            self._tunnel_unreachable(f, W.ICMPV4_CODE_FRAG_NEEDED, mtu, out, hairpin, now)
        elif t <= W.ICMPV6_PARAMETER_PROBLEM:
            if t == W.ICMPV6_TIME_EXCEEDED and code != W.ICMPV6_CODE_HOP_LIMIT:
                self._drop_ipv6(f, C.DROP_OVER_TIME_BUT_NOT_HOP_LIMIT_ICMPV6_BYTES,
                                C.DROP_OVER_TIME_BUT_NOT_HOP_LIMIT_ICMPV6_PACKETS)
                return
            self._tunnel_unreachable(f, W.ICMPV4_CODE_HOST_UNREACHABLE, None, out, hairpin, now)
        else:
            self._drop_ipv6(f, C.DROP_UNKNOWN_PROTOCOL_ICMPV6_BYTES, C.DROP_UNKNOWN_PROTOCOL_ICMPV6_PACKETS)

    def _tunnel_unreachable(self, f: bytes, code: int, mtu: int | None, out, hairpin, now) -> None:
        # The ICMPv6 error quotes our IPv6 packet; quote its inner IPv4 onwards.
        skip = W.IPV6_HLEN + W.ICMP_HLEN + W.IPV6_HLEN
        emb4 = W.ETH_HLEN + skip
        if len(f) < emb4 + W.IPV4_HLEN:
            self._drop_ipv6(f, C.DROP_MALFORMED_IPV6_BYTES, C.DROP_MALFORMED_IPV6_PACKETS)
            return
        dst = f[emb4 + W.O_IPV4_SRC:emb4 + W.O_IPV4_SRC + 4]
        err = icmp.icmpv4_error(self.ext_ip, dst, W.ICMPV4_DST_UNREACHABLE, code, f, skip=skip, mtu=mtu)
        self._transmit_icmpv4(err, f, None, out, hairpin, now)

    # -- Internet -> B4 ------------------------------------------------------
    def _from_inet(self, f: bytes, src: int, queue, out: CoreOutput, hairpin, now: float) -> None:
        if src == FROM_INET and not ipv4_header_ok(f):
            self._add(C.DROP_MALFORMED_IPV4_BYTES, len(f))
            self._add(C.DROP_MALFORMED_IPV4_PACKETS)
            self._drop_ipv4(f, src)
            return
        o = W.ETH_HLEN
        ihl = (f[o] & 0xF) * 4
        if f[o + W.O_IPV4_PROTO] == W.PROTO_ICMP:
            if not self.ext.allow_incoming_icmp:
                self._add(C.DROP_IN_BY_POLICY_ICMPV4_BYTES, len(f))
                self._add(C.DROP_IN_BY_POLICY_ICMPV4_PACKETS)
                self._drop_ipv4(f, src)
                return
            total = _u16(f, o + W.O_IPV4_TOTAL_LENGTH)
            body = f[o + ihl:o + total]
            if len(body) < W.ICMP_HLEN or icmp.ones_complement_sum(body) != 0xFFFF:
                # RFC 5508 REQ-?: silently drop ICMP with a bad checksum.
                self._add(C.DROP_BAD_CHECKSUM_ICMPV4_BYTES, len(f))
                self._add(C.DROP_BAD_CHECKSUM_ICMPV4_PACKETS)
                self._drop_ipv4(f, src)
                return
            t = body[0]
            if t == W.ICMPV4_ECHO_REQUEST:
                port = 0   # only softwires owning port 0 (whole address) are pingable
            elif t == W.ICMPV4_ECHO_REPLY:
                port = _u16(body, W.O_ICMP_ECHO_ID)   # RFC 7596 8.1
            else:
                emb = W.ICMP_HLEN
                qihl = (body[emb] & 0xF) * 4 if len(body) > emb else 0
                if len(body) < emb + W.IPV4_HLEN + 2 or len(body) < emb + qihl + 2:
                    port = -1                   # quotes too little to find its softwire
                else:
                    port = _u16(body, emb + qihl)
            queue.append((f, _u32(f, o + W.O_IPV4_DST), port))
            return
        flags = _u16(f, o + W.O_IPV4_FLAGS)
        if flags & (W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK):
            self._add(C.DROP_IPV4_FRAG_DISABLED)
            self._drop_ipv4(f, src)
            return
        total = _u16(f, o + W.O_IPV4_TOTAL_LENGTH)
        port = _u16(f, o + ihl + 2) if total >= ihl + 4 else -1
        queue.append((f, _u32(f, o + W.O_IPV4_DST), port))

    def _flush_encap(self, queue, src: int, out: CoreOutput, hairpin, now: float) -> None:
        for f, ipv4, port in queue:
            hit = self.table.lookup(ipv4, port) if port >= 0 else None
            if hit is None:
                self._unreachable_host(f, src, out, hairpin, now)
            else:
                self._encapsulate(f, hit[0], hit[1], src, out, hairpin, now)

    def _unreachable_host(self, f: bytes, src: int, out, hairpin, now) -> None:
        """RFC 7596 5.2: no softwire for (address, port): ICMPv4 type 3 code 1."""
        self._add(C.DROP_NO_DEST_SOFTWIRE_IPV4_BYTES, len(f))
        self._add(C.DROP_NO_DEST_SOFTWIRE_IPV4_PACKETS)
        if not self.ext.generate_icmp_errors:
            self._add(C.DROP_OUT_BY_POLICY_ICMPV4_PACKETS)
            self._drop_ipv4(f, src)
            return
        if f[W.ETH_HLEN + W.O_IPV4_PROTO] == W.PROTO_ICMP:
            # RFC 7596 8.1: silently drop unmatched incoming ICMPv4.
            self._add(C.DROP_IN_BY_RFC7596_ICMPV4_BYTES, len(f))
            self._add(C.DROP_IN_BY_RFC7596_ICMPV4_PACKETS)
            self._drop_ipv4(f, src)
            return
        to = f[W.ETH_HLEN + W.O_IPV4_SRC:W.ETH_HLEN + W.O_IPV4_SRC + 4]
        err = icmp.icmpv4_error(self.ext_ip, to, W.ICMPV4_DST_UNREACHABLE, W.ICMPV4_CODE_HOST_UNREACHABLE, f)
        self._transmit_icmpv4(err, f, src, out, hairpin, now)

    def _transmit_icmpv4(self, err: bytes, orig: bytes, orig_src: int | None, out, hairpin, now) -> None:
        if orig_src is not None:
            self._drop_ipv4(orig, orig_src)
        if not self.icmpv4_limit.allow(now):
            self._add(C.DROP_OVER_RATE_LIMIT_ICMPV4_BYTES, len(err))
            self._add(C.DROP_OVER_RATE_LIMIT_ICMPV4_PACKETS)
            return
        self._add(C.OUT_ICMPV4_ERROR_BYTES, len(err))
        self._add(C.OUT_ICMPV4_ERROR_PACKETS)
        # An error for a host behind a B4 is tunnelled (not counted as hairpin).
        if self.table.is_managed(_u32(err, W.ETH_HLEN + W.O_IPV4_DST)):
            hairpin.append(err)
        else:
            self._add(C.OUT_IPV4_BYTES, len(err))
            self._add(C.OUT_IPV4_PACKETS)
            out.v4.append(err)

    def _encapsulate(self, f: bytes, b4: bytes, br: bytes, src: int, out, hairpin, now) -> None:
        o = W.ETH_HLEN
        ttl = f[o + W.O_IPV4_TTL]
        if ttl <= 1:
            f = _with_ttl(f, 0) if ttl == 1 else f
            self._add(C.DROP_TTL_ZERO_IPV4_BYTES, len(f))
            self._add(C.DROP_TTL_ZERO_IPV4_PACKETS)
            if not self.ext.generate_icmp_errors:
                self._add(C.DROP_OUT_BY_POLICY_ICMPV4_PACKETS)
                self._drop_ipv4(f, src)
                return
            to = f[o + W.O_IPV4_SRC:o + W.O_IPV4_SRC + 4]
            err = icmp.icmpv4_error(self.ext_ip, to, W.ICMPV4_TIME_EXCEEDED, W.ICMPV4_CODE_TTL_EXCEEDED, f)
            self._transmit_icmpv4(err, f, src, out, hairpin, now)
            return
        f = _with_ttl(f, ttl - 1)
        payload = len(f) - W.ETH_HLEN
        mtu = self.int.mtu
        if payload + W.IPV6_HLEN > mtu and _u16(f, o + W.O_IPV4_FLAGS) & W.IPV4_FLAG_DF:
            # RFC 2473 7.2 / RFC 791: DF set and too big once tunnelled.
            self._add(C.DROP_OVER_MTU_BUT_DONT_FRAGMENT_IPV4_BYTES, len(f))
            self._add(C.DROP_OVER_MTU_BUT_DONT_FRAGMENT_IPV4_PACKETS)
            if not self.ext.generate_icmp_errors:
                self._add(C.DROP_OUT_BY_POLICY_ICMPV4_PACKETS)
                self._drop_ipv4(f, src)
                return
            to = f[o + W.O_IPV4_SRC:o + W.O_IPV4_SRC + 4]
            err = icmp.icmpv4_error(self.ext_ip, to, W.ICMPV4_DST_UNREACHABLE, W.ICMPV4_CODE_FRAG_NEEDED, f,
                                    mtu=mtu - W.IPV6_HLEN)
            self._transmit_icmpv4(err, f, src, out, hairpin, now)
            return
        tc = f[o + W.O_IPV4_TOS]
        hdr = icmp.ipv6_header(br, b4, W.PROTO_IPV4, payload, traffic_class=tc,
                               flow_label=self.int.flow_label)
        g = _ETH_V6 + hdr + f[W.ETH_HLEN:]
        self._add(C.OUT_IPV6_BYTES, len(g))
        self._add(C.OUT_IPV6_PACKETS)
        out.v6.append(g)


def _inner_ipv4_ok(inner: bytes) -> bool:
    if len(inner) < W.IPV4_HLEN:
        return False
    vihl = inner[0]
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < W.IPV4_HLEN or len(inner) < ihl + 4:
        return False
    return True


def _with_ttl(f: bytes, ttl: int) -> bytes:
    """``f`` with its IPv4 TTL lowered to ``ttl`` and the header checksum
    updated incrementally: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with m and
    m' the TTL/protocol word before and after (one's complement additions
    only: a two's complement difference, folded, is off by one when it
    borrows)."""
    o = W.ETH_HLEN
    b = bytearray(f)
    old = b[o + W.O_IPV4_TTL]
    proto = b[o + W.O_IPV4_PROTO]
    b[o + W.O_IPV4_TTL] = ttl
    csum = ((~_u16(b, o + W.O_IPV4_CHECKSUM)) & 0xFFFF) + ((~((old << 8) | proto)) & 0xFFFF) + ((ttl << 8) | proto)
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = (csum & 0xFFFF) + (csum >> 16)
    struct.pack_into("!H", b, o + W.O_IPV4_CHECKSUM, (~csum) & 0xFFFF)
    return bytes(b)
