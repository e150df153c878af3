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
it batch after batch.  Whatever receives frames into the pool first puts the
slots it is about to take into address order (:func:`in_address_order`).
A shuffled free list cost clean traffic 17 % on the bench (in one process:
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


@numba.njit(cache=True, nogil=True)
def in_address_order(free_list, n_free, n, bits):
    """Reorder the next ``n`` slots the free stack hands out (its top) so that
    they come out in address order: left as they are if they already come out
    ascending or descending (a batch freed as it was taken: the common case,
    one read of them), else sorted to ascending.  ``bits``: a zeroed bitmap of
    one bit per slot (:attr:`PacketPool.order_bits`), zeroed again on return;
    the bits of runs of neighbouring slots are gathered in a register."""
    top = n_free[0]
    n = min(n, top)
    if n < 2:
        return
    lo = top - n
    seg = free_list[lo:top]
    up = 0                                      # rises in stack order (popped first: free_list[top - 1])
    for i in range(np.uint64(1), np.uint64(n)):     # (unsigned: no wraparound test, so it vectorises)
        up += seg[i] > seg[i - np.uint64(1)]
    if up == 0 or up == n - 1:                  # already in order, one way or the other
        return
    first = bits.shape[0]
    last = -1
    cur = -1
    acc = np.uint64(0)
    for i in range(lo, top):
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
    k = top - 1                                 # popped first: the lowest slot
    for w in range(first, last + 1):
        x = bits[w]
        while x:
            low = x & (~x + np.uint64(1))
            free_list[k] = w * 64 + _CTZ[(low * _DEBRUIJN) >> np.uint64(58)]
            k -= 1
            x ^= low
        bits[w] = 0


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
