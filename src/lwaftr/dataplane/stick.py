"""On a stick: one port carries both sides, and each received frame is given
to one of them, as Snabb's ``V4V6`` app splits them.

By VLAN tag when the sides have different tags (a frame with neither side's
tag is dropped and counted ``drop-wrong-vlan-packets``); else by ethertype
after any tag: IPv4 and ARP to the IPv4 side, everything else to the IPv6
side.  One rule, compiled, for the live loop's slots and ``check``'s frames.
"""
from __future__ import annotations

import numba
import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.account import account
from lwaftr.dataplane.bigendian import rd16

ETH = W.ETH_HLEN


@numba.njit(cache=True, nogil=True)
def stick_side(b, f, n, vlan4, vlan6):
    """The side (4 or 6) the frame ``b[f:f + n]`` belongs to, or 0 if it has
    neither side's VLAN tag; ``vlan4``/``vlan6``: the sides' VIDs, -1 untagged."""
    tagged = n >= ETH + W.VLAN_HLEN and rd16(b, f + 12) == W.ETHERTYPE_VLAN
    if vlan4 != vlan6:
        vid = rd16(b, f + 14) & 0xFFF if tagged else -1
        if vid == vlan4:
            return 4
        return 6 if vid == vlan6 else 0
    et = rd16(b, f + 16) if tagged else (rd16(b, f + 12) if n >= 14 else 0)
    return 4 if et == W.ETHERTYPE_IPV4 or et == W.ETHERTYPE_ARP else 6


@numba.njit(cache=True, nogil=True)
def split(buf, off, length, slots, vlan4, vlan6, counters, free_list, n_free, out4, out6):
    """Received slots -> the IPv4 side's (``out4``) and the IPv6 side's
    (``out6``), each in order; slots of neither side go back to the pool,
    counted.  Returns (n4, n6)."""
    k4 = 0
    k6 = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        side = stick_side(buf[s], np.int64(off[s]), np.int64(length[s]), vlan4, vlan6)
        if side == 4:
            out4[k4] = s
            k4 += 1
        elif side == 6:
            out6[k6] = s
            k6 += 1
        else:
            account(counters, C.E_WRONG_VLAN, length[s])
            free_list[n_free[0]] = s
            n_free[0] += 1
    return k4, k6


def split_frames(frames: list[bytes], vlan4: int, vlan6: int, counters: np.ndarray
                 ) -> tuple[list[bytes], list[bytes]]:
    """Python frames -> (IPv4 side's, IPv6 side's), by :func:`stick_side`; frames of
    neither side's VLAN are counted (``drop-wrong-vlan-packets``) and dropped."""
    v4, v6 = [], []
    for f in frames:
        side = stick_side(np.frombuffer(f[:ETH + W.VLAN_HLEN], np.uint8), 0, len(f), vlan4, vlan6)
        if side == 4:
            v4.append(f)
        elif side == 6:
            v6.append(f)
        else:
            counters[C.DROP_WRONG_VLAN_PACKETS] += 1
    return v4, v6
