"""Malformed input is dropped and counted under a named counter, never raised, never hoarded."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import Ether

from lwaftr import counters as C
from lwaftr.dataplane.engine import Engine

from packets import BR0, make_config

ROWS = [("192.0.2.1", 1, 4, "2001:db8:1::a", 0), ("192.0.2.2", 0, 0, "2001:db8:1::c", 0)]
GOOD_V4 = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=4100) / b"payload!")
GOOD_V6 = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8:1::a", dst=BR0) / IP(src="192.0.2.1", dst="203.0.113.9") /
                UDP(sport=4100, dport=53) / b"payload!")


def drops(e: Engine) -> dict[str, int]:
    return {k: v for k, v in C.to_dict(e.counters, nonzero=True).items()
            if k.startswith("drop-") and not k.startswith("drop-all-")}


def run(frames4=(), frames6=(), **internal):
    e = Engine(make_config(ROWS, **internal))
    o4, o6, *_ = e.process_frames(list(frames4), list(frames6), 1.0)
    return e, o4, o6


@pytest.mark.parametrize("n", range(0, len(GOOD_V4)))
def test_truncated_ipv4_frames(n):
    e, o4, o6 = run(frames4=[GOOD_V4[:n]])
    assert o6 == []
    assert drops(e), "a truncated frame must be counted"


@pytest.mark.parametrize("n", range(0, len(GOOD_V6)))
def test_truncated_ipv6_frames(n):
    e, o4, o6 = run(frames6=[GOOD_V6[:n]], generate_icmp_errors=False)
    assert o4 == []
    assert drops(e), "a truncated frame must be counted"


@pytest.mark.parametrize("ip", [dict(ihl=4), dict(ihl=15), dict(len=200), dict(len=10), dict(version=5)])
def test_bad_ipv4_header_fields(ip):
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", **ip) / UDP(sport=53, dport=4100) / b"x")
    e, o4, o6 = run(frames4=[frame])
    assert o6 == [] and drops(e)


def test_bad_ipv4_header_checksum_is_dropped():
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", chksum=0x1234) / UDP(sport=53, dport=4100))
    e, o4, o6 = run(frames4=[frame])
    assert (o4, o6) == ([], [])
    assert drops(e) == {"drop-malformed-ipv4-bytes": len(frame), "drop-malformed-ipv4-packets": 1}


def test_bad_icmp_checksum_is_dropped():
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.2") / ICMP(type=0, id=5, chksum=0xBAD))
    e, o4, o6 = run(frames4=[frame])
    assert (o4, o6) == ([], [])
    assert drops(e)["drop-bad-checksum-icmpv4-packets"] == 1


@pytest.mark.parametrize("ethertype", [0x88CC, 0x8847, 0x9000])
def test_unknown_ethertypes(ethertype):
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=ethertype) / (b"\0" * 46))
    e, o4, o6 = run(frames4=[frame], frames6=[frame])
    assert (o4, o6) == ([], [])
    d = drops(e)
    assert d["drop-misplaced-not-ipv4-packets"] == 1 and d["drop-misplaced-not-ipv6-packets"] == 1


@pytest.mark.parametrize("chain", [
    IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt(),
    IPv6ExtHdrHopByHop(),
    IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt(),
])
def test_extension_header_chains_are_dropped(chain):
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8:1::a", dst=BR0) / chain /
                  IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=4100, dport=53))
    e, o4, o6 = run(frames6=[frame])
    assert (o4, o6) == ([], [])
    assert drops(e)["drop-unknown-protocol-ipv6-packets"] == 1


def test_zero_length_and_overlapping_ipv4_fragments():
    zero = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", id=7, proto=17, flags="MF", frag=0))
    a = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", id=8, proto=17, flags="MF", frag=0) / bytes(64))
    b = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", id=8, proto=17, frag=4) / bytes(64))  # overlaps a
    e, o4, o6 = run(frames4=[zero, a, b])
    assert o6 == []
    assert e.counters[C.IN_IPV4_FRAG_REASSEMBLED] == 0
    assert e.counters[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] >= 1


@pytest.mark.parametrize("side, mtu, minimum", [("external", 67, 68), ("internal", 1279, 1280)])
def test_an_mtu_below_its_protocols_minimum_is_refused_naming_the_interface(side, mtu, minimum):
    """RFC 791 3.2 (68) and RFC 8200 5 (1280): an engine is not built on such an MTU,
    and the error says which interface's it is; one at the minimum is taken."""
    cfg = make_config(ROWS)
    with pytest.raises(ValueError, match=f"{side}-interface mtu {mtu} is below the RFC .* minimum of {minimum}"):
        Engine(replace(cfg, **{side: replace(getattr(cfg, side), mtu=mtu)}))
    Engine(replace(cfg, **{side: replace(getattr(cfg, side), mtu=minimum)}))


def test_fragment_flood_stays_within_the_reassembly_limit():
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, reassembly_max_packets=8))
    e = Engine(cfg)
    flood = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1", id=i, proto=17, flags="MF") / bytes(64))
             for i in range(2000)]
    for i in range(0, len(flood), 500):
        e.process_frames(flood[i:i + 500], [], 1.0)
    assert len(e.defrag4) <= 8
    assert e.counters[C.DROP_IPV4_FRAG_RANDOM_EVICTED] >= 2000 - 8
    assert e.counters[C.IN_IPV4_FRAG_NEEDS_REASSEMBLY] == 2000


def test_ipv6_fragment_flood_stays_within_the_reassembly_limit():
    cfg = make_config(ROWS)
    cfg = replace(cfg, internal=replace(cfg.internal, reassembly_max_packets=4))
    e = Engine(cfg)
    flood = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8:1::a", dst=BR0) / IPv6ExtHdrFragment(id=i, m=1, nh=4) / bytes(64))
             for i in range(500)]
    e.process_frames([], flood, 1.0)
    assert len(e.defrag6) <= 4
    assert e.counters[C.IN_IPV6_FRAG_NEEDS_REASSEMBLY] == 500


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.binary(min_size=0, max_size=200))
def test_random_bytes_never_crash(b4, b6):
    e = Engine(make_config(ROWS))
    v4 = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=0x0800)) + b4, bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=0x86DD)) + b4, b4]
    v6 = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=0x86DD)) + b6, GOOD_V6[:54] + b6, b6]
    e.process_frames(v4, v6, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOOD_V6) - 1), st.integers(0, 255), st.integers(0, len(GOOD_V4) - 1), st.integers(0, 255))
def test_mutated_frames_never_crash(i6, x6, i4, x4):
    f6 = bytearray(GOOD_V6)
    f6[i6] = x6
    f4 = bytearray(GOOD_V4)
    f4[i4] = x4
    e = Engine(make_config(ROWS))
    e.process_frames([bytes(f4)], [bytes(f6)], 1.0)
    fast = Engine(make_config(ROWS))
    o = fast.process(fast.pool.store([bytes(f4)]), fast.pool.store([bytes(f6)]), 1.0)
    fast.pool.free(o[0])
    fast.pool.free(o[1])
    assert C.to_dict(fast.counters) == C.to_dict(e.counters)
