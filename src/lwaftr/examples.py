"""An embedded example: a small lwAFTR and traffic to show what it does.

Documentation addresses only (RFC 5737, RFC 3849).  Two subscribers share
192.0.2.1 with 4-bit PSIDs (ports 4096 apart); a third owns 192.0.2.2 whole.
Used by ``lwaftr demo``, the numba warm-up and tests.
"""
from __future__ import annotations

import ipaddress
import struct

import numpy as np

from lwaftr import wire as W
from lwaftr.config.model import (Bindings, Config, Instance, InterfaceAddresses, InterfacePolicy,
                                 NextHop)
from lwaftr.dataplane import icmp

BR = ipaddress.IPv6Address("2001:db8:ffff::1").packed
AFTR_V4 = ipaddress.IPv4Address("198.51.100.1").packed
INTERNET_HOST = ipaddress.IPv4Address("203.0.113.7").packed
MAC_V4 = bytes.fromhex("020000000001")
MAC_V6 = bytes.fromhex("020000000002")
NEXT_V4 = bytes.fromhex("020000000011")
NEXT_V6 = bytes.fromhex("020000000022")

#: (name, public IPv4, PSID, PSID length, B4 IPv6)
SUBSCRIBERS = (
    ("alice", "192.0.2.1", 1, 4, "2001:db8:1::a"),
    ("bob", "192.0.2.1", 2, 4, "2001:db8:1::b"),
    ("carol", "192.0.2.2", 0, 0, "2001:db8:1::c"),
)


def example_config() -> Config:
    n = len(SUBSCRIBERS)
    b = Bindings(
        ipv4=np.array([int(ipaddress.IPv4Address(s[1])) for s in SUBSCRIBERS], np.uint32),
        psid=np.array([s[2] for s in SUBSCRIBERS], np.uint16),
        psid_length=np.array([s[3] for s in SUBSCRIBERS], np.uint8),
        reserved_ports_bit_count=np.zeros(n, np.uint8),
        b4_ipv6=np.array([list(ipaddress.IPv6Address(s[4]).packed) for s in SUBSCRIBERS], np.uint8),
        br_index=np.zeros(n, np.uint16),
        br_addresses=[BR],
        line=np.zeros(n, np.int32),
    )
    inst = Instance(
        device="example", external_device=None, queue_id=0,
        external=InterfaceAddresses(AFTR_V4, MAC_V4, NextHop(mac=NEXT_V4)),
        internal=InterfaceAddresses(BR, MAC_V6, NextHop(mac=NEXT_V6)),
    )
    return Config(external=InterfacePolicy(mtu=1460), internal=InterfacePolicy(mtu=1500),
                  bindings=b, instances=[inst], name="example", source="<embedded example>")


def udp_v4(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes = b"hello", ttl: int = 64,
           eth_dst: bytes = MAC_V4, eth_src: bytes = NEXT_V4) -> bytes:
    """An Ethernet + IPv4 + UDP frame with valid checksums."""
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, W.PROTO_UDP, udp_len)
    udp = bytearray(struct.pack("!HHHH", sport, dport, udp_len, 0) + payload)
    struct.pack_into("!H", udp, 6, icmp.checksum(pseudo + udp) or 0xFFFF)
    ip = icmp.ipv4_header(src, dst, W.PROTO_UDP, W.IPV4_HLEN + udp_len, ttl=ttl)
    return icmp.eth_header(W.ETHERTYPE_IPV4, eth_dst, eth_src) + ip + bytes(udp)


def tunnelled(b4: bytes, inner_frame: bytes, br: bytes = BR) -> bytes:
    """``inner_frame``'s IPv4 packet inside IPv6 from ``b4`` to the BR."""
    inner = inner_frame[W.ETH_HLEN:]
    return (icmp.eth_header(W.ETHERTYPE_IPV6, MAC_V6, NEXT_V6)
            + icmp.ipv6_header(b4, br, W.PROTO_IPV4, len(inner), hop_limit=64) + inner)


def _v4(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def _v6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def example_traffic() -> list[tuple[str, str, bytes]]:
    """(description, interface 'v4'|'v6', frame) for the demo."""
    shared = _v4("192.0.2.1")
    alice, bob, carol = (_v6(s[4]) for s in SUBSCRIBERS)
    return [
        ("Internet -> alice (192.0.2.1 port 4100, her port set)", "v4",
         udp_v4(INTERNET_HOST, shared, 53, 4100)),
        ("Internet -> bob (192.0.2.1 port 8200, his port set)", "v4",
         udp_v4(INTERNET_HOST, shared, 53, 8200)),
        ("Internet -> 192.0.2.1 port 12300 (no subscriber: ICMP error back)", "v4",
         udp_v4(INTERNET_HOST, shared, 53, 12300)),
        ("alice -> Internet (source port 4101)", "v6",
         tunnelled(alice, udp_v4(shared, INTERNET_HOST, 4101, 53))),
        ("bob -> Internet from alice's port (spoofed: dropped, ICMPv6 error)", "v6",
         tunnelled(bob, udp_v4(shared, INTERNET_HOST, 4102, 53))),
        ("carol -> alice (hairpinned through the lwAFTR)", "v6",
         tunnelled(carol, udp_v4(_v4("192.0.2.2"), shared, 40000, 4103))),
        ("Internet -> carol with TTL 1 (time exceeded)", "v4",
         udp_v4(INTERNET_HOST, _v4("192.0.2.2"), 53, 5000, ttl=1)),
    ]
