"""Test helpers: random binding tables and traffic, built with scapy."""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import numpy as np
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, IPOption_NOP
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lwaftr.config.model import Bindings, Config
from lwaftr.examples import example_config

BR0 = "2001:db8:ffff::1"
BR1 = "2001:db8:ffff::2"
AFTR_MAC_V4 = "02:00:00:00:00:01"
AFTR_MAC_V6 = "02:00:00:00:00:02"


def v4int(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def make_config(rows: list[tuple[str, int, int, str, int]], **internal) -> Config:
    """rows: (ipv4, psid, psid_length, b4, br_index); BRs are BR0 and BR1."""
    n = len(rows)
    base = example_config()
    b = Bindings(
        ipv4=np.array([v4int(r[0]) for r in rows], np.uint32),
        psid=np.array([r[1] for r in rows], np.uint16),
        psid_length=np.array([r[2] for r in rows], np.uint8),
        reserved_ports_bit_count=np.zeros(n, np.uint8),
        b4_ipv6=np.array([list(ipaddress.IPv6Address(r[3]).packed) for r in rows], np.uint8).reshape(n, 16),
        br_index=np.array([r[4] for r in rows], np.uint16),
        br_addresses=[ipaddress.IPv6Address(BR0).packed, ipaddress.IPv6Address(BR1).packed],
        line=np.zeros(n, np.int32),
    )
    return replace(base, bindings=b, internal=replace(base.internal, **internal))


@st.composite
def tables(draw):
    """A random binding table over 192.0.2.1-4 with per-address PSID lengths."""
    rows = []
    for i in range(draw(st.integers(1, 4))):
        k = draw(st.sampled_from([0, 2, 4, 6]))
        for p in sorted(draw(st.sets(st.integers(0, (1 << k) - 1), min_size=1, max_size=4))):
            rows.append((f"192.0.2.{i + 1}", p, k, f"2001:db8:1::{len(rows) + 1:x}", draw(st.integers(0, 1))))
    return rows


def port_of(psid: int, k: int, j: int) -> int:
    """A port in PSID ``psid`` of a k-bit port map (no reserved ports)."""
    m = 16 - k
    return (psid << m) | (j & ((1 << m) - 1)) if k else j


#: IPv4 options a frame may carry (mostly none): NOPs, record route (not copied into
#: later fragments), security (copied).
_OPTIONS = [[], [], [], [], [], [IPOption_NOP()] * 4, [IPOption(b"\x07\x07\x04" + bytes(4))],
            [IPOption(b"\x82\x0b" + bytes(9))]]


@st.composite
def inet_frame(draw, rows):
    """A frame from the Internet: to a bound or random (address, port)."""
    if draw(st.booleans()):
        ip, psid, k, _, _ = draw(st.sampled_from(rows))
        dport = port_of(psid, k, draw(st.integers(0, 65535)))
    else:
        ip = f"192.0.2.{draw(st.integers(1, 5))}"
        dport = draw(st.integers(0, 65535))
    ttl = draw(st.sampled_from([0, 1, 2, 64]))
    size = draw(st.sampled_from([0, 10, 1300, 1452, 1480]))
    flags = draw(st.sampled_from(["", "DF"]))
    l4 = draw(st.sampled_from(["tcp", "udp", "icmp-echo-reply", "icmp-echo-request", "icmp-bad-checksum",
                               "icmp-error", "icmp-error"]))
    pay = bytes(size)
    if l4 == "icmp-error":
        # An error about a packet the subscriber sent (its source port finds the softwire),
        # quoting all of it, its first 8 bytes, or too little; the quote's IHL may lie.
        quoted = bytes(IP(src=ip, dst="203.0.113.9", ihl=draw(st.sampled_from([None, None, 6, 15])))
                       / UDP(sport=dport, dport=53) / bytes(draw(st.sampled_from([0, 40]))))
        quoted = quoted[:draw(st.sampled_from([len(quoted), 28, 21]))]
        kind = draw(st.sampled_from([(3, 3), (3, 4), (11, 0), (12, 0), (5, 1)]))
        l4p = ICMP(type=kind[0], code=kind[1]) / quoted
    elif l4 == "tcp":
        l4p = TCP(sport=80, dport=dport) / pay
    elif l4 == "udp":
        l4p = UDP(sport=53, dport=dport) / pay
    elif l4 == "icmp-bad-checksum":
        l4p = ICMP(type=0, id=dport, chksum=0x1234) / pay
    else:
        l4p = ICMP(type=0 if l4 == "icmp-echo-reply" else 8, id=dport) / pay
    p = Ether(dst=AFTR_MAC_V4, src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst=ip, ttl=ttl, flags=flags,
                                                             tos=draw(st.integers(0, 255)),
                                                             options=draw(st.sampled_from(_OPTIONS))) / l4p
    return bytes(p)


@st.composite
def b4_frame(draw, rows, icmp: bool = True):
    """A tunnelled frame from a B4: matching its softwire, or spoofing some part."""
    ip, psid, k, b4, br = draw(st.sampled_from(rows))
    sport = port_of(psid, k, draw(st.integers(0, 65535)))
    spoof = draw(st.sampled_from(["none", "none", "b4", "br", "port"]))
    if spoof == "b4":
        b4 = "2001:db8:2::99"
    elif spoof == "br":
        br = 1 - br
    elif spoof == "port":
        sport = draw(st.integers(0, 65535))
    dst = draw(st.sampled_from(["203.0.113.9", "192.0.2.1", "192.0.2.2"]))
    dport = draw(st.integers(0, 65535))
    size = draw(st.sampled_from([0, 10, 1300, 1440, 1452]))
    l4 = draw(st.sampled_from(["udp", "udp", "icmp-echo-request", "icmp-echo-reply", "icmp-error"]
                              if icmp else ["udp"]))
    if l4 == "udp":
        l4p = UDP(sport=sport, dport=dport) / bytes(size)
    elif l4 == "icmp-error":
        # An error from a host behind the B4, quoting a packet whose first port is the
        # subscriber's (or not): whole, cut short (down to nothing), its IHL lying.
        quoted = bytes(IP(src=ip, dst=dst, ihl=draw(st.sampled_from([None, None, 7, 15])))
                       / UDP(sport=sport, dport=dport) / bytes(20))
        l4p = ICMP(type=draw(st.sampled_from([3, 11, 12])), code=3) \
            / quoted[:draw(st.sampled_from([len(quoted), 28, 22, 21, 1, 0]))]
    else:   # RFC 7596 8.1: a request is bound by its identifier, a reply by port 0
        l4p = (ICMP(type=8, id=sport) if l4 == "icmp-echo-request" else ICMP(type=0, id=dport)) / bytes(size)
    inner = IP(src=ip, dst=dst, ttl=draw(st.sampled_from([1, 2, 64])), options=draw(st.sampled_from(_OPTIONS))) / l4p
    eth = Ether(dst=AFTR_MAC_V6, src="02:00:00:00:00:22")
    if icmp and draw(st.integers(0, 5)) == 0:
        # An ICMPv6 error about a packet we tunnelled to this B4 (RFC 2473 8.3), quoting
        # it whole or cut short; of each type and code the core tells apart.
        ours = bytes(IPv6(src=[BR0, BR1][br], dst=b4) / IP(src=dst, dst=ip) / UDP(sport=53, dport=sport)
                     / bytes(size))
        t, code = draw(st.sampled_from([(1, 0), (1, 3), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (0, 0), (100, 0)]))
        err = bytes([t, code, 0, 0]) + draw(st.sampled_from([1280, 1400, 30])).to_bytes(4, "big") \
            + ours[:draw(st.sampled_from([len(ours), 68, 59, 40]))]
        return bytes(eth / IPv6(src=draw(st.sampled_from(["2001:db8:9::1", b4])), dst=[BR0, BR1][br], nh=58,
                                hlim=64) / Raw(err))
    outer = IPv6(src=b4, dst=[BR0, BR1][br], hlim=64)
    opt = draw(st.sampled_from([None, None, None, 4, 4, 5]))
    if opt is not None:
        # A Destination Options header: the Tunnel Encapsulation Limit (Linux ip6tnl), or another option.
        outer = outer / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=opt, optdata=b"\x04")])
    return bytes(eth / outer / inner)
