"""ARP / NDP / echo slow-path stages: Snabb's arp.lua, lwaftr/ndp.lua and
ipv4|ipv6/echo.lua, byte for byte and counter for counter.

Expected packets are built independently with scapy; the last part replays
the reference vectors' ARP, NDP and ping-the-lwAFTR cases through the stages.
"""
from __future__ import annotations

import ipaddress
import json
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA,
                                ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6,
                                IPv6ExtHdrHopByHop)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lwaftr import counters as C
from lwaftr.config.load import load_config
from reference.echo import Echo4Stage, Echo6Stage
from reference.neighbor import HOLD_LIMIT, RETRY_INTERVAL, ArpStage, NdpStage
from lwaftr.io.pcap import read_frames

from conftest import VECTORS, rfc4861_expected_ns

SELF4, NEXT4, PEER4, PROXY4 = "10.10.10.10", "4.5.6.7", "10.10.10.1", "198.51.100.7"
SELF6, NEXT6, PEER6 = "8:9:a:b:c:d:e:f", "8:9:a:b:4:3:2:1", "2001:db8::99"
SELF_MAC, NEXT_MAC, PEER_MAC = "12:12:12:12:12:12", "68:68:68:68:68:68", "02:04:06:08:0a:0c"


def ip4(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def ip6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def snm(a: str) -> str:
    """Solicited-node multicast address (RFC 4291 2.7.1)."""
    return str(ipaddress.IPv6Address(ip6("ff02::1:ff00:0")[:13] + ip6(a)[13:]))


def nonzero(counters) -> dict[str, int]:
    return C.to_dict(counters, nonzero=True)


def arp_stage(next_mac: str | None = None, **kw) -> tuple[ArpStage, object]:
    c = C.new_array()
    return ArpStage(c, ip4(SELF4), mac(SELF_MAC), None if next_mac else ip4(NEXT4),
                    mac(next_mac) if next_mac else None, **kw), c


def ndp_stage(next_mac: str | None = None, **kw) -> tuple[NdpStage, object]:
    c = C.new_array()
    return NdpStage(c, ip6(SELF6), mac(SELF_MAC), None if next_mac else ip6(NEXT6),
                    mac(next_mac) if next_mac else None, **kw), c


# ----------------------------------------------------------------------------- ARP (RFC 826)

def arp_frame(op: int = 1, pdst: str = SELF4, psrc: str = PEER4, hwsrc: str = PEER_MAC,
              eth_src: str = PEER_MAC, **kw) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=eth_src)
                 / ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst="00:00:00:00:00:00", pdst=pdst, **kw))


def test_arp_request_for_us_is_answered():
    st, c = arp_stage(NEXT_MAC)
    req = arp_frame(eth_src="02:00:00:00:00:99")   # the reply goes to the ARP sender address
    up, down = st.from_wire(req, 0.0)
    want = bytes(Ether(dst=PEER_MAC, src=SELF_MAC)
                 / ARP(op=2, hwsrc=SELF_MAC, psrc=SELF4, hwdst=PEER_MAC, pdst=PEER4))
    assert up is None and down == [want] and len(want) == 42
    assert nonzero(c) == {"in-arp-request-bytes": 42, "in-arp-request-packets": 1,
                          "out-arp-reply-bytes": 42, "out-arp-reply-packets": 1}


def test_arp_request_padded_frame_counts_its_length():
    st, c = arp_stage(NEXT_MAC)
    up, down = st.from_wire(arp_frame() + bytes(18), 0.0)
    assert up is None and len(down) == 1 and len(down[0]) == 42
    assert c[C.IN_ARP_REQUEST_BYTES] == 60 and c[C.OUT_ARP_REPLY_BYTES] == 42


def test_arp_request_for_other_address_counted_not_answered():
    st, c = arp_stage(NEXT_MAC)
    assert st.from_wire(arp_frame(pdst="10.10.10.11"), 0.0) == (None, [])
    assert nonzero(c) == {"in-arp-request-bytes": 42, "in-arp-request-packets": 1}


def test_arp_proxy_addresses():
    st, c = arp_stage(NEXT_MAC)
    assert st.from_wire(arp_frame(pdst=PROXY4), 0.0) == (None, [])   # off by default
    st, c = arp_stage(NEXT_MAC, proxy_ips=frozenset({ip4(PROXY4)}))
    up, down = st.from_wire(arp_frame(pdst=PROXY4), 0.0)
    assert down == [bytes(Ether(dst=PEER_MAC, src=SELF_MAC)
                          / ARP(op=2, hwsrc=SELF_MAC, psrc=PROXY4, hwdst=PEER_MAC, pdst=PEER4))]
    assert c[C.OUT_ARP_REPLY_PACKETS] == 1


@pytest.mark.parametrize("field", [dict(hwtype=6), dict(ptype=0x86DD), dict(hwlen=8), dict(plen=16)])
def test_arp_not_ethernet_ipv4_dropped_uncounted(field):
    st, c = arp_stage(NEXT_MAC)
    f = bytearray(arp_frame())
    off = {"hwtype": 14, "ptype": 16, "hwlen": 18, "plen": 19}
    k, v = next(iter(field.items()))
    if k in ("hwtype", "ptype"):
        struct.pack_into("!H", f, off[k], v)
    else:
        f[off[k]] = v
    assert st.from_wire(bytes(f), 0.0) == (None, [])
    assert nonzero(c) == {}


def test_arp_other_operation_dropped_uncounted():
    st, c = arp_stage(NEXT_MAC)
    assert st.from_wire(arp_frame(op=3), 0.0) == (None, [])    # RARP request
    assert nonzero(c) == {}


def test_arp_truncated_goes_north():
    st, c = arp_stage(NEXT_MAC)
    short = arp_frame()[:41]
    assert st.from_wire(short, 0.0) == (short, [])              # not "ARP" to Snabb: north
    assert st.from_wire(short[:13], 0.0) == (short[:13], [])    # runt: north, for the core to count
    ip = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(dst=SELF4) / ICMP())
    assert st.from_wire(ip, 0.0) == (ip, [])
    assert st.from_wire(b"", 0.0) == (b"", [])
    assert nonzero(c) == {}


def test_arp_resolution_and_retry_timing():
    st, c = arp_stage()
    assert not st.resolved and st.next_mac is None
    want = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=SELF_MAC)
                 / ARP(op=1, hwsrc=SELF_MAC, psrc=SELF4, hwdst="00:00:00:00:00:00", pdst=NEXT4))
    assert st.poll(100.0) == [want]
    assert st.poll(100.0) == [] and st.poll(100.0 + RETRY_INTERVAL - 0.01) == []
    assert st.poll(100.0 + RETRY_INTERVAL) == [want]
    assert nonzero(c) == {"out-arp-request-bytes": 84, "out-arp-request-packets": 2}
    # A reply from someone else teaches nothing, but is counted.
    assert st.from_wire(arp_frame(op=2, psrc=PEER4, pdst=SELF4), 0.0) == (None, [])
    assert not st.resolved
    assert st.from_wire(arp_frame(op=2, psrc=NEXT4, pdst=SELF4, hwsrc=NEXT_MAC, eth_src=PEER_MAC),
                        0.0) == (None, [])
    assert st.resolved and st.next_mac == mac(NEXT_MAC)          # from the ARP body, not Ethernet
    assert c[C.IN_ARP_REPLY_PACKETS] == 2 and c[C.IN_ARP_REPLY_BYTES] == 84
    assert st.poll(1000.0) == []
    # Snabb takes every reply from the next hop, even once resolved.
    st.from_wire(arp_frame(op=2, psrc=NEXT4, hwsrc="02:00:00:00:00:77"), 0.0)
    assert st.next_mac == mac("02:00:00:00:00:77")


def test_arp_requests_do_not_teach():
    st, c = arp_stage()
    st.from_wire(arp_frame(op=1, psrc=NEXT4, hwsrc=NEXT_MAC), 0.0)
    assert not st.resolved


def test_arp_static_next_hop_never_requests():
    st, c = arp_stage(NEXT_MAC)
    assert st.resolved and st.poll(0.0) == [] and st.poll(10.0) == []
    assert nonzero(c) == {}


def test_arp_to_wire_sets_macs():
    st, _ = arp_stage(NEXT_MAC)
    f = bytes(Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00") / IP(dst="1.2.3.4") / TCP())
    assert st.to_wire(f) == mac(NEXT_MAC) + mac(SELF_MAC) + f[12:]


def test_next_hop_needs_ip_or_mac():
    with pytest.raises(ValueError):
        ArpStage(C.new_array(), ip4(SELF4), mac(SELF_MAC), None, None)
    with pytest.raises(ValueError):
        NdpStage(C.new_array(), ip6(SELF6), mac(SELF_MAC), None, None)


# ----------------------------------------------------------------------------- holding southbound

@pytest.mark.parametrize("family", ["arp", "ndp"])
def test_frames_held_until_resolved_then_released_in_order(family):
    st, c = arp_stage() if family == "arp" else ndp_stage()
    frames = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(id=i) / TCP()) for i in range(3)]
    st.poll(0.0)
    assert [st.to_wire(f) for f in frames[:2]] == [None, None] and st.held == 2
    assert st.flush() == []                                      # not resolved yet
    if family == "arp":
        st.from_wire(arp_frame(op=2, psrc=NEXT4, hwsrc=NEXT_MAC), 0.0)
    else:
        st.from_wire(na_frame(), 0.0)
    assert st.resolved
    assert st.to_wire(frames[2]) is None                         # queues behind the older ones
    hdr = mac(NEXT_MAC) + mac(SELF_MAC)
    assert st.poll(0.5) == [hdr + f[12:] for f in frames] and st.held == 0
    assert st.to_wire(frames[0]) == hdr + frames[0][12:]
    drop = C.DROP_NO_NEXT_HOP_IPV4_PACKETS if family == "arp" else C.DROP_NO_NEXT_HOP_IPV6_PACKETS
    assert c[drop] == 0


@pytest.mark.parametrize("family", ["arp", "ndp"])
def test_hold_overflow_dropped_and_counted(family):
    st, c = arp_stage(hold_limit=2) if family == "arp" else ndp_stage(hold_limit=2)
    f = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP() / TCP())
    assert [st.to_wire(f) for _ in range(5)] == [None] * 5 and st.held == 2
    drop = C.DROP_NO_NEXT_HOP_IPV4_PACKETS if family == "arp" else C.DROP_NO_NEXT_HOP_IPV6_PACKETS
    assert c[drop] == 3
    assert HOLD_LIMIT == 1023                                    # a Snabb link's capacity


# ----------------------------------------------------------------------------- NDP (RFC 4861)

def ns_frame(target: str = SELF6, src: str = PEER6, dst: str | None = None, hlim: int = 255,
             opts=None, eth_src: str = PEER_MAC, **icmp) -> bytes:
    if opts is None:
        opts = ICMPv6NDOptSrcLLAddr(lladdr=eth_src)
    return bytes(Ether(dst="33:33:ff:0e:00:0f", src=eth_src)
                 / IPv6(src=src, dst=dst or snm(target), hlim=hlim)
                 / ICMPv6ND_NS(tgt=target, **icmp) / opts)


def na_frame(target: str = NEXT6, lladdr: str | None = NEXT_MAC, S: int = 1, hlim: int = 255,
             eth_src: str = PEER_MAC, **icmp) -> bytes:
    p = (Ether(dst=SELF_MAC, src=eth_src) / IPv6(src=NEXT6, dst=SELF6, hlim=hlim)
         / ICMPv6ND_NA(tgt=target, R=1, S=S, O=1, **icmp))
    if lladdr is not None:
        p = p / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
    return bytes(p)


def expected_na(eth_dst: str, ip_dst: str, S: int = 1) -> bytes:
    return bytes(Ether(dst=eth_dst, src=SELF_MAC) / IPv6(src=SELF6, dst=ip_dst, hlim=255)
                 / ICMPv6ND_NA(R=1, S=S, O=0, tgt=SELF6) / ICMPv6NDOptDstLLAddr(lladdr=SELF_MAC))


def test_ns_for_us_answered_with_solicited_na():
    st, c = ndp_stage(NEXT_MAC)
    ns = ns_frame(eth_src="02:00:00:00:00:99")
    up, down = st.from_wire(ns, 0.0)
    assert up is None and down == [expected_na("02:00:00:00:00:99", PEER6)]
    assert len(ns) == 86 and len(down[0]) == 86
    assert nonzero(c) == {"in-ndp-ns-bytes": 86, "in-ndp-ns-packets": 1,
                          "out-ndp-na-bytes": 86, "out-ndp-na-packets": 1}


def test_ns_unicast_without_option_answered():
    st, c = ndp_stage(NEXT_MAC)
    up, down = st.from_wire(ns_frame(dst=SELF6, opts=Raw(b"")), 0.0)
    assert down == [expected_na(PEER_MAC, PEER6)]


def test_dad_ns_answered_to_all_nodes():
    """RFC 4861 7.2.4: NS from "::" -> NA to ff02::1, Solicited flag clear."""
    st, c = ndp_stage(NEXT_MAC)
    up, down = st.from_wire(ns_frame(src="::", opts=Raw(b"")), 0.0)
    assert down == [expected_na("33:33:00:00:00:01", "ff02::1", S=0)]
    assert c[C.OUT_NDP_NA_PACKETS] == 1


@pytest.mark.parametrize("kw", [
    dict(src="::"),                                   # DAD with a source link-layer address option
    dict(src="::", dst=SELF6, opts=Raw(b"")),         # DAD not to a solicited-node group
    dict(target="10::1"),                             # not our address
    dict(target="ff02::1"),                           # multicast target
    dict(opts=Raw(b"\x01\x00" + bytes(6))),           # zero-length option
    dict(opts=Raw(b"\x01\x02" + bytes(6))),           # option overruns the message
    dict(opts=Raw(b"\x0e")),                          # half an option header
], ids=["dad-slla", "dad-unicast", "other-target", "mcast-target", "zero-opt", "long-opt", "half-opt"])
def test_ns_counted_but_not_answered(kw):
    st, c = ndp_stage(NEXT_MAC)
    assert st.from_wire(ns_frame(**kw), 0.0) == (None, [])
    assert c[C.IN_NDP_NS_PACKETS] == 1 and c[C.OUT_NDP_NA_PACKETS] == 0


def _set_payload_length(frame: bytes, plen: int) -> bytes:
    """Shrink the IPv6 payload length, with a checksum valid for the new length."""
    from lwaftr.dataplane.icmp import checksum, ipv6_pseudo_sum
    f = bytearray(frame)
    struct.pack_into("!H", f, 18, plen)
    f[56:58] = b"\0\0"
    struct.pack_into("!H", f, 56, checksum(f[54:54 + plen], ipv6_pseudo_sum(f[22:38], f[38:54], plen, 58)))
    return bytes(f)


def test_ns_too_short_counted_not_answered():
    st, c = ndp_stage(NEXT_MAC)
    assert st.from_wire(_set_payload_length(ns_frame(), 20), 0.0) == (None, [])
    assert c[C.IN_NDP_NS_PACKETS] == 1 and c[C.OUT_NDP_NA_PACKETS] == 0


@pytest.mark.parametrize("frame", [
    ns_frame(hlim=64),                                # RFC 4861 7.1.1: hop limit 255
    ns_frame(hlim=254),
    ns_frame(cksum=0x1234),                           # bad checksum
    ns_frame(code=1),                                 # code 0
    _set_payload_length(ns_frame(), 32)[:80],         # payload beyond the frame
], ids=["hlim64", "hlim254", "checksum", "code", "truncated"])
def test_invalid_ns_dropped_uncounted(frame):
    st, c = ndp_stage(NEXT_MAC)
    assert st.from_wire(frame, 0.0) == (None, [])
    assert nonzero(c) == {}


def test_other_ndp_consumed_non_ndp_passed():
    st, c = ndp_stage(NEXT_MAC)
    rs = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(dst="ff02::2", hlim=255) / ICMPv6ND_RS())
    ra = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(dst="ff02::1", hlim=255) / ICMPv6ND_RA())
    assert st.from_wire(rs, 0.0) == (None, []) and st.from_wire(ra, 0.0) == (None, [])
    ping = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(dst=SELF6) / ICMPv6EchoRequest())
    behind_ext = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(dst=SELF6, hlim=255) / IPv6ExtHdrHopByHop() / ICMPv6ND_NS(tgt=SELF6))
    short = ns_frame()[:57]
    v4 = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP() / TCP())
    for f in (ping, behind_ext, short, v4, b"", b"\x86\xdd"):
        assert st.from_wire(f, 0.0) == (f, [])
    assert nonzero(c) == {}


def test_ns_to_solicited_node_group_per_rfc4861():
    st, c = ndp_stage()
    want = bytes(Ether(dst="33:33:ff:02:00:01", src=SELF_MAC)
                 / IPv6(src=SELF6, dst=snm(NEXT6), hlim=255)
                 / ICMPv6ND_NS(tgt=NEXT6) / ICMPv6NDOptSrcLLAddr(lladdr=SELF_MAC))
    assert snm(NEXT6) == "ff02::1:ff02:1"
    assert st.poll(5.0) == [want] and len(want) == 86
    assert st.poll(5.0 + RETRY_INTERVAL / 2) == []
    assert st.poll(5.0 + RETRY_INTERVAL) == [want]
    assert nonzero(c) == {"out-ndp-ns-bytes": 172, "out-ndp-ns-packets": 2}


def test_na_teaches_next_hop_from_target_option():
    st, c = ndp_stage()
    assert st.from_wire(na_frame(eth_src=PEER_MAC), 0.0) == (None, [])
    assert st.next_mac == mac(NEXT_MAC) and st.resolved
    assert nonzero(c) == {"in-ndp-na-bytes": 86, "in-ndp-na-packets": 1}
    assert st.poll(0.0) == []
    st.from_wire(na_frame(lladdr="02:00:00:00:00:77"), 0.0)      # once known, kept
    assert st.next_mac == mac(NEXT_MAC) and c[C.IN_NDP_NA_PACKETS] == 2


def test_na_without_option_teaches_ethernet_source():
    st, c = ndp_stage()
    st.from_wire(na_frame(lladdr=None, eth_src="02:00:00:00:00:55"), 0.0)
    assert st.next_mac == mac("02:00:00:00:00:55")


def test_na_first_target_option_wins():
    st, _ = ndp_stage()
    f = bytes(Ether(dst=SELF_MAC, src=PEER_MAC) / IPv6(src=NEXT6, dst=SELF6, hlim=255)
              / ICMPv6ND_NA(tgt=NEXT6, S=1) / ICMPv6NDOptDstLLAddr(lladdr=NEXT_MAC)
              / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:77"))
    st.from_wire(f, 0.0)
    assert st.next_mac == mac(NEXT_MAC)


@pytest.mark.parametrize("frame", [
    na_frame(S=0),                                    # unsolicited
    na_frame(target="8:9:a:b::99"),                   # not our next hop
    bytes(Ether(dst=SELF_MAC, src=PEER_MAC) / IPv6(src=NEXT6, dst=SELF6, hlim=255)
          / ICMPv6ND_NA(tgt=NEXT6, S=1) / Raw(b"\x02\x02" + bytes(14))),   # 16-byte target LLA option
    bytes(Ether(dst=SELF_MAC, src=PEER_MAC) / IPv6(src=NEXT6, dst=SELF6, hlim=255)
          / ICMPv6ND_NA(tgt=NEXT6, S=1) / Raw(b"\x01\x00" + bytes(6))),    # zero-length option
], ids=["unsolicited", "other-target", "long-tlla", "zero-opt"])
def test_na_counted_but_not_learned(frame):
    st, c = ndp_stage()
    assert st.from_wire(frame, 0.0) == (None, [])
    assert not st.resolved and c[C.IN_NDP_NA_PACKETS] == 1


@pytest.mark.parametrize("frame", [na_frame(hlim=64), na_frame(cksum=1), na_frame(code=3)],
                         ids=["hlim", "checksum", "code"])
def test_invalid_na_dropped_uncounted(frame):
    st, c = ndp_stage()
    assert st.from_wire(frame, 0.0) == (None, [])
    assert not st.resolved and nonzero(c) == {}


def test_ndp_to_wire_sets_macs():
    st, _ = ndp_stage(NEXT_MAC)
    f = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6() / TCP())
    assert st.to_wire(f) == mac(NEXT_MAC) + mac(SELF_MAC) + f[12:]


# ----------------------------------------------------------------------------- ICMP echo

ECHO_MACS = dict(dst="22:22:22:22:22:22", src="44:44:44:44:44:44")


def test_echo4_reply():
    c = C.new_array()
    st = Echo4Stage(c, ip4(SELF4))
    req = bytes(Ether(**ECHO_MACS) / IP(src=PEER4, dst=SELF4, ttl=7, id=99, flags="DF", tos=0x20)
                / ICMP(type=8, id=0x1234, seq=5) / Raw(b"hello, odd"))
    up, reply = st.from_wire(req)
    want = Ether(dst=ECHO_MACS["src"], src=ECHO_MACS["dst"]) / IP(
        src=SELF4, dst=PEER4, ttl=64, id=99, flags="DF", tos=0x20) / ICMP(type=0, id=0x1234, seq=5) / Raw(
        b"hello, odd")
    assert up is None and reply == bytes(want)
    assert nonzero(c) == {"in-icmpv4-echo-bytes": len(req), "in-icmpv4-echo-packets": 1,
                          "out-icmpv4-echo-bytes": len(req), "out-icmpv4-echo-packets": 1}
    assert st.to_wire(req) == req


def test_echo4_with_options_and_bad_checksum_still_answered():
    st = Echo4Stage(C.new_array(), ip4(SELF4))
    req = bytes(Ether(**ECHO_MACS) / IP(src=PEER4, dst=SELF4, options=[b"\x01\x01\x01\x00"])
                / ICMP(type=8, chksum=0xDEAD, id=1, seq=1) / Raw(b"abcd"))
    _, reply = st.from_wire(req)
    p = Ether(reply)
    assert p[IP].ihl == 6 and p[IP].ttl == 64 and p[ICMP].type == 0 and p[IP].options == IP(req[14:]).options
    q = Ether(reply)                    # both checksums valid: scapy recomputes the same bytes
    del q[IP].chksum, q[ICMP].chksum
    assert bytes(Ether(bytes(q))) == reply


def test_echo4_flags_word_as_snabb_on_little_endian():
    """Snabb's ``band(flags_and_fragment_offset, 0x1fff)`` on the raw
    (network-order) field keeps the first byte (DF, MF) and clears the top
    3 bits of the second."""
    st = Echo4Stage(C.new_array(), ip4(SELF4))
    f = bytearray(bytes(Ether(**ECHO_MACS) / IP(src=PEER4, dst=SELF4) / ICMP(type=8)))
    f[20:22] = b"\x60\xff"
    f[24:26] = b"\0\0"
    from lwaftr.dataplane.icmp import checksum
    struct.pack_into("!H", f, 24, checksum(f[14:34]))
    _, reply = st.from_wire(bytes(f))
    assert reply[20:22] == b"\x60\x1f" and checksum(reply[14:34]) == 0


def test_echo4_padding_is_echoed_and_checksummed():
    st = Echo4Stage(C.new_array(), ip4(SELF4))
    req = bytes(Ether(**ECHO_MACS) / IP(src=PEER4, dst=SELF4) / ICMP(type=8)) + b"\x00\x01"  # 44 bytes
    _, reply = st.from_wire(req)
    assert len(reply) == len(req) and reply.endswith(b"\x00\x01")
    from lwaftr.dataplane.icmp import checksum
    assert checksum(reply[34:]) == 0                                 # over the padding too, as Snabb


@pytest.mark.parametrize("frame", [
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst="10.10.10.11") / ICMP(type=8)),     # not us
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst=SELF4) / ICMP(type=0)),             # a reply
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst=SELF4) / ICMP(type=8, code=1)),     # code != 0
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst=SELF4) / TCP()),
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst=SELF4) / ICMP(type=8))[:37],        # truncated
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6() / ICMPv6EchoRequest()),
    b"",
], ids=["other-dst", "reply", "code", "tcp", "truncated", "ipv6", "empty"])
def test_echo4_passes_everything_else(frame):
    c = C.new_array()
    assert Echo4Stage(c, ip4(SELF4)).from_wire(frame) == (frame, None)
    assert nonzero(c) == {}


def test_echo6_reply():
    c = C.new_array()
    st = Echo6Stage(c, ip6(SELF6))
    req = bytes(Ether(**ECHO_MACS) / IPv6(src=PEER6, dst=SELF6, hlim=3, tc=0x20, fl=0x12345)
                / ICMPv6EchoRequest(id=7, seq=9, data=b"payload!x"))
    up, reply = st.from_wire(req)
    want = (Ether(dst=ECHO_MACS["src"], src=ECHO_MACS["dst"])
            / IPv6(src=SELF6, dst=PEER6, hlim=64, tc=0x20, fl=0x12345)
            / ICMPv6EchoReply(id=7, seq=9, data=b"payload!x"))
    assert up is None and reply == bytes(want)
    assert nonzero(c) == {"in-icmpv6-echo-bytes": len(req), "in-icmpv6-echo-packets": 1,
                          "out-icmpv6-echo-bytes": len(req), "out-icmpv6-echo-packets": 1}
    assert st.to_wire(req) == req


@pytest.mark.parametrize("frame", [
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src=PEER6, dst="8:9:a:b::1") / ICMPv6EchoRequest()),
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src=PEER6, dst=SELF6) / ICMPv6EchoReply()),
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src=PEER6, dst=SELF6) / ICMPv6EchoRequest(code=1)),
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src=PEER6, dst=SELF6) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()),
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src=PEER6, dst=SELF6) / ICMPv6EchoRequest())[:57],
    bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(dst=SELF4) / ICMP(type=8)),
    b"",
], ids=["other-dst", "reply", "code", "ext-header", "truncated", "ipv4", "empty"])
def test_echo6_passes_everything_else(frame):
    c = C.new_array()
    assert Echo6Stage(c, ip6(SELF6)).from_wire(frame) == (frame, None)
    assert nonzero(c) == {}


def test_stages_never_raise_on_garbage():
    import random
    rnd = random.Random(4861)
    arp, _ = arp_stage()
    ndp, _ = ndp_stage()
    e4, e6 = Echo4Stage(C.new_array(), ip4(SELF4)), Echo6Stage(C.new_array(), ip6(SELF6))
    seeds = [arp_frame(), arp_frame(op=2, psrc=NEXT4), ns_frame(), na_frame(),
             bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(dst=SELF4, ihl=5) / ICMP(type=8)),
             bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(dst=SELF6) / ICMPv6EchoRequest())]
    for _ in range(3000):
        f = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(4)):
            f[rnd.randrange(len(f))] = rnd.randrange(256)
        f = bytes(f[:rnd.randrange(len(f) + 1)])
        arp.from_wire(f, 0.0)
        ndp.from_wire(f, 0.0)
        e4.from_wire(f)
        e6.from_wire(f)
        arp.to_wire(f)
        ndp.to_wire(f)


def test_echo4_low_ihl_does_not_raise():
    st = Echo4Stage(C.new_array(), ip4(SELF4))
    f = bytearray(bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src=PEER4, dst=SELF4) / ICMP(type=8)))
    f[14] = 0x42                        # IHL 2: "ICMP" at offset 22 = TTL/proto/checksum bytes
    f[22], f[23] = 8, 0
    up, reply = st.from_wire(bytes(f))
    assert (up is None) != (reply is None)


# ----------------------------------------------------------------------------- reference vectors

MANIFEST = {c["name"]: c for c in json.loads((VECTORS / "manifest.json").read_text())}
STAGE_COUNTER_WORDS = ("arp", "ndp", "echo", "no-next-hop")
NDP_DEVIATION = "NDP: With receiving NA, next_hop6_mac not initially set"


def _stage_counters(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v and any(w in k for w in STAGE_COUNTER_WORDS)}


def _frames(name: str | None) -> list[bytes]:
    return read_frames(VECTORS / name) if name else []


def _replay(case: dict) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes], dict, ArpStage, NdpStage]:
    """Snabb's order for one batch: request first (start of push), then the
    frames' own answers; echo after ARP/NDP.  Returns the frames passed north."""
    conf = load_config(VECTORS / case["conf"])
    ext, int_ = conf.instance.external, conf.instance.internal
    c = C.new_array()
    arp = ArpStage(c, ext.ip, ext.mac, ext.next_hop.ip, ext.next_hop.mac)
    ndp = NdpStage(c, int_.ip, int_.mac, int_.next_hop.ip, int_.next_hop.mac)
    e4, e6 = Echo4Stage(c, ext.ip), Echo6Stage(c, int_.ip)
    south4, south6 = arp.poll(0.0), ndp.poll(0.0)
    north4, north6 = [], []
    for stage, echo, frames, north, south in ((arp, e4, _frames(case["in_v4"]), north4, south4),
                                              (ndp, e6, _frames(case["in_v6"]), north6, south6)):
        passed = []
        for f in frames:
            up, down = stage.from_wire(f, 0.0)
            south.extend(down)
            if up is not None:
                passed.append(up)
        replies = []
        for f in passed:
            up, reply = echo.from_wire(f)
            if reply is not None:
                replies.append(reply)
            if up is not None:
                north.append(up)
        south[:0] = replies                       # Snabb: echo replies leave first, unrewritten
    return south4, south6, north4, north6, nonzero(c), arp, ndp


OWN_CASES = [n for n in MANIFEST if n.startswith(("ARP:", "NDP:", "ICMP Echo to AFTR", "IPv6 packet, next hop NA"))]


def test_vector_cases_found():
    assert len(OWN_CASES) == 15


@pytest.mark.parametrize("name", OWN_CASES)
def test_vector_case(name):
    case = MANIFEST[name]
    south4, south6, north4, north6, counters, arp, ndp = _replay(case)
    assert counters == _stage_counters(case["counters"])
    exp4, exp6 = _frames(case["out_v4"]), _frames(case["out_v6"])
    if name == NDP_DEVIATION:
        exp6 = [rfc4861_expected_ns(f) for f in exp6]
    # What the stages emit themselves comes first; the rest is the core's
    # output, which only needs the next hop's MACs from us.
    assert south4 == exp4[:len(south4)]
    assert south6 == exp6[:len(south6)]
    for stage, rest in ((arp, exp4[len(south4):]), (ndp, exp6[len(south6):])):
        for f in rest:
            assert stage.resolved
            assert stage.to_wire(bytes(12) + f[12:]) == f
    # Frames not for these stages went north untouched, in order.
    for north, inp, consumed in (
            (north4, _frames(case["in_v4"]), ("in-arp-request-packets", "in-arp-reply-packets",
                                              "in-icmpv4-echo-packets")),
            (north6, _frames(case["in_v6"]), ("in-ndp-ns-packets", "in-ndp-na-packets",
                                              "in-icmpv6-echo-packets"))):
        assert len(north) == len(inp) - sum(counters.get(k, 0) for k in consumed)
        it = iter(inp)
        assert all(any(f == g for g in it) for f in north)


def test_vector_ns_difference_is_exactly_the_rfc4861_addressing():
    """Our NS vs. ndp_ns_and_recap.pcap: Ethernet destination, IPv6 destination
    and ICMPv6 checksum differ; ndp_outgoing_ns.pcap already has our bytes."""
    conf = load_config(VECTORS / "tunnel_icmp_withoutmac.conf")
    i = conf.instance.internal
    ours = NdpStage(C.new_array(), i.ip, i.mac, i.next_hop.ip, None).poll(0.0)[0]
    assert ours == _frames("ndp_outgoing_ns.pcap")[0]
    old = _frames("ndp_ns_and_recap.pcap")[0]
    assert ours == rfc4861_expected_ns(old)
    diff = [k for k in range(len(ours)) if ours[k] != old[k]]
    assert set(diff) <= set(range(0, 6)) | set(range(38, 54)) | {56, 57}
    assert old[0:6] == b"\xff" * 6 and ours[0:6] == bytes.fromhex("3333ff020001")
    assert old[38:54] == i.next_hop.ip and ours[38:54] == ip6("ff02::1:ff02:1")
    assert old[56:58] == b"\x10\x82" and ours[56:58] == b"\x12\xaa"


def test_vector_compound_hairpin_held_without_na():
    """'NDP: Without receiving NA': the hairpinned packet waits for the next
    hop (held, not dropped: no counter moves), as in Snabb's link."""
    case = MANIFEST["NDP: Without receiving NA, next_hop6_mac not set"]
    *_, counters, arp, ndp = _replay(case)
    tunnelled = _frames(case["in_v6"])[0]
    assert ndp.to_wire(tunnelled) is None and ndp.held == 1
    assert C.to_dict(ndp.c)["drop-no-next-hop-ipv6-packets"] == 0
