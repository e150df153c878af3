"""802.1Q tags on Python frames (the reference and adapters).

A frame belongs to an interface with tag VID when its outer TPID is 0x8100
and its VID matches (priority bits are ignored).  Tags are pushed with PCP 0.
"""
from __future__ import annotations

import struct

from lwaftr import wire as W


def vid_of(frame: bytes) -> int | None:
    """The 802.1Q VID of ``frame``, or None if it is untagged."""
    if len(frame) >= W.ETH_HLEN + W.VLAN_HLEN and int.from_bytes(frame[12:14], "big") == W.ETHERTYPE_VLAN:
        return int.from_bytes(frame[14:16], "big") & 0x0FFF
    return None


def pop_tag(frame: bytes) -> bytes:
    return frame[:12] + frame[16:]


def push_tag(frame: bytes, vid: int) -> bytes:
    return frame[:12] + struct.pack("!HH", W.ETHERTYPE_VLAN, vid & 0x0FFF) + frame[12:]


def inner_ethertype(frame: bytes) -> int:
    """Ethertype after an optional 802.1Q tag."""
    et = int.from_bytes(frame[12:14], "big")
    if et == W.ETHERTYPE_VLAN and len(frame) >= 18:
        return int.from_bytes(frame[16:18], "big")
    return et
