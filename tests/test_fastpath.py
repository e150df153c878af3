"""The compiled data plane against the Python reference, and data-plane invariants.

The reference (``tests/reference/``, :class:`reference.engine.ReferenceEngine`):
on random binding tables and random traffic, the engine and its kernels must
give the same bytes and counters as the reference.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lwaftr import counters as C
from lwaftr.bindingtable.table import BindingTable
from lwaftr.dataplane import control
from lwaftr.dataplane import kernels as K
from lwaftr.dataplane.engine import Engine, Frames, Output
from lwaftr.dataplane.fragids import SNABB_CHECK_ID_SEEDS as IDS  # both engines fragment alike
from lwaftr.examples import AFTR_V4, BR, NEXT_V4
from reference.engine import ReferenceEngine

from packets import BR0, BR1, b4_frame, inet_frame, make_config, port_of, tables

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# pcap filters on each side and direction (None: no filter), run in the kernels and in the slow path
FILTERS_IN4 = [None, None, "ip", "udp", "not udp port 53", "ip[8] > 1", "len > 600"]
FILTERS_IN6 = [None, None, "ip6", "ip6[6] = 4 and ip6[49] = 17", "len < 1000", "not ip6"]
FILTERS_OUT4 = [None, None, "ip", "icmp", "not icmp", "udp dst portrange 30000-65535"]
FILTERS_OUT6 = [None, None, "ip6", "icmp6", "not icmp6", "len > 600"]

AFTR4 = str(ipaddress.IPv4Address(AFTR_V4))
AFTR6 = str(ipaddress.IPv6Address(BR))           # the example's internal address is its first BR
NEXT_HOP4 = "203.0.113.254"                      # the IPv4 next hop, when it is resolved by ARP
NEXT_HOP6 = "2001:db8:ffff::fe"                  # the IPv6 next hop, when it is resolved by NDP
HOST_MAC = "02:00:00:00:00:33"


@st.composite
def arp_frame(draw, rows) -> bytes:
    """ARP on the IPv4 side: requests for the router, a softwire or someone else, replies
    (from the next hop, with its MAC or a new one, or from others), gratuitous ARP,
    other operations, not Ethernet/IPv4, padded, and malformed (cut, a byte changed)."""
    from scapy.layers.l2 import ARP
    op = draw(st.sampled_from([1, 1, 1, 2, 2, 3]))
    pdst = draw(st.sampled_from([AFTR4, AFTR4, rows[0][0], "198.51.100.99", NEXT_HOP4]))
    psrc = draw(st.sampled_from(["203.0.113.9", NEXT_HOP4, pdst]))          # pdst: gratuitous
    hwsrc = draw(st.sampled_from([NEXT_V4.hex(":"), HOST_MAC]))
    arp = ARP(op=op, psrc=psrc, pdst=pdst, hwsrc=hwsrc, hwdst=draw(st.sampled_from(["00:00:00:00:00:00", hwsrc])))
    if draw(st.integers(0, 9)) == 0:
        arp.hwlen, arp.hwtype = draw(st.sampled_from([(8, 1), (6, 6)]))
    f = bytes(Ether(dst=draw(st.sampled_from(["ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01"])), src=hwsrc) / arp)
    f += bytes(draw(st.sampled_from([0, 0, 18])))                            # padded to 60 bytes
    return _mangle(draw, f)


@st.composite
def ndp_frame(draw) -> bytes:
    """NDP on the IPv6 side: Neighbour Solicitations for the router or others, from a
    neighbour or "::" (DAD), with or without options (some malformed), NAs, RS/RA,
    hop limits other than 255, and malformed frames (cut, a byte changed)."""
    from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS, ICMPv6NDOptDstLLAddr,
                                    ICMPv6NDOptSrcLLAddr)
    from scapy.packet import Raw
    kind = draw(st.sampled_from(["ns", "ns", "ns", "na", "na", "rs"]))
    src = draw(st.sampled_from(["fe80::22", "2001:db8:2::9", "::"]))
    tgt = draw(st.sampled_from([AFTR6, AFTR6, "2001:db8:ffff::2", "ff02::1", NEXT_HOP6]))
    dst = draw(st.sampled_from([AFTR6, "ff02::1:ff00:1", "ff02::1"]))
    hlim = draw(st.sampled_from([255, 255, 255, 64]))
    if kind == "ns":
        msg = ICMPv6ND_NS(tgt=tgt)
    elif kind == "na":
        msg = ICMPv6ND_NA(tgt=tgt, R=draw(st.booleans()), S=draw(st.booleans()))
    else:
        msg = ICMPv6ND_RS()
    opt = draw(st.sampled_from(["none", "src", "dst", "dst2", "dst-long", "zero", "long"]))
    if opt == "src":
        msg = msg / ICMPv6NDOptSrcLLAddr(lladdr=HOST_MAC)
    elif opt == "dst":
        msg = msg / ICMPv6NDOptDstLLAddr(lladdr=HOST_MAC)
    elif opt == "dst2":                         # two target link-layer addresses: the first teaches
        msg = msg / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:44") / ICMPv6NDOptDstLLAddr(lladdr=HOST_MAC)
    elif opt == "dst-long":                     # a target link-layer address option 16 bytes long
        msg = msg / Raw(b"\x02\x02" + bytes.fromhex("020000000055") + bytes(8))
    elif opt == "zero":
        msg = msg / Raw(b"\x01\x00" + bytes(6))
    elif opt == "long":
        msg = msg / Raw(b"\x01\x02" + bytes(6))
    f = bytes(Ether(dst="33:33:ff:00:00:01", src=HOST_MAC) / IPv6(src=src, dst=dst, hlim=hlim) / msg)
    return _mangle(draw, f)


@st.composite
def kernel_frame(draw, rows) -> tuple[int, bytes]:
    """(side, frame) of what kernel mode punts: to the router, multicast, link-local, other
    ethertypes, and what it must not (to a BR, to a subscriber)."""
    from scapy.layers.inet import TCP
    eth = Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
    pick = draw(st.integers(0, 7))
    if pick == 0:
        return 4, bytes(eth / IP(src="203.0.113.9", dst=AFTR4) / TCP(dport=179))
    if pick == 1:
        return 4, bytes(eth / IP(src="203.0.113.9", dst=draw(st.sampled_from(["224.0.0.5", "255.255.255.255"])))
                        / UDP(dport=520))
    if pick == 2:
        return draw(st.sampled_from([4, 6])), bytes(Ether(dst="01:80:c2:00:00:0e", src=HOST_MAC, type=0x88CC)
                                                    / bytes(46))
    if pick == 3:
        return 6, bytes(eth / IPv6(src="fe80::22", dst=draw(st.sampled_from(["fe80::2", "ff02::5", AFTR6])))
                        / UDP(dport=3784))
    if pick == 4:
        return 6, bytes(eth / IPv6(src="2001:db8:2::9", dst=draw(st.sampled_from([AFTR6, "2001:db8:ffff::2"])))
                        / ICMPv6EchoRequest())
    if pick == 5:
        return 6, bytes(eth / IPv6(src="2001:db8:2::9", dst=AFTR6) / UDP(dport=179))
    if pick == 6:
        return 4, bytes(eth / IPv6(src="fe80::1", dst="ff02::1"))
    return 6, bytes(eth / IPv6(src="fe80::22", dst=draw(st.sampled_from(["ff02::2", "2001:db8:2::1"])))
                    / IP(src=rows[0][0], dst="203.0.113.9") / UDP(sport=1, dport=53))


def _with_control_plane(draw, cfg, v4: list[bytes], v6: list[bytes], rows, kernel: bool):
    """``cfg`` with the IPv4 next hop also resolvable by ARP or only by ARP (unresolved
    at first), the IPv6 next hop only by NDP (sometimes), answering ARP for softwires
    (sometimes, kernel mode), and ARP, NDP (and kernel) frames mixed into the traffic
    at random places: replies and advertisements from the next hops among them."""
    from lwaftr.config.model import ControlPlane, NextHop
    inst = cfg.instance
    mac4 = draw(st.sampled_from(["static", "static", "learned", None]))
    if mac4 != "static":
        hop = NextHop(mac=inst.external.next_hop.mac if mac4 else None, ip=ipaddress.IPv4Address(NEXT_HOP4).packed)
        inst = replace(inst, external=replace(inst.external, next_hop=hop))
    if draw(st.booleans()):
        inst = replace(inst, internal=replace(inst.internal, next_hop=NextHop(
            ip=ipaddress.IPv6Address(NEXT_HOP6).packed)))
    cfg = replace(cfg, instances=[inst])
    if kernel:
        cfg = replace(cfg, control_plane=ControlPlane(answer_arp_for_softwires=draw(st.booleans())))
    extra4 = draw(st.lists(arp_frame(rows), max_size=4))
    extra6 = draw(st.lists(ndp_frame(), max_size=4))
    for side, f in (draw(st.lists(kernel_frame(rows), max_size=4)) if kernel else []):
        (extra4 if side == 4 else extra6).append(f)
    for extra, frames in ((extra4, v4), (extra6, v6)):
        for f in extra:
            frames.insert(draw(st.integers(0, len(frames))), f)
    return cfg


@st.composite
def scenario(draw, filters: bool = True, b4_icmp: bool = True):
    rows = draw(tables())
    pick = (lambda choices: draw(st.sampled_from(choices))) if filters else (lambda choices: None)
    cfg = make_config(rows, hairpinning=draw(st.booleans()), generate_icmp_errors=draw(st.booleans()),
                      ingress_filter=pick(FILTERS_IN6), egress_filter=pick(FILTERS_OUT6))
    cfg = replace(cfg, external=replace(cfg.external, generate_icmp_errors=draw(st.booleans()),
                                        ingress_filter=pick(FILTERS_IN4), egress_filter=pick(FILTERS_OUT4)))
    v4 = draw(st.lists(inet_frame(rows), max_size=12))
    v6 = draw(st.lists(b4_frame(rows, b4_icmp), max_size=12))
    return rows, cfg, v4, v6


@st.composite
def control_scenario(draw):
    """:func:`scenario`'s traffic with ARP and NDP (and, in kernel mode, the kernel's
    frames) mixed in, in either control-plane mode."""
    rows, cfg, v4, v6 = draw(scenario())
    kernel = draw(st.booleans())
    monitor = draw(st.sampled_from([None, None, int(ipaddress.IPv4Address(rows[0][0]))]))
    return kernel, monitor, _with_control_plane(draw, cfg, v4, v6, rows, kernel), v4, v6


def _engines(cfg, kernel: bool = False, monitor: int | None = None) -> tuple[Engine, Engine]:
    fast = Engine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    for e in (fast, slow):
        e.set_monitor(monitor)
        if kernel:
            e.set_next_hops(bytes.fromhex("020000000011"), bytes.fromhex("020000000022"))
    return fast, slow


@SETTINGS
@given(scenario())
def test_fast_path_gives_the_slow_paths_bytes_and_counters(sc):
    _, cfg, v4, v6 = sc
    fast, slow = Engine(cfg, fragment_id_seeds=IDS), ReferenceEngine(cfg, fragment_id_seeds=IDS)
    assert fast.process_frames(v4, v6, 10.0) == slow.process_frames(v4, v6, 10.0)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)


@SETTINGS
@given(control_scenario())
def test_the_kernels_equal_the_slow_path_with_arp_ndp_and_punted_traffic(sc):
    """ARP and NDP (for us, for others, replies, gratuitous, malformed) and, in kernel
    mode, the kernel's frames, amid the data traffic, with and without the monitor, next
    hops known or learned from the batch (or not): in ``check``'s strict order (frame by
    frame, the TAPs' and the mirrored frames too) and in the live order (as sets), the
    same counters and next hops, every slot back or held for a next hop."""
    kernel, monitor, cfg, v4, v6 = sc
    fast, slow = _engines(cfg, kernel, monitor)
    assert fast.process_frames(v4, v6, 10.0) == slow.process_frames(v4, v6, 10.0)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.next_hop_macs() == (slow.slow.arp.next_mac, slow.slow.ndp.next_mac)
    assert fast.pool.n_free[0] + sum(fast._n_held) == fast.pool.n_slots, "slots leaked"
    fast, slow = _engines(cfg, kernel, monitor)
    got = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), 10.0))
    want = slow.process_frames(v4, v6, 10.0)
    assert [sorted(f) for f in got] == [sorted(f) for f in want]
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.pool.n_free[0] + fast.defrag4.held + fast.defrag6.held + sum(fast._n_held) == fast.pool.n_slots, \
        "slots leaked"


@SETTINGS
@given(scenario())
def test_unordered_batches_give_the_same_frames_and_counters(sc):
    """The live path (fast frames first, slow after) loses and adds nothing."""
    _, cfg, v4, v6 = sc
    fast, slow = Engine(cfg, fragment_id_seeds=IDS), ReferenceEngine(cfg, fragment_id_seeds=IDS)
    o4, o6, *_ = fast.process(fast.pool.store(v4), fast.pool.store(v6), 10.0)
    f4, f6 = fast.pool.frames(o4), fast.pool.frames(o6)
    fast.pool.free(o4)
    fast.pool.free(o6)
    r4, r6, *_ = slow.process_frames(v4, v6, 10.0)
    assert sorted(f4) == sorted(r4) and sorted(f6) == sorted(r6)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"


def test_frames_beyond_a_batch_go_in_batches_and_frames_beyond_a_slot_are_counted():
    """``process_frames`` with more frames than a batch takes (``max_batch`` a side)
    runs them in batches, in order: the reference's frames and counters for traffic
    whose order no batch changes.  A frame longer than a pool slot cannot be received
    into one: dropped and counted ``drop-rx-too-big-packets``, as a port drops it."""
    cfg = make_config(ROWS)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    p1 = port_of(1, 4, 7)
    v4 = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(i)) for i in range(70)]
    v6 = [bytes(eth / IPv6(src="2001:db8:1::1", dst=AFTR6) / IP(src="192.0.2.1", dst="203.0.113.9")
                / UDP(sport=p1, dport=53) / bytes(i)) for i in range(50)]
    eng, ref = Engine(cfg, max_batch=16), ReferenceEngine(cfg)
    got = eng.process_frames(v4, v6, 1.0)
    assert got == ref.process_frames(v4, v6, 1.0) and len(got.v6) == 70 and len(got.v4) == 50
    assert C.to_dict(eng.counters) == C.to_dict(ref.counters)
    jumbo = bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(3000))
    assert len(jumbo) > eng.pool.max_frame
    got = eng.process_frames([jumbo] + v4[:2], [], 2.0)
    assert len(got.v6) == 2 and eng.counters[C.DROP_RX_TOO_BIG_PACKETS] == 1
    assert eng.pool.n_free[0] == eng.pool.n_slots, "slots leaked"


@pytest.mark.parametrize("filters", [False, True])
def test_common_traffic_never_reaches_the_slow_path(filters):
    """Also with pcap filters on every side and direction: they run in the kernels."""
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows)
    if filters:
        cfg = replace(cfg, external=replace(cfg.external, ingress_filter="ip", egress_filter="ip"),
                      internal=replace(cfg.internal, ingress_filter="ip6", egress_filter="ip6"))
    eng = Engine(cfg)
    v4 = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=1, dport=4097 + i)) for i in range(50)]
    v6 = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2") /
                IP(src="192.0.2.2", dst="203.0.113.9") / UDP(sport=1000 + i, dport=53)) for i in range(50)]
    # Pings through the tunnels, both ways (RFC 7596 8.1: requests in by port 0, replies by identifier).
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    v4 += [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.2") / ICMP(type=8, id=7) / b"ping"),
           bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / ICMP(type=0, id=4100) / b"pong")]
    v6 += [bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") /
                 IP(src="192.0.2.1", dst="203.0.113.9") / ICMP(type=8, id=4100) / b"ping"),
           bytes(eth / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2") /
                 IP(src="192.0.2.2", dst="203.0.113.9") / ICMP(type=0, id=9) / b"pong")]
    o4, o6, *_ = eng.process(eng.pool.store(v4), eng.pool.store(v6), 10.01)
    assert len(o4) == 52 and len(o6) == 52
    assert eng.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0


def _error_traffic() -> tuple[list[bytes], list[bytes]]:
    """Frames the kernels answer with ICMP errors: Internet frames for no softwire,
    with TTL 1 and 0, too big for the tunnel with DF; B4 frames failing their binding."""
    eth4 = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    eth6 = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    v4 = [bytes(eth4 / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=1, dport=100 + i)) for i in range(5)]
    v4 += [bytes(eth4 / IP(src="203.0.113.9", dst="198.51.100.77") / UDP(sport=1, dport=80))]
    v4 += [bytes(eth4 / IP(src="203.0.113.9", dst="192.0.2.1", ttl=t) / UDP(sport=1, dport=4097)) for t in (0, 1)]
    v4 += [bytes(eth4 / IP(src="203.0.113.9", dst="192.0.2.2", flags="DF") / UDP(sport=1, dport=80) / bytes(1480))]
    v6 = [bytes(eth6 / IPv6(src="2001:db8:1::99", dst="2001:db8:ffff::2") /
                IP(src="192.0.2.2", dst="203.0.113.9") / UDP(sport=1000, dport=53)),          # wrong B4
          bytes(eth6 / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::1") /
                IP(src="192.0.2.2", dst="203.0.113.9") / UDP(sport=1001, dport=53) / bytes(1300)),  # wrong BR
          bytes(eth6 / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") /
                IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=80, dport=53))]            # port not its
    return v4, v6


def test_icmp_errors_are_compiled_and_equal_the_slow_paths():
    """Misses, TTL expiry, DF too big (Internet side) and binding failures (B4 side):
    no frame reaches the slow path, and bytes and counters equal the slow path's,
    also when the rate limiter cuts in (limits 3 and 2 over two batches)."""
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows)
    cfg = replace(cfg, external=replace(cfg.external, error_rate_limit_packets=3),
                  internal=replace(cfg.internal, error_rate_limit_packets=2))
    fast, slow = Engine(cfg, fragment_id_seeds=IDS), ReferenceEngine(cfg, fragment_id_seeds=IDS)
    v4, v6 = _error_traffic()
    for now in (100.0, 100.5):               # the second batch, in the same window, is all rate-limited
        got = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), now))
        want = slow.process_frames(v4, v6, now)
        assert got == want
        assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    c = C.to_dict(fast.counters, nonzero=True)
    assert c["out-icmpv4-error-packets"] == 3 and c["drop-over-rate-limit-icmpv4-packets"] == 2 * 9 - 3
    assert c["out-icmpv6-error-packets"] == 2 and c["drop-over-rate-limit-icmpv6-packets"] == 2 * 3 - 2
    assert c["drop-ttl-zero-ipv4-packets"] == 4 and c["drop-over-mtu-but-dont-fragment-ipv4-packets"] == 2
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"


ROWS = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]


def _frames(eng: Engine, out: Output) -> Frames:
    """``out`` as bytes; its slots freed."""
    frames = Frames(*(eng.pool.frames(s) for s in out.slots()), out.mirrored)
    for s in out.slots():
        eng.pool.free(s)
    return frames


def _compiled_as_slow(cfg, v4: list[bytes], v6: list[bytes], kernel: bool = False) -> Frames:
    """One batch through the kernels, none of whose frames may reach the slow path,
    and through the slow path: the same frames (each side's and the TAPs'), in
    order, and the same counters.  Returns the frames and the kernels' engine's
    counters (nonzero)."""
    fast = Engine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    if kernel:
        for e in (fast, slow):
            e.set_next_hops(bytes.fromhex("020000000011"), bytes.fromhex("020000000022"))
    got = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), 100.0))
    assert got == slow.process_frames(v4, v6, 100.0)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"
    return got, C.to_dict(fast.counters, nonzero=True)


@pytest.mark.parametrize("allow", [True, False])
def test_icmp_errors_from_the_internet_are_relayed_in_the_kernels(allow):
    """An ICMPv4 error about a subscriber's packet goes to the softwire owning the
    quoted source port (RFC 7596 8.1); one quoting too little, for no softwire or
    with a bad checksum is dropped; with allow-incoming-icmp off all are refused.
    No frame reaches the slow path; bytes and counters equal the slow path's."""
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, allow_incoming_icmp=allow))
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    sub = IP(src="192.0.2.1", dst="198.51.100.9") / UDP(sport=4097, dport=53) / bytes(30)
    v4 = [bytes(eth / IP(src="198.51.100.9", dst="192.0.2.1") / ICMP(type=3, code=3) / sub),          # relayed
          bytes(eth / IP(src="203.0.113.1", dst="192.0.2.1") / ICMP(type=3, code=4, nexthopmtu=1400)
                / bytes(sub)[:28]),                                                                   # relayed
          bytes(eth / IP(src="203.0.113.1", dst="192.0.2.1") / ICMP(type=11) / bytes(sub)[:21]),      # too short
          bytes(eth / IP(src="203.0.113.1", dst="192.0.2.1") / ICMP(type=3, code=1)
                / bytes(IP(src="192.0.2.1", dst="198.51.100.9") / UDP(sport=80, dport=53))),          # no softwire
          bytes(eth / IP(src="203.0.113.1", dst="192.0.2.2") / ICMP(type=3, chksum=0x4321) / sub)]   # bad checksum
    got, c = _compiled_as_slow(cfg, v4, [])
    if allow:
        assert len(got[1]) == 2 and c["drop-in-by-rfc7596-icmpv4-packets"] == 2
        assert c["drop-bad-checksum-icmpv4-packets"] == 1
    else:
        assert got == Frames([], [], [], [], []) and c["drop-in-by-policy-icmpv4-packets"] == 5


def test_icmp_errors_from_b4s_are_decapsulated_in_the_kernels():
    """An ICMPv4 error from behind a B4 is bound by the first port of the packet it
    quotes, whole or cut short (RFC 7596 8.1), without the slow path."""
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    quoted = bytes(IP(src="192.0.2.1", dst="198.51.100.9") / UDP(sport=4097, dport=53) / bytes(8))
    v6 = [bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / IP(src="192.0.2.1", dst="198.51.100.9")
                / ICMP(type=3, code=3) / quoted[:cut]) for cut in (len(quoted), 22, 21)]
    got, _ = _compiled_as_slow(make_config(ROWS), [], v6)
    # Whole and 22 bytes: port 4097 (its softwire); 21 bytes: one byte of it, 0x10: none (ICMPv6 1/5).
    assert len(got[0]) == 2 and len(got[1]) == 1


@pytest.mark.parametrize("kernel", [False, True])
def test_icmpv6_errors_are_relayed_as_icmpv4_in_the_kernels(kernel):
    """RFC 2473 8.3: an ICMPv6 error about a packet we tunnelled becomes an ICMPv4
    error for its IPv4 sender (packet too big: fragmentation needed, MTU less 40),
    or is dropped for its code or type; no frame reaches the slow path."""
    from scapy.packet import Raw
    ours = bytes(IPv6(src="2001:db8:ffff::1", dst="2001:db8:1::1") / IP(src="198.51.100.9", dst="192.0.2.1")
                 / UDP(sport=53, dport=4097) / bytes(100))
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    v6 = [bytes(eth / IPv6(src="2001:db8:9::1", dst="2001:db8:ffff::1", nh=58)
                / Raw(bytes([t, code, 0, 0]) + (1400).to_bytes(4, "big") + ours))
          for t, code in ((2, 0), (1, 3), (3, 0), (4, 1), (2, 1), (3, 1), (5, 0))]
    got, c = _compiled_as_slow(make_config(ROWS), [], v6, kernel=kernel)
    relayed = [Ether(f)[ICMP] for f in got[0]]
    assert [(p.type, p.code) for p in relayed] == [(3, 4), (3, 1), (3, 1), (3, 1)]
    assert relayed[0].nexthopmtu == 1400 - 40
    assert c["drop-too-big-type-but-not-code-icmpv6-packets"] == 1
    assert c["drop-over-time-but-not-hop-limit-icmpv6-packets"] == 1
    assert c["drop-unknown-protocol-icmpv6-packets"] == 1


def test_icmp_between_b4s_is_hairpinned_in_the_kernels():
    """A ping from one subscriber to another and its reply, and an error about a
    packet between them, are hairpinned by RFC 7596 8.1's rules, without the slow path."""
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    a = IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1")
    b = IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2")
    quoted = IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4097, dport=9) / bytes(8)
    v6 = [bytes(eth / a / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, id=4097) / bytes(32)),
          bytes(eth / b / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=0, id=4097) / bytes(32)),
          bytes(eth / b / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=3, code=3) / quoted)]
    got, c = _compiled_as_slow(make_config(ROWS, hairpinning=True), [], v6)
    assert len(got[1]) == 3 and c["hairpin-ipv4-packets"] == 3


@pytest.mark.parametrize("hairpinning", [False, True])
def test_the_tunnel_encapsulation_limit_header_is_compiled(hairpinning):
    """Linux ip6tnl B4s add a Destination Options header with the Tunnel
    Encapsulation Limit (RFC 2473 4.1.1) to every packet: decapsulated, hairpinned
    and answered with ICMPv6 1/5 (quoting the packet without it) in the kernels."""
    from scapy.layers.inet6 import HBHOptUnknown, IPv6ExtHdrDestOpt
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    tel = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=b"\x04")])
    a = IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / tel
    v6 = [bytes(eth / a / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=4097, dport=53) / bytes(100)),
          bytes(eth / a / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4097, dport=53) / bytes(100)),
          bytes(eth / a / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=80, dport=53) / bytes(100))]
    got, _ = _compiled_as_slow(make_config(ROWS, hairpinning=hairpinning), [], v6)
    assert len(got[0]) == (1 if hairpinning else 2) and len(got[1]) == (2 if hairpinning else 1)


def test_errors_by_policy_off_are_dropped_in_the_kernels():
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows, generate_icmp_errors=False)
    cfg = replace(cfg, external=replace(cfg.external, generate_icmp_errors=False))
    fast, slow = Engine(cfg), ReferenceEngine(cfg)
    v4, v6 = _error_traffic()
    o4, o6, *_ = fast.process(fast.pool.store(v4), fast.pool.store(v6), 100.0)
    assert len(o4) == len(o6) == 0
    slow.process_frames(v4, v6, 100.0)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert C.to_dict(fast.counters)["drop-out-by-policy-icmpv4-packets"] == 9


@pytest.mark.parametrize("vlan", [None, (7, 9)])
def test_echo_to_the_router_is_answered_in_the_kernels(vlan):
    """Built-in control plane: pings to the router's IPv4 and IPv6 addresses are answered,
    and ICMPv6 echo to a BR address dropped, by the kernels, with the slow path's bytes
    and counters (VLAN tags too, and an egress filter that refuses one reply)."""
    from lwaftr.examples import BR as AFTR_V6          # the example's internal address is its first BR
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows, egress_filter="not icmp6[4:2] = 666")        # identifier 666: refused
    inst = cfg.instance
    if vlan:
        cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, vlan_tag=vlan[0]),
                                              internal=replace(inst.internal, vlan_tag=vlan[1]))])
    aftr4, aftr6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(AFTR_V6))
    tag4 = (lambda p: Ether(dst=p.dst, src=p.src) / Dot1Q(vlan=vlan[0]) / p.payload) if vlan else (lambda p: p)
    tag6 = (lambda p: Ether(dst=p.dst, src=p.src) / Dot1Q(vlan=vlan[1]) / p.payload) if vlan else (lambda p: p)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    v4 = [bytes(tag4(eth / IP(src="203.0.113.9", dst=aftr4, flags="DF") / ICMP(type=8, id=1, seq=i) / (b"x" * i)))
          for i in range(3)]
    v6 = [bytes(tag6(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / ICMPv6EchoRequest(id=2, seq=i) / (b"y" * i)))
          for i in range(3)]
    v6 += [bytes(tag6(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / ICMPv6EchoRequest(id=666))),
           bytes(tag6(eth / IPv6(src="2001:db8:2::9", dst="2001:db8:ffff::2") / ICMPv6EchoRequest(id=3)))]
    fast, slow = Engine(cfg), ReferenceEngine(cfg)
    got = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), 100.0))
    want = slow.process_frames(v4, v6, 100.0)
    assert got == want and len(got[0]) == 3 and len(got[1]) == 3
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    c = C.to_dict(fast.counters, nonzero=True)
    assert c["out-icmpv6-echo-packets"] == 4 and c["drop-egress-filter-ipv6-packets"] == 1
    assert c["drop-unknown-protocol-icmpv6-packets"] == 1


@pytest.mark.parametrize("vlan", [None, 9])
def test_ipv6_fragmentation_is_compiled_and_shares_the_ids(vlan):
    """Internet frames too big for the tunnel without DF are encapsulated and fragmented
    (RFC 8200 4.5) in the kernels, VLAN-tagged like the side: the slow path's bytes and
    counters, the fragment IDs counting on from one shared counter across both paths."""
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows)
    if vlan:
        inst = cfg.instance
        cfg = replace(cfg, instances=[replace(inst, internal=replace(inst.internal, vlan_tag=vlan))])
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    big = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.2", id=i) / UDP(sport=1, dport=80) / bytes(1440 + i))
           for i in range(3)]
    fast, slow = Engine(cfg, fragment_id_seeds=IDS), ReferenceEngine(cfg, fragment_id_seeds=IDS)
    o4, o6, *_ = fast.process(fast.pool.store(big), fast.pool.store([]), 100.0)
    got = fast.pool.frames(o6)
    fast.pool.free(o6)
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    assert got == slow.process_frames(big, [], 100.0)[1] and len(got) == 6
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    # Next: one big frame fragmented by the kernels, then a datagram reassembled beyond a
    # slot, which they encapsulate and cut from the big buffer: the IDs go on from the one
    # counter the slow path's fragmenter shares.
    from scapy.layers.inet6 import IPv6ExtHdrFragment as Frag6
    jumbo = IP(src="203.0.113.9", dst="192.0.2.2", id=77) / UDP(sport=1, dport=80) / bytes(3000)
    pieces = [bytes(eth / p) for p in fragment(jumbo, fragsize=1000)]
    ids = []
    for frames in ([big[0]], pieces):
        o4, o6, *_ = fast.process(fast.pool.store(frames), fast.pool.store([]), 100.5)
        assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
        ids.append([Ether(f)[Frag6].id for f in fast.pool.frames(o6)])
        fast.pool.free(o4)
        fast.pool.free(o6)
    assert ids == [[IDS[1] + 4] * 2, [IDS[1] + 5] * 3] and int(fast._ids6[0]) == IDS[1] + 5
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"


def _lookup(table: BindingTable, ip: str, port: int):
    return table.lookup(int(ipaddress.IPv4Address(ip)), port)


def _flow(ip_pkt) -> tuple:
    l4 = ip_pkt.payload
    if isinstance(l4, ICMP):
        return ip_pkt.src, ip_pkt.dst, "icmp", l4.type, l4.id
    return ip_pkt.src, ip_pkt.dst, l4.sport, l4.dport


def _b4_port(ip_pkt) -> int:
    """The port that binds a packet from a B4 (RFC 7596 8.1 for echo)."""
    l4 = ip_pkt.payload
    if isinstance(l4, ICMP):
        return l4.id if l4.type == 8 else 0
    return l4.sport


def _port(ip_pkt, src: bool) -> int:
    """The port that finds the softwire of a packet to a subscriber (RFC 7596 8.1:
    an echo reply by its identifier, a request port 0, an error the source port
    of the packet it quotes)."""
    l4 = ip_pkt.payload
    if isinstance(l4, ICMP):
        if l4.type in (0, 8):
            return l4.id if l4.type == 0 else 0
        quoted = bytes(l4)[8:]
        qihl = (quoted[0] & 0xF) * 4
        return int.from_bytes(quoted[qihl:qihl + 2], "big")
    return l4.sport if src else l4.dport


@SETTINGS
@given(scenario(filters=False, b4_icmp=False))   # (an ICMPv4 error we send a subscriber for its own
def test_invariants(sc):                        # hairpinned ping can itself be dropped, and counted)
    """Every decapsulated packet matched its softwire; every encapsulated one
    goes to the B4 owning its address and port; every input is counted once
    as forwarded or dropped."""
    _, cfg, v4, v6 = sc
    eng = Engine(cfg)
    o4, o6, *_ = eng.process_frames(v4, v6, 10.0)
    t = eng.table
    aftr = str(ipaddress.IPv4Address(AFTR_V4))
    # Inputs by inner 4-tuple (fragments of a forwarded packet carry their first bytes only).
    inputs6: dict[tuple, list] = {}
    for f in v6:
        outer = Ether(f)[IPv6]
        inner = outer[IP]
        inputs6.setdefault(_flow(inner), []).append(outer)
    fwd4 = 0
    for f in o4:
        ip = Ether(f)[IP]
        if ip.src == aftr or ip.frag > 0:
            continue   # our own ICMP error, or a later fragment of a packet counted already
        fwd4 += 1
        b4, br = _lookup(t, ip.src, _b4_port(ip))
        outers = inputs6[_flow(ip)]
        assert any(ipaddress.IPv6Address(o.src).packed == b4 and ipaddress.IPv6Address(o.dst).packed == br
                   for o in outers)
    fwd6 = 0
    for f in o6:
        p = Ether(f)[IPv6]
        if p.nh == 44:   # IPv6 fragment: count the first, whose inner header is there
            if p[IPv6ExtHdrFragment].offset:
                continue
            p = IPv6(bytes(p)[:40]) / IP(bytes(p[IPv6ExtHdrFragment].payload))
            p.nh = 4
        if p.nh != 4:
            continue   # ICMPv6 error
        inner = p[IP]
        if inner.src == aftr:
            continue   # our ICMPv4 error to a subscriber
        hit = _lookup(t, inner.dst, _port(inner, src=False))
        fwd6 += 1
        assert hit is not None
        assert ipaddress.IPv6Address(p.dst).packed == hit[0] and ipaddress.IPv6Address(p.src).packed == hit[1]
    c = C.to_dict(eng.counters)
    assert c["in-ipv4-packets"] + c["in-ipv6-packets"] == \
        fwd4 + fwd6 + c["drop-all-ipv4-iface-packets"] + c["drop-all-ipv6-iface-packets"]


def _claims_and_traffic():
    """A configuration whose IPv4 next hop is also learned by ARP; 100 ARP replies from
    its address, each with another MAC; 100 frames for a B4; 10 ARP requests for us."""
    from lwaftr.config.model import NextHop
    from scapy.layers.l2 import ARP
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows)
    inst = cfg.instance
    hop = NextHop(mac=inst.external.next_hop.mac, ip=ipaddress.IPv4Address(NEXT_HOP4).packed)
    cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, next_hop=hop))])
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    p1 = port_of(1, 4, 7)
    good = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53 + i, dport=p1)) for i in range(100)]
    claims = [bytes(Ether(dst="02:00:00:00:00:01", src=f"02:00:00:00:01:{i:02x}") /
                    ARP(op=2, hwsrc=f"02:00:00:00:01:{i:02x}", psrc=NEXT_HOP4, hwdst="02:00:00:00:00:01",
                        pdst=AFTR4)) for i in range(100)]
    arps = [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:11") /
                  ARP(op=1, psrc=f"198.51.100.{100 + i}", pdst=AFTR4)) for i in range(10)]
    up = [bytes(eth / IPv6(src="2001:db8:1::1", dst=AFTR6) / IP(src="192.0.2.1", dst="203.0.113.9")
                / UDP(sport=p1, dport=53 + i)) for i in range(10)]
    return cfg, claims, good, arps, up


def test_a_flood_of_replies_from_the_next_hop_is_taken_by_the_kernels():
    """ARP replies from the next hop's address (each may move it) are learned from in
    the kernels, however many: the last one's MAC is the next hop's, and the frames of
    the same batch leave with it; the traffic amid them is all forwarded or answered,
    nothing reaches Python and nothing is dropped, live or in ``check``'s strict mode."""
    cfg, claims, good, arps, up = _claims_and_traffic()
    for strict in (False, True):
        eng = Engine(cfg)
        if strict:
            out = eng.process_frames(claims + good, up, 1.0)
            assert len(out.v6) == 100 and {f[:6] for f in out.v4} == {bytes.fromhex("020000000163")}
        else:
            o4, o6, *_ = eng.process(eng.pool.store(claims[:50] + arps + good + claims[50:]), eng.pool.store(up),
                                     1.0)
            replies = [f for f in eng.pool.frames(o4) if f[12:14] == b"\x08\x06"]
            sent = [f for f in eng.pool.frames(o4) if f[12:14] == b"\x08\x00"]
            assert len(o6) == 100 and len(replies) == 10 and len(sent) == 10
            assert {f[:6] for f in sent} == {bytes.fromhex("020000000163")}
            eng.pool.free(o4)
            eng.pool.free(o6)
            assert eng.pool.n_free[0] == eng.pool.n_slots, "slots leaked"
        assert eng.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
        assert eng.counters[C.IN_ARP_REPLY_PACKETS] == 100 and eng.counters[C.DROP_OVER_BUDGET_PACKETS] == 0
        assert eng.macs[K.M_EXT_NEXT].tobytes() == bytes.fromhex("020000000163")    # the last reply's


def test_packets_reassembled_beyond_a_slot_are_cut_to_their_budget_and_counted():
    """Packets reassembled beyond a pool slot cost more than the common path (a big
    buffer, a stand-in slot, cutting again): at most ``BIG_PER_BATCH`` a side per batch.
    Of ten such datagrams completed in one batch, eight are encapsulated and cut to the
    IPv6 MTU; the other two are dropped, counted ``drop-over-budget-packets``, and an
    alarm says so.  The frames amid them are forwarded; no slot is lost."""
    from lwaftr.dataplane.engine import BIG_PER_BATCH
    from lwaftr.mgmt.alarms import Alarms
    eng = Engine(make_config(ROWS), fragment_id_seeds=IDS)
    alarms = Alarms(eng.counters)
    alarms.check(0.0)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    p1 = port_of(1, 4, 7)
    frags = [bytes(eth / f) for i in range(BIG_PER_BATCH + 2)
             for f in fragment(IP(src="203.0.113.9", dst="192.0.2.1", id=100 + i) / UDP(sport=53, dport=p1)
                               / bytes(3000), fragsize=1400)]
    assert len(frags) == 3 * (BIG_PER_BATCH + 2)
    good = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53 + i, dport=p1)) for i in range(20)]
    o4, o6, *_ = eng.process(eng.pool.store(good[:10] + frags + good[10:]), eng.pool.store([]), 1.0)
    whole = [f for f in eng.pool.frames(o6) if IPv6ExtHdrFragment not in Ether(f)]
    assert not len(o4) and len(whole) == 20 and len(o6) - len(whole) == 3 * BIG_PER_BATCH   # 3 fragments each
    c = C.to_dict(eng.counters, nonzero=True)
    assert c["drop-over-budget-packets"] == 2 and c["in-ipv4-frag-reassembled"] == BIG_PER_BATCH + 2
    assert [(e.alarm, e.raised) for e in alarms.check(1.0)] == [("over-budget", True)]
    eng.pool.free(o6)
    assert eng.pool.n_free[0] == eng.pool.n_slots, "slots leaked"


@pytest.mark.parametrize("vlan", [None, 9])
@pytest.mark.parametrize("big", [False, True], ids=["in-a-slot", "beyond-a-slot"])
def test_ndp_in_fragments_is_taken_by_the_kernels(vlan, big):
    """Built-in control plane: an NDP message that came in fragments is reassembled and
    answered, consumed or learned from in the kernels, as Snabb's NDP app does after its
    reassembler (and the slow path's stages): NSs for us (answered), for others and
    from "::" (DAD), one with a bad checksum, and the NA that teaches the unresolved next
    hop's MAC, which the frames of the same batch then use.  ``big``: each message is
    reassembled beyond a pool slot (in the reassembly's big buffer), and the answers
    leave in slots of their own.  The frames of the B4s amid them go as ever; none of
    them reaches Python."""
    from lwaftr.config.model import NextHop
    from lwaftr.dataplane import vlan as V
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, fragment6
    cfg = make_config(ROWS, vlan_tag=vlan)
    inst = cfg.instance
    cfg = replace(cfg, instances=[replace(inst, internal=replace(inst.internal, next_hop=NextHop(
        ip=ipaddress.IPv6Address(NEXT_HOP6).packed)))])
    eth = Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
    # Options of an unknown type: one of 240 bytes, or two of 2,040 (the largest an NDP option can be)
    pad = Raw(b"\xc8\xff" + bytes(2038)) / Raw(b"\xc8\xff" + bytes(2038)) if big else Raw(b"\xc8\x1e" + bytes(238))
    size = 1000 if big else 200

    def cut(msg, ident: int) -> list[bytes]:
        """``msg`` in fragments of ``size`` bytes (a Fragment header added)."""
        ip = msg[IPv6]
        return [bytes(eth / f) for f in fragment6(IPv6(src=ip.src, dst=ip.dst, hlim=ip.hlim)
                                                  / IPv6ExtHdrFragment(id=ident) / ip.payload, size)]

    msgs = [IPv6(src="fe80::22", dst=AFTR6, hlim=255) / ICMPv6ND_NS(tgt=AFTR6) / pad,
            IPv6(src="fe80::22", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="2001:db8:ffff::2") / pad,
            IPv6(src="::", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=AFTR6) / pad,
            IPv6(src="fe80::22", dst=AFTR6, hlim=255) / ICMPv6ND_NS(tgt=AFTR6, cksum=7) / pad,
            IPv6(src=NEXT_HOP6, dst=AFTR6, hlim=255) / ICMPv6ND_NA(tgt=NEXT_HOP6, S=1)
            / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:77") / pad]
    frags = [f for i, m in enumerate(msgs) for f in cut(m, i)]
    assert len(frags) == (25 if big else 10)
    assert (len(bytes(eth / msgs[0])) > Engine(cfg).pool.max_frame) == big
    p1 = port_of(1, 4, 7)
    up = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IPv6(src="2001:db8:1::1", dst=AFTR6)
                / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=p1, dport=53))]
    down = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.1")
                  / UDP(sport=53, dport=p1))]
    if vlan:                                        # (the internal side's tag)
        frags, up = ([V.push_tag(f, vlan) for f in fs] for fs in (frags, up))
    got, c = _compiled_as_slow(cfg, down, frags + up)
    assert c["in-ipv6-frag-reassembled"] == 5 and c["in-ndp-ns-packets"] == 3 and c["in-ndp-na-packets"] == 1
    untag = V.pop_tag if vlan else (lambda f: f)
    nas = [untag(f) for f in got.v6 if untag(f)[12:14] == b"\x86\xdd" and untag(f)[54] == 136]
    assert len(nas) == 2                              # to the solicitor and, for "::", to all nodes
    sent = [untag(f) for f in got.v6 if untag(f)[20] == 4]
    assert [f[:6] for f in sent] == [bytes.fromhex("020000000077")]    # with the MAC learned in the batch


@pytest.mark.parametrize("tagged", [False, True])
def test_frames_wait_in_their_slots_for_an_unresolved_next_hop(tagged):
    """Built-in control plane: while the IPv6 next hop is unresolved, frames for the B4s
    are finished by the kernels and held in their slots (none goes to Python), up to the
    hold limit (beyond: dropped and counted); the neighbour advertisement that resolves it
    sends them, oldest first, with its MAC, as the slow path's neighbour stage would:
    through the egress filter, cut to the MTU, tagged (``tagged``: a VLAN, a 1280-byte
    MTU, a filter that refuses the largest).  In kernel mode they are dropped and counted
    instead."""
    from lwaftr.config.model import NextHop
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    cfg = make_config(rows, mtu=1280, egress_filter="len < 1400", vlan_tag=9) if tagged else make_config(rows)
    inst = cfg.instance
    nh6 = "2001:db8:ffff::fe"
    hop = NextHop(ip=ipaddress.IPv6Address(nh6).packed)
    cfg = replace(cfg, instances=[replace(inst, internal=replace(inst.internal, next_hop=hop))])
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    p1 = port_of(1, 4, 7)
    down = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(i))
            for i in (1300, 1400, *range(38))]      # (tagged: one cut in two, one refused by the filter)
    up = [bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / IP(src="192.0.2.1", dst="203.0.113.9")
                / UDP(sport=p1, dport=53))]
    na = bytes(Ether(dst=HOST_MAC, src="02:00:00:00:00:66") / IPv6(src=nh6, dst=AFTR6, hlim=255)
               / ICMPv6ND_NA(tgt=nh6, R=1, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:66"))
    if tagged:
        from lwaftr.dataplane import vlan as V
        na = V.push_tag(na, 9)
        up = [V.push_tag(f, 9) for f in up]
    fast = Engine(cfg, fragment_id_seeds=IDS, pool_slots=256)      # hold limit: 256 // 8 = 32
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, pool_slots=256)
    assert fast.hold_limit == 32
    got = _frames(fast, fast.process(fast.pool.store(down), fast.pool.store(up), 1.0))
    want = slow.process_frames(down, up, 1.0)
    assert got == want and len(got.v4) == 1 and len(got.v6) == 1 and got.v6[0][-32] == 135     # the NS
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    assert fast._n_held[1] == 32 and C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.counters[C.DROP_NO_NEXT_HOP_IPV6_PACKETS] == 8 and fast.counters[C.NEXT_HOP_HELD_PACKETS] == 32
    got = _frames(fast, fast.process(fast.pool.store([]), fast.pool.store([na]), 2.0))
    want = slow.process_frames([], [na], 2.0)
    assert got == want and len(got.v6) == 32        # (tagged: one refused by the filter, one cut in two)
    assert {f[:6] for f in got.v6} == {bytes.fromhex("020000000066")}
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"
    kernel = Engine(cfg, kernel=True)
    kernel.set_next_hops(bytes.fromhex("020000000011"), None)
    out = kernel.process(kernel.pool.store(down), kernel.pool.store(up), 1.0)
    assert len(out.v6) == 0 and len(out.v4) == 1
    assert kernel.counters[C.DROP_NO_NEXT_HOP_IPV6_PACKETS] == 40
    for s in out.slots():
        kernel.pool.free(s)
    assert kernel.pool.n_free[0] == kernel.pool.n_slots, "slots leaked"


def _mangle(draw, f: bytes) -> bytes:
    """The frame as is, or malformed: cut short, or one byte of its headers changed."""
    how = draw(st.sampled_from(["none", "none", "none", "cut", "byte"]))
    if how == "cut":
        return f[:draw(st.integers(0, len(f)))]
    if how == "byte" and len(f) > 14:
        i = draw(st.integers(12, min(len(f), 100) - 1))
        return f[:i] + bytes([draw(st.integers(0, 255))]) + f[i + 1:]
    return f


@st.composite
def wide_scenario(draw):
    """Traffic over other configurations than the default: VLAN tags, small MTUs,
    the kernel control plane, ICMP off, malformed frames, fragments, several batches."""
    from lwaftr.dataplane import vlan as V
    rows = draw(tables())
    cfg = make_config(rows, hairpinning=draw(st.booleans()), generate_icmp_errors=draw(st.booleans()),
                      mtu=draw(st.sampled_from([1280, 1500, 2000])),
                      allow_incoming_icmp=draw(st.booleans()))
    cfg = replace(cfg, external=replace(cfg.external, mtu=draw(st.sampled_from([576, 1500])),
                                        generate_icmp_errors=draw(st.booleans()),
                                        allow_incoming_icmp=draw(st.booleans())))
    tags = draw(st.sampled_from([(None, None), (7, 9), (5, 5)]))
    if tags[0] is not None:
        cfg = replace(cfg, external=replace(cfg.external, vlan_tag=tags[0]),
                      internal=replace(cfg.internal, vlan_tag=tags[1]))
    kernel = draw(st.booleans())

    def tag(f: bytes, vid):
        return V.push_tag(f, vid) if vid is not None and draw(st.integers(0, 9)) else f   # 1 in 10 untagged
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        v4 = [tag(_mangle(draw, f), tags[0]) for f in draw(st.lists(inet_frame(rows), max_size=10))]
        v6 = [tag(_mangle(draw, f), tags[1]) for f in draw(st.lists(b4_frame(rows), max_size=10))]
        if draw(st.booleans()):        # a fragmented packet, in order or not
            eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
            big = IP(src="203.0.113.9", dst=rows[0][0], id=draw(st.integers(0, 65535))) / UDP(
                sport=53, dport=port_of(rows[0][1], rows[0][2], 7)) / bytes(draw(st.integers(8, 1400)))
            frags = [bytes(eth / p) for p in fragment(big, fragsize=draw(st.sampled_from([256, 512])))]
            v4 += [tag(f, tags[0]) for f in draw(st.permutations(frags))]
        c4, c6 = [], []
        cfg = _with_control_plane(draw, cfg, c4, c6, rows, kernel) if not batches else cfg
        v4 += [tag(f, tags[0]) for f in c4]
        v6 += [tag(f, tags[1]) for f in c6]
        batches.append((v4, v6))
    return cfg, kernel, batches


@SETTINGS
@given(wide_scenario())
def test_the_kernels_equal_the_slow_path_in_other_configurations(sc):
    """Kernels (unordered, live) against the slow path: the same frames (as sets),
    the same counters, every slot back, over VLANs, small MTUs, kernel mode, ICMP
    policies, malformed frames and fragments across batches."""
    cfg, kernel, batches = sc
    fast = Engine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    if kernel:
        for e in (fast, slow):
            e.set_next_hops(bytes.fromhex("020000000011"), bytes.fromhex("020000000022"))
    got, want = ([], [], [], []), ([], [], [], [])
    for i, (v4, v6) in enumerate(batches):
        out = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), 10.0 + i))
        ref = slow.process_frames(v4, v6, 10.0 + i)
        for g, w, o, r in zip(got, want, out, ref):
            g.extend(o)
            w.extend(r)
    assert sorted(got[0]) == sorted(want[0]) and sorted(got[1]) == sorted(want[1])
    assert sorted(got[2]) == sorted(want[2]) and sorted(got[3]) == sorted(want[3])      # for the TAPs
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.next_hop_macs() == (slow.slow.arp.next_mac, slow.slow.ndp.next_mac)
    assert fast.pool.n_free[0] + fast.defrag4.held + fast.defrag6.held + sum(fast._n_held) == fast.pool.n_slots, \
        "slots leaked"


def _arp_traffic() -> list[bytes]:
    from scapy.layers.l2 import ARP
    req = Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC) / ARP(psrc="203.0.113.9", pdst=AFTR4, hwsrc=HOST_MAC)
    return [bytes(req),
            bytes(req) + bytes(18),                                                          # padded to 60
            bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC)
                  / ARP(psrc="203.0.113.9", pdst="198.51.100.77", hwsrc=HOST_MAC)),          # not for us
            bytes(Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
                  / ARP(op=2, psrc="203.0.113.9", pdst=AFTR4, hwsrc=HOST_MAC)),              # a reply
            bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC)
                  / ARP(op=1, psrc="203.0.113.9", pdst="203.0.113.9", hwsrc=HOST_MAC)),      # gratuitous
            bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC) / ARP(hwlen=8, pdst=AFTR4))]  # not Ethernet


def _ndp_traffic() -> list[bytes]:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS, ICMPv6NDOptSrcLLAddr
    eth = Ether(dst="33:33:ff:00:00:01", src=HOST_MAC)
    return [bytes(eth / IPv6(src="fe80::22", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=AFTR6)
                  / ICMPv6NDOptSrcLLAddr(lladdr=HOST_MAC)),
            bytes(eth / IPv6(src="::", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=AFTR6)),      # DAD
            bytes(eth / IPv6(src="fe80::22", dst=AFTR6, hlim=64) / ICMPv6ND_NS(tgt=AFTR6)),            # hop limit
            bytes(eth / IPv6(src="fe80::22", dst="ff02::1:ff00:2", hlim=255)
                  / ICMPv6ND_NS(tgt="2001:db8:ffff::2")),                                              # not us
            bytes(eth / IPv6(src="fe80::22", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="fe80::22", S=1)),
            bytes(eth / IPv6(src="fe80::22", dst="ff02::2", hlim=255) / ICMPv6ND_RS())]


@pytest.mark.parametrize("vlan", [None, (7, 9)])
@pytest.mark.parametrize("egress", [None, "not arp"])
def test_arp_and_ndp_are_answered_in_the_kernels(vlan, egress):
    """Built-in control plane: ARP requests for the router's IPv4 address and NSs for its
    IPv6 address are answered, and other ARP/NDP consumed, in the kernels: no frame reaches
    the slow path; replies, order and counters are the slow path's, byte for byte (VLAN
    tags, an egress filter that refuses ARP replies too)."""
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0)]
    cfg = make_config(rows)
    cfg = replace(cfg, external=replace(cfg.external, egress_filter=egress))
    v4, v6 = _arp_traffic(), _ndp_traffic()
    if vlan:
        from lwaftr.dataplane import vlan as V
        inst = cfg.instance
        cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, vlan_tag=vlan[0]),
                                              internal=replace(inst.internal, vlan_tag=vlan[1]))])
        v4, v6 = [V.push_tag(f, vlan[0]) for f in v4], [V.push_tag(f, vlan[1]) for f in v6]
    got, c = _compiled_as_slow(cfg, v4, v6)
    assert len(got.v4) == (0 if egress else 2) and len(got.v6) == 2
    assert c["in-arp-request-packets"] == 4 and c["in-arp-reply-packets"] == 1
    assert c["out-arp-reply-packets"] == 2 and c.get("drop-egress-filter-ipv4-packets", 0) == (2 if egress else 0)
    assert c["in-ndp-ns-packets"] == 3 and c["in-ndp-na-packets"] == 1 and c["out-ndp-na-packets"] == 2


def test_the_compiled_replies_are_arpstages_and_ndpstages_bytes():
    """Each reply, unit by unit, against the stage that writes it in Python."""
    from lwaftr import counters as Cn
    from reference.neighbor import ArpStage, NdpStage
    inst = make_config(ROWS).instance
    arp = ArpStage(Cn.new_array(), inst.external.ip, inst.external.mac, None, NEXT_V4)
    ndp = NdpStage(Cn.new_array(), inst.internal.ip, inst.internal.mac, None, NEXT_V4)
    v4, v6 = _arp_traffic()[:2], _ndp_traffic()[:2]
    got, _ = _compiled_as_slow(make_config(ROWS), v4, v6)
    assert got.v4 == [arp.from_wire(f, 0.0)[1][0] for f in v4]
    assert got.v6 == [ndp.from_wire(f, 0.0)[1][0] for f in v6]
    na = Ether(got.v6[1])                       # to "::": to all nodes, Router only (RFC 4861 7.2.4)
    assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1" and na[IPv6].hlim == 255


def test_the_compiled_requests_are_arpstages_and_ndpstages_bytes():
    """The ARP request and the Neighbour Solicitation for unresolved next hops, against
    the stages that write them in Python; a filter that refuses them drops and counts
    them as the slow path does."""
    from lwaftr.config.model import NextHop
    from reference.neighbor import ArpStage, NdpStage
    cfg = make_config(ROWS)
    inst = cfg.instance
    hop4 = NextHop(ip=ipaddress.IPv4Address(NEXT_HOP4).packed)
    hop6 = NextHop(ip=ipaddress.IPv6Address(NEXT_HOP6).packed)
    cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, next_hop=hop4),
                                          internal=replace(inst.internal, next_hop=hop6))])
    got, c = _compiled_as_slow(cfg, [], [])
    arp = ArpStage(C.new_array(), inst.external.ip, inst.external.mac, hop4.ip, None)
    ndp = NdpStage(C.new_array(), inst.internal.ip, inst.internal.mac, hop6.ip, None)
    assert got.v4 == arp.poll(0.0) and got.v6 == ndp.poll(0.0)
    ns = Ether(got.v6[0])
    assert ns.dst == "33:33:ff:00:00:fe" and ns[IPv6].dst == "ff02::1:ff00:fe" and ns[IPv6].hlim == 255
    assert c["out-arp-request-packets"] == 1 and c["out-ndp-ns-packets"] == 1
    refusing = replace(cfg, external=replace(cfg.external, egress_filter="not arp"),
                       internal=replace(cfg.internal, egress_filter="not icmp6"))
    got, c = _compiled_as_slow(refusing, [], [])
    assert got.v4 == got.v6 == [] and c["drop-egress-filter-ipv4-packets"] == c["drop-egress-filter-ipv6-packets"] == 1


@pytest.mark.parametrize("vlan", [None, (7, 9)])
def test_next_hops_are_learned_in_the_kernels(vlan):
    """Built-in control plane, both next hops unresolved: the kernels ask for them (at
    once, then every 3 s), hold what is for them, learn their MACs from the ARP reply and
    the solicited NA (the first target link-layer address), send what waited, oldest
    first, before the batch's own frames, which use the MACs learned in that batch; an ARP
    reply with a new MAC moves the next hop at once.  Frame for frame and counter for
    counter the slow path's, and no frame reaches it."""
    from lwaftr.config.model import NextHop
    from lwaftr.dataplane import vlan as V
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
    from scapy.layers.l2 import ARP
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0)]
    cfg = make_config(rows)
    inst = cfg.instance
    hop4 = NextHop(ip=ipaddress.IPv4Address(NEXT_HOP4).packed)
    hop6 = NextHop(ip=ipaddress.IPv6Address(NEXT_HOP6).packed)
    inst = replace(inst, external=replace(inst.external, next_hop=hop4), internal=replace(inst.internal, next_hop=hop6))
    if vlan:
        inst = replace(inst, external=replace(inst.external, vlan_tag=vlan[0]),
                       internal=replace(inst.internal, vlan_tag=vlan[1]))
    cfg = replace(cfg, instances=[inst])
    tag4 = (lambda f: V.push_tag(f, vlan[0])) if vlan else (lambda f: f)
    tag6 = (lambda f: V.push_tag(f, vlan[1])) if vlan else (lambda f: f)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    p1 = port_of(1, 4, 7)

    def traffic(i: int) -> tuple[list[bytes], list[bytes]]:
        down = [tag4(bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=1000 + i, dport=p1)))]
        up = [tag6(bytes(eth / IPv6(src="2001:db8:1::1", dst=AFTR6) / IP(src="192.0.2.1", dst="203.0.113.9")
                         / UDP(sport=p1, dport=2000 + i)))]
        return down, up

    def arp_reply(mac: str) -> bytes:
        return tag4(bytes(Ether(dst="02:00:00:00:00:01", src=mac) / ARP(op=2, psrc=NEXT_HOP4, hwsrc=mac, pdst=AFTR4)))

    na = tag6(bytes(Ether(dst=HOST_MAC, src="02:00:00:00:00:66") / IPv6(src=NEXT_HOP6, dst=AFTR6, hlim=255)
                    / ICMPv6ND_NA(tgt=NEXT_HOP6, R=1, S=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:77")
                    / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:88")))
    fast = Engine(cfg, fragment_id_seeds=IDS)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS)
    d1, u1 = traffic(1)
    d2, u2 = traffic(2)
    d3, u3 = traffic(3)
    d4, u4 = traffic(4)
    batches = [(1.0, d1, u1), (2.0, d2, u2), (4.5, [], []),         # asked at once, held, asked again at 4.5
               (5.0, [arp_reply("02:00:00:00:00:55"), *d3], [*u3, na]),
               (6.0, [*d4, arp_reply(HOST_MAC)], u4)]              # the reply after the frame still moves it
    outs = []
    for now, v4, v6 in batches:
        got = _frames(fast, fast.process(fast.pool.store(v4), fast.pool.store(v6), now))
        assert got == slow.process_frames(v4, v6, now)
        assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
        outs.append(got)
    assert fast.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    untag = V.pop_tag if vlan else (lambda f: f)
    arp4, ns6 = ([untag(f)[12:14] for f in o] for o in (outs[0].v4, outs[0].v6))
    assert arp4 == [b"\x08\x06"] and ns6 == [b"\x86\xdd"] and outs[0].v6[0][-32] == 135     # the NS
    assert outs[1].v4 == outs[1].v6 == [] and len(outs[2].v4) == len(outs[2].v6) == 1
    # batch 4: what waited (from batches 1 and 2), then its own, with the MACs learned
    learned4, learned6 = [untag(f) for f in outs[3].v4], [untag(f) for f in outs[3].v6]
    assert len(learned4) == len(learned6) == 3
    assert {f[:6] for f in learned4} == {bytes.fromhex("020000000055")}
    assert {f[:6] for f in learned6} == {bytes.fromhex("020000000077")}
    assert [Ether(f)[UDP].dport for f in learned4] == [2001, 2002, 2003]
    assert [Ether(f)[UDP].sport for f in learned6] == [1001, 1002, 1003]
    assert untag(outs[4].v4[0])[:6] == bytes.fromhex(HOST_MAC.replace(":", ""))
    assert fast.next_hop_macs() == (bytes.fromhex(HOST_MAC.replace(":", "")), bytes.fromhex("020000000077"))
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"


def test_an_engine_rebuilt_by_a_reload_keeps_the_macs_learned():
    """Built-in control plane: the MACs an engine learned, handed to the engine that
    replaces it (``set_next_hops``, as ``lwaftr run``'s reload does), are used at once,
    with no request; a side still unresolved keeps asking."""
    from lwaftr.config.model import NextHop
    cfg = make_config(ROWS)
    inst = cfg.instance
    cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, next_hop=NextHop(
        ip=ipaddress.IPv4Address(NEXT_HOP4).packed)), internal=replace(inst.internal, next_hop=NextHop(
            ip=ipaddress.IPv6Address(NEXT_HOP6).packed)))])
    eng = Engine(cfg)
    assert eng.next_hop_macs() == (None, None)
    eng.set_next_hops(bytes.fromhex(HOST_MAC.replace(":", "")), None)
    assert eng.next_hop_macs() == (bytes.fromhex(HOST_MAC.replace(":", "")), None)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    up = bytes(eth / IPv6(src=ROWS[0][3], dst=AFTR6) / IP(src=ROWS[0][0], dst="203.0.113.9")
               / UDP(sport=port_of(*ROWS[0][1:3], 7), dport=53))
    out = _frames(eng, eng.process(eng.pool.store([]), eng.pool.store([up]), 1.0))
    assert [f[:6] for f in out.v4] == [bytes.fromhex(HOST_MAC.replace(":", ""))]      # no ARP request
    assert len(out.v6) == 1 and out.v6[0][-32] == 135                                  # the NS


@pytest.mark.parametrize("proxy", [False, True])
def test_the_punt_to_the_kernel_is_decided_in_the_kernels(proxy):
    """Kernel mode: frames for the router, multicast, link-local and other ethertypes
    leave ``process`` for the TAPs without the slow path (with ``answer-arp-for-softwires``,
    ARP for a softwire's address is answered instead), an ingress filter applied, counted
    ``to-kernel-*``; the slow path's frames and counters."""
    from lwaftr.config.model import ControlPlane
    from scapy.layers.l2 import ARP
    cfg = make_config(ROWS, ingress_filter="not udp port 3784")
    cfg = replace(cfg, control_plane=ControlPlane(answer_arp_for_softwires=proxy))
    eth = Ether(dst="02:00:00:00:00:01", src=HOST_MAC)
    softwire = Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC) / ARP(pdst="192.0.2.1", psrc="203.0.113.9")
    v4 = _arp_traffic() + [bytes(softwire), bytes(eth / IP(src="203.0.113.9", dst=AFTR4) / ICMP()),
                           bytes(eth / IP(src="203.0.113.9", dst="224.0.0.5", proto=89))]
    v6 = _ndp_traffic() + [bytes(eth / IPv6(src="fe80::22", dst="fe80::2") / UDP(dport=3784)),      # filtered
                           bytes(eth / IPv6(src="2001:db8:2::9", dst=AFTR6) / ICMPv6EchoRequest())]
    got, c = _compiled_as_slow(cfg, v4, v6, kernel=True)
    assert len(got.v4) == int(proxy) and got.v6 == []
    assert got.kernel4 == v4[:6] + v4[6 + proxy:] and got.kernel6 == v6[:6] + v6[7:]
    assert c["to-kernel-ipv4-interface-packets"] == len(v4) - proxy and c["to-kernel-ipv6-interface-packets"] == 7
    assert c["drop-ingress-filter-ipv6-packets"] == 1


# Where a frame the kernels finish leaves, by the side it came in on and its next node.  An
# ICMPv4 error addressed to a softwire's address (ERRHAIR, RELAYHAIR, HAIRERR) is hairpinned:
# it leaves encapsulated on side 6 whichever side the frame came in on.
_LEAVES = {(4, K.TX): {6}, (4, K.FRAG): {6}, (4, K.ERR): {4}, (4, K.ECHO): {4}, (4, K.DROP): set(),
           (4, K.ERRHAIR): {6},
           (6, K.TX): {4}, (6, K.RELAY): {4}, (6, K.HAIRPIN): {6}, (6, K.ERR): {6}, (6, K.ECHO): {6},
           (6, K.DROP): set(), (6, K.FRAG4): {4}, (6, K.HAIRFRAG): {6}, (6, K.HAIRERR): {6},
           (6, K.RELAYHAIR): {6},
           # ARP/NDP answered in place, consumed; the kernel's (to its TAP, no side's output)
           (4, K.ECHOFRAG): {4}, (6, K.ECHOFRAG): {6},      # echo replies over the MTU, cut
           (4, control.ANSWER): {4}, (6, control.ANSWER): {6}, (4, control.CONSUME): set(),
           (6, control.CONSUME): set(), (4, control.KERNEL): set(), (6, control.KERNEL): set()}


#: The codes an ICMPv4 error a hairpinned packet drew (hairpinned back to its sender) can itself
#: be dropped for: over the rate limit, refused by allow-incoming-icmp, quoting a port no softwire
#: owns, refused by the egress filter.
_ERROR_DROPS = {C.E_OVER_RATE_LIMIT_ICMPV4, C.E_HAIRPIN_ICMPV4_POLICY, C.E_HAIRPIN_ICMPV4_NO_SOFTWIRE,
                C.E_EGRESS_FILTER_IPV6}


def _widest(names, exclude=()) -> int:
    """The code with the most counters whose packet counts are all in ``names`` (its
    byte counts go with them, but add nothing for an empty frame)."""
    best, width = 0, 0
    for code in range(1, C.N_ERRORS):
        want = C.error_counts(code, 0)
        if code not in exclude and all(name in names for name, k in want.items() if k) and len(want) > width:
            best, width = code, len(want)
    return best


def _reference_code(delta: dict[str, int]) -> int:
    """The error code the reference's counters say one packet had: the most
    specific code all of whose counts are in ``delta`` (0: none).  A frame can
    show two reasons, its own and then its ICMPv4 error's (a hairpinned packet
    whose error, hairpinned back, is dropped): when the most specific is one an
    error is dropped for and the other counters still show a reason (other than
    ``hairpinned``, the totals that go with one), the frame's code is that one,
    the first.  ``hairpinned`` (the IPv6 side's totals that go with a hairpin-*
    code) is never a frame's own code."""
    best = _widest(delta, (C.E_HAIRPINNED,))
    if best in _ERROR_DROPS:
        rest = set(delta) - set(C.error_counts(best, 0))
        first = _widest(rest, (C.E_HAIRPINNED,))
        if first:
            return first
    return best


@st.composite
def code_scenario(draw):
    """A wide scenario or a default one with pcap filters, with low ICMP error rate
    limits or not, reserved ports or not, pings to the router's addresses and a
    BR mixed in, and one subscriber's address monitored or not."""
    from lwaftr.examples import BR as AFTR_V6          # the example's internal address is its first BR
    if draw(st.booleans()):
        cfg, kernel, batches = draw(wide_scenario())
    else:
        _, cfg, v4, v6 = draw(scenario())
        kernel, batches = False, [(v4, v6)]
    if draw(st.booleans()):
        cfg = replace(cfg, external=replace(cfg.external, error_rate_limit_packets=draw(st.integers(1, 3))),
                      internal=replace(cfg.internal, error_rate_limit_packets=draw(st.integers(1, 3))))
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    aftr4, aftr6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(AFTR_V6))
    pings4 = [bytes(eth / IP(src="203.0.113.9", dst=aftr4) / ICMP(type=8, id=1, seq=i)) for i in range(2)]
    pings6 = [bytes(eth / IPv6(src="2001:db8:2::9", dst=d) / ICMPv6EchoRequest(id=2, seq=1))
              for d in (aftr6, "2001:db8:ffff::2")]
    if cfg.external.vlan_tag is None and draw(st.booleans()):
        batches = [(v4 + draw(st.lists(st.sampled_from(pings4), max_size=2)),
                    v6 + draw(st.lists(st.sampled_from(pings6), max_size=2))) for v4, v6 in batches]
    if draw(st.booleans()):            # the lowest 2^a ports of an address are no softwire's
        b = cfg.bindings
        per = {ip: draw(st.sampled_from([0, 4, 8])) for ip in sorted(set(b.ipv4.tolist()))}
        cfg = replace(cfg, bindings=replace(b, reserved_ports_bit_count=np.array(
            [per[ip] for ip in b.ipv4.tolist()], np.uint8)))
    monitor = draw(st.sampled_from([None, None, "192.0.2.1"]))
    drawn = draw(st.sampled_from([None, None, None, 4, 6]))
    unresolved = set() if drawn is None else {drawn}
    inst = cfg.instance
    if not kernel:                       # (the wide scenario's next hops learned by ARP or NDP)
        unresolved |= {side for side, hop in ((4, inst.external.next_hop), (6, inst.internal.next_hop))
                       if hop.mac is None}
    if not unresolved and draw(st.booleans()):     # (unresolved: no slot could hold one beyond a slot whole)
        batches = batches + [_fragmented(eth, draw(st.sampled_from([1500, 3000, 9000])))]
    if drawn and not kernel:             # (kernel mode: the kernel knows no MAC for it)
        from lwaftr.config.model import NextHop
        if drawn == 4:
            hop = NextHop(ip=ipaddress.IPv4Address(NEXT_HOP4).packed)
            inst = replace(inst, external=replace(inst.external, next_hop=hop))
        else:
            inst = replace(inst, internal=replace(inst.internal, next_hop=NextHop(ip=_NEXT_HOP6)))
        cfg = replace(cfg, instances=[inst])
    return cfg, kernel, batches, monitor, frozenset(unresolved)


_NEXT_HOP6 = ipaddress.IPv6Address("2001:db8:ffff::fe").packed     # an IPv6 next hop to resolve by NDP


def _fragmented(eth, size: int) -> tuple[list[bytes], list[bytes]]:
    """Packets of ``size`` data bytes in fragments (reassembled in a slot, or beyond one
    from ~1.9 KB), each side: to a softwire, a ping to the router; from a B4 to the
    Internet, hairpinned, a ping to the router; and a Neighbour Solicitation for the
    router in two fragments (264 bytes: built-in, answered after reassembly)."""
    from scapy.layers.inet6 import ICMPv6ND_NS
    from lwaftr.examples import BR as AFTR_V6
    aftr4, aftr6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(AFTR_V6))
    d = bytes(size)
    p = port_of(1, 4, 7)
    v4 = [bytes(eth / f) for pkt in (IP(src="203.0.113.9", dst="192.0.2.1", id=9) / UDP(sport=53, dport=p) / d,
                                     IP(src="203.0.113.9", dst=aftr4, id=10) / ICMP(type=8, id=1) / d)
          for f in fragment(IP(bytes(pkt)), 1400)]
    v6 = []
    for ident, (dst, nh, inner) in enumerate([
            ("2001:db8:ffff::1", 4, IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=p, dport=53) / d),
            ("2001:db8:ffff::1", 4, IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=p, dport=53) / d),
            (aftr6, 58, ICMPv6EchoRequest(id=2, data=d))]):
        data = bytes(inner)
        v6 += [bytes(eth / IPv6(src="2001:db8:1::1", dst=dst) / IPv6ExtHdrFragment(
            nh=nh, offset=a // 8, m=int(a + 1400 < len(data)), id=ident) / Raw(data[a:a + 1400]))
            for a in range(0, len(data), 1400)]
    ns = bytes(IPv6(src="fe80::22", dst=aftr6, hlim=255) / ICMPv6ND_NS(tgt=aftr6) / Raw(b"\xc8\x1e" + bytes(238)))
    v6 += [bytes(eth / IPv6(src="fe80::22", dst=aftr6, hlim=255) / IPv6ExtHdrFragment(
        nh=58, offset=a // 8, m=int(a == 0), id=7) / Raw(ns[40 + a:40 + a + 152])) for a in (0, 152)]
    return v4, v6


def _neighbour_frame(frame: bytes) -> bool:
    """ARP, or NDP (ICMPv6 133-137 right after the IPv6 header), tagged or not."""
    from lwaftr.dataplane import vlan as V
    if len(frame) < 14:
        return False
    if frame[12:14] == b"\x81\x00":
        frame = V.pop_tag(frame)
    if frame[12:14] == b"\x08\x06":
        return True
    return frame[12:14] == b"\x86\xdd" and len(frame) > 54 and frame[20] == 58 and 133 <= frame[54] <= 137


def _neighbour_request(frame: bytes) -> bool:
    """An ARP request or a Neighbour Solicitation (untagged or tagged)."""
    from lwaftr.dataplane import vlan as V
    if frame[12:14] == b"\x81\x00":
        frame = V.pop_tag(frame)
    return _neighbour_frame(frame) and (frame[20:22] == b"\x00\x01" if frame[12:14] == b"\x08\x06"
                                        else frame[54] == 135)


def _ipv4_changed(frame: bytes, at: int, value: bytes, fix: bool = True) -> bytes:
    """``frame`` (Ethernet, IPv4 with IHL 5) with ``value`` written ``at`` bytes into its
    IPv4 header; ``fix``: the header checksum recomputed after."""
    from lwaftr.dataplane.icmp import checksum
    h = bytearray(frame[14:34])
    h[at:at + len(value)] = value
    if fix:
        h[10:12] = b"\0\0"
        h[10:12] = checksum(bytes(h)).to_bytes(2, "big")
    return frame[:14] + bytes(h) + frame[34:]


def _per_packet(cfg, kernel: bool, batches: list, monitor: str | None = None,
                unresolved: frozenset[int] = frozenset()) -> set[tuple[int, int, int]]:
    """Every frame alone through the kernels and through the reference slow path.
    The kernels must finish every frame (none left to the slow path); its next
    node must send it out of the side(s) the reference sends its output to
    (nowhere for DROP), and its error code must be the one the reference's
    counters show for that frame (the most specific code of
    ``lwaftr.counters.ERRORS`` whose counters it added); the frames and, at the
    end, all counters must be the same.  Returns the (side, next node, error
    code) compared.  ``monitor``: an address whose traffic both engines mirror
    (the same frames must be mirrored).  ``unresolved``: the sides (4, 6) whose
    next hops are not known (``cfg`` names their addresses; kernel mode: the kernel
    has no MAC for them): what would leave on one is held (dropped in kernel mode)
    until an ARP reply or NA among the frames teaches its MAC, in the kernels too."""
    fast = Engine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    if kernel:
        for e in (fast, slow):
            e.set_next_hops(None if 4 in unresolved else bytes.fromhex("020000000011"),
                            None if 6 in unresolved else bytes.fromhex("020000000022"))
    if monitor:
        for e in (fast, slow):
            e.set_monitor(int(ipaddress.IPv4Address(monitor)))
    if unresolved and not kernel:       # the first request for the next hop, before the traffic
        assert _frames(fast, fast.process(fast.pool.store([]), fast.pool.store([]), 9.5)) \
            == slow.process_frames([], [], 9.5)
    kinds = set()
    for t, (v4, v6) in enumerate(batches):
        for side, frame in [(4, f) for f in v4] + [(6, f) for f in v6]:
            one4, one6 = ([frame], []) if side == 4 else ([], [frame])
            waiting = {u for u in unresolved if not fast.params[K.P_V4_RESOLVED if u == 4 else K.P_V6_RESOLVED]}
            got = _frames(fast, fast.process(fast.pool.store(one4), fast.pool.store(one6), 10.0 + t))
            before = C.to_dict(slow.counters)
            want = slow.process_frames(one4, one6, 10.0 + t)
            r4, r6 = want.v4, want.v6
            delta = {k: v - before.get(k, 0) for k, v in C.to_dict(slow.counters).items() if v != before.get(k, 0)}
            assert got == want          # each side's frames, the TAPs' and the mirrored ones
            next4, err4, next6, err6 = fast.batch_codes()
            nexts, errs = (next4, err4) if side == 4 else (next6, err6)
            if len(nexts) == 0:         # absorbed by reassembly, or untagged away
                continue
            assert nexts[0] != K.SLOW, (side, frame.hex())      # every frame compiled, ARP and NDP too
            sides = {4} if [f for f in r4 if 4 not in unresolved or not _neighbour_request(f)] else set()
            sides |= {6} if [f for f in r6 if 6 not in unresolved or not _neighbour_request(f)] else set()
            leaves = _LEAVES[side, int(nexts[0])]
            # (Echo and ARP/NDP replies go back as they came: no next hop.  An ARP reply or NA
            # from the next hop earlier in the traffic may have resolved it since.)
            still = {u for u in unresolved if not fast.params[K.P_V4_RESOLVED if u == 4 else K.P_V6_RESOLVED]}
            if nexts[0] not in (K.ECHO, K.ECHOFRAG, control.ANSWER):
                leaves = leaves - still
            sides -= waiting - still    # (the frame taught the next hop: what waited for it left)
            assert leaves == sides, (side, int(nexts[0]), delta)
            want = _reference_code(delta)
            assert int(errs[0]) == want, (C.ERROR_NAMES[int(errs[0])], C.ERROR_NAMES[want], delta)
            kinds.add((side, int(nexts[0]), want))
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    return kinds


@settings(SETTINGS, max_examples=200)
@given(code_scenario())
def test_each_packets_next_node_and_error_code_are_the_references(sc):
    """The per-packet model test over random tables, configurations and traffic."""
    cfg, kernel, batches, monitor, unresolved = sc
    _per_packet(cfg, kernel, batches, monitor, unresolved)


def test_every_next_node_and_error_code_is_compared_with_the_reference():
    """The per-packet comparison over traffic built to reach every next node and
    every error code the kernels give a received frame (the others are only ever
    counted: an ICMPv6 error over the rate limit, a frame without its VLAN tag,
    fragments short of slots, reassembly's and the slow-path budget's drops,
    which concern frames that never reach the later stages, and "hairpinned", the
    IPv6 side's totals that go with a hairpin-* code)."""
    from lwaftr.examples import BR as AFTR_V6
    rows = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 1)]
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    aftr4, aftr6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(AFTR_V6))
    p1 = port_of(1, 4, 7)

    def from_b4(inner, b4="2001:db8:1::1", br="2001:db8:ffff::1"):
        return bytes(eth / IPv6(src=b4, dst=br) / inner)

    def icmp6_error(t: int, code: int) -> bytes:     # about a packet we tunnelled to B4 1
        ours = bytes(IPv6(src="2001:db8:ffff::1", dst="2001:db8:1::1") / IP(src="203.0.113.9", dst="192.0.2.1")
                     / UDP(sport=53, dport=p1) / bytes(40))
        return bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=58)
                     / Raw(bytes([t, code, 0, 0]) + (1280).to_bytes(4, "big") + ours))

    err4, err6 = _error_traffic()
    tx4 = bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(300))
    tx6 = from_b4(IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=p1, dport=53) / bytes(300))
    hairpin = from_b4(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=p1, dport=53))
    big4 = bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(1400))
    icmp4 = [bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / ICMP(type=0, id=p1)),
             bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / ICMP(type=0, id=3)),           # no softwire
             bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / ICMP(type=0, id=p1, chksum=7))]  # bad sum
    pings = ([bytes(eth / IP(src="203.0.113.9", dst=aftr4) / ICMP(type=8, id=1))],
             [bytes(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / ICMPv6EchoRequest(id=2)),
              bytes(eth / IPv6(src="2001:db8:2::9", dst="2001:db8:ffff::2") / ICMPv6EchoRequest(id=3))])
    relays = [icmp6_error(t, c) for t, c in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (1, 0))]
    base = make_config(rows, hairpinning=True, mtu=1280)
    quiet = replace(make_config(rows, generate_icmp_errors=False),
                    external=replace(base.external, generate_icmp_errors=False))
    no_icmp = replace(make_config(rows, allow_incoming_icmp=False),
                      external=replace(base.external, allow_incoming_icmp=False))
    filtered = replace(make_config(rows, ingress_filter="len < 1000", egress_filter="len < 200"),
                       external=replace(base.external, ingress_filter=f"not udp dst port {p1 + 1}",
                                        egress_filter="len < 200"))
    p_in = bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1 + 1))
    limited = replace(base, external=replace(base.external, error_rate_limit_packets=1))
    seen = set()
    seen |= _per_packet(base, False, [(err4 + [tx4, big4] + icmp4 + pings[0], err6 + [tx6, hairpin] + pings[1])])
    seen |= _per_packet(quiet, False, [(err4, err6)])
    seen |= _per_packet(no_icmp, False, [(icmp4, pings[1])])
    seen |= _per_packet(no_icmp, True, [([], relays[:1])])
    seen |= _per_packet(filtered, False, [([tx4, p_in], [tx6, from_b4(IP(src="192.0.2.1", dst="203.0.113.9")
                                                                     / UDP(sport=p1, dport=53) / bytes(1200))])])
    seen |= _per_packet(limited, True, [([], relays)])
    # Decapsulated over the external MTU (fragmented; with DF: dropped uncounted; a total length
    # beyond the frame: malformed), hairpinned over the internal one, a malformed inner IPv4
    # header; hairpinned packets drawing errors (a miss, ICMP for no softwire, TTL, DF), with
    # errors on and off; errors for softwires' addresses from either side, hairpinned.
    p2 = 4321                                        # B4 2 owns all of 192.0.2.2's ports
    narrow = replace(base, external=replace(base.external, mtu=576))
    big6 = [from_b4(IP(src="192.0.2.1", dst="203.0.113.9", flags=fl) / UDP(sport=p1, dport=53) / bytes(700))
            for fl in (0, "DF")]
    big6.append(from_b4(IP(src="192.0.2.1", dst="203.0.113.9", len=900) / UDP(sport=p1, dport=53) / bytes(700)))
    hair = [from_b4(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=p1, dport=53) / bytes(1300)),      # fragmented
            from_b4(IP(src="192.0.2.1", dst="192.0.2.1") / UDP(sport=p1, dport=80)),                  # no softwire
            from_b4(IP(src="192.0.2.1", dst="192.0.2.1") / ICMP(type=8, id=p1)),                     # ICMP, none
            from_b4(IP(src="192.0.2.1", dst="192.0.2.2", ttl=1) / UDP(sport=p1, dport=53)),           # TTL
            from_b4(IP(src="192.0.2.1", dst="192.0.2.2", flags="DF") / UDP(sport=p1, dport=53) / bytes(1300)),
            *(bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=4) / Raw(bytes([vihl]) + bytes(30)))
              for vihl in (0x55, 0x43))]                                                             # malformed
    to_sw4 = bytes(eth / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=p2, dport=80))
    ours = bytes(IPv6(src="2001:db8:ffff::1", dst="2001:db8:1::1") / IP(src="192.0.2.2", dst="192.0.2.1")
                 / UDP(sport=p2, dport=p1) / bytes(40))
    relay_sw = bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=58)
                     / Raw(bytes([1, 0, 0, 0]) + bytes(4) + ours))
    quiet_hair = replace(quiet, internal=replace(quiet.internal, hairpinning=True, mtu=1280))
    no_icmp4 = replace(base, external=replace(base.external, allow_incoming_icmp=False))
    # Two reasons: the hairpinned packet's, then its error's (the error quotes ICMP, whose type
    # and code make a port B4 1 does not own; refused by policy; over the rate limit).
    icmp_ttl = from_b4(IP(src="192.0.2.1", dst="192.0.2.2", ttl=1) / ICMP(type=8, id=p1))
    seen |= _per_packet(narrow, False, [([to_sw4], big6 + hair + [relay_sw, icmp_ttl])])
    seen |= _per_packet(quiet_hair, False, [([], hair)])
    seen |= _per_packet(no_icmp4, False, [([to_sw4], [relay_sw, hair[1], hair[3]])])
    seen |= _per_packet(limited, False, [([], [hair[3], hair[3], hair[1], hair[1]])])
    seen |= _per_packet(base, False, [(_arp_traffic(), _ndp_traffic())])       # answered, consumed
    # Malformed from the Internet: a bad header checksum, a total length beyond the frame,
    # below the IHL, not version 4.
    udp = bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p1) / bytes(20))
    bad4 = [_ipv4_changed(udp, 10, b"\x12\x34", fix=False), _ipv4_changed(udp, 2, (999).to_bytes(2, "big")),
            _ipv4_changed(udp, 2, (8).to_bytes(2, "big")), _ipv4_changed(udp, 0, b"\x65")]
    seen |= _per_packet(base, False, [(bad4, [])])
    seen |= _per_packet(base, True, [(bad4, [])])
    seen |= _per_packet(base, True, [(_arp_traffic()[:1], _ndp_traffic()[:1])])  # the kernel's
    seen |= _per_packet(base, False, _misfits(eth, from_b4, p1))
    seen |= _per_packet(base, False, [_fragmented(eth, 1500), _fragmented(eth, 9000)])   # pings cut too
    seen |= _per_packet(no_icmp, False, [([], [bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1")
                                                     / ICMPv6DestUnreach())])])
    seen |= _per_packet(no_icmp4, False, [([], [from_b4(IP(src="192.0.2.1", dst="192.0.2.2")
                                                        / ICMP(type=8, id=p1))])])
    assert {(side, n) for side, n, _ in seen} == set(_LEAVES)
    codes = {C.ERROR_NAMES[e] for _, _, e in seen}
    # Never a received frame's first reason: "hairpinned" (always with a hairpin-* code);
    # "unclassified" must never be seen (no stage left a frame untaken).
    assert set(C.ERROR_NAMES) - codes == {"over-rate-limit-icmpv6", "wrong-vlan", "pool-exhausted",
                                          "frag-invalid-ipv4", "frag-invalid-ipv6", "frag-evicted-ipv4",
                                          "frag-evicted-ipv6", "over-budget", "hairpinned", "unclassified"}


def _misfits(eth, from_b4, p1: int) -> list[tuple[list[bytes], list[bytes]]]:
    """Frames that are not the lwAFTR's common traffic, each compiled as the reference takes
    it: runts of either family; another ethertype on each side; an IPv4 header with no port
    after it (a miss); pings to the router whose header the echo stage trusts (bad checksum,
    options, another version); ICMP to the router that is not a ping; IPv6 carrying neither
    IPv4 nor ICMPv6, with a bad version, ICMPv6 cut short or of an unknown type, NDP that is not
    for us; hairpinned fragments and ICMP with a bad checksum."""
    from lwaftr.examples import BR as AFTR_V6
    aftr4, aftr6 = str(ipaddress.IPv4Address(AFTR_V4)), str(ipaddress.IPv6Address(AFTR_V6))
    ping = bytes(eth / IP(src="203.0.113.9", dst=aftr4) / ICMP(type=8, id=1))
    ping6 = bytes(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / ICMPv6EchoRequest(id=2))
    v4 = [b"", bytes(eth)[:10], bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1"))[:30],
          bytes(eth / IP(src="203.0.113.9", dst="192.0.2.1", proto=17)),                      # 34 bytes: no port
          bytes(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / UDP()),                          # IPv6 on the IPv4 side
          bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=0x88B5) / Raw(bytes(46))),
          _ipv4_changed(ping, 10, b"\x12\x34", fix=False), _ipv4_changed(ping, 0, b"\x65"),
          ping[:14] + _with_options(ping[14:], b"\x01" * 4),
          bytes(eth / IP(src="203.0.113.9", dst=aftr4) / ICMP(type=0, id=1)),
          bytes(eth / IP(src="203.0.113.9", dst=aftr4) / ICMP(type=3, code=1) / bytes(28)),
          _ipv4_changed(bytes(eth / IP(src="203.0.113.9", dst=aftr4) / UDP(sport=1, dport=53)), 10, b"\0\1",
                        fix=False)]
    v6 = [b"", bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1"))[:40],
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", plen=200) / UDP()),
          bytes(eth / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=p1, dport=53)),     # IPv4 on the IPv6 side
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / UDP(sport=p1, dport=53)),
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=60) / Raw(b"\x04\x00" + bytes(6))
                / IP(src="192.0.2.1", dst="203.0.113.9") / UDP(sport=p1, dport=53)),      # options: no limit
          (lambda f: f[:14] + b"\x50" + f[15:])(from_b4(IP(src="192.0.2.1", dst="203.0.113.9")
                                                       / UDP(sport=p1, dport=53))),
          (lambda f: f[:14] + b"\x50" + f[15:])(ping6),                                     # answered all the same
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=58) / Raw(bytes([1, 0]))),
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=58) / Raw(bytes([130, 0]) + bytes(22))),
          bytes(eth / IPv6(src="2001:db8:2::9", dst=aftr6) / ICMPv6EchoRequest(code=1)),
          bytes(eth / IPv6(src="2001:db8:2::9", dst=aftr6, nh=58) / Raw(bytes([129, 0]) + bytes(6))),
          bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / ICMPv6DestUnreach()),  # quotes nothing
          from_b4(IP(src="192.0.2.1", dst="192.0.2.2", flags="MF") / UDP(sport=p1, dport=53) / bytes(16)),
          from_b4(IP(src="192.0.2.1", dst="192.0.2.2", frag=4) / Raw(bytes(16))),
          from_b4(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, id=p1, chksum=7)),
          from_b4(IP(src="192.0.2.1", dst="192.0.2.2", len=22, proto=17) / Raw(bytes(4))),     # no port: a miss
          from_b4(IP(src="192.0.2.1", dst="192.0.2.2", len=300) / UDP(sport=p1, dport=53))]    # longer than it is
    return [([f], []) for f in v4] + [([], [f]) for f in v6]


# -- IPv4 fragmentation of decapsulated packets, hairpinned IPv6 fragmentation, IPv4 options ---------------

#: IPv4 option bytes (padded to a 4-byte multiple with EOL): NOPs, record route (not copied: NOP'd
#: out of later fragments), security (copied), one whose length does not parse, the longest (40 bytes).
OPTIONS = [b"", b"", b"\x01" * 4, b"\x07\x07\x04" + bytes(4), b"\x82\x0b" + bytes(9),
           b"\x01\x07\x03\x04\x82\x04\x00\x00", b"\x44\x01", b"\x07\x27\x04" + bytes(36)]


def _with_options(pkt: bytes, opts: bytes, ihl: int | None = None) -> bytes:
    """The IPv4 packet ``pkt`` (IHL 5) with ``opts`` after its header, padded with EOL;
    ``ihl``: the IHL field to write instead of the true one (a lying or malformed header)."""
    from lwaftr.dataplane.icmp import checksum
    opts += bytes(-len(opts) % 4)
    h = bytearray(pkt[:20])
    h[0] = 0x40 | (ihl if ihl is not None else 5 + len(opts) // 4)
    h[2:4] = (int.from_bytes(h[2:4], "big") + len(opts)).to_bytes(2, "big")
    h[10:12] = b"\0\0"
    h[10:12] = checksum(bytes(h) + opts).to_bytes(2, "big")
    return bytes(h) + opts + pkt[20:]


@st.composite
def _decapsulated(draw, rows, hairpinning: bool):
    """A frame from a bound B4 whose inner IPv4 packet may exceed the external MTU (any flags,
    an inner fragment too), carry options, padding after its total length, a total length
    beyond the frame, or a malformed header; or one hairpinned to another softwire (or to no
    softwire), which may be over the internal MTU (with DF or not) or expire (TTL <= 1), so that
    an ICMPv4 error goes back to its sender, hairpinned too."""
    ip, psid, k, b4, br = draw(st.sampled_from(rows))
    sport = port_of(psid, k, draw(st.integers(0, 65535)))
    size = draw(st.sampled_from([0, 100, 500, 540, 556, 557, 1000, 1252, 1253, 1460, 1461, 1700]))
    hairpin = hairpinning and draw(st.booleans())
    if hairpin:
        dip, dpsid, dk, _, _ = draw(st.sampled_from(rows))
        dport = port_of(dpsid, dk, draw(st.integers(0, 65535))) if draw(st.integers(0, 3)) else \
            draw(st.integers(0, 65535))
        flags, frag = draw(st.sampled_from(["", "DF"])), 0
        ttl = draw(st.sampled_from([0, 1, 2, 64, 64]))
    else:
        dip, dport = "203.0.113.9", draw(st.integers(0, 65535))
        flags = draw(st.sampled_from(["", "", "DF", "MF", "DF+MF"]))
        frag = draw(st.sampled_from([0, 0, 1, 185, 8000]))
        ttl = draw(st.sampled_from([1, 64]))
    l4 = UDP(sport=sport, dport=dport) / bytes(size)
    if draw(st.integers(0, 3)) == 0:
        l4 = ICMP(type=8, id=sport) / bytes(size)
    inner = bytes(IP(src=ip, dst=dip, ttl=ttl, flags=flags, frag=frag, id=draw(st.integers(0, 65535))) / l4)
    opts = draw(st.sampled_from(OPTIONS))
    how = draw(st.sampled_from(["ok"] * 6 + ([] if hairpin else ["lying-ihl", "short-ihl", "version", "long"])))
    if how == "lying-ihl":             # the header claims its first ports as options
        inner = _with_options(inner, opts, ihl=draw(st.sampled_from([6, 15])))
    elif how == "short-ihl":
        inner = _with_options(inner, opts, ihl=draw(st.integers(0, 4)))
    elif how == "version":
        inner = bytes([0x65]) + inner[1:]
    else:
        inner = _with_options(inner, opts)
    if how == "long":                  # a total length beyond the frame: the fragmenter drops it
        inner = inner[:2] + (len(inner) + draw(st.integers(1, 9))).to_bytes(2, "big") + inner[4:]
    inner += bytes(draw(st.sampled_from([0, 0, 0, 3, 40])))       # link padding after the packet
    outer = IPv6(src=b4, dst=[BR0, BR1][br], nh=4, hlim=64)
    if draw(st.integers(0, 4)) == 0:   # Linux ip6tnl's Tunnel Encapsulation Limit header
        from scapy.layers.inet6 import HBHOptUnknown, IPv6ExtHdrDestOpt
        outer = IPv6(src=b4, dst=[BR0, BR1][br], hlim=64) / IPv6ExtHdrDestOpt(
            nh=4, options=[HBHOptUnknown(otype=4, optdata=b"\x04")])
    from scapy.packet import Raw
    return bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22") / outer / Raw(inner))


@st.composite
def _with_options_from_the_internet(draw, rows):
    """An Internet frame with IPv4 options to a bound or unbound (address, port), of any
    size (too big for the tunnel, with DF or not), TTL, and ICMP kind, from a host or from a
    softwire's address (an error for it is hairpinned to the softwire)."""
    if draw(st.booleans()):
        ip, psid, k, _, _ = draw(st.sampled_from(rows))
        dport = port_of(psid, k, draw(st.integers(0, 65535)))
    else:
        ip, dport = f"192.0.2.{draw(st.integers(1, 5))}", draw(st.integers(0, 65535))
    size = draw(st.sampled_from([0, 10, 500, 1200, 1460, 1700]))
    kind = draw(st.sampled_from(["udp", "tcp", "echo-reply", "echo-request", "error"]))
    if kind == "udp":
        l4 = UDP(sport=53, dport=dport) / bytes(size)
    elif kind == "tcp":
        from scapy.layers.inet import TCP
        l4 = TCP(sport=80, dport=dport) / bytes(size)
    elif kind == "error":             # about a packet the subscriber sent, its options too
        quoted = _with_options(bytes(IP(src=ip, dst="203.0.113.9") / UDP(sport=dport, dport=53) / bytes(8)),
                               draw(st.sampled_from(OPTIONS)))
        l4 = ICMP(type=3, code=3) / quoted
    else:
        l4 = ICMP(type=0 if kind == "echo-reply" else 8, id=dport) / bytes(size)
    src = draw(st.sampled_from(["203.0.113.9", "203.0.113.9", rows[0][0], rows[-1][0]]))
    if src != "203.0.113.9" and kind in ("udp", "tcp"):
        l4.sport = draw(st.sampled_from([port_of(rows[0][1], rows[0][2], 9), 53]))
    pkt = bytes(IP(src=src, dst=ip, ttl=draw(st.sampled_from([0, 1, 2, 64])),
                   flags=draw(st.sampled_from(["", "DF"]))) / l4)
    from scapy.packet import Raw
    return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11", type=0x0800)
                 / Raw(_with_options(pkt, draw(st.sampled_from(OPTIONS[2:])))))


@st.composite
def fragmentation_scenario(draw):
    """Configurations (external MTU 576, 1280 or 1500; VLANs; kernel mode; ICMP policies) and
    traffic the kernels now finish: decapsulated packets over the external MTU, hairpinned
    ones over the internal MTU, IPv4 options on both sides, malformed inner IPv4 headers."""
    from lwaftr.dataplane import vlan as V
    rows = draw(tables())
    hairpinning = draw(st.booleans())
    cfg = make_config(rows, hairpinning=hairpinning, generate_icmp_errors=draw(st.booleans()),
                      mtu=draw(st.sampled_from([1280, 1500, 2000])))
    cfg = replace(cfg, external=replace(cfg.external, mtu=draw(st.sampled_from([576, 1280, 1500])),
                                        generate_icmp_errors=draw(st.booleans())))
    tags = draw(st.sampled_from([(None, None), (None, None), (7, 9)]))
    if tags[0] is not None:
        cfg = replace(cfg, external=replace(cfg.external, vlan_tag=tags[0]),
                      internal=replace(cfg.internal, vlan_tag=tags[1]))
    tag = lambda f, vid: V.push_tag(f, vid) if vid is not None else f     # noqa: E731
    v6 = [tag(f, tags[1]) for f in draw(st.lists(_decapsulated(rows, hairpinning), max_size=10))]
    v4 = [tag(f, tags[0]) for f in draw(st.lists(_with_options_from_the_internet(rows), max_size=6))]
    return cfg, draw(st.booleans()), v4, v6


@SETTINGS
@given(fragmentation_scenario())
def test_the_kernels_equal_the_slow_path_over_the_mtus_and_with_ipv4_options(sc):
    """Decapsulated packets over the external MTU (IPv4 fragments, trimmed, dropped for DF or
    as malformed), hairpinned ones over the internal MTU (IPv6 fragments), IPv4 options both
    ways, malformed inner headers: none reaches the slow path, and frames (in order), counters
    and slots equal the slow path's."""
    cfg, kernel, v4, v6 = sc
    _compiled_as_slow(cfg, v4, v6, kernel)


def _b4_big(size: int, opts: bytes = b"", **ip) -> bytes:
    """A frame from the first softwire of ``ROWS`` to the Internet, its UDP payload ``size`` bytes."""
    from scapy.packet import Raw
    inner = bytes(IP(src="192.0.2.1", dst="203.0.113.9", **ip) / UDP(sport=4097, dport=53)
                  / bytes(i & 0xFF for i in range(size)))
    return bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
                 / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=4) / Raw(_with_options(inner, opts)))


@pytest.mark.parametrize("vlan", [None, 7])
def test_ipv4_fragmentation_is_compiled(vlan):
    """RFC 791 3.2 at an external MTU of 576: 552 data bytes a fragment but the last, offsets
    in 8-byte units, MF on all but the last, one fresh ID per datagram from the counter the
    slow path shares, header checksums right, the record-route option (not copied) NOP'd out
    of later fragments and security (copied) kept; an inner fragment keeps its ID, offset and
    MF; DF: dropped uncounted; a packet that fits once its padding is cut leaves trimmed."""
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, mtu=576))
    if vlan:
        cfg = replace(cfg, external=replace(cfg.external, vlan_tag=vlan))
    opts = b"\x01\x07\x07\x04" + bytes(4) + b"\x82\x04\x00\x00"      # NOP, record route, security
    v6 = [_b4_big(1200, id=1), _b4_big(1200, opts, id=2), _b4_big(1200, flags="DF", id=3),
          _b4_big(1200, flags="MF", frag=100, id=4), _b4_big(400, id=5) + bytes(300)]
    v6[-1] = v6[-1][:18] + (len(v6[-1]) - 54).to_bytes(2, "big") + v6[-1][20:]   # the padding in the tunnel
    from lwaftr.dataplane import vlan as V
    got, c = _compiled_as_slow(cfg, [], v6)
    frames = [Ether(V.pop_tag(f) if vlan else f) for f in got[0]]
    assert all(V.vid_of(f) == vlan for f in got[0]) if vlan else True
    ips = [f[IP] for f in frames]
    first, rest = ips[:3], ips[3:]
    # 1208 bytes after the header: 552 + 552 + 104.
    assert [(p.len - 20, p.frag * 8, p.flags.MF, p.id) for p in first] == \
        [(552, 0, 1, IDS[0] + 1), (552, 552, 1, IDS[0] + 1), (104, 1104, 0, IDS[0] + 1)]
    from lwaftr.dataplane.icmp import checksum
    for p in ips:                      # each header's checksum, recomputed
        raw = bytearray(bytes(p)[:p.ihl * 4])
        raw[10:12] = b"\0\0"
        assert checksum(bytes(raw)) == p.chksum
    # With options (32-byte header): 544 data bytes a fragment; RR NOP'd after the first, security kept.
    with_opts = rest[:3]
    assert [(p.ihl, p.len - 32, p.frag * 8, p.flags.MF, p.id) for p in with_opts] == \
        [(8, 544, 0, 1, IDS[0] + 2), (8, 544, 544, 1, IDS[0] + 2), (8, 120, 1088, 0, IDS[0] + 2)]
    assert bytes(with_opts[0])[20:32] == opts
    assert all(bytes(p)[20:32] == b"\x01" * 8 + b"\x82\x04\x00\x00" for p in with_opts[1:])
    assert b"".join(bytes(p)[p.ihl * 4:p.len] for p in first) == bytes(_b4_big(1200)[54 + 20:])
    # The inner fragment (offset 800, MF): its ID, offsets from 800, MF on every piece.
    refrag = rest[3:6]
    assert [(p.frag * 8, p.flags.MF, p.id) for p in refrag] == [(800, 1, 4), (1352, 1, 4), (1904, 1, 4)]
    assert rest[6].len == 428 and len(bytes(frames[-1])) == 14 + 428      # trimmed, not fragmented
    assert len(ips) == 10 and c["out-ipv4-frag"] == 9 and c["out-ipv4-frag-not"] == 1
    assert c["out-ipv4-packets"] == 5                                      # DF: counted out by the core, then dropped


def test_ipv4_fragmentation_drops_and_counts_when_the_pool_is_short():
    """Fragments need free slots: a packet whose fragments the pool cannot hold is dropped and
    counted (drop-pool-exhausted-packets), the others leave as the slow path cuts them, and
    every slot comes back."""
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, mtu=576))
    v6 = [_b4_big(1200, id=i) for i in range(6)]               # 3 fragments each: 2 more slots
    fast = Engine(cfg, fragment_id_seeds=IDS, pool_slots=16, max_batch=8)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS)
    o4, o6, *_ = fast.process(fast.pool.store([]), fast.pool.store(v6), 100.0)   # 10 slots free: 5 packets
    got = fast.pool.frames(o4)
    fast.pool.free(o4)
    fast.pool.free(o6)
    assert got == slow.process_frames([], v6[:5], 100.0)[0] and len(got) == 15
    c, want = C.to_dict(fast.counters, nonzero=True), C.to_dict(slow.counters, nonzero=True)
    assert c.pop("drop-pool-exhausted-packets") == 1
    for k in ("in-ipv6-bytes", "out-ipv4-bytes"):
        want[k] += want[k] // 5
    for k in ("in-ipv6-packets", "out-ipv4-packets", "in-ipv6-frag-reassembly-unneeded"):
        want[k] += 1
    assert c == want
    assert fast.pool.n_free[0] == fast.pool.n_slots, "slots leaked"


def test_hairpinned_packets_over_the_internal_mtu_are_fragmented_in_the_kernels():
    """Hairpinned without DF and too big for the tunnel: encapsulated and cut into IPv6
    fragments after the Internet side's (their IDs counting on from one counter)."""
    cfg = make_config(ROWS, hairpinning=True, mtu=1280)
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    v6 = [bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / IP(src="192.0.2.1", dst="192.0.2.2")
                / UDP(sport=4097, dport=80) / bytes(1300 + i)) for i in range(2)]
    v4 = [bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11") / IP(src="203.0.113.9", dst="192.0.2.2")
                / UDP(sport=1, dport=80) / bytes(1460))]
    got, c = _compiled_as_slow(cfg, v4, v6)
    ids = [Ether(f)[IPv6ExtHdrFragment].id for f in got[1]]
    assert ids == [IDS[1] + 1] * 2 + [IDS[1] + 2] * 2 + [IDS[1] + 3] * 2
    assert c["hairpin-ipv4-packets"] == 2 and c["out-ipv6-frag"] == 6


@pytest.mark.parametrize("errors", [True, False])
def test_errors_for_hairpinned_packets_go_back_to_their_sender_in_the_kernels(errors):
    """A hairpinned packet for no softwire, with TTL 1, or too big for the tunnel with DF draws
    an ICMPv4 error for its sender, a softwire: hairpinned in turn, encapsulated to the B4 of
    the port it quotes (RFC 7596 8.1), after the other hairpinned packets; an ICMP packet for
    no softwire is dropped silently.  Without the slow path, as it counts them."""
    cfg = make_config(ROWS, hairpinning=True, mtu=1280)
    cfg = replace(cfg, external=replace(cfg.external, generate_icmp_errors=errors))
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    a = eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1")
    v6 = [bytes(a / IP(src="192.0.2.1", dst="192.0.2.1") / UDP(sport=4097, dport=80)),           # no softwire
          bytes(a / IP(src="192.0.2.1", dst="192.0.2.2", ttl=1) / UDP(sport=4098, dport=80)),    # expires
          bytes(a / IP(src="192.0.2.1", dst="192.0.2.2", flags="DF") / UDP(sport=4099, dport=80)
                / bytes(1300)),                                                                  # too big, DF
          bytes(a / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4100, dport=80)),           # hairpinned
          bytes(a / IP(src="192.0.2.1", dst="192.0.2.1") / ICMP(type=8, id=4101))]               # ICMP, none
    got, c = _compiled_as_slow(cfg, [], v6)
    assert c["hairpin-ipv4-packets"] == 5 and c["drop-no-dest-softwire-ipv4-packets"] == 2
    if errors:
        kinds = [(Ether(f)[IPv6].dst, Ether(f)[IP].src, Ether(f)[ICMP].type, Ether(f)[ICMP].code) for f in got[1][1:]]
        aftr = str(ipaddress.IPv4Address(AFTR_V4))
        assert kinds == [("2001:db8:1::1", aftr, 3, 1), ("2001:db8:1::1", aftr, 11, 0), ("2001:db8:1::1", aftr, 3, 4)]
        assert c["out-icmpv4-error-packets"] == 3 and c["drop-in-by-rfc7596-icmpv4-packets"] == 1
    else:
        assert len(got[1]) == 1 and c["drop-out-by-policy-icmpv4-packets"] == 4


def test_errors_from_the_internet_for_a_softwire_are_hairpinned_in_the_kernels():
    """An Internet packet from a softwire's address (hairpinning off, it came back round) that
    draws an ICMPv4 error: the error goes to that softwire through its tunnel (to the B4 of
    the port it quotes), after the hairpinned packets; for no softwire, dropped silently."""
    cfg = make_config(ROWS, hairpinning=True)
    eth = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:11")
    v4 = [bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2", ttl=1) / UDP(sport=4097, dport=80)),   # to 2001:db8:1::1
          bytes(eth / IP(src="192.0.2.1", dst="192.0.2.1") / UDP(sport=80, dport=53)),             # quotes port 80: none
          bytes(eth / IP(src="203.0.113.9", dst="192.0.2.2") / UDP(sport=1, dport=80))]             # forwarded
    a = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22") / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1")
    v6 = [bytes(a / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4100, dport=80))]            # hairpinned
    got, c = _compiled_as_slow(cfg, v4, v6)
    assert [Ether(f)[IPv6].dst for f in got[1]] == ["2001:db8:1::2", "2001:db8:1::2", "2001:db8:1::1"]
    assert Ether(got[1][2])[ICMP].type == 11
    assert c["out-icmpv4-error-packets"] == 2 and c["drop-in-by-rfc7596-icmpv4-packets"] == 1


@pytest.mark.parametrize("errors", [True, False])
def test_icmpv6_errors_about_hairpinned_packets_are_relayed_to_their_softwire_in_the_kernels(errors):
    """RFC 2473 8.3 when the packet the B4 reports came from another softwire (hairpinned):
    the ICMPv4 error is hairpinned to that softwire (the B4 of the port it quotes), first in
    the hairpin round; quoting a port no softwire has, dropped silently (or by policy, with
    errors off: relays are sent regardless)."""
    cfg = make_config(ROWS, hairpinning=True)
    cfg = replace(cfg, external=replace(cfg.external, generate_icmp_errors=errors))
    from scapy.packet import Raw
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:22")
    v6 = []
    for sport in (4097, 80):
        ours = bytes(IPv6(src="2001:db8:ffff::2", dst="2001:db8:1::2") / IP(src="192.0.2.1", dst="192.0.2.2")
                     / UDP(sport=sport, dport=80) / bytes(100))
        v6.append(bytes(eth / IPv6(src="2001:db8:1::2", dst="2001:db8:ffff::2", nh=58)
                        / Raw(bytes([2, 0, 0, 0]) + (1400).to_bytes(4, "big") + ours)))
    v6.append(bytes(eth / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") / IP(src="192.0.2.1", dst="192.0.2.2")
                    / UDP(sport=4100, dport=80)))
    got, c = _compiled_as_slow(cfg, [], v6)
    assert [Ether(f)[IPv6].dst for f in got[1]] == ["2001:db8:1::1", "2001:db8:1::2"]
    err = Ether(got[1][0])[ICMP]
    assert (err.type, err.code, err.nexthopmtu) == (3, 4, 1400 - 40)
    assert c["out-icmpv4-error-packets"] == 2
    assert c["drop-in-by-rfc7596-icmpv4-packets" if errors else "drop-out-by-policy-icmpv4-packets"] == 1
