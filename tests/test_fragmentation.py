"""Reassembly and fragmentation stages: behaviour, bad input, round trips,
and the Snabb end-to-end vectors that exercise them."""
from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lwaftr import counters as C
from lwaftr.config.load import load_config
from lwaftr.dataplane.engine import Engine
from reference.fragment import (SNABB_CHECK_ID_SEEDS, Fragmenter4, Fragmenter6,
                                       ipv4_later_fragment_header)
from reference.reassembly import (SNABB_MAX_FRAME, Reassembler4, Reassembler6, ipv4_checksum)
from lwaftr.io.pcap import read_frames

from conftest import VECTORS

MAC_A, MAC_B, MAC_C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
SRC4, DST4 = "192.0.2.1", "198.51.100.7"
SRC6, DST6 = "2001:db8::1", "2001:db8:ffff::1"
SEED4, SEED6 = SNABB_CHECK_ID_SEEDS        # the seeds the vectors were made with
FIRST_ID4, FIRST_ID6 = SEED4 + 1, SEED6 + 1
BIG = 20000      # limits for helper reassemblers that must never get in the way


def counts(c) -> dict[str, int]:
    return C.to_dict(c, nonzero=True)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def ipv4_frame(n: int = 100, *, ident: int = 0, flags: int = 0, frag: int = 0, proto: int = 17,
               src: str = SRC4, mac: str = MAC_A, ttl: int = 64, options=None, seed: int = 0) -> bytes:
    ip = IP(src=src, dst=DST4, id=ident, flags=flags, frag=frag, proto=proto, ttl=ttl)
    if options is not None:
        ip.options = options
    return bytes(Ether(src=mac, dst=MAC_B) / ip / Raw(payload(n, seed)))


def ipv4_fragment(data: bytes, start: int, more: bool, *, ident: int = 0x1234, proto: int = 17,
                  mac: str = MAC_A, ttl: int = 64, flags: int = 0) -> bytes:
    """A hand-made IPv4 fragment carrying ``data`` at byte offset ``start``."""
    assert start % 8 == 0
    ip = IP(src=SRC4, dst=DST4, id=ident, flags=flags | (1 if more else 0), frag=start // 8, proto=proto, ttl=ttl)
    return bytes(Ether(src=mac, dst=MAC_B) / ip / Raw(data))


def ipv6_frame(n: int = 100, *, nh: int = 4, mac: str = MAC_A, seed: int = 0) -> bytes:
    return bytes(Ether(src=mac, dst=MAC_B, type=0x86DD) / IPv6(src=SRC6, dst=DST6, nh=nh) / Raw(payload(n, seed)))


def ipv6_fragment(data: bytes, start: int, more: bool, *, ident: int = 0x89ABCDEF, nh: int = 4,
                  mac: str = MAC_A, hlim: int = 64) -> bytes:
    assert start % 8 == 0
    return bytes(Ether(src=mac, dst=MAC_B) / IPv6(src=SRC6, dst=DST6, hlim=hlim)
                 / IPv6ExtHdrFragment(nh=nh, offset=start // 8, m=int(more), id=ident) / Raw(data))


def reassembled4(frame: bytes) -> bytes:
    """What Snabb makes of a datagram after reassembly: ID, flags and
    offset zeroed, checksum recomputed."""
    b = bytearray(frame)
    struct.pack_into("!HHBBH", b, 18, 0, 0, b[22], b[23], 0)
    ihl = (b[14] & 0xF) * 4
    struct.pack_into("!H", b, 24, ipv4_checksum(b[14:14 + ihl]))
    return bytes(b)


def feed(stage, frames, now: float = 0.0) -> list[bytes]:
    out = []
    for f in frames:
        g = stage.push(f, now)
        if g is not None:
            out.append(g)
    return out


def arp_frame() -> bytes:
    return bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=SRC4, pdst=DST4))


# ---------------------------------------------------------------- IPv4 reassembly

class TestReassembler4:
    def test_non_fragment_passes_unchanged_counted_unneeded(self):
        c = C.new_array()
        f = ipv4_frame(64, ident=7, flags=2)        # DF alone is not a fragment
        assert Reassembler4(c, 40, 10).push(f, 0) is f
        assert counts(c) == {"in-ipv4-frag-reassembly-unneeded": 1}

    @pytest.mark.parametrize("frame", [arp_frame(), ipv6_frame(40), b"\x01\x02\x03"],
                             ids=["arp", "ipv6", "runt"])
    def test_non_ipv4_passes_and_is_counted_unneeded_like_snabb(self, frame):
        c = C.new_array()
        assert Reassembler4(c, 40, 10).push(frame, 0) is frame
        assert counts(c) == {"in-ipv4-frag-reassembly-unneeded": 1}

    @pytest.mark.parametrize("mangle", ["truncated", "ihl4", "total_length"])
    def test_bad_length_dropped_and_counted_malformed(self, mangle):
        f = bytearray(ipv4_fragment(bytes(16), 0, True))
        if mangle == "truncated":
            f = f[:30]
        elif mangle == "ihl4":
            f[14] = 0x44
        else:
            struct.pack_into("!H", f, 16, len(f) - 14 + 1)
        c = C.new_array()
        assert Reassembler4(c, 40, 10).push(bytes(f), 0) is None
        assert counts(c) == {"drop-malformed-ipv4-bytes": len(f), "drop-malformed-ipv4-packets": 1}

    @pytest.mark.parametrize("mangle", ["checksum", "version", "total_below_ihl"])
    def test_fragment_with_bad_header_counted_needs_then_malformed(self, mangle):
        f = bytearray(ipv4_fragment(bytes(16), 0, True))
        if mangle == "checksum":
            f[24] ^= 0xFF
        else:
            if mangle == "version":
                f[14] = 0x65
            else:
                struct.pack_into("!H", f, 16, 16)       # total length below the 20-byte header
            struct.pack_into("!H", f, 24, 0)
            struct.pack_into("!H", f, 24, ipv4_checksum(f[14:34]))
        c = C.new_array()
        assert Reassembler4(c, 40, 10).push(bytes(f), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 1,
                             "drop-malformed-ipv4-bytes": len(f), "drop-malformed-ipv4-packets": 1}

    def test_non_fragment_header_checks_left_to_the_core(self):
        f = bytearray(ipv4_frame(40))
        f[24] ^= 0xFF                               # bad checksum, but not a fragment
        c = C.new_array()
        assert Reassembler4(c, 40, 10).push(bytes(f), 0) == bytes(f)
        assert counts(c) == {"in-ipv4-frag-reassembly-unneeded": 1}

    @pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1)])
    def test_reassembles_any_order(self, order):
        orig = ipv4_frame(1200, ident=0x4242, seed=3)
        frags = Fragmenter4(C.new_array(), 500, SEED4).push(orig)
        assert len(frags) == 3
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        outs = [r.push(frags[i], 0) for i in order]
        assert outs[:2] == [None, None]
        assert outs[2] == reassembled4(orig)
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 3, "in-ipv4-frag-reassembled": 1}
        assert len(r) == 0

    def test_ethernet_of_first_arrival_ip_header_of_offset_zero(self):
        data = payload(24)
        first = ipv4_fragment(data[:16], 0, True, mac=MAC_A, ttl=10)
        last = ipv4_fragment(data[16:], 16, False, mac=MAC_C, ttl=20)
        r = Reassembler4(C.new_array(), 40, 10)
        assert r.push(last, 0) is None
        got = r.push(first, 0)
        p = Ether(got)
        assert p.src == MAC_C                       # Snabb: first fragment to arrive
        assert p[IP].ttl == 10                      # RFC 791 3.2: header of the offset-0 fragment
        assert (p[IP].id, int(p[IP].flags), p[IP].frag, p[IP].len) == (0, 0, 0, 44)
        assert ipv4_checksum(got[14:34]) == 0
        assert bytes(p[IP].payload) == data

    def test_options_of_offset_zero_fragment_kept(self):
        opts = b"\x94\x04\x00\x00" + b"\x07\x07\x04" + bytes(4) + b"\x00"    # router alert + record route
        orig = ipv4_frame(300, options=[], seed=5)
        p = Ether(orig)
        p[IP].options = opts
        p[IP].len = None
        p[IP].chksum = None
        orig = bytes(p)
        frags = Fragmenter4(C.new_array(), 128, SEED4).push(orig)
        assert Ether(frags[1])[IP].ihl == Ether(frags[0])[IP].ihl     # options NOP'd, not removed
        got = feed(Reassembler4(C.new_array(), 40, 10), reversed(frags))
        assert got == [reassembled4(orig)]

    def test_key_includes_protocol(self):
        d = payload(16)
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        assert r.push(ipv4_fragment(d[:8], 0, True, proto=17), 0) is None
        assert r.push(ipv4_fragment(d[8:], 8, False, proto=6), 0) is None
        assert len(r) == 2

    @pytest.mark.parametrize("second", [(8, 16, False), (0, 16, True), (0, 8, True)],
                             ids=["overlap", "overlap-at-0", "duplicate"])
    def test_overlap_abandons_reassembly(self, second):
        d = payload(40)
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        assert r.push(ipv4_fragment(d[:16], 0, True), 0) is None
        start, end, more = second
        assert r.push(ipv4_fragment(d[start:end], start, more), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 2, "drop-ipv4-frag-invalid-reassembly": 1}
        assert len(r) == 0
        # Later fragments start afresh and never complete the abandoned datagram.
        assert r.push(ipv4_fragment(d[16:], 16, False), 0) is None
        assert len(r) == 1

    def test_zero_length_fragment_invalid(self):
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        r.push(ipv4_fragment(bytes(8), 0, True), 0)
        assert r.push(ipv4_fragment(b"", 8, True), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 2, "drop-ipv4-frag-invalid-reassembly": 1}

    def test_non_final_fragment_not_multiple_of_8_invalid(self):
        c = C.new_array()
        assert Reassembler4(c, 40, 10).push(ipv4_fragment(bytes(12), 0, True), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 1, "drop-ipv4-frag-invalid-reassembly": 1}

    def test_two_final_fragments_invalid(self):
        # Snabb's selftest: the same final fragment twice -> one invalid reassembly.
        orig = ipv4_frame(1500)
        last = Fragmenter4(C.new_array(), 512, SEED4).push(orig)[-1]
        c = C.new_array()
        feed(Reassembler4(c, 20, 100), [last, last])
        assert c[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] == 1

    def test_fragment_past_final_end_invalid(self):
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        r.push(ipv4_fragment(bytes(8), 8, False), 0)
        r.push(ipv4_fragment(bytes(8), 16, True), 0)
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 2, "drop-ipv4-frag-invalid-reassembly": 1}

    def test_fragment_beyond_65535_invalid(self):
        c = C.new_array()
        r = Reassembler4(c, 40, 10, max_frame=1 << 20)
        assert r.push(ipv4_fragment(bytes(24), 65512, False), 0) is None      # 20 + 65512 + 24 > 65535
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 1, "drop-ipv4-frag-invalid-reassembly": 1}

    def test_fragment_beyond_snabb_packet_size_invalid(self):
        room = SNABB_MAX_FRAME - 14 - 20
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        assert r.push(ipv4_fragment(bytes(16), room // 8 * 8, False), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 1, "drop-ipv4-frag-invalid-reassembly": 1}
        c = C.new_array()
        r = Reassembler4(c, 400, 10)
        orig = ipv4_frame(room)                      # the largest Snabb can rebuild
        assert feed(r, Fragmenter4(C.new_array(), 1500, SEED4).push(orig)) == [reassembled4(orig)]

    def test_too_many_fragments_like_snabb_selftest(self):
        # Snabb's selftest: 9000 bytes at MTU 128 is 87 fragments; with at most
        # 20 per reassembly that is 4 failed reassemblies.
        frags = Fragmenter4(C.new_array(), 128, SEED4).push(ipv4_frame(9000))
        assert len(frags) == 87
        c = C.new_array()
        assert feed(Reassembler4(c, 20, 100), frags) == []
        assert c[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] == 4
        assert c[C.IN_IPV4_FRAG_NEEDS_REASSEMBLY] == 87

    def test_eviction_when_max_packets_in_progress(self):
        c = C.new_array()
        r = Reassembler4(c, 40, 2, seed=1)
        for i in range(5):
            r.push(ipv4_fragment(bytes(8), 0, True, ident=i), 0)
        assert len(r) == 2
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 5, "drop-ipv4-frag-random-evicted": 3}

    def test_max_packets_zero_holds_nothing(self):
        c = C.new_array()
        assert Reassembler4(c, 40, 0).push(ipv4_fragment(bytes(8), 0, True), 0) is None
        assert counts(c) == {"in-ipv4-frag-needs-reassembly": 1, "drop-ipv4-frag-invalid-reassembly": 1}

    def test_memory_bounded_under_flood(self):
        r = Reassembler4(C.new_array(), 40, 8, seed=2)
        rng = random.Random(0)
        for i in range(2000):
            r.push(ipv4_fragment(bytes(1000), 8 * rng.randrange(1200), True, ident=rng.randrange(1 << 16)), 0)
            assert len(r) <= 8
        assert all(len(x.data) <= SNABB_MAX_FRAME for x in r._table._by_key.values())

    def test_timeout(self):
        d = payload(16)
        c = C.new_array()
        r = Reassembler4(c, 40, 10)
        r.push(ipv4_fragment(d[:8], 0, True), 0.0)
        assert r.push(ipv4_fragment(d[8:], 8, False), 30.0) is not None      # 30 s: still alive
        r.push(ipv4_fragment(d[:8], 0, True, ident=9), 100.0)
        r.push(arp_frame(), 130.5)
        assert len(r) == 0
        assert c[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] == 1
        r.push(ipv4_fragment(d[:8], 0, True, ident=10), 200.0)
        r.expire(231.0)
        assert c[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] == 2

    def test_garbage_never_raises(self):
        rng = random.Random(7)
        r = Reassembler4(C.new_array(), 4, 4)
        base = ipv4_fragment(bytes(64), 0, True)
        for _ in range(3000):
            f = bytearray(base[:rng.randrange(len(base) + 1)])
            for _ in range(rng.randrange(4)):
                if f:
                    f[rng.randrange(len(f))] = rng.randrange(256)
            r.push(bytes(f), 0.0)


# ---------------------------------------------------------------- IPv6 reassembly

class TestReassembler6:
    def test_non_fragment_and_non_ipv6_pass_counted_unneeded(self):
        c = C.new_array()
        r = Reassembler6(c, 40, 10)
        for f in (ipv6_frame(60), ipv4_frame(60), arp_frame()):
            assert r.push(f, 0) is f
        assert counts(c) == {"in-ipv6-frag-reassembly-unneeded": 3}

    @pytest.mark.parametrize("mangle", ["truncated", "payload_length"])
    def test_bad_length_dropped_and_counted_malformed(self, mangle):
        f = bytearray(ipv6_fragment(bytes(16), 0, True))
        if mangle == "truncated":
            f = f[:50]
        else:
            struct.pack_into("!H", f, 18, len(f) - 54 + 1)
        c = C.new_array()
        assert Reassembler6(c, 40, 10).push(bytes(f), 0) is None
        assert counts(c) == {"drop-malformed-ipv6-bytes": len(f), "drop-malformed-ipv6-packets": 1}

    def test_truncated_fragment_header_needs_then_malformed(self):
        f = bytearray(ipv6_fragment(b"", 0, True))[:58]
        struct.pack_into("!H", f, 18, 4)
        c = C.new_array()
        assert Reassembler6(c, 40, 10).push(bytes(f), 0) is None
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": 1,
                             "drop-malformed-ipv6-bytes": 58, "drop-malformed-ipv6-packets": 1}

    @pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
    def test_reassembles_any_order(self, order):
        orig = ipv6_frame(3000, nh=4, seed=4)
        frags = Fragmenter6(C.new_array(), 1280, SEED6).push(orig)
        assert len(frags) == 3
        c = C.new_array()
        assert feed(Reassembler6(c, 40, 10), [frags[i] for i in order]) == [orig]
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": 3, "in-ipv6-frag-reassembled": 1}

    def test_headers_from_offset_zero_ethernet_from_first_arrival(self):
        d = payload(24)
        first = ipv6_fragment(d[:16], 0, True, nh=17, hlim=5)
        last = ipv6_fragment(d[16:], 16, False, nh=6, mac=MAC_C, hlim=9)
        got = feed(Reassembler6(C.new_array(), 40, 10), [last, first])
        p = Ether(got[0])
        assert p.src == MAC_C
        assert (p[IPv6].nh, p[IPv6].hlim, p[IPv6].plen) == (17, 5, 24)
        assert got[0][54:] == d

    def test_link_padding_ignored(self):
        d = payload(16)
        f1 = ipv6_fragment(d[:8], 0, True) + bytes(6)
        f2 = ipv6_fragment(d[8:], 8, False) + bytes(6)
        got = feed(Reassembler6(C.new_array(), 40, 10), [f1, f2])
        assert got[0][54:] == d

    def test_atomic_fragment_returned_at_once(self):
        d = payload(30)
        c = C.new_array()
        r = Reassembler6(c, 40, 10)
        r.push(ipv6_fragment(d[:8], 0, True), 0)
        got = r.push(ipv6_fragment(d, 0, False, nh=17), 0)
        assert got == bytes(Ether(src=MAC_A, dst=MAC_B) / IPv6(src=SRC6, dst=DST6, nh=17) / Raw(d))
        assert len(r) == 1          # the other reassembly with that ID is untouched (RFC 6946 4)
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": 2, "in-ipv6-frag-reassembled": 1}

    def test_max_fragments_one_like_vector(self):
        frags = Fragmenter6(C.new_array(), 1280, SEED6).push(ipv6_frame(2000))
        c = C.new_array()
        assert feed(Reassembler6(c, 1, 10), frags) == []
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": 2, "drop-ipv6-frag-invalid-reassembly": 1}

    @pytest.mark.parametrize("frags", [
        [(0, 16, True), (8, 24, False)],            # overlap
        [(0, 16, True), (0, 16, True)],             # duplicate
        [(0, 16, True), (16, 16, True)],            # zero length
        [(0, 12, True)],                            # non-final not a multiple of 8
        [(16, 24, False), (8, 16, False)],          # two finals
        [(8, 16, False), (16, 24, True)],           # past the final end
        [(65528, 65544, False)],                    # past 65535 of payload
    ], ids=["overlap", "duplicate", "zero-length", "unaligned", "two-finals", "past-final", "past-65535"])
    def test_invalid_reassemblies(self, frags):
        d = payload(1 << 17)
        c = C.new_array()
        r = Reassembler6(c, 40, 10, max_frame=1 << 20)
        for s, e, m in frags:
            assert r.push(ipv6_fragment(d[s:e], s, m), 0) is None
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": len(frags), "drop-ipv6-frag-invalid-reassembly": 1}
        assert len(r) == 0

    def test_beyond_snabb_packet_size_invalid(self):
        c = C.new_array()
        r = Reassembler6(c, 40, 10)
        assert r.push(ipv6_fragment(bytes(16), (SNABB_MAX_FRAME - 54) // 8 * 8, False), 0) is None
        assert c[C.DROP_IPV6_FRAG_INVALID_REASSEMBLY] == 1

    def test_eviction_and_timeout(self):
        c = C.new_array()
        r = Reassembler6(c, 40, 3, seed=3)
        for i in range(4):
            r.push(ipv6_fragment(bytes(8), 0, True, ident=i), float(i))
        assert len(r) == 3 and c[C.DROP_IPV6_FRAG_RANDOM_EVICTED] == 1
        r.expire(60.0 + 3)          # all created at t <= 3, but only t < 3 are over 60 s old
        assert len(r) == 1
        r.expire(63.5)
        assert len(r) == 0
        assert c[C.DROP_IPV6_FRAG_INVALID_REASSEMBLY] == 3

    def test_push_batch_non_fragments_first_like_snabb(self):
        orig = ipv6_frame(2000, seed=1)
        f1, f2 = Fragmenter6(C.new_array(), 1280, SEED6).push(orig)
        plain = ipv6_frame(50, seed=2)
        c = C.new_array()
        assert Reassembler6(c, 40, 10).push_batch([f1, f2, plain], 0) == [plain, orig]
        assert counts(c) == {"in-ipv6-frag-needs-reassembly": 2, "in-ipv6-frag-reassembled": 1,
                             "in-ipv6-frag-reassembly-unneeded": 1}

    def test_garbage_never_raises(self):
        rng = random.Random(8)
        r = Reassembler6(C.new_array(), 4, 4)
        base = ipv6_fragment(bytes(64), 0, True)
        for _ in range(3000):
            f = bytearray(base[:rng.randrange(len(base) + 1)])
            for _ in range(rng.randrange(4)):
                if f:
                    f[rng.randrange(len(f))] = rng.randrange(256)
            r.push(bytes(f), 0.0)


# ---------------------------------------------------------------- IPv4 fragmentation

class TestFragmenter4:
    @pytest.mark.parametrize("frame", [ipv4_frame(1500 - 28), arp_frame(), ipv6_frame(3000)],
                             ids=["fits-exactly", "arp", "ipv6"])
    def test_passes_as_one_counted_frag_not(self, frame):
        c = C.new_array()
        assert Fragmenter4(c, 1500, SEED4).push(frame) == [frame]
        assert counts(c) == {"out-ipv4-frag-not": 1}

    def test_fragments_exactly_like_snabb(self):
        orig = ipv4_frame(1000, ident=77, ttl=33, proto=6, seed=9)
        c = C.new_array()
        got = Fragmenter4(c, 576, SEED4).push(orig)
        data = orig[34:]
        want = []
        for off, size, mf in ((0, 552, 1), (552, 448, 0)):
            ip = IP(src=SRC4, dst=DST4, id=FIRST_ID4, flags=mf, frag=off // 8, proto=6, ttl=33)
            want.append(bytes(Ether(src=MAC_A, dst=MAC_B) / ip / Raw(data[off:off + size])))
        assert got == want
        assert counts(c) == {"out-ipv4-frag": 2}

    def test_payload_rounded_down_to_8(self):
        got = Fragmenter4(C.new_array(), 100, SEED4).push(ipv4_frame(200))
        assert [len(f) - 34 for f in got] == [80, 80, 40]       # 100 - 20 = 80
        got = Fragmenter4(C.new_array(), 103, SEED4).push(ipv4_frame(200))
        assert [len(f) - 34 for f in got] == [80, 80, 40]       # 83 rounded down

    def test_ids_sequential_and_wrap(self):
        fr = Fragmenter4(C.new_array(), 576, id_seed=0xFFFE)
        ids = [Ether(fr.push(ipv4_frame(1000))[0])[IP].id for _ in range(3)]
        assert ids == [0xFFFF, 0, 1]
        assert Fragmenter4(C.new_array(), 576, SEED4).fresh_id() == 0x4243

    def test_production_ids_start_at_random(self):
        """Without a seed (lwaftr run, every worker and restart) the first ID is random:
        two workers behind ECMP must not hand one B4 the same IDs (32 draws all equal: 2^-496)."""
        first4 = {Fragmenter4(C.new_array(), 576, None).fresh_id() for _ in range(32)}
        first6 = {Fragmenter6(C.new_array(), 1280, None).fresh_id() for _ in range(32)}
        assert len(first4) > 1 and len(first6) > 1
        cfg = load_config(VECTORS / "small_ipv4_mtu_icmp.conf")
        engines = [Engine(cfg) for _ in range(8)]
        assert len({int(e._ids4[0]) for e in engines}) > 1
        assert len({int(e._ids6[0]) for e in engines}) > 1
        checked = Engine(cfg, fragment_id_seeds=SNABB_CHECK_ID_SEEDS)
        assert (int(checked._ids4[0]), int(checked._ids6[0])) == SNABB_CHECK_ID_SEEDS

    def test_df_too_big_dropped_uncounted_like_snabb(self):
        c = C.new_array()
        assert Fragmenter4(c, 576, SEED4).push(ipv4_frame(1000, flags=2)) == []
        assert counts(c) == {}

    def test_malformed_dropped_and_counted(self):
        c = C.new_array()
        f = ipv4_frame(10)[:30]
        assert Fragmenter4(c, 576, SEED4).push(f) == []
        assert counts(c) == {"drop-malformed-ipv4-bytes": 30, "drop-malformed-ipv4-packets": 1}

    def test_padding_past_total_length_is_not_data(self):
        f = ipv4_frame(540)
        c = C.new_array()
        assert Fragmenter4(c, 576, SEED4).push(f + bytes(100)) == [f]
        assert counts(c) == {"out-ipv4-frag-not": 1}

    def test_uncopied_options_nopped_in_later_fragments(self):
        hdr = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(options=[]))[14:]
        opts = b"\x07\x07\x04" + bytes(4) + b"\x94\x04\x00\x00" + b"\x00"   # record route, router alert
        h = bytearray(hdr) + opts
        h[0] = 0x48
        later = ipv4_later_fragment_header(bytes(h))
        assert later[20:] == b"\x01" * 7 + b"\x94\x04\x00\x00\x00"

    def test_refragmenting_a_fragment_keeps_id_offset_and_mf(self):
        orig = ipv4_frame(3000, seed=11)
        big = Fragmenter4(C.new_array(), 1500, SEED4).push(orig)
        assert len(big) == 3
        small = [g for f in big for g in Fragmenter4(C.new_array(), 576, id_seed=0).push(f)]
        ids = {Ether(f)[IP].id for f in small}
        assert ids == {FIRST_ID4}
        assert sum(Ether(f)[IP].flags.MF == 0 for f in small) == 1
        assert feed(Reassembler4(C.new_array(), 40, 10), reversed(small)) == [reassembled4(orig)]

    def test_mtu_below_rfc_minimum_rejected(self):
        with pytest.raises(ValueError):
            Fragmenter4(C.new_array(), 67, SEED4)


# ---------------------------------------------------------------- IPv6 fragmentation

class TestFragmenter6:
    @pytest.mark.parametrize("frame", [ipv6_frame(1280 - 40), arp_frame(), ipv4_frame(3000)],
                             ids=["fits-exactly", "arp", "ipv4"])
    def test_passes_as_one_counted_frag_not(self, frame):
        c = C.new_array()
        assert Fragmenter6(c, 1280, SEED6).push(frame) == [frame]
        assert counts(c) == {"out-ipv6-frag-not": 1}

    def test_fragments_exactly_like_snabb(self):
        orig = ipv6_frame(1500, nh=4, seed=12)
        c = C.new_array()
        got = Fragmenter6(c, 1280, SEED6).push(orig)
        data = orig[54:]
        want = [bytes(Ether(src=MAC_A, dst=MAC_B) / IPv6(src=SRC6, dst=DST6)
                      / IPv6ExtHdrFragment(nh=4, offset=off // 8, m=m, id=FIRST_ID6) / Raw(data[off:off + n]))
                for off, n, m in ((0, 1232, 1), (1232, 268, 0))]
        assert got == want
        assert counts(c) == {"out-ipv6-frag": 2}

    def test_ids_sequential_and_wrap(self):
        fr = Fragmenter6(C.new_array(), 1280, id_seed=0xFFFFFFFF)
        ids = [Ether(fr.push(ipv6_frame(2000))[0])[IPv6ExtHdrFragment].id for _ in range(2)]
        assert ids == [0, 1]

    def test_malformed_dropped_and_counted(self):
        f = bytearray(ipv6_frame(2000))
        struct.pack_into("!H", f, 18, 3000)
        c = C.new_array()
        assert Fragmenter6(c, 1280, SEED6).push(bytes(f)) == []
        assert counts(c) == {"drop-malformed-ipv6-bytes": len(f), "drop-malformed-ipv6-packets": 1}

    def test_hop_by_hop_stays_in_unfragmentable_part(self):
        orig = bytes(Ether(src=MAC_A, dst=MAC_B) / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrHopByHop()
                     / UDP(sport=1, dport=2) / Raw(payload(2000)))
        got = Fragmenter6(C.new_array(), 1280, SEED6).push(orig)
        assert len(got) == 2
        for f in got:
            assert len(f) - 14 <= 1280
            p = Ether(f)
            assert p[IPv6].nh == 0 and p[IPv6ExtHdrHopByHop].nh == 44
        assert b"".join(f[14 + 40 + 8 + 8:] for f in got) == orig[14 + 40 + 8:]

    def test_push_batch_order_like_snabb(self):
        big, small, arp = ipv6_frame(2000), ipv6_frame(100), arp_frame()
        frags = Fragmenter6(C.new_array(), 1280, SEED6).push(big)
        c = C.new_array()
        assert Fragmenter6(c, 1280, SEED6).push_batch([big, small, arp]) == [arp, small] + frags
        assert counts(c) == {"out-ipv6-frag-not": 2, "out-ipv6-frag": 2}

    def test_mtu_below_rfc_minimum_rejected(self):
        with pytest.raises(ValueError):
            Fragmenter6(C.new_array(), 1279, SEED6)


# ---------------------------------------------------------------- round trips

@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, SNABB_MAX_FRAME - 34), mtu=st.integers(68, 9000), seed=st.integers(0, 2**32 - 1))
def test_round_trip_ipv4(n, mtu, seed):
    orig = ipv4_frame(n, seed=seed % 1000)
    c = C.new_array()
    frags = Fragmenter4(c, mtu, SEED4).push(orig)
    assert all(len(f) - 14 <= mtu for f in frags)
    if len(frags) > 1:
        assert c[C.OUT_IPV4_FRAG] == len(frags)
        random.Random(seed).shuffle(frags)
    got = feed(Reassembler4(C.new_array(), 1 << 16, 1), frags)
    assert got == ([reassembled4(orig)] if len(frags) > 1 else [orig])


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, SNABB_MAX_FRAME - 54), mtu=st.integers(1280, 9000), seed=st.integers(0, 2**32 - 1))
def test_round_trip_ipv6(n, mtu, seed):
    orig = ipv6_frame(n, seed=seed % 1000)
    frags = Fragmenter6(C.new_array(), mtu, SEED6).push(orig)
    assert all(len(f) - 14 <= mtu for f in frags)
    random.Random(seed).shuffle(frags)
    assert feed(Reassembler6(C.new_array(), 1 << 16, 1), frags) == [orig]


# ---------------------------------------------------------------- reference vectors

MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
STAGE_IN = ("in-ipv{}-frag-needs-reassembly", "in-ipv{}-frag-reassembled", "in-ipv{}-frag-reassembly-unneeded",
            "drop-ipv{}-frag-invalid-reassembly", "drop-ipv{}-frag-random-evicted")
STAGE_OUT = ("out-ipv{}-frag", "out-ipv{}-frag-not")


def untag(frame: bytes) -> bytes:
    return frame[:12] + frame[16:] if frame[12:14] == b"\x81\x00" else frame


def frames(name: str | None) -> list[bytes]:
    return [untag(f) for f in read_frames(VECTORS / name)] if name else []


def case(name: str) -> dict:
    return next(c for c in MANIFEST if c["name"] == name)


def stage_counters(c, names, family: int) -> dict[str, int]:
    return {n.format(family): int(c[C.INDEX[n.format(family)]]) for n in names}


def expected_counters(kase: dict, names, family: int) -> dict[str, int]:
    return {n.format(family): kase["counters"].get(n.format(family), 0) for n in names}


@pytest.mark.parametrize("kase", MANIFEST, ids=[c["name"] for c in MANIFEST])
def test_vector_reassembler_counters(kase):
    """The reassemblers come first: their counters depend on the input alone."""
    conf = load_config(VECTORS / kase["conf"])
    c = C.new_array()
    feed(Reassembler4(c, conf.external.reassembly_max_fragments_per_packet,
                      conf.external.reassembly_max_packets), frames(kase["in_v4"]))
    Reassembler6(c, conf.internal.reassembly_max_fragments_per_packet,
                 conf.internal.reassembly_max_packets).push_batch(frames(kase["in_v6"]), 0.0)
    assert stage_counters(c, STAGE_IN, 4) == expected_counters(kase, STAGE_IN, 4)
    assert stage_counters(c, STAGE_IN, 6) == expected_counters(kase, STAGE_IN, 6)
    assert c[C.DROP_MALFORMED_IPV4_PACKETS] == c[C.DROP_MALFORMED_IPV6_PACKETS] == 0


@pytest.mark.parametrize("kase", MANIFEST, ids=[c["name"] for c in MANIFEST])
def test_vector_fragmenter_output(kase):
    """The fragmenters come last: whatever left Snabb, put back together,
    must fragment into exactly the same frames and counts."""
    conf = load_config(VECTORS / kase["conf"])
    for family, name, mtu, reasm, frag in (
            (4, kase["out_v4"], conf.external.mtu, Reassembler4, lambda c, mtu: Fragmenter4(c, mtu, SEED4)),
            (6, kase["out_v6"], conf.internal.mtu, Reassembler6, lambda c, mtu: Fragmenter6(c, mtu, SEED6))):
        want = frames(name)
        whole = feed(reasm(C.new_array(), BIG, BIG), want)
        c = C.new_array()
        assert frag(c, mtu).push_batch(whole) == want
        assert stage_counters(c, STAGE_OUT, family) == expected_counters(kase, STAGE_OUT, family)


def with_ttl(ipv4: bytes, ttl: int) -> bytes:
    b = bytearray(ipv4)
    b[8] = ttl
    struct.pack_into("!H", b, 10, 0)
    struct.pack_into("!H", b, 10, ipv4_checksum(b[:(b[0] & 0xF) * 4]))
    return bytes(b)


def encapsulated_like(first_fragment: bytes, ipv4: bytes) -> bytes:
    """The unfragmented IPv6 frame whose fragments start with ``first_fragment``."""
    head = bytearray(first_fragment[:54])
    head[20] = first_fragment[54]
    struct.pack_into("!H", head, 18, len(ipv4))
    return bytes(head) + ipv4


@pytest.mark.parametrize("name", ["from-internet IPv4 fragmented packets found in the binding table.",
                                  "from-internet IPv4 fragmented packets found in the binding table, reversed."])
def test_vector_ipv4_reassembly_bytes(name):
    """The reassembled datagram is what Snabb encapsulated (its TTL then lowered by one)."""
    kase = case(name)
    c = C.new_array()
    got = feed(Reassembler4(c, 40, 20000), frames(kase["in_v4"]))
    assert len(got) == 1
    (want,) = frames(kase["out_v6"])
    assert with_ttl(got[0][14:], got[0][22] - 1) == want[54:]
    assert got[0][:14] == frames(kase["in_v4"])[0][:14]


def test_vector_ipv4_reassembly_then_ipv6_fragmentation_bytes():
    kase = case("IPv4 incoming UDP fragments -> outgoing IPv6 UDP fragments")
    (whole,) = feed(Reassembler4(C.new_array(), 40, 20000), frames(kase["in_v4"]))
    want = frames(kase["out_v6"])
    c = C.new_array()
    got = Fragmenter6(c, 1280, SEED6).push(encapsulated_like(want[0], with_ttl(whole[14:], whole[22] - 1)))
    assert got == want
    assert counts(c) == {"out-ipv6-frag": 2}


@pytest.mark.parametrize("name", ["IPv6 reassembly (to one packet).", "IPv6 reassembly (out of order fragments).",
                                  "IPv6 reassembly (followed by decapsulation).",
                                  "IPv6 incoming UDP fragments -> unfragmented IPv4"])
def test_vector_ipv6_reassembly_bytes(name):
    """The reassembled packet's payload is the IPv4 packet Snabb sent on."""
    kase = case(name)
    c = C.new_array()
    (got,) = Reassembler6(c, 40, 20000).push_batch(frames(kase["in_v6"]), 0.0)
    (want,) = frames(kase["out_v4"])
    assert got[20] == 4 and struct.unpack_from("!H", got, 18)[0] == len(got) - 54
    assert got[54:] == want[14:]


def test_vector_ipv6_reassembly_then_ipv4_fragmentation_bytes():
    kase = case("IPv6 incoming UDP fragments -> outgoing IPv4 UDP fragments")
    (whole,) = Reassembler6(C.new_array(), 40, 20000).push_batch(frames(kase["in_v6"]), 0.0)
    want = frames(kase["out_v4"])
    c = C.new_array()
    assert Fragmenter4(c, 576, SEED4).push(want[0][:14] + whole[54:]) == want
    assert counts(c) == {"out-ipv4-frag": 3}


@pytest.mark.parametrize("name", ["from-B4 IPv4 fragmentation (2)", "from-B4 IPv4 fragmentation (3)"])
def test_vector_ipv4_fragmentation_of_decapsulated_bytes(name):
    kase = case(name)
    (inp,) = frames(kase["in_v6"])
    want = frames(kase["out_v4"])
    assert Fragmenter4(C.new_array(), 576, SEED4).push(want[0][:14] + inp[54:]) == want


@pytest.mark.parametrize("name", [
    "from-internet IPv4 packet found in the binding table, needs IPv6 fragmentation (2).",
    "from-internet IPv4 packet found in the binding table, needs IPv6 fragmentation (3).",
    "unfragmented IPv4 UDP -> outgoing IPv6 UDP fragments"])
def test_vector_ipv6_fragmentation_of_encapsulated_bytes(name):
    kase = case(name)
    (inp,) = frames(kase["in_v4"])
    want = frames(kase["out_v6"])
    assert Fragmenter6(C.new_array(), 1280, SEED6).push(encapsulated_like(want[0], with_ttl(inp[14:], inp[22] - 1))) == want


def test_vector_signed_ntohl_ids():
    """Fragment IDs with the high bit set (0x88f416c6 ...) reassemble like any other."""
    kase = case("Regression test: make sure ntohl'd high-bit-set fragment IDs do not crash")
    got = Reassembler6(C.new_array(), 40, 20000).push_batch(frames(kase["in_v6"]), 0.0)
    assert len(got) == 5
    for g in got:
        p = Ether(g)
        assert p[IPv6].nh == 4 and UDP in p and p[IP].len == len(g) - 54


@pytest.mark.parametrize("make, stage", [(lambda: ipv4_frame(200), lambda: Fragmenter4(C.new_array(), 68, SEED4)),
                                         (lambda: ipv6_frame(1400, nh=0), lambda: Fragmenter6(C.new_array(), 1280, SEED6))],
                         ids=["ipv4", "ipv6"])
def test_fragmenter_garbage_never_raises(make, stage):
    rng = random.Random(9)
    base, fr = make(), stage()
    for _ in range(2000):
        f = bytearray(base[:rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if f:
                f[rng.randrange(len(f))] = rng.randrange(256)
        for g in fr.push(bytes(f)):
            assert len(g) - 14 <= fr.mtu or g == bytes(f)
