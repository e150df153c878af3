"""One-line human descriptions of frames (for demo and monitor output)."""
from __future__ import annotations

import ipaddress

import dpkt


def _l4(ip) -> str:
    p = ip.data
    if isinstance(p, dpkt.tcp.TCP):
        return f"TCP {p.sport} -> {p.dport}"
    if isinstance(p, dpkt.udp.UDP):
        return f"UDP {p.sport} -> {p.dport}"
    if isinstance(p, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        return f"{type(p).__name__} type {p.type} code {p.code}"
    return f"protocol {getattr(ip, 'p', getattr(ip, 'nxt', '?'))}"


def describe(frame: bytes) -> str:
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if isinstance(ip, dpkt.ip.IP):
        return (f"IPv4 {ipaddress.IPv4Address(ip.src)} -> {ipaddress.IPv4Address(ip.dst)} "
                f"ttl {ip.ttl}, {_l4(ip)}")
    if isinstance(ip, dpkt.ip6.IP6):
        head = f"IPv6 {ipaddress.IPv6Address(ip.src)} -> {ipaddress.IPv6Address(ip.dst)}"
        if isinstance(ip.data, dpkt.ip.IP):
            inner = ip.data
            return (f"{head} carrying IPv4 {ipaddress.IPv4Address(inner.src)} -> "
                    f"{ipaddress.IPv4Address(inner.dst)} ttl {inner.ttl}, {_l4(inner)}")
        return f"{head}, {_l4(ip)}"
    if isinstance(ip, dpkt.arp.ARP):
        return f"ARP op {ip.op}"
    return f"ethertype 0x{eth.type:04x}"
