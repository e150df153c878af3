"""Preallocated packet buffers, like DPDK mbufs.

``buf`` is ``uint8[n_slots, slot_size]``; a frame lives at
``buf[s, off[s]:off[s] + length[s]]``.  Every slot starts with
:data:`HEADROOM` bytes free in front of the frame, so encapsulation prepends
the IPv6 header in place and decapsulation just moves ``off``.  Batches are
arrays of slot indices; nothing is allocated per packet.

``buf`` is one private anonymous mapping, page-aligned (so an AF_XDP UMEM
can be registered over it: :mod:`lwaftr.io.afxdp` receives into and sends
from the slots themselves) and advised for transparent huge pages, which
this machine kind gives only to memory that asks (``madvise`` mode).

The free list is a stack, so frames freed in a different order than they
came (drops, ARP replies, frames that leave on the side they came in) shuffle
it batch after batch, and move slots from one interface's batches to the
other's.  Whatever receives frames into the pool first takes the
lowest-addressed of the slots on top, in address order
(:func:`in_address_order`).  A shuffled free list cost clean traffic 17 % on
the bench, slots moving between the sides another 5 % (in one process:
docs/performance.md, 2026-12-07), which is most of what 5 % of ARP requests
or dropped frames used to cost.
"""
from __future__ import annotations

import mmap

import numba
import numpy as np

HEADROOM = 128
DEFAULT_SLOT_SIZE = 2048


def _ctz_table() -> np.ndarray:
    table = np.zeros(64, np.int64)
    for i in range(64):
        table[((1 << i) * int(_DEBRUIJN) & (2 ** 64 - 1)) >> 58] = i
    return table


_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_CTZ = _ctz_table()        # the index of a 64-bit word's only set bit, by de Bruijn multiplication


@numba.njit(cache=True, nogil=True, inline="always")
def _sort(free_list, lo, hi, n_low, bits, to_low, to_rest):
    """Bitmap sort of ``free_list[lo:hi]``: its lowest ``n_low`` slots rising from
    ``to_low``, the rest rising from ``to_rest``.  The bits of runs of neighbouring
    slots are gathered in a register."""
    first = bits.shape[0]
    last = -1
    cur = -1
    acc = np.uint64(0)
    for i in range(lo, hi):
        s = np.int64(free_list[i])
        w = s >> 6
        if w != cur:
            if cur >= 0:
                bits[cur] |= acc
            cur = w
            acc = np.uint64(0)
            first = min(first, w)
            last = max(last, w)
        acc |= np.uint64(1) << np.uint64(s & 63)
    bits[cur] |= acc
    k = to_low
    placed = 0
    for w in range(first, last + 1):
        x = bits[w]
        while x:
            low = x & (~x + np.uint64(1))
            free_list[k] = w * 64 + _CTZ[(low * _DEBRUIJN) >> np.uint64(58)]
            k += 1
            placed += 1
            if placed == n_low:
                k = to_rest
            x ^= low
        bits[w] = 0


@numba.njit(cache=True, nogil=True)
def in_address_order(free_list, n_free, n, bits, window):
    """Arrange the top ``window`` slots of the free stack (at least ``n``) so that
    the next ``n`` it hands out are the lowest-addressed of them, in address
    order, and the rest of the window after them.

    Receive paths pass twice the slots they take: then the frames of each
    interface keep to the same slots batch after batch, whichever side they
    leave on (a stack alone moves a slot to the other side's batch each time
    a frame leaves on the side it came from, or is dropped; 5 % of such
    frames cost 5 %).  A stack already arranged, either way (a batch given
    back as it was taken: the common case), is only read.  If only the order
    of the next ``n`` is off (a few frames that left out of turn), they are
    sorted; else the whole window, the rest of it in address order too.  Sorted
    slots come out descending.  ``bits``: a zeroed bitmap of one bit per slot
    (:attr:`PacketPool.order_bits`), zeroed again on return."""
    top = n_free[0]
    w = min(max(window, n), top)
    n = min(n, w)
    if w < 2 or n < 1:                          # (nothing to hand out: nothing to arrange)
        return
    lo = top - w
    cut = w - n                                 # seg[cut:] is handed out first (from the top)
    seg = free_list[lo:top]
    up_b = 0                                    # rising pairs below the cut, and above it
    low_b = seg[0]
    for i in range(np.uint64(1), np.uint64(cut)):   # (unsigned: no wraparound test, so it vectorises)
        up_b += seg[i] > seg[i - np.uint64(1)]
        low_b = min(low_b, seg[i])
    up_a = 0
    high_a = seg[cut]
    for i in range(np.uint64(cut + 1), np.uint64(w)):
        up_a += seg[i] > seg[i - np.uint64(1)]
        high_a = max(high_a, seg[i])
    if (cut == 0 or high_a < low_b) and (up_b == 0 or up_b == cut - 1):
        if up_a != 0 and up_a != n - 1:
            _sort(free_list, lo + cut, top, n, bits, lo + cut, lo + cut)
        return
    _sort(free_list, lo, top, n, bits, lo + cut, lo)


@numba.njit(cache=True, nogil=True)
def _alloc(free_list, n_free, n, off, length, headroom, out):
    if n > n_free[0]:
        return False
    for i in range(n):
        n_free[0] -= 1
        s = free_list[n_free[0]]
        out[i] = s
        off[s] = headroom
        length[s] = 0
    return True


@numba.njit(cache=True, nogil=True)
def _free(free_list, n_free, slots):
    for i in range(slots.shape[0]):
        free_list[n_free[0]] = slots[i]
        n_free[0] += 1


class PoolExhausted(RuntimeError):
    pass


class PacketPool:
    """A fixed set of packet slots with a free list."""

    def __init__(self, n_slots: int = 4096, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if slot_size <= HEADROOM + 64:
            raise ValueError("slot_size too small")
        self.n_slots = n_slots
        self.slot_size = slot_size
        self._map = mmap.mmap(-1, n_slots * slot_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            self._map.madvise(mmap.MADV_HUGEPAGE)
        self.buf = np.frombuffer(self._map, np.uint8).reshape(n_slots, slot_size)
        self.off = np.full(n_slots, HEADROOM, np.int32)
        self.length = np.zeros(n_slots, np.int32)
        self.free_list = np.arange(n_slots - 1, -1, -1, dtype=np.int32)
        self.n_free = np.array([n_slots], np.int64)
        self.order_bits = np.zeros((n_slots + 63) // 64, np.uint64)   # scratch of in_address_order

    @property
    def max_frame(self) -> int:
        """Largest frame a slot takes as received."""
        return self.slot_size - HEADROOM

    def alloc(self, n: int) -> np.ndarray:
        out = np.empty(n, np.int32)
        if not _alloc(self.free_list, self.n_free, n, self.off, self.length, HEADROOM, out):
            raise PoolExhausted(f"packet pool exhausted ({self.n_slots} slots)")
        return out

    def free(self, slots: np.ndarray) -> None:
        _free(self.free_list, self.n_free, np.asarray(slots, np.int32))

    def store(self, frames: list[bytes]) -> np.ndarray:
        """Copy frames into fresh slots (frames must fit ``max_frame``)."""
        slots = self.alloc(len(frames))
        for s, f in zip(slots, frames):
            n = len(f)
            self.buf[s, HEADROOM:HEADROOM + n] = np.frombuffer(f, np.uint8)
            self.length[s] = n
        return slots

    def frame(self, s: int) -> bytes:
        o = int(self.off[s])
        return self.buf[s, o:o + int(self.length[s])].tobytes()

    def frames(self, slots: np.ndarray) -> list[bytes]:
        return [self.frame(int(s)) for s in slots]
