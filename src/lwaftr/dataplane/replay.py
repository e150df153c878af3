"""Replaying captured frames into the packet pool, as a NIC would (bench).

Frames are kept once as templates (``uint8[n, max_len]`` + lengths) and
copied into fresh pool slots batch after batch by compiled code, so the
benchmark measures the data plane, not Python copying bytes.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr.dataplane.pool import HEADROOM, PacketPool


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
def _fill(buf, off, length, free_list, n_free, tbuf, tlen, start, n, out):
    """Copy templates start.. (wrapping) into n fresh slots; returns next start."""
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
    t.next = _fill(pool.buf, pool.off, pool.length, pool.free_list, pool.n_free, t.buf, t.length, t.next, n, out)
    return out
