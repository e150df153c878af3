"""Compiled IPv4 fragmentation (RFC 791 3.2) of the frames the kernels send
out of the IPv4 side: decapsulated packets over the external MTU.

The same cuts, bytes and counters as the tests' reference's ``Fragmenter4``
(``tests/reference/fragment.py``): every fragment but the last carries ``mtu - ihl`` data bytes
rounded down to a multiple of 8, the last the rest; options whose copied flag
is clear are NOP'd out of fragments after the first (RFC 791 3.1); a fragment
that is itself too big keeps its ID, offset and MF flag; IDs come from the
side's counter (``ids``, :mod:`lwaftr.dataplane.fragids`); a datagram with DF that
does not fit is dropped uncounted (as Snabb); frames failing its length checks
count ``drop-malformed-ipv4-*`` (error code ``malformed-ipv4``, without the
drop-all totals, as the reference).  Beyond the reference, which never lacks
memory: when the pool has too few free slots for the fragments, the frame is
dropped and counted (``pool-exhausted``).  Drops are counted only through
:func:`lwaftr.dataplane.account.account`.

The first fragment stays in the frame's slot (only its header changes); the
others are copied into slots from the pool, behind ``HEADROOM`` like any frame.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.account import account
from lwaftr.dataplane.bigendian import rd16, wr16
from lwaftr.dataplane.ethernet import write_eth
from lwaftr.dataplane.icmperr import ones_sum
from lwaftr.dataplane.pool import HEADROOM

ETH = W.ETH_HLEN
_OFFSET_MASK = W.IPV4_FRAG_OFFSET_MASK
_KEEP = 0xE000 & ~W.IPV4_FLAG_MF        # flags every fragment keeps (reserved bit, DF)
_MAX_IP = 0xFFFF
_OPT_EOL = 0
_OPT_NOP = 1
_OPT_COPIED = 0x80


@numba.njit(cache=True, nogil=True)
def nop_uncopied_options(b, o, ihl):
    """In the IPv4 header at ``b[o:o + ihl]``, overwrite the options whose
    copied flag is clear with NOPs, keeping the length; stop at the end of the
    list or at an option that does not parse
    (the reference's ``ipv4_later_fragment_header`` (``tests/reference/fragment.py``))."""
    i = W.IPV4_HLEN
    while i < ihl:
        t = b[o + i]
        if t == _OPT_EOL:
            break
        if t == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= ihl:
            break
        n = np.int64(b[o + i + 1])
        if n < 2 or i + n > ihl:
            break
        if not t & _OPT_COPIED:
            for j in range(n):
                b[o + i + j] = _OPT_NOP
        i += n


@numba.njit(cache=True, nogil=True, inline="always")
def _finish(b, l3, ihl, size, ident, flags):
    """A fragment's total length, ID, flags and offset, and its header checksum."""
    wr16(b, l3 + W.O_IPV4_TOTAL_LENGTH, ihl + size)
    wr16(b, l3 + W.O_IPV4_ID, ident)
    wr16(b, l3 + W.O_IPV4_FLAGS, flags)
    wr16(b, l3 + W.O_IPV4_CHECKSUM, 0)
    wr16(b, l3 + W.O_IPV4_CHECKSUM, (~ones_sum(b, l3, ihl, 0)) & 0xFFFF)


@numba.njit(cache=True, nogil=True)
def fragment4(buf, off, length, free_list, n_free, s, mtu, macs, dst_row, src_row, vid, ids, out, k, counters,
              src, sf):
    """Send the IPv4 frame in slot ``s`` (untagged Ethernet at ``off[s]``,
    ``length[s]`` bytes, IHL >= 5) as :meth:`Fragmenter4.push` would, to IPv4
    MTU ``mtu``: whole (trimmed to its total length if that fits), as
    fragments, or not at all.  What leaves gets Ethernet from rows ``dst_row``
    and ``src_row`` of ``macs`` and the side's tag (``vid >= 0``), and its slots
    are appended to ``out[k:]``; a dropped frame's slot goes back to the pool.
    ``src[sf:]`` holds the whole frame: ``buf[s]`` itself at ``off[s]``, or for a
    packet reassembled beyond a slot its row of the big buffer, the slot holding
    its head (at least the first fragment's bytes: :func:`lwaftr.dataplane.kernels.stand_in`).
    Returns the new ``k``, or for a dropped frame minus one minus its error code
    (``-1``: DF and too big, dropped uncounted as the reference does)."""
    b = buf[s]
    f = np.int64(off[s])
    n = np.int64(length[s])
    o = f + ETH
    a = src                                     # (read from; the first fragment is written in b)
    ao = np.int64(sf) + ETH
    ihl = (np.int64(a[ao]) & 0xF) * 4
    total = rd16(a, ao + W.O_IPV4_TOTAL_LENGTH)
    flags = rd16(a, ao + W.O_IPV4_FLAGS)
    base = (flags & _OFFSET_MASK) * 8
    whole = -1                                  # the frame leaves as one packet of this length
    bad = False                                 # dropped as malformed
    if n < ETH + W.IPV4_HLEN or ihl < W.IPV4_HLEN or total > n - ETH:
        bad = True
    elif n - ETH <= mtu:
        whole = n - ETH
    elif total < ihl:
        bad = True
    elif total <= mtu:
        whole = total                           # link padding is not data
    elif flags & W.IPV4_FLAG_DF:
        free_list[n_free[0]] = s                # dropped uncounted, as Snabb
        n_free[0] += 1
        return -1
    elif base + total > _MAX_IP:
        bad = True
    if bad:
        account(counters, C.E_MALFORMED_IPV4, n)
        free_list[n_free[0]] = s
        n_free[0] += 1
        return -1 - C.E_MALFORMED_IPV4
    if whole >= 0:
        e = write_eth(b, o, macs, dst_row, src_row, vid, W.ETHERTYPE_IPV4)
        off[s] = e
        length[s] = o - e + whole
        out[k] = s
        counters[C.OUT_IPV4_FRAG_NOT] += 1
        return k + 1
    data = total - ihl
    room = mtu - ihl
    size = room & ~7
    count = 1
    at = 0
    while at + room < data:
        at += size
        count += 1
    if n_free[0] < count - 1:
        account(counters, C.E_POOL_EXHAUSTED, n)
        free_list[n_free[0]] = s
        n_free[0] += 1
        return -1 - C.E_POOL_EXHAUSTED
    if flags & (W.IPV4_FLAG_MF | _OFFSET_MASK):
        ident = rd16(a, ao + W.O_IPV4_ID)        # re-fragmenting a fragment
    else:
        ids[0] = (ids[0] + 1) & 0xFFFF
        ident = ids[0]
    keep = flags & _KEEP
    # The later fragments first, from the untouched header and data; the first in place last.
    at = size
    for c in range(1, count):
        sz = size if c < count - 1 else data - at
        more = W.IPV4_FLAG_MF if c < count - 1 else flags & W.IPV4_FLAG_MF
        n_free[0] -= 1
        t = free_list[n_free[0]]
        tb = buf[t]
        l3 = np.int64(HEADROOM)
        for j in range(ihl):
            tb[l3 + j] = a[ao + j]
        for j in range(sz):
            tb[l3 + ihl + j] = a[ao + ihl + at + j]
        nop_uncopied_options(tb, l3, ihl)
        _finish(tb, l3, ihl, sz, ident, keep | more | ((base + at) >> 3))
        e = write_eth(tb, l3, macs, dst_row, src_row, vid, W.ETHERTYPE_IPV4)
        off[t] = e
        length[t] = l3 - e + ihl + sz
        out[k + c] = t
        at += sz
    sz = size if count > 1 else data
    if base:                                    # not the datagram's first bytes: a later fragment
        nop_uncopied_options(b, o, ihl)
    _finish(b, o, ihl, sz, ident, keep | (W.IPV4_FLAG_MF if count > 1 else flags & W.IPV4_FLAG_MF) | (base >> 3))
    e = write_eth(b, o, macs, dst_row, src_row, vid, W.ETHERTYPE_IPV4)
    off[s] = e
    length[s] = o - e + ihl + sz
    out[k] = s
    counters[C.OUT_IPV4_FRAG] += count
    return k + count
