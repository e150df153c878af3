"""Completing TCP/UDP checksums left unfinished by checksum offload."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from lwaftr.dataplane.checksum import complete_flagged, complete_l4_checksum
from lwaftr.dataplane.pool import PacketPool

ETH = dict(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")


def _fix(frame: bytes) -> tuple[bool, bytes]:
    b = np.frombuffer(frame, np.uint8).copy()
    done = complete_l4_checksum(b, 0, len(b))
    return done, b.tobytes()


def _broken(pkt) -> bytes:
    """The frame with its transport checksum replaced by a partial (pseudo-header-only) one."""
    good = bytes(pkt)
    l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    l4.chksum = 0x1234
    return bytes(pkt), good


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["tcp", "udp"]), st.booleans())
def test_recomputed_checksum_equals_scapys(payload, proto, tunnelled):
    l4 = TCP(sport=1234, dport=80) if proto == "tcp" else UDP(sport=1234, dport=53)
    inner = IP(src="192.0.2.1", dst="203.0.113.9") / l4 / payload
    pkt = Ether(**ETH) / (IPv6(src="2001:db8::1", dst="2001:db8::2") / inner if tunnelled else inner)
    good = bytes(pkt)
    broken, _ = _broken(Ether(good))
    done, fixed = _fix(broken)
    assert done and fixed == good


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["tcp", "udp"]))
def test_plain_ipv6_transport_checksum_completed(payload, proto):
    """IPv6 TCP/UDP (e.g. BGP to the kernel's TAP from a local stack with offload)."""
    l4 = TCP(sport=40000, dport=179) if proto == "tcp" else UDP(sport=3784, dport=3784)
    good = bytes(Ether(**ETH) / IPv6(src="2001:db8::1", dst="2001:db8::2") / l4 / payload)
    broken, _ = _broken(Ether(good))
    done, fixed = _fix(broken)
    assert done and fixed == good
    truncated = broken[:-1] if len(broken) > 62 + 8 else broken
    if truncated != broken:                 # payload length beyond the frame: left alone
        assert _fix(truncated) == (False, truncated)


def test_fragments_and_other_protocols_are_left_alone():
    frag = bytes(Ether(**ETH) / IP(src="192.0.2.1", dst="203.0.113.9", flags="MF") / UDP(chksum=0x1234) / b"x")
    assert _fix(frag) == (False, frag)
    icmp = bytes(Ether(**ETH) / IP(src="192.0.2.1", dst="203.0.113.9", proto=1) / b"\x08\x00\x12\x34abcd")
    assert _fix(icmp) == (False, icmp)
    short = bytes(Ether(**ETH) / IP(src="192.0.2.1", dst="203.0.113.9", len=200) / UDP(chksum=0x1234))
    assert _fix(short) == (False, short)


def test_only_flagged_slots_are_touched():
    pool = PacketPool(16)
    good = bytes(Ether(**ETH) / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=1, dport=2) / b"data")
    broken, _ = _broken(Ether(good))
    slots = pool.store([broken, broken])
    assert complete_flagged(pool.buf, pool.off, pool.length, slots, np.array([8, 0], np.int64), 8) == 1
    assert pool.frame(int(slots[0])) == good and pool.frame(int(slots[1])) == broken


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1600), st.integers(0, 15), st.integers(0, 0xFFFF))
def test_ones_sum_equals_rfc_1071_word_by_word(data, lead, start):
    """The vectorised one's complement sum (little-endian words through a view,
    swapped) equals RFC 1071's big-endian word-by-word sum, at any offset (odd
    ones too) and length (odd ones padded), from any start."""
    from lwaftr.dataplane.icmperr import ones_sum
    b = np.frombuffer(bytes(lead) + data + bytes(3), np.uint8).copy()
    padded = data + (b"\0" if len(data) % 2 else b"")
    s = start + sum(int.from_bytes(padded[i:i + 2], "big") for i in range(0, len(padded), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert ones_sum(b, lead, len(data), start) == s
