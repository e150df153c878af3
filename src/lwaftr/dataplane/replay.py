"""Replaying captured frames into the packet pool, as a NIC would (bench).

Frames are kept once as templates (``uint8[n, max_len]`` + lengths) and
copied into fresh pool slots batch after batch by compiled code, so the
benchmark measures the data plane, not Python copying bytes.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr.dataplane.pool import HEADROOM, PacketPool, _free, in_address_order


class Templates:
    """A set of frames to replay in a loop."""

    def __init__(self, frames: list[bytes]) -> None:
        self.count = len(frames)
        width = max((len(f) for f in frames), default=1)
        self.buf = np.zeros((max(self.count, 1), width), np.uint8)
        self.length = np.zeros(max(self.count, 1), np.int32)
        for i, f in enumerate(frames):
            self.buf[i, :len(f)] = np.frombuffer(f, np.uint8)
            self.length[i] = len(f)
        self.next = 0


@numba.njit(cache=True, nogil=True)
def _fill(buf, off, length, free_list, n_free, bits, tbuf, tlen, start, n, out):
    """Copy templates start.. (wrapping) into n fresh slots, the lowest of the 2n
    on top of the stack, in address order (``bits``: the pool's
    :attr:`~PacketPool.order_bits`); returns next start."""
    in_address_order(free_list, n_free, n, bits, 2 * n)
    count = tlen.shape[0]
    j = start
    for i in range(n):
        n_free[0] -= 1
        s = free_list[n_free[0]]
        m = tlen[j]
        off[s] = HEADROOM
        length[s] = m
        dst = buf[s]
        src = tbuf[j]
        for k in range(m):      # a plain loop vectorises: 10 ns for 550 bytes, a slice copy 143
            dst[HEADROOM + k] = src[k]
        out[i] = s
        j += 1
        if j == count:
            j = 0
    return j


def fill(pool: PacketPool, t: Templates, n: int) -> np.ndarray:
    """The next ``n`` template frames (wrapping around) in fresh slots."""
    if t.count == 0:
        return np.empty(0, np.int32)
    if n > pool.n_free[0]:
        raise RuntimeError("packet pool exhausted")
    out = np.empty(n, np.int32)
    t.next = _fill(pool.buf, pool.off, pool.length, pool.free_list, pool.n_free, pool.order_bits, t.buf, t.length,
                   t.next, n, out)
    return out


#: :attr:`Replay.sent`'s fields: frames and bytes sent on the IPv4 side, then on the IPv6 side.
SENT_V4_PACKETS, SENT_V4_BYTES, SENT_V6_PACKETS, SENT_V6_BYTES = range(4)


@numba.njit(cache=True, nogil=True)
def _give_back(length, free_list, n_free, done, sent):
    """Transmit ``done``'s first two slot arrays (IPv4 side, IPv6 side: frames and
    bytes counted in ``sent``), then free all its slots (the TAPs' too)."""
    for k in range(2):
        slots = done[k]
        for i in range(slots.shape[0]):
            sent[2 * k] += 1
            sent[2 * k + 1] += length[slots[i]]
    for slots in done:
        _free(free_list, n_free, slots)


@numba.njit(cache=True, nogil=True)
def _cycle(buf, off, length, free_list, n_free, bits, done, tbuf4, tlen4, start4, tbuf6, tlen6, start6, n, out4,
           out6, sent):
    """:func:`_give_back` ``done``, then ``n`` template frames a side (none for a
    side without templates).  Returns the next starts, or (-1, -1) if the pool is short."""
    _give_back(length, free_list, n_free, done, sent)
    if n_free[0] < (n if tlen4.shape[0] else 0) + (n if tlen6.shape[0] else 0):
        return -1, -1
    j4 = _fill(buf, off, length, free_list, n_free, bits, tbuf4, tlen4, start4, n, out4) if tlen4.shape[0] else start4
    j6 = _fill(buf, off, length, free_list, n_free, bits, tbuf6, tlen6, start6, n, out6) if tlen6.shape[0] else start6
    return j4, j6


class Replay:
    """Both sides' templates replayed ``n`` frames a side per batch, as the
    bench's NIC: one compiled call a batch transmits the slots the batch before
    produced (counts them in :attr:`sent`, frees them) and receives the next
    frames.  (Separate calls from Python for each side's fill and each output's
    free cost ~7 us a batch, a tenth of a 256-frame batch's time.)

    ``sent`` (int64[4], :data:`SENT_V4_PACKETS` ..): where to count what leaves
    each side (e.g. shared memory), else a new array.  Everything that leaves
    counts: forwarded packets, fragments one by one, ICMP errors, echo, ARP and
    NDP replies, as a NIC (or Snabb's bench sink) sees them."""

    def __init__(self, pool: PacketPool, t4: Templates, t6: Templates, n: int,
                 sent: np.ndarray | None = None) -> None:
        self.pool, self.t4, self.t6, self.n = pool, t4, t6, n
        self.out4 = np.empty(n if t4.count else 0, np.int32)
        self.out6 = np.empty(n if t6.count else 0, np.int32)
        self.sent = sent if sent is not None else np.zeros(4, np.int64)
        self._none = (np.empty(0, np.int32),) * 4

    def next(self, done: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Transmit and free ``done`` (an :class:`~lwaftr.dataplane.engine.Output`'s
        ``slots()``: four int32 arrays, the TAPs' last two only freed), then the next
        frames of each side in fresh slots, in arrays that the next call reuses."""
        p, t4, t6 = self.pool, self.t4, self.t6
        if done is None:
            done = self._none
        j4, j6 = _cycle(p.buf, p.off, p.length, p.free_list, p.n_free, p.order_bits, done, t4.buf,
                        t4.length[:t4.count], t4.next, t6.buf, t6.length[:t6.count], t6.next, self.n, self.out4,
                        self.out6, self.sent)
        if j4 < 0:
            raise RuntimeError("packet pool exhausted")
        t4.next, t6.next = j4, j6
        return self.out4, self.out6

    def finish(self, done: tuple[np.ndarray, ...]) -> None:
        """Transmit and free the last batch's ``done``, receiving nothing more."""
        p = self.pool
        _give_back(p.length, p.free_list, p.n_free, done, self.sent)
