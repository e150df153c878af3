"""Monitoring one subscriber, compiled: copies of its frames, as received.

With the monitor on (:meth:`lwaftr.dataplane.engine.Engine.set_monitor`), every
frame from the Internet to the watched IPv4 address and every IPv4-in-IPv6
frame from a B4 with it as source is copied into a fresh pool slot before the
other stages see it (after the interface's VLAN tag is taken off); the frame
itself goes on as any other.  At most ``len(out)`` copies a batch: the rest,
and any while the pool is short, are counted (``monitor-skipped-packets``), so
a busy subscriber cannot take the pool or the engine's time from forwarding.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.bigendian import rd16, rd32
from lwaftr.dataplane.borrow import borrowed
from lwaftr.dataplane.pool import HEADROOM

ETH = W.ETH_HLEN
V6 = W.IPV6_HLEN


@numba.njit(cache=True, nogil=True, inline="always")
def watched(b, f, n, monitor):
    """Whether the frame at ``b[f:f + n]`` is the monitored address's: IPv4 to it,
    or IPv4-in-IPv6 from it (``monitor``: the address, 0: off)."""
    if monitor == 0 or n < ETH + W.IPV4_HLEN:
        return False
    et = rd16(b, f + 12)
    if et == W.ETHERTYPE_IPV4:
        return rd32(b, f + ETH + W.O_IPV4_DST) == monitor
    return et == W.ETHERTYPE_IPV6 and n > ETH + V6 + W.O_IPV4_SRC + 4 \
        and b[f + ETH + W.O_IPV6_NEXT_HEADER] == W.PROTO_IPV4 and rd32(b, f + ETH + V6 + W.O_IPV4_SRC) == monitor


@numba.njit(cache=True, nogil=True)
def copy_watched(buf, off, length, free_list, n_free, slots, monitor, out, k, counters):
    """Copy the watched frames of ``slots`` into fresh slots, appended to ``out``
    from ``out[k]``; returns the new count."""
    (buf, off, length, free_list, n_free, slots, out, counters) = borrowed((
        buf, off, length, free_list, n_free, slots, out, counters))
    for i in range(slots.shape[0]):
        s = slots[i]
        b = buf[s]
        f = np.int64(off[s])
        n = np.int64(length[s])
        if not watched(b, f, n, monitor):
            continue
        if k == out.shape[0] or n_free[0] == 0 or HEADROOM + n > buf.shape[1]:
            counters[C.MONITOR_SKIPPED_PACKETS] += 1
            continue
        n_free[0] -= 1
        t = free_list[n_free[0]]
        d = buf[t]
        for j in range(n):
            d[HEADROOM + j] = b[f + j]
        off[t] = HEADROOM
        length[t] = n
        out[k] = t
        k += 1
    return k
