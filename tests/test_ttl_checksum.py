"""The IPv4 header checksum after the lwAFTR lowers the TTL, over every checksum value.

The incremental update (RFC 1624) once subtracted 0x100 in two's complement
and folded the result: off by one whenever the old checksum was 0xFF00 or
more, so about one frame in 256 from the Internet reached its B4 with a bad
header checksum and was dropped there (TCP transfers stalled on a segment
whose every retransmission stayed in that range).  Here frames from the
Internet, whose IP identification runs through all 65,536 values so that
their header checksums take every value, go through the fast path and the
slow path: every encapsulated header must have a correct checksum, equal
to the one computed afresh.
"""
from __future__ import annotations

import struct

import pytest

from lwaftr.dataplane.engine import Engine

from packets import AFTR_MAC_V4, make_config
from reference.engine import ReferenceEngine

ETH = 14
V6 = 40
ROWS = [("192.0.2.1", 0, 0, "2001:db8:1::1", 0)]


def ip_sum(h: bytes) -> int:
    s = sum(struct.unpack(f"!{len(h) // 2}H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(h: bytes) -> int:
    return ~ip_sum(h) & 0xFFFF


def frame(ident: int, ttl: int = 64) -> bytes:
    udp = struct.pack("!HHHH", 53, 4242, 8 + 4, 0) + b"data"
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0x4000, ttl, 17, 0,
                              bytes([203, 0, 113, 9]), bytes([192, 0, 2, 1])))
    h[10:12] = struct.pack("!H", checksum(bytes(h)))
    eth = bytes.fromhex(AFTR_MAC_V4.replace(":", "")) + bytes.fromhex("020000000011") + b"\x08\x00"
    return eth + bytes(h) + udp


@pytest.mark.parametrize("kind", [Engine, ReferenceEngine], ids=["kernels", "reference"])
def test_every_header_checksum_is_right_after_the_ttl_is_lowered(kind):
    eng = kind(make_config(ROWS))
    frames = [frame(i) for i in range(65536)]
    olds = {struct.unpack_from("!H", f, ETH + 10)[0] for f in frames}
    assert olds >= set(range(0xFF00, 0xFFFF))           # the range where the old update went wrong, and the rest
    assert len(olds) >= 65535
    out = []
    for i in range(0, len(frames), 1024):
        o4, o6, *_ = eng.process_frames(frames[i:i + 1024], [], 1.0)
        assert not o4
        out += o6
    assert len(out) == len(frames)
    bad = []
    for f in out:
        inner = f[ETH + V6:ETH + V6 + 20]
        fresh = bytearray(inner)
        fresh[10:12] = b"\0\0"
        if inner[8] != 63 or ip_sum(inner) != 0xFFFF or struct.unpack_from("!H", inner, 10)[0] != checksum(fresh):
            bad.append(inner.hex())
    assert not bad, f"{len(bad)} bad headers, e.g. {bad[:3]}"


@pytest.mark.parametrize("ttl_from,ttl_to", [(64, 63), (1, 0), (200, 17)])
def test_set_ttl_keeps_the_checksum_right_for_every_value(ttl_from, ttl_to):
    """icmperr.set_ttl (the encapsulation's TTL - 1, and the TTL 0 or TTL - 1 an ICMP
    error quotes): over every old checksum value, the same as computed afresh."""
    import numpy as np
    from lwaftr.dataplane.icmperr import set_ttl
    bad = []
    for ident in range(0, 65536):
        h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, ident, 0, ttl_from, 17, 0,
                                  bytes([203, 0, 113, 9]), bytes([192, 0, 2, 1])))
        struct.pack_into("!H", h, 10, checksum(bytes(h)))
        b = np.frombuffer(bytes(h), np.uint8).copy()
        set_ttl(b, 0, ttl_to)
        got = bytes(b)
        if got[8] != ttl_to or ip_sum(got) != 0xFFFF:
            bad.append(ident)
    assert not bad, f"{len(bad)} bad checksums, e.g. ident {bad[:3]}"
