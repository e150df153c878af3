"""Each lwAFTR behaviour, on scapy-built frames, with assertions on the bytes out."""
from __future__ import annotations

from dataclasses import replace

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrRouting, PadN)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lwaftr import counters as C
from lwaftr.dataplane.engine import Engine

from packets import BR0, BR1, make_config

ROWS = [
    ("192.0.2.1", 1, 4, "2001:db8:1::a", 0),     # ports 4096-8191
    ("192.0.2.1", 2, 4, "2001:db8:1::b", 0),     # ports 8192-12287
    ("192.0.2.2", 0, 0, "2001:db8:1::c", 1),     # the whole address
]
AFTR_V4 = "198.51.100.1"
HOST = "203.0.113.9"
MAC_V4, NEXT_V4 = "02:00:00:00:00:01", "02:00:00:00:00:11"
MAC_V6, NEXT_V6 = "02:00:00:00:00:02", "02:00:00:00:00:22"


def engine(**internal) -> Engine:
    return Engine(make_config(ROWS, **internal))


def inet(dst="192.0.2.1", dport=4100, ttl=64, l4=None, **ip) -> bytes:
    l4 = l4 if l4 is not None else UDP(sport=53, dport=dport) / b"payload"
    return bytes(Ether(dst=MAC_V4, src=NEXT_V4) / IP(src=HOST, dst=dst, ttl=ttl, **ip) / l4)


def from_b4(b4="2001:db8:1::a", br=BR0, src="192.0.2.1", sport=4100, dst=HOST, ttl=64, inner=None, ext=None,
            **ip) -> bytes:
    inner = inner if inner is not None else IP(src=src, dst=dst, ttl=ttl, **ip) / UDP(sport=sport, dport=53) / b"hi"
    v6 = IPv6(src=b4, dst=br, hlim=64)
    if ext is not None:
        v6 = v6 / ext
    return bytes(Ether(dst=MAC_V6, src=NEXT_V6) / v6 / inner)


def run(e: Engine, v4=(), v6=()):
    o4, o6, *_ = e.process_frames(list(v4), list(v6), 100.0)
    return [Ether(f) for f in o4], [Ether(f) for f in o6]


def counters(e: Engine) -> dict[str, int]:
    return C.to_dict(e.counters, nonzero=True)


def test_encapsulation_towards_the_owning_b4():
    e = engine()
    frame = inet(dport=8200, tos=0xB8)
    o4, o6 = run(e, v4=[frame])
    assert o4 == [] and len(o6) == 1
    p = o6[0]
    assert (p.src, p.dst) == (MAC_V6, NEXT_V6)
    assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, p[IPv6].nh) == (BR0, "2001:db8:1::b", 255, 4)
    assert p[IPv6].tc == 0xB8                 # traffic class kept
    inner = p[IPv6].payload
    orig = Ether(frame)[IP]
    assert inner.ttl == orig.ttl - 1
    assert bytes(inner)[9:] [:1] == bytes(orig)[9:10]
    assert IP(bytes(inner)).chksum == IP(bytes(IP(bytes(inner)))).chksum  # valid header checksum
    del orig.chksum
    orig.ttl -= 1
    assert bytes(inner) == bytes(IP(bytes(orig)))


def test_decapsulation_when_the_binding_matches():
    e = engine()
    frame = from_b4()
    o4, o6 = run(e, v6=[frame])
    assert o6 == [] and len(o4) == 1
    assert (o4[0].src, o4[0].dst) == (MAC_V4, NEXT_V4)
    assert bytes(o4[0][IP]) == bytes(Ether(frame)[IPv6].payload)
    assert counters(e)["out-ipv4-packets"] == 1


@pytest.mark.parametrize("spoof", [dict(b4="2001:db8:1::b"), dict(sport=8200), dict(br=BR1),
                                   dict(src="192.0.2.9")])
def test_spoofed_b4_is_dropped_with_icmpv6_policy_error(spoof):
    e = engine()
    frame = from_b4(**spoof)
    o4, o6 = run(e, v6=[frame])
    assert o4 == [] and len(o6) == 1
    err = o6[0]
    assert err[ICMPv6DestUnreach].type == 1 and err[ICMPv6DestUnreach].code == 5
    assert err[IPv6].dst == Ether(frame)[IPv6].src
    assert bytes(err[ICMPv6DestUnreach].payload) == bytes(Ether(frame)[IPv6])
    c = counters(e)
    assert c["drop-no-source-softwire-ipv6-packets"] == 1 and c["out-icmpv6-error-packets"] == 1


def test_spoofed_b4_silently_dropped_when_policy_says_no():
    e = engine(generate_icmp_errors=False)
    assert run(e, v6=[from_b4(sport=9000)]) == ([], [])
    c = counters(e)
    assert c["drop-out-by-policy-icmpv6-packets"] == 1 and c["drop-all-ipv6-iface-packets"] == 1


@pytest.mark.parametrize("hairpinning", [True, False])
def test_hairpinning(hairpinning):
    e = engine(hairpinning=hairpinning)
    frame = from_b4(b4="2001:db8:1::c", br=BR1, src="192.0.2.2", sport=40000, dst="192.0.2.1")
    # destination port 53 is nobody's on 192.0.2.1: use alice's port instead
    frame = from_b4(b4="2001:db8:1::c", br=BR1, inner=IP(src="192.0.2.2", dst="192.0.2.1") /
                    UDP(sport=40000, dport=4200) / b"x")
    o4, o6 = run(e, v6=[frame])
    if hairpinning:
        assert o4 == [] and len(o6) == 1
        assert (o6[0][IPv6].src, o6[0][IPv6].dst) == (BR0, "2001:db8:1::a")
        assert o6[0][IPv6].payload.ttl == 63
        assert counters(e)["hairpin-ipv4-packets"] == 1
    else:
        assert o6 == [] and len(o4) == 1 and o4[0][IP].dst == "192.0.2.1"


def test_ttl_exhausted_gets_time_exceeded():
    e = engine()
    frame = inet(ttl=1)
    o4, o6 = run(e, v4=[frame])
    assert o6 == [] and len(o4) == 1
    err = o4[0]
    assert (err[IP].src, err[IP].dst, err[ICMP].type, err[ICMP].code) == (AFTR_V4, HOST, 11, 0)
    assert err[IPerror].ttl == 0      # quotes the packet as it was dropped
    assert counters(e)["drop-ttl-zero-ipv4-packets"] == 1


def test_unbound_port_gets_host_unreachable_and_icmp_is_silently_dropped():
    e = engine()
    o4, _ = run(e, v4=[inet(dport=20000)])
    assert len(o4) == 1 and (o4[0][ICMP].type, o4[0][ICMP].code) == (3, 1)
    assert o4[0][UDPerror].dport == 20000
    o4, o6 = run(e, v4=[inet(l4=ICMP(type=0, id=20000) / b"x")])
    assert (o4, o6) == ([], [])
    assert counters(e)["drop-in-by-rfc7596-icmpv4-packets"] == 1


def test_icmp_errors_are_capped_at_576_bytes():
    e = engine()
    o4, _ = run(e, v4=[inet(dport=20000, l4=UDP(sport=53, dport=20000) / bytes(1200))])
    assert len(bytes(o4[0][IP])) == 576


def test_df_and_too_big_gets_fragmentation_needed():
    e = engine(mtu=1300)
    o4, o6 = run(e, v4=[inet(flags="DF", l4=UDP(sport=53, dport=4100) / bytes(1300))])
    assert o6 == [] and len(o4) == 1
    assert (o4[0][ICMP].type, o4[0][ICMP].code, o4[0][ICMP].nexthopmtu) == (3, 4, 1260)
    assert counters(e)["drop-over-mtu-but-dont-fragment-ipv4-packets"] == 1


def test_too_big_without_df_is_fragmented_in_ipv6():
    e = engine(mtu=1300)
    frame = inet(l4=UDP(sport=53, dport=4100) / bytes(1300))
    _, o6 = run(e, v4=[frame])
    assert len(o6) == 2
    assert all(len(bytes(p[IPv6])) <= 1300 for p in o6)
    assert counters(e)["out-ipv6-frag"] == 2


def test_icmpv6_packet_too_big_about_a_tunnel_packet_becomes_icmpv4():
    e = engine()
    tunnelled = IPv6(src=BR0, dst="2001:db8:1::a") / IP(src=HOST, dst="192.0.2.1") / UDP(sport=53, dport=4100)
    ptb = bytes(Ether(dst=MAC_V6, src=NEXT_V6) / IPv6(src="2001:db8:99::1", dst=BR0) /
                ICMPv6PacketTooBig(mtu=1400) / tunnelled)
    o4, o6 = run(e, v6=[ptb])
    assert o6 == [] and len(o4) == 1
    err = o4[0]
    assert (err[IP].src, err[IP].dst) == (AFTR_V4, HOST)
    assert (err[ICMP].type, err[ICMP].code, err[ICMP].nexthopmtu) == (3, 4, 1360)
    assert bytes(err[ICMP].payload)[:20] == bytes(tunnelled[IP])[:20]


def test_icmpv6_errors_are_rate_limited():
    cfg = make_config(ROWS)
    cfg = replace(cfg, internal=replace(cfg.internal, error_rate_limit_packets=2))
    e = Engine(cfg)
    _, o6 = run(e, v6=[from_b4(sport=9000 + i) for i in range(5)])
    assert len(o6) == 2
    assert counters(e)["drop-over-rate-limit-icmpv6-packets"] == 3


def test_icmpv4_errors_are_rate_limited_and_counted():
    """RFC 7596 8.1 errors for unbound ports, over the limit: suppressed, counted, alarmed."""
    from lwaftr.mgmt.alarms import Alarms
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, error_rate_limit_packets=2))
    e = Engine(cfg)
    alarms = Alarms(e.counters)
    alarms.check(0.0)
    frames = [inet(dport=100 + i) for i in range(5)]       # PSID 0 of 192.0.2.1: no softwire
    o4, o6 = run(e, v4=frames)
    assert o6 == [] and len(o4) == 2 and all(p[ICMP].type == 3 for p in o4)
    got = counters(e)
    assert got["drop-over-rate-limit-icmpv4-packets"] == 3
    assert got["drop-over-rate-limit-icmpv4-bytes"] == sum(len(bytes(p)) for p in o4) * 3 // 2
    assert got["drop-no-dest-softwire-ipv4-packets"] == 5
    assert [(a.alarm, a.raised) for a in alarms.check(1.0)] == [("icmp-rate-limit", True)]


def test_frames_longer_than_a_buffer_are_counted_as_such():
    e = engine()
    big = e.pool.max_frame + 1
    before = int(e.counters[C.INGRESS_PACKET_DROPS])
    assert len(e._store([bytes(big), bytes(60)])) == 1
    assert e.counters[C.DROP_FRAME_TOO_BIG_PACKETS] == 1 and e.counters[C.INGRESS_PACKET_DROPS] == before


def test_vlan_tags_in_and_out():
    cfg = make_config(ROWS)
    inst = cfg.instance
    cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, vlan_tag=7),
                                          internal=replace(inst.internal, vlan_tag=9))])
    e = Engine(cfg)
    tagged = bytes(Ether(dst=MAC_V4, src=NEXT_V4) / Dot1Q(vlan=7) / IP(src=HOST, dst="192.0.2.1") / UDP(sport=1, dport=4100))
    wrong = bytes(Ether(dst=MAC_V4, src=NEXT_V4) / Dot1Q(vlan=8) / IP(src=HOST, dst="192.0.2.1") / UDP(sport=1, dport=4100))
    _, o6 = run(e, v4=[tagged, wrong])
    assert len(o6) == 1 and o6[0][Dot1Q].vlan == 9 and o6[0][IPv6].dst == "2001:db8:1::a"
    assert counters(e)["drop-wrong-vlan-packets"] == 1


def test_tunnel_encapsulation_limit_option_is_decapsulated():
    e = engine()
    # next header IPv4, length 0 (8 bytes): Tunnel Encapsulation Limit = 4, then PadN of 1 byte.
    tel = Raw(bytes([4, 0, 4, 1, 4, 1, 1, 0]))
    inner = IP(src="192.0.2.1", dst=HOST) / UDP(sport=4100, dport=53) / b"hi"
    frame = bytes(Ether(dst=MAC_V6, src=NEXT_V6) / IPv6(src="2001:db8:1::a", dst=BR0, nh=60) / tel / inner)
    o4, o6 = run(e, v6=[frame])
    assert o6 == [] and len(o4) == 1
    assert bytes(o4[0][IP]) == bytes(inner)


@pytest.mark.parametrize("ext", [IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]),
                                 IPv6ExtHdrRouting()])
def test_other_extension_headers_are_dropped(ext):
    e = engine()
    assert run(e, v6=[from_b4(ext=ext)]) == ([], [])
    assert counters(e)["drop-unknown-protocol-ipv6-packets"] == 1


def test_wrong_family_is_dropped():
    e = engine()
    v6_on_v4 = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())
    v4_on_v6 = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=HOST, dst="192.0.2.1") / UDP())
    assert run(e, v4=[v6_on_v4], v6=[v4_on_v6]) == ([], [])
    c = counters(e)
    assert c["drop-misplaced-not-ipv4-packets"] == 1 and c["drop-misplaced-not-ipv6-packets"] == 1


def test_ping_from_b4_uses_echo_identifier_as_port():
    e = engine()
    frame = from_b4(inner=IP(src="192.0.2.1", dst=HOST) / ICMP(type=8, id=4200) / b"ping")
    o4, _ = run(e, v6=[frame])
    assert len(o4) == 1 and o4[0][ICMP].id == 4200
    reply = inet(l4=ICMP(type=0, id=4200) / b"ping")
    _, o6 = run(e, v4=[reply])
    assert len(o6) == 1 and o6[0][IPv6].dst == "2001:db8:1::a"


def test_tcp_from_internet_to_whole_address_subscriber():
    e = engine()
    _, o6 = run(e, v4=[inet(dst="192.0.2.2", l4=TCP(sport=80, dport=1234))])
    assert len(o6) == 1 and (o6[0][IPv6].src, o6[0][IPv6].dst) == (BR1, "2001:db8:1::c")
