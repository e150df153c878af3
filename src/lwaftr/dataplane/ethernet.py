"""Writing an Ethernet header (and an 802.1Q tag) in front of a packet, from numba."""
from __future__ import annotations

import numba

from lwaftr import wire as W
from lwaftr.dataplane.bigendian import wr16


@numba.njit(cache=True, nogil=True, inline="always")
def write_eth(b, l3, macs, dst_row, src_row, vid, ethertype):
    """Write Ethernet (+ 802.1Q when ``vid >= 0``) ending at ``l3``, its MACs rows
    ``dst_row`` and ``src_row`` of ``macs``; returns its start."""
    e = l3 - W.ETH_HLEN - (W.VLAN_HLEN if vid >= 0 else 0)
    for j in range(6):
        b[e + j] = macs[dst_row, j]
        b[e + 6 + j] = macs[src_row, j]
    if vid >= 0:
        wr16(b, e + 12, W.ETHERTYPE_VLAN)
        wr16(b, e + 14, vid)
        wr16(b, e + 16, ethertype)
    else:
        wr16(b, e + 12, ethertype)
    return e
