"""Kernel control-plane mode, sans I/O: what goes to the kernel, what the data
plane keeps, and next hops set from outside (the kernel's neighbour table)."""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6MLDMultAddrRec, ICMPv6MLReport, ICMPv6MLReport2,
                                 ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop, RouterAlert)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from lwaftr import counters as C
from lwaftr.config.model import ControlPlane
from lwaftr.dataplane.engine import Engine, Frames
from reference.engine import ReferenceEngine
from lwaftr.examples import (AFTR_V4, BR, MAC_V4, MAC_V6, NEXT_V4, NEXT_V6, example_config,
                             example_traffic, tunnelled, udp_v4)

E4 = dict(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
E6 = dict(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
OWN4, OWN6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(BR))
HOST = "203.0.113.7"


def engine(*, icmp_errors: bool = True, proxy: bool = False, static: bool = True, fast: bool = True,
           vlan: int | None = None) -> Engine:
    cfg = example_config()
    cfg = replace(cfg, external=replace(cfg.external, generate_icmp_errors=icmp_errors),
                  internal=replace(cfg.internal, generate_icmp_errors=icmp_errors, vlan_tag=vlan),
                  control_plane=ControlPlane(answer_arp_for_softwires=proxy))
    e = Engine(cfg, kernel=True) if fast else ReferenceEngine(cfg, kernel=True)
    e.set_next_hops(NEXT_V4 if static else None, NEXT_V6 if static else None)
    return e


def run(e: Engine, v4=(), v6=(), *, strict: bool = True) -> Frames:
    """One batch, strict (``check``'s way) or not (the live way), as frames."""
    if strict:
        return e.process_frames([bytes(f) for f in v4], [bytes(f) for f in v6], 0.0)
    pool = e.pool
    out = e.process(pool.store([bytes(f) for f in v4]), pool.store([bytes(f) for f in v6]), 0.0)
    frames = Frames(*(pool.frames(s) for s in out.slots()), out.mirrored)
    for s in out.slots():
        pool.free(s)
    return frames


KERNEL_V4 = {
    "ARP request for our address": Ether(dst="ff:ff:ff:ff:ff:ff", src=E4["src"]) / ARP(pdst=OWN4, psrc=HOST),
    "ping to our address": Ether(**E4) / IP(src=HOST, dst=OWN4) / ICMP(),
    "BGP to our address": Ether(**E4) / IP(src=HOST, dst=OWN4) / TCP(sport=40000, dport=179, flags="S"),
    "OSPF hello (224.0.0.5)": Ether(dst="01:00:5e:00:00:05", src=E4["src"]) / IP(src=HOST, dst="224.0.0.5", proto=89),
    "broadcast": Ether(dst="ff:ff:ff:ff:ff:ff", src=E4["src"]) / IP(src=HOST, dst="255.255.255.255") / UDP(),
    "LLDP": Ether(dst="01:80:c2:00:00:0e", src=E4["src"], type=0x88CC) / (b"\x02\x07\x04" + b"\x00" * 40),
    "IPv6 on the IPv4 interface": Ether(dst="33:33:00:00:00:01", src=E4["src"]) / IPv6(src="fe80::1", dst="ff02::1"),
}
KERNEL_V6 = {
    "ping to our address": Ether(**E6) / IPv6(src="2001:db8:2::1", dst=OWN6) / ICMPv6EchoRequest(),
    "NS for our address": Ether(dst="33:33:ff:00:00:01", src=E6["src"])
    / IPv6(src="fe80::22", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=OWN6),
    "link-local unicast": Ether(**E6) / IPv6(src="fe80::22", dst="fe80::2") / UDP(dport=3784),
    "ARP on the IPv6 interface": Ether(dst="ff:ff:ff:ff:ff:ff", src=E6["src"]) / ARP(pdst="192.0.2.99"),
    # MLD: multicast control traffic behind a Hop-by-Hop header (Router Alert), e.g.
    # a neighbour's reports of 1 and 3 records (110 and 130 bytes), and MLDv1.
    "MLDv2 report, HBH": Ether(dst="33:33:00:00:00:16", src=E6["src"])
    / IPv6(src="fe80::22", dst="ff02::16", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
    / ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(dst="ff02::1:ff00:22")]),
    "MLDv2 report of 3 records, HBH": Ether(dst="33:33:00:00:00:16", src=E6["src"])
    / IPv6(src="fe80::22", dst="ff02::16", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
    / ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(dst=f"ff02::1:ff00:{i}") for i in (1, 2, 0x22)]),
    "MLDv1 report, HBH, unspecified source": Ether(dst="33:33:ff:00:00:22", src=E6["src"])
    / IPv6(src="::", dst="ff02::1:ff00:22", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
    / ICMPv6MLReport(mladdr="ff02::1:ff00:22"),
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("icmp_errors", [True, False])
@pytest.mark.parametrize("strict", [True, False])
def test_control_traffic_goes_to_the_kernel_unchanged(fast, icmp_errors, strict):
    e = engine(icmp_errors=icmp_errors, fast=fast)
    out = run(e, KERNEL_V4.values(), KERNEL_V6.values(), strict=strict)
    assert (out.v4, out.v6) == ([], [])                 # nothing answered by the data plane
    assert out.kernel4 == [bytes(f) for f in KERNEL_V4.values()]
    assert out.kernel6 == [bytes(f) for f in KERNEL_V6.values()]
    assert e.counters[C.TO_KERNEL_IPV4_INTERFACE_PACKETS] == len(KERNEL_V4)
    assert e.counters[C.TO_KERNEL_IPV6_INTERFACE_PACKETS] == len(KERNEL_V6)
    assert run(e, strict=strict) == Frames([], [], [], [], [])     # returned once
    # Nothing was counted as lwAFTR traffic or answered by built-in responders.
    for name in ("in-ipv4-packets", "in-ipv6-packets", "out-icmpv4-echo-packets", "out-arp-reply-packets",
                 "out-ndp-na-packets", "drop-all-ipv4-iface-packets", "drop-all-ipv6-iface-packets",
                 "drop-malformed-ipv6-packets", "drop-unknown-protocol-ipv6-packets"):
        assert e.counters[C.INDEX[name]] == 0, name


@pytest.mark.parametrize("strict", [True, False])
def test_lwaftr_work_is_unchanged(strict):
    """Encapsulation, decapsulation, ICMP errors and hairpinning: the same
    bytes as with the built-in control plane."""
    traffic = example_traffic()
    builtin, kernel = Engine(example_config()), engine()
    for _, side, frame in traffic:
        v4, v6 = ([frame], []) if side == "v4" else ([], [frame])
        assert run(kernel, v4, v6, strict=strict) == run(builtin, v4, v6, strict=strict)   # none for the TAPs


def test_unknown_next_hop_drops_and_counts_then_forwards_once_known():
    e = engine(static=False)
    to_alice = udp_v4(bytes(ipaddress.IPv4Address(HOST).packed), ipaddress.IPv4Address("192.0.2.1").packed, 53, 4100)
    from_alice = tunnelled(ipaddress.IPv6Address("2001:db8:1::a").packed,
                           udp_v4(ipaddress.IPv4Address("192.0.2.1").packed, ipaddress.IPv4Address(HOST).packed, 4101, 53))
    for strict in (True, False):
        assert run(e, [to_alice], [from_alice], strict=strict) == Frames([], [], [], [], [])
    assert e.counters[C.DROP_NO_NEXT_HOP_IPV6_PACKETS] == 2
    assert e.counters[C.DROP_NO_NEXT_HOP_IPV4_PACKETS] == 2
    learned4, learned6 = bytes.fromhex("0200000000aa"), bytes.fromhex("0200000000bb")
    e.set_next_hops(learned4, learned6)
    for strict in (True, False):
        o4, o6, *_ = run(e, [to_alice], [from_alice], strict=strict)
        assert [f[:12] for f in o6] == [learned6 + MAC_V6]
        assert [f[:12] for f in o4] == [learned4 + MAC_V4]
    e.set_next_hops(None, learned6)             # the kernel lost one: drop again, never reuse the old MAC
    assert run(e, [], [from_alice], strict=False) == Frames([], [], [], [], [])
    assert e.counters[C.DROP_NO_NEXT_HOP_IPV4_PACKETS] == 3


def test_arp_for_softwire_addresses_answered_only_when_configured():
    ask = Ether(dst="ff:ff:ff:ff:ff:ff", src=E4["src"]) / ARP(pdst="192.0.2.1", psrc=HOST, hwsrc=E4["src"])
    e = engine(proxy=False)
    assert run(e, [ask]) == Frames([], [], [bytes(ask)], [], [])
    e = engine(proxy=True)
    out = run(e, [ask])
    assert out.kernel4 == []
    reply = Ether(out.v4[0])
    assert reply[ARP].op == 2 and reply[ARP].psrc == "192.0.2.1" and reply[ARP].hwsrc == "02:00:00:00:00:01"
    assert reply[ARP].pdst == HOST and reply.dst == E4["src"]
    # Not a softwire address, and our own: still the kernel's.
    others = [Ether(dst="ff:ff:ff:ff:ff:ff", src=E4["src"]) / ARP(pdst=a, psrc=HOST) for a in ("192.0.2.77", OWN4)]
    assert run(e, others) == Frames([], [], [bytes(f) for f in others], [], [])


def test_kernel_frames_leave_tagged_like_their_side():
    e = engine(vlan=42)
    ns = bytes(Ether(dst="33:33:ff:00:00:22", src="02:00:00:00:00:02") / IPv6(src=OWN6, dst="ff02::1:ff00:22")
               / ICMPv6ND_NS(tgt="2001:db8:2::22"))
    slots = e.from_kernel([ns], 6)
    out = e.pool.frames(slots)
    assert Ether(out[0])[Dot1Q].vlan == 42 and bytes(Ether(out[0])[IPv6]) == ns[14:]
    assert e.counters[C.FROM_KERNEL_IPV6_INTERFACE_PACKETS] == 1
    # And what comes in tagged goes to the kernel untagged.
    tagged = Ether(**E6) / Dot1Q(vlan=42) / IPv6(src="2001:db8:2::1", dst=OWN6) / ICMPv6EchoRequest()
    assert run(e, [], [tagged]).kernel6 == [bytes(KERNEL_V6["ping to our address"])]


def test_builtin_mode_still_answers_itself():
    e = Engine(example_config())
    o4, _, *_ = e.process_frames([bytes(KERNEL_V4["ping to our address"])], [], 0.0)
    assert len(o4) == 1 and Ether(o4[0])[ICMP].type == 0
    e.set_next_hops(NEXT_V4, NEXT_V6)      # (built-in: MACs an engine it replaces learned)
    assert e.next_hop_macs() == (NEXT_V4, NEXT_V6)
    assert np.all(e.counters[C.TO_KERNEL_IPV4_INTERFACE_PACKETS:C.DROP_TO_KERNEL_PACKETS + 1] == 0)



def test_icmpv6_errors_and_softwire_traffic_to_a_br_address_stay_in_the_data_plane():
    """ICMPv6 errors about tunnelled packets (RFC 2473) and IPv4-in-IPv6 to the BR
    are lwAFTR work even when the BR address is also the router's own address."""
    from scapy.layers.inet6 import ICMPv6PacketTooBig
    inner = IPv6(src=OWN6, dst="2001:db8:1::a") / IP(src=HOST, dst="192.0.2.1") / UDP(sport=53, dport=4100)
    ptb = Ether(**E6) / IPv6(src="2001:db8:2::1", dst=OWN6) / ICMPv6PacketTooBig(mtu=1280) / inner
    e = engine()
    o4, _, k4, k6, _ = run(e, [], [ptb])
    assert (k4, k6) == ([], [])
    # The core turned it into "fragmentation needed" for the Internet host (RFC 7596 8).
    assert len(o4) == 1 and (Ether(o4[0])[ICMP].type, Ether(o4[0])[ICMP].code) == (3, 4)
    assert Ether(o4[0])[IP].dst == HOST
    ping_br = Ether(**E6) / IPv6(src="2001:db8:2::1", dst=OWN6) / ICMPv6EchoRequest()
    assert run(e, [], [ping_br]).kernel6 == [bytes(ping_br)]
