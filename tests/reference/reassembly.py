"""IPv4 and IPv6 reassembly: the first stage of each side's slow path.

Behaviour follows Snabb's ``apps/ipv4/reassemble.lua`` and
``apps/ipv6/reassemble.lua`` wherever the end-to-end vectors can see it, and
the RFCs where Snabb is silent or wrong.

What each stage counts (``counters`` is the shared ``uint64`` array):

=================================  ==========================================
frame                              counters (``4`` or ``6`` per family)
=================================  ==========================================
not of this family (ARP, IPv6 on   ``in-ipvX-frag-reassembly-unneeded`` +1,
the IPv4 side, < 14 bytes ...)     passed on unchanged (Snabb counts these
                                   too; the ARP and wrong-interface vectors
                                   check it)
fails Snabb's length check         ``drop-malformed-ipvX-bytes/packets`` (ours;
(IPv4: < 34 bytes, IHL < 5, total  Snabb drops it without a counter)
length > frame; IPv6: < 54 bytes,
payload length > frame)
not a fragment                     ``in-ipvX-frag-reassembly-unneeded`` +1,
                                   passed on unchanged
a fragment                         ``in-ipvX-frag-needs-reassembly`` +1, then:
- with a bad header (version, IHL  ``drop-malformed-ipvX-bytes/packets`` (ours)
  > total length, IPv4 header
  checksum, IPv6 fragment header
  cut short)
- completing its packet            ``in-ipvX-frag-reassembled`` +1
- making the reassembly invalid    ``drop-ipvX-frag-invalid-reassembly`` +1 (once
                                   per abandoned reassembly, not per fragment)
- starting a reassembly while      ``drop-ipvX-frag-random-evicted`` +1
  ``max_packets`` are in progress
a reassembly older than            ``drop-ipvX-frag-invalid-reassembly`` +1
``timeout`` seconds (checked on    (IPv6: Snabb's 60 s; IPv4: Snabb has no
every ``push``/``expire``)         timeout, ours is 30 s)
=================================  ==========================================

A reassembly is abandoned (all its fragments discarded, one
``invalid-reassembly``) on: a fragment beyond ``max_fragments_per_packet``
(Snabb); a second final fragment (Snabb); a non-final fragment whose length is
not a multiple of 8 (RFC 8200 4.5, Snabb for IPv6; RFC 791 3.2 for IPv4); a
reassembled frame larger than ``max_frame`` (Snabb's 10 KiB packets) or an IP
datagram over 65535 bytes (RFC 791 3.1, RFC 8200 4.5); and, beyond Snabb, a
zero-length fragment, any overlap including exact duplicates (RFC 5722 section
4, RFC 8200 4.5) and a fragment past the final fragment's end.  Snabb only
notices overlaps when the byte count adds up, so duplicated fragments leave
its reassembly stuck until eviction.

The reassembled frame keeps the Ethernet header of the first fragment to arrive
(as Snabb does) and the IP header of the offset-0 fragment (RFC 791 3.2,
RFC 8200 4.5; Snabb takes the first to arrive, which is the same bytes unless
fragments differ in TTL, options ...).  IPv4: identification and
flags/fragment offset are zeroed, total length and header checksum rewritten
(as Snabb does; the vectors expect ID 0).  IPv6: the Fragment header is
removed, payload length and next header (from the offset-0 fragment's
Fragment header) rewritten; the hop limit is untouched.
"""
from __future__ import annotations

import random
import struct
from bisect import bisect_left
from collections import OrderedDict

import numpy as np

import lwaftr.counters as C
from lwaftr import wire as W
from lwaftr.dataplane.defrag import (FRAG_UNIT, IPV4_REASSEMBLY_TIMEOUT, IPV6_REASSEMBLY_TIMEOUT,  # noqa: F401
                                     MAX_IP_LENGTH, SNABB_MAX_FRAME)


_IPV6_FRAG_MF = 0x0001
_IPV6_FRAG_OFFSET_MASK = 0xFFF8      # offset in bytes: the field is already <<3
_O_FH_NEXT_HEADER = 0
_O_FH_OFFSET_FLAGS = 2
_O_FH_ID = 4
_ETH_IPV4_MIN = W.ETH_HLEN + W.IPV4_HLEN
_ETH_IPV6 = W.ETH_HLEN + W.IPV6_HLEN


def _u16(b: bytes, o: int) -> int:
    return (b[o] << 8) | b[o + 1]


def ipv4_checksum(header: bytes | bytearray) -> int:
    """Internet checksum (RFC 1071) of an IPv4 header of even length."""
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class _Reassembly:
    """One packet being reassembled; holds at most ``max_frame`` data bytes."""

    __slots__ = ("eth", "l3", "next_header", "starts", "ends", "total", "final_end", "data", "created")

    def __init__(self, eth: bytes, now: float) -> None:
        self.eth = eth                  # Ethernet header of the first fragment to arrive
        self.l3: bytes | None = None    # IP header of the offset-0 fragment
        self.next_header = 0            # IPv6: next header of the offset-0 Fragment header
        self.starts: list[int] = []     # sorted, non-overlapping fragment ranges
        self.ends: list[int] = []
        self.total = 0                  # data bytes received
        self.final_end: int | None = None
        self.data = bytearray()
        self.created = now


class _Table:
    """Reassemblies by key: oldest first for expiry, O(1) random eviction."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity = capacity
        self._rng = rng
        self._by_key: OrderedDict[object, _Reassembly] = OrderedDict()
        self._keys: list[object] = []
        self._pos: dict[object, int] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: object) -> _Reassembly | None:
        return self._by_key.get(key)

    def add(self, key: object, r: _Reassembly) -> bool:
        """Insert; evicts a random reassembly first if full.  True if it did."""
        evicted = len(self._by_key) >= self.capacity
        if evicted:
            self.remove(self._keys[self._rng.randrange(len(self._keys))])
        self._by_key[key] = r
        self._pos[key] = len(self._keys)
        self._keys.append(key)
        return evicted

    def remove(self, key: object) -> None:
        del self._by_key[key]
        i = self._pos.pop(key)
        last = self._keys.pop()
        if i < len(self._keys):
            self._keys[i] = last
            self._pos[last] = i

    def expire(self, now: float, timeout: float) -> int:
        """Drop reassemblies older than ``timeout``; returns how many."""
        n = 0
        while self._by_key:
            key, r = next(iter(self._by_key.items()))
            if now - r.created <= timeout:
                break
            self.remove(key)
            n += 1
        return n


class _Reassembler:
    """What IPv4 and IPv6 reassembly share: the table and the range checks."""

    _HEADER_IN_LENGTH: int   # 1: IPv4 total length counts the header; 0: IPv6 payload length
    _UNNEEDED: int
    _NEEDS: int
    _REASSEMBLED: int
    _INVALID: int
    _EVICTED: int
    _MALFORMED_BYTES: int
    _MALFORMED_PACKETS: int

    def __init__(self, counters: np.ndarray, max_fragments_per_packet: int, max_packets: int, *,
                 timeout: float, max_frame: int = SNABB_MAX_FRAME, seed: int | None = None) -> None:
        self.c = counters
        self.max_fragments = max_fragments_per_packet
        self.max_packets = max_packets
        self.timeout = timeout
        self.max_frame = max_frame
        self._table = _Table(max_packets, random.Random(seed))

    def __len__(self) -> int:
        """Reassemblies in progress."""
        return len(self._table)

    def expire(self, now: float) -> None:
        """Abandon reassemblies older than ``timeout`` (each counted invalid)."""
        n = self._table.expire(now, self.timeout)
        if n:
            self.c[self._INVALID] += n

    def push_batch(self, frames: list[bytes], now: float) -> list[bytes]:
        """``push`` each frame; what comes out, in Snabb's order."""
        out = []
        for f in frames:
            g = self.push(f, now)
            if g is not None:
                out.append(g)
        return out

    def push(self, frame: bytes, now: float) -> bytes | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pass(self, frame: bytes) -> bytes:
        self.c[self._UNNEEDED] += 1
        return frame

    def _malformed(self, frame: bytes) -> None:
        self.c[self._MALFORMED_BYTES] += len(frame)
        self.c[self._MALFORMED_PACKETS] += 1

    def _fail(self, key: object) -> None:
        self._table.remove(key)
        self.c[self._INVALID] += 1

    def _add_fragment(self, key: object, frame: bytes, l3: bytes, next_header: int,
                      start: int, data_off: int, size: int, more: bool, now: float) -> _Reassembly | None:
        """File one fragment's ``size`` data bytes at ``frame[data_off:]``
        under ``key``; the finished reassembly once it is complete."""
        r = self._table.get(key)
        if r is None:
            if self._table.capacity <= 0:       # max-packets 0: nothing can be held
                self.c[self._INVALID] += 1
                return None
            r = _Reassembly(frame[:W.ETH_HLEN], now)
            # Like Snabb, the entry exists (and may have evicted another)
            # before the fragment is judged.
            if self._table.add(key, r):
                self.c[self._EVICTED] += 1
        end = start + size
        if len(r.starts) + 1 > self.max_fragments:
            return self._fail(key)
        if size == 0:
            return self._fail(key)
        if more:
            if size % FRAG_UNIT:
                return self._fail(key)
            if r.final_end is not None and end > r.final_end:
                return self._fail(key)
        else:
            if r.final_end is not None or (r.ends and r.ends[-1] > end):
                return self._fail(key)
        if (W.ETH_HLEN + len(l3) + end > self.max_frame
                or self._HEADER_IN_LENGTH * len(l3) + end > MAX_IP_LENGTH):
            return self._fail(key)
        i = bisect_left(r.starts, start)
        if (i < len(r.starts) and r.starts[i] < end) or (i > 0 and r.ends[i - 1] > start):
            return self._fail(key)
        r.starts.insert(i, start)
        r.ends.insert(i, end)
        if not more:
            r.final_end = end
        if start == 0:
            r.l3 = l3
            r.next_header = next_header
        if len(r.data) < end:
            r.data.extend(bytes(end - len(r.data)))
        r.data[start:end] = frame[data_off:data_off + size]
        r.total += size
        if r.final_end is None or r.total != r.final_end:
            return None
        # No overlaps, so `total == final_end` means [0, final_end) is covered.
        self._table.remove(key)
        if W.ETH_HLEN + len(r.l3) + r.total > self.max_frame:   # offset-0 header longer than others
            self.c[self._INVALID] += 1
            return None
        self.c[self._REASSEMBLED] += 1
        return r


class Reassembler4(_Reassembler):
    """IPv4 reassembly (RFC 791 3.2, RFC 815 hole bookkeeping as sorted ranges).

    Fragments are keyed by (source, destination, protocol, identification) as
    RFC 791 3.2 says; Snabb leaves out the protocol.  ``max_packets``
    reassemblies at most (Snabb's table actually holds up to one more, an
    artefact of its 90 % load factor); a new one beyond that evicts a random
    one, as Snabb does (``seed`` makes the choice reproducible).  Memory:
    at most ``max_packets`` x ``max_frame`` data bytes plus headers.
    """

    _HEADER_IN_LENGTH = 1
    _UNNEEDED = C.IN_IPV4_FRAG_REASSEMBLY_UNNEEDED
    _NEEDS = C.IN_IPV4_FRAG_NEEDS_REASSEMBLY
    _REASSEMBLED = C.IN_IPV4_FRAG_REASSEMBLED
    _INVALID = C.DROP_IPV4_FRAG_INVALID_REASSEMBLY
    _EVICTED = C.DROP_IPV4_FRAG_RANDOM_EVICTED
    _MALFORMED_BYTES = C.DROP_MALFORMED_IPV4_BYTES
    _MALFORMED_PACKETS = C.DROP_MALFORMED_IPV4_PACKETS

    def __init__(self, counters: np.ndarray, max_fragments_per_packet: int, max_packets: int, *,
                 timeout: float = IPV4_REASSEMBLY_TIMEOUT, max_frame: int = SNABB_MAX_FRAME,
                 seed: int | None = None) -> None:
        super().__init__(counters, max_fragments_per_packet, max_packets,
                         timeout=timeout, max_frame=max_frame, seed=seed)

    def push(self, frame: bytes, now: float) -> bytes | None:
        """A non-fragment back unchanged, a fragment absorbed (``None``) until
        it completes its datagram, then the reassembled frame."""
        self.expire(now)
        n = len(frame)
        if n < W.ETH_HLEN or _u16(frame, W.O_ETH_TYPE) != W.ETHERTYPE_IPV4:
            return self._pass(frame)
        o = W.ETH_HLEN
        if n < _ETH_IPV4_MIN:
            self._malformed(frame)      # Snabb drops these uncounted
            return None
        vihl = frame[o]
        ihl = (vihl & 0xF) * 4
        total = _u16(frame, o + W.O_IPV4_TOTAL_LENGTH)
        if ihl < W.IPV4_HLEN or total > n - o:
            self._malformed(frame)      # Snabb drops these uncounted
            return None
        flags = _u16(frame, o + W.O_IPV4_FLAGS)
        if not flags & (W.IPV4_FLAG_MF | W.IPV4_FRAG_OFFSET_MASK):
            return self._pass(frame)
        self.c[self._NEEDS] += 1
        if vihl >> 4 != 4 or total < ihl or ipv4_checksum(frame[o:o + ihl]) != 0:
            self._malformed(frame)
            return None
        key = (frame[o + W.O_IPV4_SRC:o + W.O_IPV4_SRC + 8], frame[o + W.O_IPV4_PROTO], frame[o + W.O_IPV4_ID:o + W.O_IPV4_ID + 2])
        start = (flags & W.IPV4_FRAG_OFFSET_MASK) * FRAG_UNIT
        r = self._add_fragment(key, frame, frame[o:o + ihl], 0, start, o + ihl, total - ihl,
                               bool(flags & W.IPV4_FLAG_MF), now)
        if r is None:
            return None
        hdr = bytearray(r.l3)
        struct.pack_into("!HHHBBH", hdr, W.O_IPV4_TOTAL_LENGTH, len(hdr) + r.total, 0, 0,
                         hdr[W.O_IPV4_TTL], hdr[W.O_IPV4_PROTO], 0)
        struct.pack_into("!H", hdr, W.O_IPV4_CHECKSUM, ipv4_checksum(hdr))
        return r.eth + bytes(hdr) + bytes(r.data)


class Reassembler6(_Reassembler):
    """IPv6 reassembly (RFC 8200 4.5).

    As in Snabb, a packet is a fragment when the Fragment header directly
    follows the fixed header (next header 44); fragments are keyed by
    (source, destination, identification).  An atomic fragment (offset 0,
    M clear) is returned at once without its Fragment header and without
    touching reassemblies of the same ID (RFC 6946 section 4; Snabb keeps it
    forever).  Timeout, eviction and memory as for :class:`Reassembler4`.
    Snabb's app handles a breath in two passes, non-fragments first; use
    :meth:`push_batch` to get its output order.
    """

    _HEADER_IN_LENGTH = 0
    _UNNEEDED = C.IN_IPV6_FRAG_REASSEMBLY_UNNEEDED
    _NEEDS = C.IN_IPV6_FRAG_NEEDS_REASSEMBLY
    _REASSEMBLED = C.IN_IPV6_FRAG_REASSEMBLED
    _INVALID = C.DROP_IPV6_FRAG_INVALID_REASSEMBLY
    _EVICTED = C.DROP_IPV6_FRAG_RANDOM_EVICTED
    _MALFORMED_BYTES = C.DROP_MALFORMED_IPV6_BYTES
    _MALFORMED_PACKETS = C.DROP_MALFORMED_IPV6_PACKETS

    def __init__(self, counters: np.ndarray, max_fragments_per_packet: int, max_packets: int, *,
                 timeout: float = IPV6_REASSEMBLY_TIMEOUT, max_frame: int = SNABB_MAX_FRAME,
                 seed: int | None = None) -> None:
        super().__init__(counters, max_fragments_per_packet, max_packets,
                         timeout=timeout, max_frame=max_frame, seed=seed)

    @staticmethod
    def _is_fragment(frame: bytes) -> bool:
        n = len(frame)
        return (n >= _ETH_IPV6 and _u16(frame, W.O_ETH_TYPE) == W.ETHERTYPE_IPV6
                and _u16(frame, W.ETH_HLEN + W.O_IPV6_PAYLOAD_LENGTH) <= n - _ETH_IPV6
                and frame[W.ETH_HLEN + W.O_IPV6_NEXT_HEADER] == W.PROTO_FRAGMENT)

    def push_batch(self, frames: list[bytes], now: float) -> list[bytes]:
        """Snabb's order for one breath: every non-fragment (in order) first,
        then the packets the fragments complete."""
        self.expire(now)
        out, frags = [], []
        for f in frames:
            if self._is_fragment(f):
                frags.append(f)
                continue
            g = self.push(f, now)
            if g is not None:
                out.append(g)
        for f in frags:
            g = self.push(f, now)
            if g is not None:
                out.append(g)
        return out

    def push(self, frame: bytes, now: float) -> bytes | None:
        """A non-fragment back unchanged, a fragment absorbed (``None``) until
        it completes its packet, then the reassembled frame."""
        self.expire(now)
        n = len(frame)
        if n < W.ETH_HLEN or _u16(frame, W.O_ETH_TYPE) != W.ETHERTYPE_IPV6:
            return self._pass(frame)
        o = W.ETH_HLEN
        if n < _ETH_IPV6 or _u16(frame, o + W.O_IPV6_PAYLOAD_LENGTH) > n - _ETH_IPV6:
            self._malformed(frame)      # Snabb drops these uncounted
            return None
        if frame[o + W.O_IPV6_NEXT_HEADER] != W.PROTO_FRAGMENT:
            return self._pass(frame)
        self.c[self._NEEDS] += 1
        plen = _u16(frame, o + W.O_IPV6_PAYLOAD_LENGTH)
        if frame[o] >> 4 != 6 or plen < W.IPV6_FRAG_HLEN:
            self._malformed(frame)
            return None
        fh = _ETH_IPV6
        next_header = frame[fh + _O_FH_NEXT_HEADER]
        offset_flags = _u16(frame, fh + _O_FH_OFFSET_FLAGS)
        start = offset_flags & _IPV6_FRAG_OFFSET_MASK
        more = bool(offset_flags & _IPV6_FRAG_MF)
        size = plen - W.IPV6_FRAG_HLEN
        data_off = fh + W.IPV6_FRAG_HLEN
        if start == 0 and not more:     # atomic fragment (RFC 6946 4)
            self.c[self._REASSEMBLED] += 1
            return self._build(frame[:o], frame[o:fh], next_header, frame[data_off:data_off + size])
        key = (frame[o + W.O_IPV6_SRC:o + W.O_IPV6_DST + 16], frame[fh + _O_FH_ID:fh + _O_FH_ID + 4])
        r = self._add_fragment(key, frame, frame[o:fh], next_header, start, data_off, size, more, now)
        if r is None:
            return None
        return self._build(r.eth, r.l3, r.next_header, r.data)

    @staticmethod
    def _build(eth: bytes, l3: bytes, next_header: int, data: bytes | bytearray) -> bytes:
        hdr = bytearray(l3)
        struct.pack_into("!HB", hdr, W.O_IPV6_PAYLOAD_LENGTH, len(data), next_header)
        return eth + bytes(hdr) + bytes(data)
