"""Compiled control-plane stages: ARP and NDP answered in place, the punt to the kernel decided.

Two modes, as the tests' reference has (``tests/reference/``):

* built-in control plane: an ARP request for the router's IPv4 address gets the
  reply the reference's ``ArpStage`` writes (RFC 826), a Neighbour Solicitation
  for its IPv6 address the Neighbour Advertisement its ``NdpStage`` writes
  (RFC 4861 7.2.4), both byte for byte, in the request's slot; other ARP and
  NDP frames are consumed and counted as those stages count them.  The next hops' MACs are learned here
  too, in pass 2, so that what the batch sends uses them: every ARP reply from
  the IPv4 next hop teaches its MAC, the first solicited Neighbour Advertisement
  for the IPv6 next hop teaches its MAC while it is unknown (RFC 4861 7.2.5);
  while one is unknown, :func:`arp_request` and :func:`neighbour_solicitation`
  write what asks for it (the kernels send them every ``RETRY_INTERVAL``).
  (Frames towards an unresolved next hop wait in their slots:
  :func:`lwaftr.dataplane.kernels.fast_batch`.)
* kernel control plane: the reference's ``Punt`` split, frame for frame: what
  is the kernel's (``KERNEL``) leaves for its TAP after the ingress filter,
  counted ``to-kernel-*``; with ``answer-arp-for-softwires``, ARP
  requests for a softwire's address are answered in place.

Each side has a pass 1 (``classify*``: no side effects, only frames the kernels
left ``SLOW``, as received; built-in, IPv6 packets reassembled too, in a slot or
beyond one, for an NDP message that came in fragments) and a pass 2 (``apply*``: rewrites, counters),
as the kernels' own stages have.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import is_managed
from lwaftr.dataplane.account import account
from lwaftr.dataplane.bigendian import rd16, rd32, rd64
from lwaftr.dataplane.borrow import borrowed
from lwaftr.dataplane.bpfjit import refused as filtered
from lwaftr.dataplane.icmperr import ones_sum
from lwaftr.dataplane.pool import HEADROOM

#: Seconds between two ARP requests / NSs for an unresolved next hop (Snabb: 3).
RETRY_INTERVAL = 3.0
#: Frames held southbound while the next hop is unresolved: the capacity of a
#: Snabb link (a 1024-slot ring holds 1023 packets).
HOLD_LIMIT = 1023

# Verdicts, after the kernels' (kernels.SLOW .. kernels.RELAY)
SLOW = 0
ANSWER = 16     # answered in place (ARP reply, NA): leaves on its side after echo replies
CONSUME = 17    # taken by the ARP/NDP stage (or refused by a filter): counted, slot freed
KERNEL = 18     # the kernel's: leaves for the side's TAP

# What a control frame is (in ``rows``), for pass 2's counters
Q_SILENT = 1        # consumed uncounted (not Ethernet/IPv4 ARP, other operations, NDP failing RFC 4861 7.1)
Q_ARP_REQUEST = 2   # an ARP request for someone else
Q_ARP_FOR_US = 3    # an ARP request for the router's address: answered
Q_ARP_REPLY = 4     # an ARP reply from someone other than the next hop
Q_PROXY_ARP = 5     # kernel mode: an ARP request for a softwire's address: answered
Q_NS = 6            # a Neighbour Solicitation not answered
Q_NS_FOR_US = 7     # a Neighbour Solicitation for the router's address: answered
Q_NA = 8            # a Neighbour Advertisement (it may teach the IPv6 next hop's MAC)
Q_ARP_LEARN = 9     # an ARP reply from the IPv4 next hop: its MAC is learned

ETH = W.ETH_HLEN
V6 = W.IPV6_HLEN
_ARP = ETH                              # the ARP header's offset in the frame
ARP_FRAME = ETH + 28                    # an Ethernet ARP packet (RFC 826): 42 bytes
_ICMP6 = ETH + V6                       # the ICMPv6 header's offset in the frame
NSNA_MIN = _ICMP6 + 24                  # NS/NA: ICMP header, flags, target (RFC 4861 4.3, 4.4)
NA_FRAME = NSNA_MIN + 8                 # with one link-layer address option: 86 bytes
_NDP_MIN = _ICMP6 + 4
NDP_FIRST = 133                         # Router Solicitation .. Redirect (RFC 4861 4)
NDP_LAST = 137
_HOP_LIMIT = 255                        # RFC 4861 7.1.1 / 7.1.2
_NA_ROUTER = 0x80000000
_NA_SOLICITED = 0x40000000
_OPT_SOURCE_LLA = 1
_OPT_TARGET_LLA = 2


@numba.njit(cache=True, nogil=True, inline="always")
def _wr(b, o, v, k):
    """``v``'s low ``k`` bytes at ``b[o:o + k]``, big-endian."""
    u = np.uint64(v)
    for j in range(k - 1, -1, -1):
        b[o + j] = np.uint8(u & np.uint64(0xFF))
        u >>= np.uint64(8)


@numba.njit(cache=True, nogil=True)
def _arp_kind(b, f, self_ip, next_ip):
    """Built-in ARP: what ``ArpStage`` makes of the ARP frame at ``b[f:]`` (``Q_*``)."""
    a = f + _ARP
    if rd16(b, a) != 1 or rd16(b, a + 2) != W.ETHERTYPE_IPV4 or b[a + 4] != 6 or b[a + 5] != 4:
        return Q_SILENT
    oper = rd16(b, a + 6)
    if oper == 1:
        return Q_ARP_FOR_US if rd32(b, a + 24) == self_ip else Q_ARP_REQUEST
    if oper != 2:
        return Q_SILENT
    return Q_ARP_LEARN if next_ip >= 0 and rd32(b, a + 14) == next_ip else Q_ARP_REPLY


@numba.njit(cache=True, nogil=True)
def classify4(buf, off, length, slots, verdict, rows, first, punt, self_ip, next_ip, addr_tab,
              proxy_arp):
    """Pass 1, IPv4 side: the ``SLOW`` frames among ``slots[:first]`` that are ARP
    (built-in), or any that are the kernel's (kernel mode: the punt comes before
    every other stage), as :class:`ArpStage` / :meth:`Punt.split4` decide.
    Returns how many of them were ``SLOW``."""
    (buf, off, length, slots, verdict, rows, addr_tab) = borrowed((
        buf, off, length, slots, verdict, rows, addr_tab))
    k = 0
    for i in range(first):
        if verdict[i] != SLOW and not punt:
            continue
        s = slots[i]
        b = buf[s]
        f = np.int64(off[s])
        n = np.int64(length[s])
        et = rd16(b, f + 12) if n >= ETH else -1
        if not punt:
            if n < ARP_FRAME or et != W.ETHERTYPE_ARP:
                continue
            q = _arp_kind(b, f, self_ip, next_ip)
            verdict[i] = ANSWER if q == Q_ARP_FOR_US else CONSUME
            rows[i] = q
            k += 1
            continue
        v = KERNEL
        if et == W.ETHERTYPE_IPV4:
            if n < ETH + W.IPV4_HLEN:
                continue                # a runt: the core drops and counts it
            d = rd32(b, f + ETH + W.O_IPV4_DST)
            if not (d >= 0xE0000000 or (d == self_ip and not is_managed(addr_tab, d))):
                continue                # data
        elif et == W.ETHERTYPE_ARP and proxy_arp and n >= ARP_FRAME:
            a = f + _ARP
            tpa = rd32(b, a + 24)
            if rd16(b, a) == 1 and rd16(b, a + 2) == W.ETHERTYPE_IPV4 and b[a + 4] == 6 and b[a + 5] == 4 \
                    and rd16(b, a + 6) == 1 and tpa != self_ip and is_managed(addr_tab, tpa):
                v = ANSWER
                rows[i] = Q_PROXY_ARP
        if verdict[i] == SLOW:
            k += 1
        verdict[i] = v
    return k


@numba.njit(cache=True, nogil=True)
def _ns_answered(b, f, end, self_hi, self_lo):
    """Whether ``NdpStage`` answers the NS at ``b[f:]`` (its ICMPv6 message ending
    at ``f + end``): a target that is our address, from "::" only to a
    solicited-node group and without a source link-layer address option, and
    well-formed options (RFC 4861 7.1.1, 4.6)."""
    h = f + ETH
    t = f + _ICMP6 + 8
    if end < NSNA_MIN or b[t] == 0xFF or np.int64(rd64(b, t)) != self_hi or np.int64(rd64(b, t + 8)) != self_lo:
        return False
    unspecified = rd64(b, h + W.O_IPV6_SRC) == 0 and rd64(b, h + W.O_IPV6_SRC + 8) == 0
    if unspecified:
        d = h + W.O_IPV6_DST          # ff02::1:ff00:0/104 (RFC 4291 2.7.1)
        if rd16(b, d) != 0xFF02 or b[d + 11] != 1 or b[d + 12] != 0xFF:
            return False
        for j in range(2, 11):
            if b[d + j] != 0:
                return False
    o = NSNA_MIN
    while o < end:
        if o + 2 > end:
            return False
        otype = b[f + o]
        olen = np.int64(b[f + o + 1]) * 8
        if olen == 0 or o + olen > end or (unspecified and otype == _OPT_SOURCE_LLA):
            return False
        o += olen
    return True


@numba.njit(cache=True, nogil=True)
def na_teaches(b, f, end, next_hi, next_lo):
    """Where the MAC is that the Neighbour Advertisement at ``b[f:]`` (its ICMPv6
    message ending at ``f + end``) teaches for the next hop ``next_hi:next_lo``, as
    ``NdpStage`` learns it (RFC 4861 7.2.5): solicited, for that target; its first
    target link-layer address option, else (all options well-formed) its Ethernet
    source.  Returns the MAC's offset in ``b``, or -1 if it teaches nothing."""
    t = f + _ICMP6 + 8
    if end < NSNA_MIN or not (rd32(b, f + _ICMP6 + 4) & _NA_SOLICITED) or np.int64(rd64(b, t)) != next_hi \
            or np.int64(rd64(b, t + 8)) != next_lo:
        return -1
    found = -1
    o = NSNA_MIN
    while o < end:
        if o + 2 > end:
            return found
        otype = b[f + o]
        units = np.int64(b[f + o + 1])
        if units == 0 or o + units * 8 > end:
            return found
        if otype == _OPT_TARGET_LLA:
            if units != 1:
                return found
            if found < 0:
                found = f + o + 2
        o += units * 8
    return found if found >= 0 else f + 6


@numba.njit(cache=True, nogil=True)
def classify6(buf, off, length, slots, verdict, rows, first, punt, self_hi, self_lo, br_tab):
    """Pass 1, IPv6 side: as :func:`classify4`, for NDP (:class:`NdpStage`) and
    :meth:`Punt.split6`."""
    buf, off, length, slots, verdict, rows, br_tab = borrowed((buf, off, length, slots, verdict, rows, br_tab))
    k = 0
    for i in range(first):
        if verdict[i] != SLOW and not punt:
            continue
        s = slots[i]
        b = buf[s]
        f = np.int64(off[s])
        n = np.int64(length[s])
        h = f + ETH
        if not punt:
            if n < _NDP_MIN or rd16(b, f + 12) != W.ETHERTYPE_IPV6 or b[h + W.O_IPV6_NEXT_HEADER] != W.PROTO_ICMPV6 \
                    or not NDP_FIRST <= b[f + _ICMP6] <= NDP_LAST:
                continue
            plen = rd16(b, h + W.O_IPV6_PAYLOAD_LENGTH)
            if plen > n - _ICMP6:
                continue                # reassembly drops it as malformed
            q = Q_SILENT
            if b[h + W.O_IPV6_HOP_LIMIT] == _HOP_LIMIT and b[f + _ICMP6 + 1] == 0 and ones_sum(
                    b, f + _ICMP6, plen, ones_sum(b, h + W.O_IPV6_SRC, 32, plen + W.PROTO_ICMPV6)) == 0xFFFF:
                kind = b[f + _ICMP6]
                if kind == W.ICMPV6_NA:
                    q = Q_NA
                elif kind == W.ICMPV6_NS:
                    q = Q_NS_FOR_US if _ns_answered(b, f, _ICMP6 + plen, self_hi, self_lo) else Q_NS
            verdict[i] = ANSWER if q == Q_NS_FOR_US else CONSUME
            rows[i] = q
            k += 1
            continue
        if n >= ETH and rd16(b, f + 12) == W.ETHERTYPE_IPV6:
            if n < _NDP_MIN:
                continue                # a runt: the core drops and counts it
            d = h + W.O_IPV6_DST
            d0 = np.int64(rd64(b, d))
            d1 = np.int64(rd64(b, d + 8))
            if not (b[d] == 0xFF or (b[d] == 0xFE and (b[d + 1] & 0xC0) == 0x80)):
                br = False
                for j in range(br_tab.shape[0]):
                    row = br_tab[j]
                    if np.int64(rd64(row, 0)) == d0 and np.int64(rd64(row, 8)) == d1 and (d0 != 0 or d1 != 0):
                        br = True
                if br:
                    nh = b[h + W.O_IPV6_NEXT_HEADER]
                    if nh == W.PROTO_IPV4 or nh == W.PROTO_DSTOPTS or nh == W.PROTO_FRAGMENT or (
                            nh == W.PROTO_ICMPV6 and b[f + _ICMP6] < W.ICMPV6_ECHO_REQUEST):
                        continue        # softwire traffic and errors about it
                elif d0 != self_hi or d1 != self_lo:
                    continue            # data
        if verdict[i] == SLOW:
            k += 1
        verdict[i] = KERNEL
    return k


@numba.njit(cache=True, nogil=True, inline="always")
def tag(b, s, e, n, vid, off, length):
    """The slot ``s``'s frame is ``b[e:e + n]``, with the 802.1Q tag ``vid`` if ``vid >= 0``."""
    off[s] = e
    length[s] = n
    if vid < 0:
        return
    for j in range(12):
        b[e - W.VLAN_HLEN + j] = b[e + j]
    e -= W.VLAN_HLEN
    _wr(b, e + 12, W.ETHERTYPE_VLAN, 2)
    _wr(b, e + 14, vid, 2)
    _wr(b, e + 16, rd16(b, e + 12 + W.VLAN_HLEN), 2)
    off[s] = e
    length[s] = n + W.VLAN_HLEN


@numba.njit(cache=True, nogil=True)
def arp_reply(b, f, mac):
    """The ARP reply to the request at ``b[f:]``, in its place (42 bytes), as
    :class:`ArpStage` writes it: to the requester's hardware address, from
    ``mac``, for the requested address (RFC 826)."""
    a = f + _ARP
    for j in range(6):
        b[f + j] = b[a + 8 + j]             # Ethernet destination := the sender's hardware address
    spa = rd32(b, a + 14)
    tpa = rd32(b, a + 24)
    for j in range(6):
        b[a + 18 + j] = b[f + j]            # target hardware address := the sender's
        b[f + 6 + j] = mac[j]
        b[a + 8 + j] = mac[j]
    _wr(b, a + 6, 2, 2)                     # reply
    _wr(b, a + 14, tpa, 4)
    _wr(b, a + 24, spa, 4)


@numba.njit(cache=True, nogil=True)
def _ndp(b, f, mac, self_hi, self_lo, kind, flags, target_hi, target_lo, option):
    """The rest of an NS or NA at ``b[f:]`` (86 bytes; its Ethernet and IPv6
    destinations written), as :meth:`NdpStage._ndp` writes it: from our MAC and
    address, hop limit 255, the message (``kind``, ``flags``, the target) with one
    link-layer address option (``option``) of our MAC, checksummed."""
    h = f + ETH
    for j in range(6):
        b[f + 6 + j] = mac[j]
    _wr(b, f + 12, W.ETHERTYPE_IPV6, 2)
    _wr(b, h, 0x60000000, 4)
    _wr(b, h + W.O_IPV6_PAYLOAD_LENGTH, NA_FRAME - _ICMP6, 2)
    b[h + W.O_IPV6_NEXT_HEADER] = W.PROTO_ICMPV6
    b[h + W.O_IPV6_HOP_LIMIT] = _HOP_LIMIT
    _wr(b, h + W.O_IPV6_SRC, self_hi, 8)
    _wr(b, h + W.O_IPV6_SRC + 8, self_lo, 8)
    ic = f + _ICMP6
    b[ic] = kind
    b[ic + 1] = 0
    _wr(b, ic + 2, 0, 2)
    _wr(b, ic + 4, flags, 4)
    _wr(b, ic + 8, target_hi, 8)
    _wr(b, ic + 16, target_lo, 8)
    b[ic + 24] = option
    b[ic + 25] = 1
    for j in range(6):
        b[ic + 26 + j] = mac[j]
    ps = ones_sum(b, h + W.O_IPV6_SRC, 32, NA_FRAME - _ICMP6 + W.PROTO_ICMPV6)
    _wr(b, ic + 2, (~ones_sum(b, ic, NA_FRAME - _ICMP6, ps)) & 0xFFFF, 2)


@numba.njit(cache=True, nogil=True)
def neighbour_advertisement(b, f, mac, self_hi, self_lo):
    """The NA answering the NS at ``b[f:]``, in its place (86 bytes), as
    :class:`NdpStage` writes it (RFC 4861 7.2.4): from "::" to all nodes with
    the Router flag, else back to the solicitor (its Ethernet source) with Router
    and Solicited; our address as target, our MAC as target link-layer address."""
    h = f + ETH
    unspecified = rd64(b, h + W.O_IPV6_SRC) == 0 and rd64(b, h + W.O_IPV6_SRC + 8) == 0
    if unspecified:
        _wr(b, f, 0x333300000001, 6)
        _wr(b, h + W.O_IPV6_DST, 0xFF02000000000000, 8)
        _wr(b, h + W.O_IPV6_DST + 8, 1, 8)
        flags = np.int64(_NA_ROUTER)
    else:
        for j in range(6):
            b[f + j] = b[f + 6 + j]
        for j in range(16):
            b[h + W.O_IPV6_DST + j] = b[h + W.O_IPV6_SRC + j]
        flags = np.int64(_NA_ROUTER | _NA_SOLICITED)
    _ndp(b, f, mac, self_hi, self_lo, np.int64(W.ICMPV6_NA), flags, self_hi, self_lo, np.int64(_OPT_TARGET_LLA))


@numba.njit(cache=True, nogil=True)
def arp_request(b, f, mac, self_ip, next_ip):
    """Broadcast "who has ``next_ip``, tell ``self_ip``" at ``b[f:]`` (42 bytes), as
    :class:`ArpStage` writes it (RFC 826)."""
    a = f + _ARP
    _wr(b, f, 0xFFFFFFFFFFFF, 6)
    for j in range(6):
        b[f + 6 + j] = mac[j]
        b[a + 8 + j] = mac[j]
        b[a + 18 + j] = 0
    _wr(b, f + 12, W.ETHERTYPE_ARP, 2)
    _wr(b, a, 1, 2)
    _wr(b, a + 2, W.ETHERTYPE_IPV4, 2)
    b[a + 4] = 6
    b[a + 5] = 4
    _wr(b, a + 6, 1, 2)
    _wr(b, a + 14, self_ip, 4)
    _wr(b, a + 24, next_ip, 4)


@numba.njit(cache=True, nogil=True)
def neighbour_solicitation(b, f, mac, self_hi, self_lo, next_hi, next_lo):
    """The Neighbour Solicitation for ``next_hi:next_lo`` at ``b[f:]`` (86 bytes), as
    :class:`NdpStage` writes it (RFC 4861 7.2.2, 4.3): to the target's solicited-node
    group (RFC 4291 2.7.1) and its multicast MAC (RFC 2464 7), from our address, with
    our MAC as source link-layer address."""
    h = f + ETH
    low24 = next_lo & 0xFFFFFF
    _wr(b, f, 0x3333FF000000 | low24, 6)
    _wr(b, h + W.O_IPV6_DST, 0xFF02000000000000, 8)
    _wr(b, h + W.O_IPV6_DST + 8, 0x1FF000000 | low24, 8)
    _ndp(b, f, mac, self_hi, self_lo, np.int64(W.ICMPV6_NS), np.int64(0), next_hi, next_lo,
         np.int64(_OPT_SOURCE_LLA))


@numba.njit(cache=True, nogil=True)
def request(buf, off, length, free_list, n_free, four, mac, self_hi, self_lo, next_hi, next_lo, vid, flt, fout,
            counters):
    """What asks for an unresolved next hop, in a slot of its own: the ARP request
    (``four``; ``self_hi``, ``next_hi``: the IPv4 addresses) or the Neighbour
    Solicitation, counted, through the egress filter (refused: counted, freed),
    tagged, as the reference's neighbour stages send it.  Returns the slot, or -1."""
    n = ARP_FRAME if four else NA_FRAME
    if four:
        counters[C.OUT_ARP_REQUEST_BYTES] += n
        counters[C.OUT_ARP_REQUEST_PACKETS] += 1
    else:
        counters[C.OUT_NDP_NS_BYTES] += n
        counters[C.OUT_NDP_NS_PACKETS] += 1
    if n_free[0] == 0:
        account(counters, C.E_POOL_EXHAUSTED, n)
        return -1
    n_free[0] -= 1
    s = free_list[n_free[0]]
    b = buf[s]
    f = np.int64(HEADROOM)
    if four:
        arp_request(b, f, mac, self_hi, next_hi)
    else:
        neighbour_solicitation(b, f, mac, self_hi, self_lo, next_hi, next_lo)
    if filtered(flt, fout, b, f, n):
        account(counters, C.E_EGRESS_FILTER_IPV4 if four else C.E_EGRESS_FILTER_IPV6, n)
        free_list[n_free[0]] = s
        n_free[0] += 1
        return -1
    counters[C.OUT_IPV4_FRAG_NOT if four else C.OUT_IPV6_FRAG_NOT] += 1
    tag(b, s, f, n, vid, off, length)
    return s


@numba.njit(cache=True, nogil=True)
def apply4(buf, off, length, slots, verdict, rows, err, first, mac, next_mac, resolved, vid, flt, fin, fout,
           counters):
    """Pass 2, IPv4 side, for what :func:`classify4` took: the counters the slow
    path adds (reassembly's "unneeded" and the ingress filter before the ARP
    stage; the punt's filter and ``to-kernel``), the replies written, filtered,
    counted and tagged, the next hop's MAC learned (into ``next_mac``, and
    ``resolved[0] = 1``).  A frame refused by a filter becomes ``CONSUME``, with its
    error code in ``err`` (accounted by :func:`~lwaftr.dataplane.account.account`)."""
    (buf, off, length, slots, verdict, rows, err, mac, next_mac, resolved, counters) = borrowed((
        buf, off, length, slots, verdict, rows, err, mac, next_mac, resolved, counters))
    for i in range(first):
        v = verdict[i]
        if v < ANSWER:
            continue
        s = slots[i]
        b = buf[s]
        f = np.int64(off[s])
        n = np.int64(length[s])
        q = rows[i]
        refused = filtered(flt, fin, b, f, n)
        if v == KERNEL:
            if refused:
                account(counters, C.E_INGRESS_FILTER_IPV4, n)
                err[i] = C.E_INGRESS_FILTER_IPV4
                verdict[i] = CONSUME
            else:
                counters[C.TO_KERNEL_IPV4_INTERFACE_PACKETS] += 1
            continue
        if q != Q_PROXY_ARP:            # the punt answers before reassembly and the filter
            counters[C.IN_IPV4_FRAG_REASSEMBLY_UNNEEDED] += 1
            if refused:
                account(counters, C.E_INGRESS_FILTER_IPV4, n)
                err[i] = C.E_INGRESS_FILTER_IPV4
                verdict[i] = CONSUME
                continue
        if q == Q_ARP_REQUEST or q == Q_ARP_FOR_US or q == Q_PROXY_ARP:
            counters[C.IN_ARP_REQUEST_BYTES] += n
            counters[C.IN_ARP_REQUEST_PACKETS] += 1
        elif q == Q_ARP_REPLY or q == Q_ARP_LEARN:
            counters[C.IN_ARP_REPLY_BYTES] += n
            counters[C.IN_ARP_REPLY_PACKETS] += 1
            if q == Q_ARP_LEARN:        # every reply from the next hop (RFC 826: it may have moved)
                for j in range(6):
                    next_mac[j] = b[f + _ARP + 8 + j]
                resolved[0] = 1
        if v != ANSWER:
            continue
        arp_reply(b, f, mac)
        counters[C.OUT_ARP_REPLY_BYTES] += ARP_FRAME
        counters[C.OUT_ARP_REPLY_PACKETS] += 1
        if filtered(flt, fout, b, f, ARP_FRAME):
            account(counters, C.E_EGRESS_FILTER_IPV4, ARP_FRAME)
            err[i] = C.E_EGRESS_FILTER_IPV4
            verdict[i] = CONSUME
            continue
        counters[C.OUT_IPV4_FRAG_NOT] += 1
        tag(b, s, f, ARP_FRAME, vid, off, length)


@numba.njit(cache=True, nogil=True)
def apply6(buf, off, length, slots, verdict, rows, err, first, whole, mac, self_hi, self_lo, next_mac, resolved,
           next_ip, vid, flt, fin, fout, counters):
    """Pass 2, IPv6 side, for what :func:`classify6` took among ``slots[:first]`` (as
    :func:`apply4`; from ``whole`` on, reassembled packets, which reassembly has counted):
    the first Neighbour Advertisement that teaches the next hop's MAC while it is
    unknown (:func:`na_teaches`) writes it into ``next_mac`` and sets ``resolved[0]``.
    ``next_ip``: the next hop's address as (1 if configured, high word, low word)."""
    (buf, off, length, slots, verdict, rows, err, mac, next_mac, resolved, next_ip, counters) = borrowed((
        buf, off, length, slots, verdict, rows, err, mac, next_mac, resolved, next_ip, counters))
    for i in range(first):
        v = verdict[i]
        if v < ANSWER:
            continue
        s = slots[i]
        b = buf[s]
        f = np.int64(off[s])
        n = np.int64(length[s])
        q = rows[i]
        refused = filtered(flt, fin, b, f, n)
        if v == KERNEL:
            if refused:
                account(counters, C.E_INGRESS_FILTER_IPV6, n)
                err[i] = C.E_INGRESS_FILTER_IPV6
                verdict[i] = CONSUME
            else:
                counters[C.TO_KERNEL_IPV6_INTERFACE_PACKETS] += 1
            continue
        if i < whole:
            counters[C.IN_IPV6_FRAG_REASSEMBLY_UNNEEDED] += 1
        if refused:
            account(counters, C.E_INGRESS_FILTER_IPV6, n)
            err[i] = C.E_INGRESS_FILTER_IPV6
            verdict[i] = CONSUME
            continue
        if q == Q_NS or q == Q_NS_FOR_US:
            counters[C.IN_NDP_NS_BYTES] += n
            counters[C.IN_NDP_NS_PACKETS] += 1
        elif q == Q_NA:
            counters[C.IN_NDP_NA_BYTES] += n
            counters[C.IN_NDP_NA_PACKETS] += 1
            if resolved[0] == 0 and next_ip[0]:
                m = na_teaches(b, f, _ICMP6 + rd16(b, f + ETH + W.O_IPV6_PAYLOAD_LENGTH), next_ip[1], next_ip[2])
                if m >= 0:
                    for j in range(6):
                        next_mac[j] = b[m + j]
                    resolved[0] = 1
        if v != ANSWER:
            continue
        neighbour_advertisement(b, f, mac, self_hi, self_lo)
        counters[C.OUT_NDP_NA_BYTES] += NA_FRAME
        counters[C.OUT_NDP_NA_PACKETS] += 1
        if filtered(flt, fout, b, f, NA_FRAME):
            account(counters, C.E_EGRESS_FILTER_IPV6, NA_FRAME)
            err[i] = C.E_EGRESS_FILTER_IPV6
            verdict[i] = CONSUME
            continue
        counters[C.OUT_IPV6_FRAG_NOT] += 1
        tag(b, s, f, NA_FRAME, vid, off, length)
