"""Compiled IPv4 and IPv6 reassembly: the first stage of each side's kernels.

The same rules and counters as the tests' Python reference
(``tests/reference/reassembly.py``), over pool slots instead of ``bytes``: a fragment is not copied but *held* (its slot
stays out of the free list) until its packet completes, fails or expires.
On completion the packet is gathered into the slot of its offset-0
fragment, which then continues through the kernels like any frame; the
other slots go back to the pool.  A packet too large for a slot (a datagram
beyond ~1.9 KB) is gathered into a per-batch overflow buffer (behind
``HEADROOM``, as in a slot), where the kernels' later passes take it
(:func:`lwaftr.dataplane.kernels.fast_batch`).

State per family (:class:`Defrag`), all in fixed arrays:

* entries: key (five words), creation time, fragment ranges sorted by start
  (start, end, slot), total bytes, final fragment's end, the slot of the
  first fragment to arrive (its Ethernet header is kept) and of the offset-0
  one (its IP header is kept);
* an open-addressing hash index (linear probing, backward-shift deletion);
* the entries in creation order (a doubly linked list) for the timeout;
* the used entries densely, for an O(1) random eviction (xorshift64).

Bounds: ``max_packets`` reassemblies as configured (one more evicts a random
one, as Snabb does), and ``max_held`` slots held in all (a quarter of the
pool by default, so a flood of fragments cannot take the pool from
forwarding): a fragment that would exceed it evicts random reassemblies
first.  Both evictions count ``drop-ipvX-frag-random-evicted``.
"""
from __future__ import annotations

import os

import numba
import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import is_managed
from lwaftr.dataplane.account import account
from lwaftr.dataplane.bigendian import rd16, wr16
from lwaftr.dataplane.borrow import borrowed
from lwaftr.dataplane.bytecopy import copy_bytes
from lwaftr.dataplane.icmperr import ones_sum
from lwaftr.dataplane.pool import HEADROOM

#: Snabb's packet buffer (``PACKET_PAYLOAD_SIZE`` in ``core/packet.h``): the
#: largest frame, Ethernet header included, Snabb can reassemble.
SNABB_MAX_FRAME = 10 * 1024
#: Snabb's IPv6 ``reassembly_timeout`` default (RFC 8200 4.5: 60 seconds).
IPV6_REASSEMBLY_TIMEOUT = 60.0
#: Snabb has no IPv4 timeout (a stale reassembly only leaves by eviction);
#: ours, so memory held by lost fragments is given back.
IPV4_REASSEMBLY_TIMEOUT = 30.0
#: Largest IPv4 total length / IPv6 payload length (RFC 791 3.1, RFC 8200 4.5).
MAX_IP_LENGTH = 0xFFFF
#: Fragment offsets count 8-octet units (RFC 791 3.1, RFC 8200 4.5).
FRAG_UNIT = 8

ETH = W.ETH_HLEN
V6 = W.IPV6_HLEN
FH = W.IPV6_FRAG_HLEN

# Per-family counter rows (family 0: IPv4, 1: IPv6)
_NEEDS, _REASSEMBLED = range(2)
_CTR = np.array([[C.IN_IPV4_FRAG_NEEDS_REASSEMBLY, C.IN_IPV4_FRAG_REASSEMBLED],
                 [C.IN_IPV6_FRAG_NEEDS_REASSEMBLY, C.IN_IPV6_FRAG_REASSEMBLED]], np.int64)
# Drops, by family: error codes (lwaftr.counters.ERRORS), counted by account()
_INVALID, _EVICTED, _MALFORMED = range(3)
_ERR = np.array([[C.E_FRAG_INVALID_IPV4, C.E_FRAG_EVICTED_IPV4, C.E_MALFORMED_IPV4],
                 [C.E_FRAG_INVALID_IPV6, C.E_FRAG_EVICTED_IPV6, C.E_MALFORMED_IPV6]], np.int64)

# Entry fields (int64 columns of ``ent``)
E_NFRAG, E_TOTAL, E_FINAL, E_FIRST, E_ZERO, E_PREV, E_NEXT, E_POS, N_E = range(9)
# Global state (``g``)
G_USED, G_HEAD, G_TAIL, G_HELD, G_MAX_HELD, G_RNG, G_NFREE, G_FAMILY, G_MAXF, G_MAX_FRAME, N_G = range(11)
# What a push did with the frame
ABSORBED = 0      # held in a reassembly
DROPPED = 1       # given back to the pool (counted)
DONE = 2          # the packet is complete in the returned slot
BIG = 3           # complete, but larger than a slot: in the overflow buffer (its slots given back)
PASS = 4          # not a fragment this stage takes: the caller goes on with it


class Defrag:
    """One family's compiled reassembly state (arrays the kernels take)."""

    def __init__(self, family: int, max_fragments_per_packet: int, max_packets: int, *, max_held: int,
                 timeout: float | None = None, max_frame: int = SNABB_MAX_FRAME, seed: int | None = None) -> None:
        """``family``: 4 or 6; ``max_held``: slots it may hold in all; ``seed``:
        the random eviction's (else from ``os.urandom``)."""
        cap = max(0, max_packets)
        self.family = family
        self.timeout = timeout if timeout is not None else (
            IPV4_REASSEMBLY_TIMEOUT if family == 4 else IPV6_REASSEMBLY_TIMEOUT)
        maxf = max(1, max_fragments_per_packet)
        rows = max(cap, 1)
        self.keys = np.zeros((rows, 5), np.uint64)
        self.created = np.zeros(rows, np.float64)
        self.ent = np.zeros((rows, N_E), np.int64)
        self.frag = np.zeros((rows, maxf, 3), np.int32)        # start, end, slot; sorted by start
        self.dense = np.zeros(rows, np.int32)
        self.free = np.arange(rows - 1, -1, -1, dtype=np.int32)
        hcap = 1
        while hcap < 2 * rows:
            hcap <<= 1
        self.index = np.full(hcap, -1, np.int32)
        g = np.zeros(N_G, np.int64)
        g[G_HEAD] = g[G_TAIL] = -1
        g[G_MAX_HELD] = max(max_held, 2 * maxf)
        rng = int.from_bytes(os.urandom(8), "little") if seed is None else seed
        g[G_RNG] = np.uint64((rng or 1) & 0xFFFFFFFFFFFFFFFF).view(np.int64)
        g[G_NFREE] = cap
        g[G_FAMILY] = 0 if family == 4 else 1
        g[G_MAXF] = max_fragments_per_packet
        g[G_MAX_FRAME] = max_frame
        self.g = g
        self.capacity = cap

    def __len__(self) -> int:
        """Reassemblies in progress."""
        return int(self.g[G_USED])

    @property
    def held(self) -> int:
        """Slots held by reassemblies in progress."""
        return int(self.g[G_HELD])


# -- the index -----------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _hash(k, mask):
    h = np.uint64(0x9E3779B97F4A7C15)
    for j in range(5):
        h = (h ^ k[j]) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@numba.njit(cache=True, nogil=True, inline="always")
def _hash_row(keys, e, mask):
    """:func:`_hash` of ``keys[e]``, read in place (a row view costs a reference count)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for j in range(5):
        h = (h ^ keys[e, j]) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@numba.njit(cache=True, nogil=True, inline="always")
def _same(keys, e, k):
    for j in range(5):
        if keys[e, j] != k[j]:
            return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _find(keys, index, k):
    mask = index.shape[0] - 1
    i = _hash(k, mask)
    while True:
        e = index[i]
        if e < 0:
            return -1
        if _same(keys, e, k):
            return e
        i = (i + 1) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def _index_remove(keys, index, e):
    """Remove entry ``e`` (present) from the index, shifting its cluster back."""
    mask = index.shape[0] - 1
    i = _hash_row(keys, e, mask)
    while index[i] != e:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        x = index[j]
        if x < 0:
            break
        home = _hash_row(keys, x, mask)
        # x may move into the hole at i if its home is not cyclically in (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            index[i] = x
            i = j
    index[i] = -1


# -- entries -------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, give_back):
    """Remove entry ``e``; with ``give_back`` its held slots return to the pool."""
    _index_remove(keys, index, e)
    p, nx = ent[e, E_PREV], ent[e, E_NEXT]
    if p >= 0:
        ent[p, E_NEXT] = nx
    else:
        g[G_HEAD] = nx
    if nx >= 0:
        ent[nx, E_PREV] = p
    else:
        g[G_TAIL] = p
    pos = ent[e, E_POS]
    last = dense[g[G_USED] - 1]
    dense[pos] = last
    ent[last, E_POS] = pos
    g[G_USED] -= 1
    free[g[G_NFREE]] = e
    g[G_NFREE] += 1
    nf = ent[e, E_NFRAG]
    g[G_HELD] -= nf
    if give_back:
        for j in range(nf):
            free_list[n_free[0]] = frag[e, j, 2]
            n_free[0] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _random(g):
    x = np.uint64(g[G_RNG])
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    g[G_RNG] = np.int64(x)
    return x


@numba.njit(cache=True, nogil=True)
def _evict_random(keys, ent, frag, dense, free, index, g, free_list, n_free, counters, keep):
    """Evict a random reassembly other than ``keep``; False if there is none."""
    n = g[G_USED]
    if n == 0 or (n == 1 and dense[0] == keep):
        return False
    while True:
        e = dense[np.int64(_random(g) % np.uint64(n))]
        if e != keep:
            break
    _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, True)
    account(counters, _ERR[g[G_FAMILY], _EVICTED], 0)
    return True


@numba.njit(cache=True, nogil=True)
def expire(keys, created, ent, frag, dense, free, index, g, free_list, n_free, counters, now, timeout):
    """Abandon reassemblies older than ``timeout`` (each counted invalid)."""
    while g[G_HEAD] >= 0 and now - created[g[G_HEAD]] > timeout:
        _release(keys, ent, frag, dense, free, index, g, g[G_HEAD], free_list, n_free, True)
        account(counters, _ERR[g[G_FAMILY], _INVALID], 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters):
    _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, True)
    free_list[n_free[0]] = s
    n_free[0] += 1
    account(counters, _ERR[g[G_FAMILY], _INVALID], 0)
    return DROPPED


@numba.njit(cache=True, nogil=True, inline="always")
def _add(buf, off, free_list, n_free, keys, created, ent, frag, dense, free, index, g, counters, k, s,
         l3len, start, size, more, now):
    """File the fragment in slot ``s`` (``size`` data bytes from ``start``) under
    key ``k``: the Python reference's ``_add_fragment``, on slots."""
    fam = g[G_FAMILY]
    e = _find(keys, index, k)
    if e < 0:
        if keys.shape[0] == 0 or g[G_NFREE] + g[G_USED] == 0:     # max-packets 0: nothing is held
            free_list[n_free[0]] = s
            n_free[0] += 1
            account(counters, _ERR[fam, _INVALID], 0)
            return DROPPED
        if g[G_NFREE] == 0:                     # full: a random one makes room (Snabb)
            _evict_random(keys, ent, frag, dense, free, index, g, free_list, n_free, counters, -1)
        g[G_NFREE] -= 1
        e = free[g[G_NFREE]]
        for j in range(5):
            keys[e, j] = k[j]
        mask = index.shape[0] - 1
        i = _hash(k, mask)
        while index[i] >= 0:
            i = (i + 1) & mask
        index[i] = e
        created[e] = now
        ent[e, E_NFRAG] = 0
        ent[e, E_TOTAL] = 0
        ent[e, E_FINAL] = -1
        ent[e, E_FIRST] = s
        ent[e, E_ZERO] = -1
        ent[e, E_PREV] = g[G_TAIL]
        ent[e, E_NEXT] = -1
        if g[G_TAIL] >= 0:
            ent[g[G_TAIL], E_NEXT] = e
        else:
            g[G_HEAD] = e
        g[G_TAIL] = e
        ent[e, E_POS] = g[G_USED]
        dense[g[G_USED]] = e
        g[G_USED] += 1
    nf = ent[e, E_NFRAG]
    end = start + size
    final = ent[e, E_FINAL]
    if nf + 1 > g[G_MAXF] or size == 0:
        return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    if more:
        if size % FRAG_UNIT or (final >= 0 and end > final):
            return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    elif final >= 0 or (nf > 0 and frag[e, nf - 1, 1] > end):
        return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    if ETH + l3len + end > g[G_MAX_FRAME] or (l3len if fam == 0 else 0) + end > MAX_IP_LENGTH:
        return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    i = 0
    while i < nf and frag[e, i, 0] < start:
        i += 1
    if (i < nf and frag[e, i, 0] < end) or (i > 0 and frag[e, i - 1, 1] > start):
        return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    # Within the held-slot bound: random reassemblies (not this one) make room.
    while g[G_HELD] + 1 > g[G_MAX_HELD]:
        if not _evict_random(keys, ent, frag, dense, free, index, g, free_list, n_free, counters, e):
            return _fail(keys, ent, frag, dense, free, index, g, e, s, free_list, n_free, counters)
    for j in range(nf, i, -1):
        frag[e, j, 0] = frag[e, j - 1, 0]
        frag[e, j, 1] = frag[e, j - 1, 1]
        frag[e, j, 2] = frag[e, j - 1, 2]
    frag[e, i, 0] = start
    frag[e, i, 1] = end
    frag[e, i, 2] = s
    ent[e, E_NFRAG] = nf + 1
    g[G_HELD] += 1
    if not more:
        ent[e, E_FINAL] = end
    if start == 0:
        ent[e, E_ZERO] = s
    ent[e, E_TOTAL] += size
    if ent[e, E_FINAL] < 0 or ent[e, E_TOTAL] != ent[e, E_FINAL]:
        return ABSORBED
    return DONE + 16 * e        # complete: the caller gathers entry e


@numba.njit(cache=True, nogil=True, inline="always")
def _data_off(buf, off, s, fam):
    """Where a held fragment's data starts in its slot."""
    f = np.int64(off[s])
    if fam == 0:
        return f + ETH + (np.int64(buf[s, f + ETH]) & 0xF) * 4
    return f + ETH + V6 + FH


@numba.njit(cache=True, nogil=True, inline="always")
def _gather(buf, off, length, free_list, n_free, keys, ent, frag, dense, free, index, g, counters, e,
            big, big_len, n_big):
    """Entry ``e`` is complete: build the packet (header of the offset-0
    fragment, Ethernet of the first to arrive) in the offset-0 fragment's slot,
    or in ``big`` if it does not fit.  Returns (DONE, slot) or (BIG, -1), or
    (DROPPED, -1) if it is too large for ``max_frame`` or ``big`` is full."""
    fam = g[G_FAMILY]
    z = ent[e, E_ZERO]
    first = ent[e, E_FIRST]
    total = ent[e, E_TOTAL]
    nf = ent[e, E_NFRAG]
    fz = np.int64(off[z])
    l3len = (np.int64(buf[z, fz + ETH]) & 0xF) * 4 if fam == 0 else V6
    flen = ETH + l3len + total
    # The packet is taken out of the table; its slots are still held (E_NFRAG).
    if flen > g[G_MAX_FRAME]:
        _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, True)
        account(counters, _ERR[fam, _INVALID], 0)
        return DROPPED, -1
    nh = 0
    if fam == 1:
        nh = np.int64(buf[z, fz + ETH + V6])            # the offset-0 Fragment header's next header
    fits = fz + FH + flen <= buf.shape[1] if fam == 1 else fz + flen <= buf.shape[1]
    if fits:
        b = buf[z]
        if fam == 1:                                   # drop the Fragment header: IPv6 header 8 bytes on
            for j in range(V6 - 1, -1, -1):
                b[fz + FH + ETH + j] = b[fz + ETH + j]
            fz += FH
        if first != z:
            for j in range(ETH):
                b[fz + j] = buf[first, np.int64(off[first]) + j]
        elif fam == 1:
            for j in range(ETH - 1, -1, -1):
                b[fz + j] = b[fz - FH + j]
        dst = b
        base = fz + ETH + l3len
    else:
        if n_big[0] >= big.shape[0] or HEADROOM + flen > big.shape[1]:
            _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, True)
            account(counters, C.E_OVER_BUDGET, 0)
            counters[_CTR[fam, _REASSEMBLED]] += 1
            return DROPPED, -1
        dst = big[n_big[0]]                            # (at HEADROOM, as in a slot)
        f1 = np.int64(off[first])
        for j in range(ETH):
            dst[HEADROOM + j] = buf[first, f1 + j]
        for j in range(l3len):
            dst[HEADROOM + ETH + j] = buf[z, fz + ETH + j]
        fz = HEADROOM
        base = HEADROOM + ETH + l3len
    for i in range(nf):
        s = frag[e, i, 2]
        if fits and s == z:
            continue                                   # its data is in place already
        d = _data_off(buf, off, s, fam)
        a = frag[e, i, 0]
        copy_bytes(dst, base + a, buf[s], d, frag[e, i, 1] - a)      # (another slot, or the big buffer)
    o = fz + ETH
    if fam == 0:
        wr16(dst, o + W.O_IPV4_TOTAL_LENGTH, l3len + total)
        wr16(dst, o + W.O_IPV4_ID, 0)
        wr16(dst, o + W.O_IPV4_FLAGS, 0)
        wr16(dst, o + W.O_IPV4_CHECKSUM, 0)
        wr16(dst, o + W.O_IPV4_CHECKSUM, (~ones_sum(dst, o, l3len, 0)) & 0xFFFF)
    else:
        wr16(dst, o + W.O_IPV6_PAYLOAD_LENGTH, total)
        dst[o + W.O_IPV6_NEXT_HEADER] = nh
    counters[_CTR[fam, _REASSEMBLED]] += 1
    # Every slot but the one now holding the packet goes back.
    for i in range(nf):
        s = frag[e, i, 2]
        if not (fits and s == z):
            free_list[n_free[0]] = s
            n_free[0] += 1
    ent[e, E_NFRAG] = 0
    g[G_HELD] -= nf
    _release(keys, ent, frag, dense, free, index, g, e, free_list, n_free, False)
    if fits:
        off[z] = fz
        length[z] = flen
        return DONE, z
    big_len[n_big[0]] = flen
    n_big[0] += 1
    return BIG, -1


@numba.njit(cache=True, nogil=True, inline="always")
def push(buf, off, length, free_list, n_free, s, keys, created, ent, frag, dense, free, index, g, counters,
         now, big, big_len, n_big, k):
    """One frame in slot ``s``: ``PASS`` if it is not a fragment (or one this
    stage leaves to the later stages: it fails the length checks that come
    first in the reference), else what happened to it and the slot to go on with (``DONE``).
    ``k``: scratch for the key (uint64[5])."""
    fam = g[G_FAMILY]
    b = buf[s]
    f = np.int64(off[s])
    n = np.int64(length[s])
    o = f + ETH
    k[:] = 0
    if fam == 0:
        if n < ETH + W.IPV4_HLEN or rd16(b, f + 12) != W.ETHERTYPE_IPV4:
            return PASS, np.int64(s)
        ihl = (np.int64(b[o]) & 0xF) * 4
        total = rd16(b, o + W.O_IPV4_TOTAL_LENGTH)
        flags = rd16(b, o + W.O_IPV4_FLAGS)
        if ihl < W.IPV4_HLEN or total > n - ETH or (flags & (W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK)) == 0:
            return PASS, np.int64(s)
        counters[_CTR[0, _NEEDS]] += 1
        if (b[o] >> 4) != 4 or total < ihl or ihl > n - ETH or ones_sum(b, o, ihl, 0) != 0xFFFF:
            account(counters, _ERR[0, _MALFORMED], n)
            free_list[n_free[0]] = s
            n_free[0] += 1
            return DROPPED, -1
        for j in range(8):
            k[0] = (k[0] << np.uint64(8)) | np.uint64(b[o + W.O_IPV4_SRC + j])
        k[1] = (np.uint64(b[o + W.O_IPV4_PROTO]) << np.uint64(16)) | np.uint64(rd16(b, o + W.O_IPV4_ID))
        start = (flags & W.IPV4_FRAG_OFFSET_MASK) * FRAG_UNIT
        r = _add(buf, off, free_list, n_free, keys, created, ent, frag, dense, free, index, g, counters, k, s,
                 ihl, start, total - ihl, (flags & W.IPV4_FLAG_MF) != 0, now)
    else:
        if n < ETH + V6 or rd16(b, f + 12) != W.ETHERTYPE_IPV6:
            return PASS, np.int64(s)
        plen = rd16(b, o + W.O_IPV6_PAYLOAD_LENGTH)
        if plen > n - ETH - V6 or b[o + W.O_IPV6_NEXT_HEADER] != W.PROTO_FRAGMENT:
            return PASS, np.int64(s)
        counters[_CTR[1, _NEEDS]] += 1
        if (b[o] >> 4) != 6 or plen < FH:
            account(counters, _ERR[1, _MALFORMED], n)
            free_list[n_free[0]] = s
            n_free[0] += 1
            return DROPPED, -1
        fh = o + V6
        offset_flags = rd16(b, fh + 2)
        start = offset_flags & 0xFFF8
        more = (offset_flags & 1) != 0
        size = plen - FH
        if start == 0 and not more:                   # atomic fragment (RFC 6946 4): out at once
            nh = b[fh]
            for j in range(ETH + V6 - 1, -1, -1):
                b[f + FH + j] = b[f + j]
            f += FH
            off[s] = f
            length[s] = ETH + V6 + size
            wr16(b, f + ETH + W.O_IPV6_PAYLOAD_LENGTH, size)
            b[f + ETH + W.O_IPV6_NEXT_HEADER] = nh
            counters[_CTR[1, _REASSEMBLED]] += 1
            return DONE, np.int64(s)
        for j in range(8):
            k[0] = (k[0] << np.uint64(8)) | np.uint64(b[o + W.O_IPV6_SRC + j])
            k[1] = (k[1] << np.uint64(8)) | np.uint64(b[o + W.O_IPV6_SRC + 8 + j])
            k[2] = (k[2] << np.uint64(8)) | np.uint64(b[o + W.O_IPV6_DST + j])
            k[3] = (k[3] << np.uint64(8)) | np.uint64(b[o + W.O_IPV6_DST + 8 + j])
        for j in range(4):
            k[4] = (k[4] << np.uint64(8)) | np.uint64(b[fh + 4 + j])
        r = _add(buf, off, free_list, n_free, keys, created, ent, frag, dense, free, index, g, counters, k, s,
                 V6, start, size, more, now)
    if r < DONE:
        return r, -1
    return _gather(buf, off, length, free_list, n_free, keys, ent, frag, dense, free, index, g, counters, r // 16,
                   big, big_len, n_big)


@numba.njit(cache=True, nogil=True)
def _kernels_frame(b, f, n, fam, punt, ext_ip, addr_tab, br64, int_hi, int_lo):
    """Kernel control plane: is this fragment the kernel's (as ``punt.split4``/
    ``split6`` decide: for the router's own address, multicast, link-local)?
    Those go on unreassembled, to the kernel."""
    if not punt:
        return False
    o = f + ETH
    if fam == 0:
        d = (np.int64(b[o + W.O_IPV4_DST]) << 24) | (np.int64(b[o + W.O_IPV4_DST + 1]) << 16) \
            | (np.int64(b[o + W.O_IPV4_DST + 2]) << 8) | np.int64(b[o + W.O_IPV4_DST + 3])
        return d >= 0xE0000000 or (d == ext_ip and not is_managed(addr_tab, d))
    d0 = np.int64(0)
    d1 = np.int64(0)
    for j in range(8):
        d0 = (d0 << 8) | np.int64(b[o + W.O_IPV6_DST + j])
        d1 = (d1 << 8) | np.int64(b[o + W.O_IPV6_DST + 8 + j])
    if b[o + W.O_IPV6_DST] == 0xFF or (b[o + W.O_IPV6_DST] == 0xFE and (b[o + W.O_IPV6_DST + 1] & 0xC0) == 0x80):
        return True
    for j in range(br64.shape[0]):
        if br64[j, 0] == d0 and br64[j, 1] == d1:
            return False
    return d0 == int_hi and d1 == int_lo


@numba.njit(cache=True, nogil=True)
def defrag_batch(buf, off, length, free_list, n_free, slots, st, counters, now, big, big_len, n_big, punt,
                 ext_ip, addr_tab, br64, int_hi, int_lo):
    """The reassembly stage over one side's batch, in place: frames that are
    not fragments stay in order at the front; the packets fragments complete
    follow (later stages count them as reassembled, not as ``reassembly-unneeded``);
    absorbed and dropped fragments leave the batch.
    ``st``: a :class:`Defrag`'s arrays (:func:`state`).  Returns
    (frames now in the batch, index of the first reassembled one)."""
    (buf, off, length, free_list, n_free, slots, st, counters, big, big_len, n_big, addr_tab, br64) = borrowed((
        buf, off, length, free_list, n_free, slots, st, counters, big, big_len, n_big, addr_tab, br64))
    keys, created, ent, frag, dense, free, index, g, timeout = st
    expire(keys, created, ent, frag, dense, free, index, g, free_list, n_free, counters, now, timeout)
    fam = g[G_FAMILY]
    n = slots.shape[0]
    done = np.empty(n, np.int32)
    key = np.empty(5, np.uint64)
    nd = 0
    k = 0
    for i in range(n):
        s = slots[i]
        f = np.int64(off[s])
        m = np.int64(length[s])
        b = buf[s]
        # Not a fragment at first sight (the common case, one test): on at once.
        if fam == 0:
            frag_like = m >= ETH + W.IPV4_HLEN and rd16(b, f + 12) == W.ETHERTYPE_IPV4 \
                and (rd16(b, f + ETH + W.O_IPV4_FLAGS) & (W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK)) != 0
        else:
            frag_like = m >= ETH + V6 and rd16(b, f + 12) == W.ETHERTYPE_IPV6 \
                and b[f + ETH + W.O_IPV6_NEXT_HEADER] == W.PROTO_FRAGMENT
        if not frag_like or (punt and _kernels_frame(b, f, m, fam, punt, ext_ip, addr_tab, br64, int_hi, int_lo)):
            slots[k] = s
            k += 1
            continue
        r, out = push(buf, off, length, free_list, n_free, s, keys, created, ent, frag, dense, free, index, g,
                      counters, now, big, big_len, n_big, key)
        if r == PASS:
            slots[k] = s
            k += 1
        elif r == DONE:
            done[nd] = out
            nd += 1
    first = k
    for i in range(nd):
        slots[k] = done[i]
        k += 1
    return k, first


def state(d: Defrag) -> tuple:
    """The arrays :func:`defrag_batch` takes."""
    return (d.keys, d.created, d.ent, d.frag, d.dense, d.free, d.index, d.g, float(d.timeout))


@numba.njit(cache=True, nogil=True)
def release_all(keys, created, ent, frag, dense, free, index, g, free_list, n_free):
    """Abandon every reassembly in progress, its slots back to the pool (an
    engine replaced while its pool lives on: uncounted, as a restart's loss)."""
    while g[G_HEAD] >= 0:
        _release(keys, ent, frag, dense, free, index, g, g[G_HEAD], free_list, n_free, True)
