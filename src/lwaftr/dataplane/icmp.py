"""Builders for ICMP messages on Python frames (the examples and the tests' reference).

RFC 7596 section 8 and RFC 2473 section 8: errors go back to the sender of
the offending packet.  Like Snabb, errors carry as much of the offending
packet as fits (RFC 1812 4.3.2.3 for ICMPv4: 576 bytes in all; RFC 4443 2.4(c)
for ICMPv6: 1280), counted from after the Ethernet header (Ethernet padding
included, as on the wire).  Frames are built with zero MACs; the neighbour
stage fills them in on the way out.
"""
from __future__ import annotations

import struct

from lwaftr import wire as W


def ones_complement_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """16-bit one's complement sum (not inverted) of ``data``, RFC 1071."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = start + sum(memoryview(bytes(data)).cast("H"))  # native order words
    # Native little-endian words: swap the folded result back to network order.
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ((total & 0xFF) << 8) | (total >> 8)


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Internet checksum (inverted one's complement sum) of ``data``."""
    s = ones_complement_sum(data) + start
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv6_pseudo_sum(src: bytes, dst: bytes, length: int, next_header: int) -> int:
    """Non-inverted sum of the IPv6 pseudo-header (RFC 8200 8.1)."""
    return ones_complement_sum(src + dst + struct.pack("!IxxxB", length, next_header))


def ipv4_header(src: bytes, dst: bytes, proto: int, total_length: int, ttl: int = W.DEFAULT_TTL,
                tos: int = 0, ident: int = 0, flags_frag: int = 0) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, total_length, ident, flags_frag,
                                ttl, proto, 0, src, dst))
    struct.pack_into("!H", hdr, W.O_IPV4_CHECKSUM, checksum(hdr))
    return bytes(hdr)


def ipv6_header(src: bytes, dst: bytes, next_header: int, payload_length: int,
                hop_limit: int = W.DEFAULT_TTL, traffic_class: int = 0, flow_label: int = 0) -> bytes:
    vtcfl = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return struct.pack("!IHBB16s16s", vtcfl, payload_length, next_header, hop_limit, src, dst)


def eth_header(ethertype: int, dst: bytes = b"\0" * 6, src: bytes = b"\0" * 6) -> bytes:
    return dst + src + struct.pack("!H", ethertype)


def _icmp_body(icmp_type: int, code: int, rest: int, quoted: bytes) -> bytearray:
    return bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest)) + quoted


def icmpv4_error(src: bytes, dst: bytes, icmp_type: int, code: int, offending: bytes,
                 skip: int = 0, mtu: int | None = None) -> bytes:
    """An ICMPv4 error frame quoting ``offending[ETH_HLEN + skip:]``.

    ``mtu`` sets the next-hop MTU field (RFC 1191) for "fragmentation needed".
    """
    quoted = offending[W.ETH_HLEN + skip:]
    room = W.MAX_ICMPV4_PACKET - W.IPV4_HLEN - W.ICMP_HLEN
    quoted = quoted[:room]
    body = _icmp_body(icmp_type, code, (mtu or 0) & 0xFFFF, quoted)
    struct.pack_into("!H", body, W.O_ICMP_CHECKSUM, checksum(body))
    ip = ipv4_header(src, dst, W.PROTO_ICMP, W.IPV4_HLEN + len(body))
    return eth_header(W.ETHERTYPE_IPV4) + ip + bytes(body)


def icmpv6_error(src: bytes, dst: bytes, icmp_type: int, code: int, offending: bytes,
                 rest: int = 0) -> bytes:
    """An ICMPv6 error frame quoting ``offending[ETH_HLEN:]`` (RFC 4443)."""
    quoted = offending[W.ETH_HLEN:]
    room = W.MAX_ICMPV6_PACKET - W.IPV6_HLEN - W.ICMP_HLEN
    quoted = quoted[:room]
    body = _icmp_body(icmp_type, code, rest, quoted)
    s = ipv6_pseudo_sum(src, dst, len(body), W.PROTO_ICMPV6)
    struct.pack_into("!H", body, W.O_ICMP_CHECKSUM, checksum(body, s))
    ip = ipv6_header(src, dst, W.PROTO_ICMPV6, len(body))
    return eth_header(W.ETHERTYPE_IPV6) + ip + bytes(body)
