"""Kernel control-plane mode: which frames are the kernel's, and next hops it resolves.

In this mode ("bump in the wire") the data plane keeps only lwAFTR work:
IPv4 to or from the softwires and IPv4-in-IPv6 to the BR addresses.  Every
other frame goes, unchanged, to a TAP interface that carries the router's
own addresses, so the kernel answers ARP, NDP and ping and runs BGP, BFD or
OSPF; what the kernel sends on the TAP goes out of the data interface.  The
next hops' MACs come from the kernel's neighbour table (``lwaftr.io.neighbors``)
and are handed to :class:`KernelNextHop`.

Sans I/O: frames in, frames out; the TAPs and netlink are the live loop's.

Punted to the kernel (untagged frames)::

    IPv4 side: ARP (but requests for a softwire address when answering for
               them is configured), IPv4 to our address, to multicast or to
               the broadcast address, and any other ethertype
    IPv6 side: IPv6 to a link-local or multicast address, to our address,
               or to a BR address unless it is IPv4-in-IPv6 (or a fragment:
               reassembly is ours) or an ICMPv6 error (ping and NDP for
               the BR addresses are the kernel's:
               the TAP carries them too), and any other ethertype (ARP,
               IPv4, LLDP, ...)
"""
from __future__ import annotations

import struct

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.bindingtable.table import BindingTable
from reference.neighbor import (ARP_HTYPE_ETHERNET, ARP_OPER_REPLY, ARP_OPER_REQUEST,
                                       ARP_PLEN_IPV4, ARP_PTYPE_IPV4, ETH_ARP_LEN, MAC_LEN,
                                       O_ARP_SHA, O_ARP_SPA, O_ARP_THA, O_ARP_TPA, ArpStage)

_ETH_IPV4 = W.ETHERTYPE_IPV4.to_bytes(2, "big")
_ETH_IPV6 = W.ETHERTYPE_IPV6.to_bytes(2, "big")
_ETH_ARP = W.ETHERTYPE_ARP.to_bytes(2, "big")
_DEST_OPTS = 60                 # may carry a Tunnel Encapsulation Limit (RFC 2473)
_ICMPV6_INFORMATIONAL = 128     # ICMPv6 types below are errors (RFC 4443 2.1)


class KernelNextHop:
    """Southbound MAC rewrite with a next hop the kernel resolves.

    ``next_mac`` is set from outside (static from the configuration, or from
    the kernel's neighbour table); while it is ``None`` frames are dropped and
    counted (``drop-no-next-hop-*``), never sent to a guessed address.  Has
    the interface of the built-in ARP/NDP stages that the engine uses.
    """

    held = 0

    def __init__(self, counters: np.ndarray, self_mac: bytes, next_mac: bytes | None, drop_counter: int) -> None:
        self.c = counters
        self.self_mac = bytes(self_mac)
        self.next_mac = None if next_mac is None else bytes(next_mac)
        self._drop = drop_counter

    def to_wire(self, frame: bytes) -> bytes | None:
        if self.next_mac is None:
            self.c[self._drop] += 1
            return None
        return (self.next_mac + self.self_mac + frame[2 * MAC_LEN:])[:len(frame)]

    @staticmethod
    def poll(now: float) -> list[bytes]:
        return []

    @staticmethod
    def flush() -> list[bytes]:
        return []


class Punt:
    """Splits received frames between the data plane and the kernel."""

    def __init__(self, ipv4: bytes, ipv6: bytes, mac4: bytes, table: BindingTable,
                 answer_arp_for_softwires: bool, counters: np.ndarray) -> None:
        self.ipv4 = bytes(ipv4)
        self.ipv6 = bytes(ipv6)
        self.mac4 = bytes(mac4)
        self.table = table
        self.br_addresses = frozenset(bytes(r) for r in table.br_tab if r.any())
        self.proxy_arp = answer_arp_for_softwires
        self.c = counters

    def set_table(self, table: BindingTable) -> None:
        self.table = table
        self.br_addresses = frozenset(bytes(r) for r in table.br_tab if r.any())

    def split4(self, frames: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """IPv4-side frames -> (data plane, kernel, ARP replies to send back)."""
        data, kernel, replies = [], [], []
        for f in frames:
            et = f[W.O_ETH_TYPE:W.ETH_HLEN]
            if et == _ETH_IPV4 and len(f) >= W.ETH_HLEN + W.IPV4_HLEN:
                dst = f[W.ETH_HLEN + W.O_IPV4_DST:W.ETH_HLEN + W.O_IPV4_DST + 4]
                # Ours (unless it is also a softwire's), multicast (224/4), broadcast.
                if dst[0] >= 224 or (dst == self.ipv4 and not self.table.is_managed(int.from_bytes(dst, "big"))):
                    kernel.append(f)
                else:
                    data.append(f)
            elif et == _ETH_ARP and self.proxy_arp:
                reply = self._proxy_arp(f)
                if reply is None:
                    kernel.append(f)
                elif reply:
                    replies.append(reply)
            elif et == _ETH_IPV4:
                data.append(f)                  # runt: the core drops and counts it
            else:
                kernel.append(f)
        return data, kernel, replies

    def split6(self, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """IPv6-side frames -> (data plane, kernel)."""
        data, kernel = [], []
        brs = self.br_addresses
        for f in frames:
            if f[W.O_ETH_TYPE:W.ETH_HLEN] != _ETH_IPV6:
                kernel.append(f)
                continue
            if len(f) < W.ETH_HLEN + W.IPV6_HLEN + 4:
                data.append(f)                  # runt: the core drops and counts it
                continue
            dst = f[W.ETH_HLEN + W.O_IPV6_DST:W.ETH_HLEN + W.O_IPV6_DST + 16]
            if dst[0] == 0xFF or (dst[0] == 0xFE and dst[1] & 0xC0 == 0x80):
                kernel.append(f)                # multicast (NDP, MLD, OSPFv3, ...), link-local
            elif dst in brs:
                # Softwire traffic (fragmented too: reassembled, then decapsulated) and
                # ICMPv6 errors about it (RFC 2473) are ours; ping, NDP and the rest to a
                # BR address are the kernel's.
                nh = f[W.ETH_HLEN + W.O_IPV6_NEXT_HEADER]
                ours = nh in (W.PROTO_IPV4, _DEST_OPTS, W.PROTO_FRAGMENT) or (
                    nh == W.PROTO_ICMPV6 and f[W.ETH_HLEN + W.IPV6_HLEN] < _ICMPV6_INFORMATIONAL)
                (data if ours else kernel).append(f)
            elif dst == self.ipv6:
                kernel.append(f)
            else:
                data.append(f)
        return data, kernel

    def _proxy_arp(self, f: bytes) -> bytes | None:
        """A reply to an ARP request for a softwire's public address, b"" for an
        ARP frame to drop, ``None`` for one that is the kernel's."""
        if len(f) < ETH_ARP_LEN:
            return None
        a = W.ETH_HLEN
        htype, ptype, hlen, plen, oper = struct.unpack_from("!HHBBH", f, a)
        if (htype, ptype, hlen, plen, oper) != (ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, MAC_LEN, ARP_PLEN_IPV4,
                                                ARP_OPER_REQUEST):
            return None
        tpa = f[a + O_ARP_TPA:a + O_ARP_TPA + 4]
        if tpa == self.ipv4 or not self.table.is_managed(int.from_bytes(tpa, "big")):
            return None
        sha, spa = f[a + O_ARP_SHA:a + O_ARP_SPA], f[a + O_ARP_SPA:a + O_ARP_THA]
        self.c[C.IN_ARP_REQUEST_BYTES] += len(f)
        self.c[C.IN_ARP_REQUEST_PACKETS] += 1
        reply = ArpStage._arp(sha, self.mac4, ARP_OPER_REPLY, self.mac4, tpa, sha, spa)
        self.c[C.OUT_ARP_REPLY_BYTES] += len(reply)
        self.c[C.OUT_ARP_REPLY_PACKETS] += 1
        return reply
