"""Echo responders for the lwAFTR's own addresses: ICMPv4 (RFC 792) and
ICMPv6 (RFC 4443 4.1, 4.2), as Snabb's ``apps/ipv4/echo.lua`` and
``apps/ipv6/echo.lua``.

Slow-path stages on untagged Ethernet frames.  A request is answered in
place of the frame: a copy with Ethernet and IP addresses swapped, TTL / hop
limit 64, type "echo reply", checksums recomputed; identifier, sequence
number and data are echoed unchanged.  Nothing is validated beyond what
locates the ICMP header (no checksum, length or fragment checks: the
reassembler runs first).  Checksums cover the frame to its end, Ethernet
padding included, as Snabb's do.

In Snabb the reply leaves on the echo app's south output, which feeds the
egress filter and fragmenter directly: it does **not** pass the ARP/NDP app
(which sits between the lwAFTR core and the echo app southbound), so its
Ethernet addresses are just the request's, swapped (the vectors
``ping-v4-reply.pcap`` / ``ping-v6-reply.pcap`` confirm it).
"""
from __future__ import annotations

import struct

import numpy as np

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.icmp import checksum, ipv6_pseudo_sum

#: TTL / hop limit of the replies (Snabb: 64).
REPLY_TTL = 64
MAC_LEN = 6
ICMP_MIN = 4                      # type, code, checksum: all the stages read
IPV4_IHL_MASK = 0x0F
#: Snabb "clears the flags" with ``band(flags_and_fragment_offset, 0x1fff)``
#: applied to the field as read in host (little-endian) order: the flags byte
#: is kept and the top 3 bits of the offset's low byte are cleared.  Replies
#: to (reassembled, offset 0) requests therefore keep DF and are otherwise
#: unchanged; we reproduce the byte effect.
IPV4_FRAG_LOW_BYTE_MASK = 0x1F

_O_IP = W.ETH_HLEN
_O_SRC4 = _O_IP + W.O_IPV4_SRC
_O_DST4 = _O_IP + W.O_IPV4_DST
_O_SRC6 = _O_IP + W.O_IPV6_SRC
_O_DST6 = _O_IP + W.O_IPV6_DST


def _swap_macs(out: bytearray, frame: bytes) -> None:
    out[W.O_ETH_DST:W.O_ETH_DST + MAC_LEN] = frame[W.O_ETH_SRC:W.O_ETH_SRC + MAC_LEN]
    out[W.O_ETH_SRC:W.O_ETH_SRC + MAC_LEN] = frame[W.O_ETH_DST:W.O_ETH_DST + MAC_LEN]


class _EchoStage:
    _C_IN_BYTES: int
    _C_IN_PACKETS: int
    _C_OUT_BYTES: int
    _C_OUT_PACKETS: int

    def __init__(self, counters: np.ndarray, address: bytes) -> None:
        self.c = counters
        self.address = bytes(address)

    def _reply(self, frame: bytes) -> bytes | None:
        raise NotImplementedError

    def from_wire(self, frame: bytes) -> tuple[bytes | None, bytes | None]:
        """Northbound: ``(frame, None)`` to pass it on, ``(None, reply)`` for an
        echo request to our address (reply to send south)."""
        reply = self._reply(frame)
        if reply is None:
            return frame, None
        self.c[self._C_IN_BYTES] += len(frame)
        self.c[self._C_IN_PACKETS] += 1
        self.c[self._C_OUT_BYTES] += len(reply)
        self.c[self._C_OUT_PACKETS] += 1
        return None, reply

    @staticmethod
    def to_wire(frame: bytes) -> bytes:
        """Southbound: Snabb's echo apps forward frames unchanged."""
        return frame


class Echo4Stage(_EchoStage):
    """Answers ICMPv4 echo requests (type 8, code 0) to ``address`` (RFC 792)."""

    _C_IN_BYTES = C.IN_ICMPV4_ECHO_BYTES
    _C_IN_PACKETS = C.IN_ICMPV4_ECHO_PACKETS
    _C_OUT_BYTES = C.OUT_ICMPV4_ECHO_BYTES
    _C_OUT_PACKETS = C.OUT_ICMPV4_ECHO_PACKETS

    def _reply(self, frame: bytes) -> bytes | None:
        if len(frame) < W.ETH_HLEN + W.IPV4_HLEN + ICMP_MIN:
            return None
        if frame[W.O_ETH_TYPE:W.ETH_HLEN] != b"\x08\x00" or frame[_O_IP + W.O_IPV4_PROTO] != W.PROTO_ICMP:
            return None
        # Snabb trusts the IHL (even below 5) once the frame holds that much.
        ihl = (frame[_O_IP + W.O_IPV4_VER_IHL] & IPV4_IHL_MASK) * 4
        icmp = _O_IP + ihl
        if len(frame) < icmp + ICMP_MIN:
            return None
        if frame[icmp + W.O_ICMP_TYPE] != W.ICMPV4_ECHO_REQUEST or frame[icmp + W.O_ICMP_CODE] != 0:
            return None
        if frame[_O_DST4:_O_DST4 + 4] != self.address:
            return None
        # The same writes, in the same order, as Snabb (they can overlap for IHL < 5).
        out = bytearray(frame)
        _swap_macs(out, frame)
        out[_O_SRC4:_O_SRC4 + 4] = frame[_O_DST4:_O_DST4 + 4]
        out[_O_DST4:_O_DST4 + 4] = frame[_O_SRC4:_O_SRC4 + 4]
        out[_O_IP + W.O_IPV4_FLAGS + 1] &= IPV4_FRAG_LOW_BYTE_MASK
        out[_O_IP + W.O_IPV4_TTL] = REPLY_TTL
        csum = _O_IP + W.O_IPV4_CHECKSUM
        out[csum:csum + 2] = b"\0\0"
        struct.pack_into("!H", out, csum, checksum(out[_O_IP:icmp]))
        out[icmp + W.O_ICMP_TYPE] = W.ICMPV4_ECHO_REPLY
        out[icmp + W.O_ICMP_CHECKSUM:icmp + W.O_ICMP_CHECKSUM + 2] = b"\0\0"
        struct.pack_into("!H", out, icmp + W.O_ICMP_CHECKSUM, checksum(out[icmp:]))
        return bytes(out)


class Echo6Stage(_EchoStage):
    """Answers ICMPv6 echo requests (type 128, code 0) to ``address``, the
    ICMPv6 header directly after the IPv6 header (RFC 4443 4.1, 4.2)."""

    _C_IN_BYTES = C.IN_ICMPV6_ECHO_BYTES
    _C_IN_PACKETS = C.IN_ICMPV6_ECHO_PACKETS
    _C_OUT_BYTES = C.OUT_ICMPV6_ECHO_BYTES
    _C_OUT_PACKETS = C.OUT_ICMPV6_ECHO_PACKETS

    def _reply(self, frame: bytes) -> bytes | None:
        icmp = W.ETH_HLEN + W.IPV6_HLEN
        if len(frame) < icmp + ICMP_MIN:
            return None
        if frame[W.O_ETH_TYPE:W.ETH_HLEN] != b"\x86\xdd" or frame[_O_IP + W.O_IPV6_NEXT_HEADER] != W.PROTO_ICMPV6:
            return None
        if frame[icmp + W.O_ICMP_TYPE] != W.ICMPV6_ECHO_REQUEST or frame[icmp + W.O_ICMP_CODE] != 0:
            return None
        if frame[_O_DST6:_O_DST6 + 16] != self.address:
            return None
        out = bytearray(frame)
        _swap_macs(out, frame)
        src, dst = frame[_O_DST6:_O_DST6 + 16], frame[_O_SRC6:_O_SRC6 + 16]
        out[_O_SRC6:_O_SRC6 + 16] = src
        out[_O_DST6:_O_DST6 + 16] = dst
        out[_O_IP + W.O_IPV6_HOP_LIMIT] = REPLY_TTL
        out[icmp + W.O_ICMP_TYPE] = W.ICMPV6_ECHO_REPLY
        out[icmp + W.O_ICMP_CHECKSUM:icmp + W.O_ICMP_CHECKSUM + 2] = b"\0\0"
        # Pseudo-header length from the IPv6 header, sum over the rest of the frame (Snabb).
        plen = struct.unpack_from("!H", frame, _O_IP + W.O_IPV6_PAYLOAD_LENGTH)[0]
        s = ipv6_pseudo_sum(src, dst, plen, W.PROTO_ICMPV6)
        struct.pack_into("!H", out, icmp + W.O_ICMP_CHECKSUM, checksum(out[icmp:], s))
        return bytes(out)
