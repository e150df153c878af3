"""Completing transport checksums the kernel left unfinished.

A frame sent by a local stack over veth (checksum offload) arrives with only
the pseudo-header sum in its TCP/UDP checksum field; AF_PACKET flags it
``TP_STATUS_CSUMNOTREADY``.  Forwarded as it is, the far end drops it.  These
kernels recompute the whole checksum (RFC 793 / RFC 768 / RFC 1071) of the
IPv4 TCP or UDP packet, plain or carried in IPv6, or of a plain IPv6 TCP or
UDP packet (control traffic for the kernel's TAP), whatever the field held.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr import wire as W
from lwaftr.dataplane.bigendian import rd16, wr16

_FRAG_BITS = W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK


@numba.njit(cache=True, nogil=True)
def complete_l4_checksum(b, f, n):
    """Recompute the TCP/UDP checksum of the IPv4 packet in the frame at ``b[f:f+n]``
    (after Ethernet, or after Ethernet + IPv6 carrying IPv4).  Returns whether
    it did; fragments, other protocols and malformed frames are left alone."""
    if n < W.ETH_HLEN + W.IPV4_HLEN:
        return False
    et = rd16(b, f + W.O_ETH_TYPE)
    o = f + W.ETH_HLEN
    if et == W.ETHERTYPE_IPV6:
        if n < W.ETH_HLEN + W.IPV6_HLEN + 8:
            return False
        nh = b[o + W.O_IPV6_NEXT_HEADER]
        if nh == W.PROTO_TCP or nh == W.PROTO_UDP:
            return _complete_ipv6(b, o, f + n)         # e.g. BGP over IPv6 to the kernel's TAP
        if n < W.ETH_HLEN + W.IPV6_HLEN + W.IPV4_HLEN or nh != W.PROTO_IPV4:
            return False
        o += W.IPV6_HLEN
    elif et != W.ETHERTYPE_IPV4:
        return False
    if (b[o] >> 4) != 4:
        return False
    ihl = np.int64(b[o] & 0xF) * 4
    total = rd16(b, o + W.O_IPV4_TOTAL_LENGTH)
    proto = b[o + W.O_IPV4_PROTO]
    if ihl < W.IPV4_HLEN or total > f + n - o or rd16(b, o + W.O_IPV4_FLAGS) & _FRAG_BITS:
        return False
    if proto == W.PROTO_TCP:
        co = 16
    elif proto == W.PROTO_UDP:
        co = 6
    else:
        return False
    l4 = o + ihl
    l4len = total - ihl
    if l4len < co + 2:
        return False
    s = rd16(b, o + 12) + rd16(b, o + 14) + rd16(b, o + 16) + rd16(b, o + 18) + np.int64(proto) + l4len
    b[l4 + co] = 0
    b[l4 + co + 1] = 0
    end = l4 + (l4len & ~1)
    for j in range(l4, end, 2):
        s += rd16(b, j)
    if l4len & 1:
        s += np.int64(b[l4 + l4len - 1]) << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    cs = (~s) & 0xFFFF
    if proto == W.PROTO_UDP and cs == 0:
        cs = 0xFFFF                     # RFC 768: 0 means "no checksum"
    wr16(b, l4 + co, cs)
    return True


@numba.njit(cache=True, nogil=True)
def _complete_ipv6(b, o, end_of_frame):
    """TCP/UDP directly after the IPv6 header at ``o`` (RFC 8200 8.1 pseudo-header)."""
    proto = b[o + W.O_IPV6_NEXT_HEADER]
    l4len = rd16(b, o + W.O_IPV6_PAYLOAD_LENGTH)
    l4 = o + W.IPV6_HLEN
    co = 16 if proto == W.PROTO_TCP else 6
    if l4 + l4len > end_of_frame or l4len < co + 2:
        return False
    s = np.int64(proto) + l4len
    for j in range(o + W.O_IPV6_SRC, o + W.O_IPV6_SRC + 32, 2):
        s += rd16(b, j)
    b[l4 + co] = 0
    b[l4 + co + 1] = 0
    for j in range(l4, l4 + (l4len & ~1), 2):
        s += rd16(b, j)
    if l4len & 1:
        s += np.int64(b[l4 + l4len - 1]) << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    cs = (~s) & 0xFFFF
    if proto == W.PROTO_UDP and cs == 0:
        cs = 0xFFFF                     # UDP over IPv6: 0 is not allowed (RFC 8200 8.1)
    wr16(b, l4 + co, cs)
    return True


@numba.njit(cache=True, nogil=True)
def complete_flagged(buf, off, length, slots, flags, mask):
    """Complete the checksums of the slots whose ring status has ``mask`` set."""
    done = 0
    for i in range(slots.shape[0]):
        if flags[i] & mask:
            s = slots[i]
            if complete_l4_checksum(buf[s], np.int64(off[s]), np.int64(length[s])):
                done += 1
    return done
