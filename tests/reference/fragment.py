"""The reference's IPv4 and IPv6 fragmentation: the last stage of each side.

Fragment sizes follow Snabb's ``apps/ipv4/fragment.lua`` and
``apps/ipv6/fragment.lua`` byte for byte: every fragment but the last carries
``mtu - headers`` data bytes rounded down to a multiple of 8 (RFC 791 3.2,
RFC 8200 4.5), the last carries the rest; each fragment repeats the frame's
Ethernet header.

Fragment IDs count up from a seed as the compiled fragmenters' do
(:mod:`lwaftr.dataplane.fragids`); the engine under test and this reference
are given the same seeds.

Counters: ``out-ipvX-frag-not`` +1 for every frame passed as one (including
non-IP frames such as ARP and NDP, as Snabb counts them); ``out-ipvX-frag``
+1 per fragment sent; ``drop-malformed-ipvX-bytes/packets`` (ours; Snabb
drops uncounted) for frames failing Snabb's length check (IPv4: < 34 bytes,
IHL < 5, total length > frame; IPv6: < 54 bytes, payload length > frame).
An IPv4 datagram with DF that does not fit is dropped uncounted, as in Snabb
(the core has already turned away those it could report).
"""
from __future__ import annotations

import struct

import numpy as np

import lwaftr.counters as C
from lwaftr import wire as W
from lwaftr.dataplane.defrag import FRAG_UNIT, MAX_IP_LENGTH
from lwaftr.dataplane.fragids import (ID_MASK4, ID_MASK6, IPV4_MIN_MTU, IPV6_MIN_MTU,  # noqa: F401
                                      SNABB_CHECK_ID_SEEDS, new_ids)
from reference.reassembly import ipv4_checksum

_ETH_IPV4_MIN = W.ETH_HLEN + W.IPV4_HLEN
_ETH_IPV6 = W.ETH_HLEN + W.IPV6_HLEN
_ALIGN = ~(FRAG_UNIT - 1)
_IPV4_FLAG_BITS = 0xE000
_IPV4_OPT_EOL = 0
_IPV4_OPT_NOP = 1
_IPV4_OPT_COPIED = 0x80
_IPV6_FRAG_MF = 0x0001
# RFC 8200 4.5: headers that belong to the Unfragmentable Part.
_IPV6_UNFRAGMENTABLE = (W.PROTO_HOPOPTS, W.PROTO_ROUTING)
_IPV6_EXT_CHAIN = (W.PROTO_HOPOPTS, W.PROTO_ROUTING, W.PROTO_DSTOPTS)


def _u16(b: bytes, o: int) -> int:
    return (b[o] << 8) | b[o + 1]


def ipv4_later_fragment_header(header: bytes) -> bytes:
    """The IPv4 header for fragments after the first: options whose copied
    flag is clear (RFC 791 3.1) overwritten with NOPs, the length kept
    (as Linux does; Snabb copies every option).  Unparseable options are
    left as they are."""
    h = bytearray(header)
    i = W.IPV4_HLEN
    while i < len(h):
        t = h[i]
        if t == _IPV4_OPT_EOL:
            break
        if t == _IPV4_OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(h) or h[i + 1] < 2 or i + h[i + 1] > len(h):
            break
        n = h[i + 1]
        if not t & _IPV4_OPT_COPIED:
            h[i:i + n] = bytes([_IPV4_OPT_NOP]) * n
        i += n
    return bytes(h)


class _Fragmenter:
    """What IPv4 and IPv6 fragmentation share: the ID counter and counting."""

    _ID_MASK: int
    _FRAG: int
    _FRAG_NOT: int
    _MALFORMED_BYTES: int
    _MALFORMED_PACKETS: int

    def __init__(self, counters: np.ndarray, mtu: int, id_seed: int | None) -> None:
        self.c = counters
        self.mtu = mtu
        #: The last ID used (:func:`lwaftr.dataplane.fragids.new_ids`).
        self.ids = new_ids(id_seed, self._ID_MASK)

    @property
    def last_id(self) -> int:
        return int(self.ids[0])

    def fresh_id(self) -> int:
        """The next fragment ID (Snabb pre-increments)."""
        self.ids[0] = (self.ids[0] + 1) & self._ID_MASK
        return int(self.ids[0])

    def _one(self, frame: bytes) -> list[bytes]:
        self.c[self._FRAG_NOT] += 1
        return [frame]

    def _malformed(self, frame: bytes) -> list[bytes]:
        self.c[self._MALFORMED_BYTES] += len(frame)
        self.c[self._MALFORMED_PACKETS] += 1
        return []

    def push(self, frame: bytes) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def push_batch(self, frames: list[bytes]) -> list[bytes]:
        """``push`` each frame; everything that leaves, in Snabb's order."""
        out: list[bytes] = []
        for f in frames:
            out.extend(self.push(f))
        return out


class Fragmenter4(_Fragmenter):
    """IPv4 fragmentation to ``mtu`` (IPv4 header and data, RFC 791 3.2).

    Beyond Snabb (identical output for datagrams without options that are not
    already fragments): non-copied options are NOP'd out of later fragments,
    and a fragment that is itself too big is split keeping its ID, offset and
    MF flag (RFC 791 3.2), where Snabb gives it a new ID and offsets from 0.
    Bytes past the total length (link padding) are not data: if the datagram
    without them fits it leaves as one frame, trimmed.
    """

    _ID_MASK = ID_MASK4
    _FRAG = C.OUT_IPV4_FRAG
    _FRAG_NOT = C.OUT_IPV4_FRAG_NOT
    _MALFORMED_BYTES = C.DROP_MALFORMED_IPV4_BYTES
    _MALFORMED_PACKETS = C.DROP_MALFORMED_IPV4_PACKETS

    def __init__(self, counters: np.ndarray, mtu: int, id_seed: int | None) -> None:
        if mtu < IPV4_MIN_MTU:
            raise ValueError(f"IPv4 MTU {mtu} below the RFC 791 minimum of {IPV4_MIN_MTU}")
        super().__init__(counters, mtu, id_seed)

    def push(self, frame: bytes) -> list[bytes]:
        """The frame as one, its fragments, or nothing (dropped)."""
        n = len(frame)
        if n < W.ETH_HLEN or _u16(frame, W.O_ETH_TYPE) != W.ETHERTYPE_IPV4:
            return self._one(frame)
        o = W.ETH_HLEN
        if n < _ETH_IPV4_MIN:
            return self._malformed(frame)
        ihl = (frame[o] & 0xF) * 4
        total = _u16(frame, o + W.O_IPV4_TOTAL_LENGTH)
        if ihl < W.IPV4_HLEN or total > n - o:
            return self._malformed(frame)
        if n - o <= self.mtu:
            return self._one(frame)
        if total < ihl:
            return self._malformed(frame)
        if total <= self.mtu:
            return self._one(frame[:o + total])
        flags = _u16(frame, o + W.O_IPV4_FLAGS)
        if flags & W.IPV4_FLAG_DF:
            return []                   # Snabb: dropped, no counter, no ICMP
        base = (flags & W.IPV4_FRAG_OFFSET_MASK) * FRAG_UNIT
        data_len = total - ihl
        if base + total > MAX_IP_LENGTH:
            return self._malformed(frame)
        if flags & (W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK):
            ident = _u16(frame, o + W.O_IPV4_ID)      # re-fragmenting a fragment
        else:
            ident = self.fresh_id()
        first = frame[o:o + ihl]
        later = ipv4_later_fragment_header(first)
        keep = flags & _IPV4_FLAG_BITS & ~W.IPV4_FLAG_MF
        last_more = flags & W.IPV4_FLAG_MF
        eth = frame[:o]
        out = []
        off = 0
        room = self.mtu - ihl
        while off < data_len:
            if off + room < data_len:
                size, more = room & _ALIGN, W.IPV4_FLAG_MF
            else:
                size, more = data_len - off, last_more
            hdr = bytearray(first if base + off == 0 else later)
            struct.pack_into("!HHH", hdr, W.O_IPV4_TOTAL_LENGTH, ihl + size, ident,
                             keep | more | ((base + off) // FRAG_UNIT))
            struct.pack_into("!H", hdr, W.O_IPV4_CHECKSUM, 0)
            struct.pack_into("!H", hdr, W.O_IPV4_CHECKSUM, ipv4_checksum(hdr))
            out.append(eth + bytes(hdr) + frame[o + ihl + off:o + ihl + off + size])
            off += size
        self.c[self._FRAG] += len(out)
        return out


class Fragmenter6(_Fragmenter):
    """IPv6 fragmentation to ``mtu`` (IPv6 packet size, RFC 8200 4.5 and 5).

    The Unfragmentable Part is the fixed header plus any Hop-by-Hop and
    Routing headers (and Destination Options before a Routing header)
    (RFC 8200 4.5); Snabb takes only the fixed header, the same for the
    packets the lwAFTR sends.  Bytes past the payload length are not data.
    Snabb's app handles a breath in three passes (non-IPv6, then IPv6 that
    fits, then fragments); :meth:`push_batch` gives that order.
    """

    _ID_MASK = ID_MASK6
    _FRAG = C.OUT_IPV6_FRAG
    _FRAG_NOT = C.OUT_IPV6_FRAG_NOT
    _MALFORMED_BYTES = C.DROP_MALFORMED_IPV6_BYTES
    _MALFORMED_PACKETS = C.DROP_MALFORMED_IPV6_PACKETS

    def __init__(self, counters: np.ndarray, mtu: int, id_seed: int | None) -> None:
        if mtu < IPV6_MIN_MTU:
            raise ValueError(f"IPv6 MTU {mtu} below the RFC 8200 minimum of {IPV6_MIN_MTU}")
        super().__init__(counters, mtu, id_seed)

    def push_batch(self, frames: list[bytes]) -> list[bytes]:
        """Snabb's order for one breath: non-IPv6 frames, then IPv6 frames
        that fit, then the fragments of the rest, each group in order."""
        first: list[bytes] = []
        fits: list[bytes] = []
        big: list[bytes] = []
        for f in frames:
            if len(f) < W.ETH_HLEN or _u16(f, W.O_ETH_TYPE) != W.ETHERTYPE_IPV6:
                first.extend(self.push(f))
            elif len(f) - W.ETH_HLEN <= self.mtu:
                fits.extend(self.push(f))
            else:
                big.extend(self.push(f))
        return first + fits + big

    @staticmethod
    def _unfragmentable_end(frame: bytes, end: int) -> tuple[int, int]:
        """(end of the Unfragmentable Part, offset of the Next Header byte
        that names the first fragmentable header)."""
        nh_at = W.ETH_HLEN + W.O_IPV6_NEXT_HEADER
        unfrag = pos = _ETH_IPV6
        nh = frame[nh_at]
        while nh in _IPV6_EXT_CHAIN and pos + 2 <= end:
            hlen = (frame[pos + 1] + 1) * 8
            if pos + hlen > end:
                break
            if nh in _IPV6_UNFRAGMENTABLE:
                unfrag, nh_at = pos + hlen, pos
            nh = frame[pos]
            pos += hlen
        return unfrag, nh_at

    def push(self, frame: bytes) -> list[bytes]:
        """The frame as one, its fragments, or nothing (dropped)."""
        n = len(frame)
        if n < W.ETH_HLEN or _u16(frame, W.O_ETH_TYPE) != W.ETHERTYPE_IPV6:
            return self._one(frame)
        o = W.ETH_HLEN
        if n < _ETH_IPV6:
            return self._malformed(frame)
        plen = _u16(frame, o + W.O_IPV6_PAYLOAD_LENGTH)
        if plen > n - _ETH_IPV6:
            return self._malformed(frame)
        if n - o <= self.mtu:
            return self._one(frame)
        end = _ETH_IPV6 + plen
        if end - o <= self.mtu:
            return self._one(frame[:end])
        unfrag, nh_at = self._unfragmentable_end(frame, end)
        room = self.mtu - (unfrag - o) - W.IPV6_FRAG_HLEN
        if room < FRAG_UNIT:
            return []                   # headers alone fill the MTU: cannot fragment
        head = bytearray(frame[:unfrag])
        next_header = head[nh_at]
        head[nh_at] = W.PROTO_FRAGMENT
        ident = self.fresh_id()
        data_len = end - unfrag
        out = []
        off = 0
        while off < data_len:
            if off + room < data_len:
                size, more = room & _ALIGN, _IPV6_FRAG_MF
            else:
                size, more = data_len - off, 0
            struct.pack_into("!H", head, o + W.O_IPV6_PAYLOAD_LENGTH,
                             unfrag - _ETH_IPV6 + W.IPV6_FRAG_HLEN + size)
            fh = struct.pack("!BBHI", next_header, 0, off | more, ident)
            out.append(bytes(head) + fh + frame[unfrag + off:unfrag + off + size])
            off += size
        self.c[self._FRAG] += len(out)
        return out
