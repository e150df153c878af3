"""Compiled reassembly (``lwaftr.dataplane.defrag``) against the Python reference.

The reference is ``tests/reference/reassembly.py`` (in the reference engine,
:class:`reference.engine.ReferenceEngine`).  On random streams of fragments (out of order,
duplicated, overlapping, missing, empty, bad checksums, atomic, too many) cut
into random batches, the engine with its kernels must send the same frames and
count the same counters, and give back every slot it does not hold.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lwaftr import counters as C
from lwaftr.config.model import Config
from lwaftr.dataplane.engine import Engine
from lwaftr.dataplane.fragids import SNABB_CHECK_ID_SEEDS as IDS
from lwaftr.examples import AFTR_V4
from reference.engine import ReferenceEngine

from packets import AFTR_MAC_V4, AFTR_MAC_V6, BR0, make_config, port_of

ROWS = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0), ("192.0.2.2", 0, 0, "2001:db8:1::2", 0)]
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ETH4 = Ether(dst=AFTR_MAC_V4, src="02:00:00:00:00:11")
ETH6 = Ether(dst=AFTR_MAC_V6, src="02:00:00:00:00:22")


def _config(max_fragments: int = 20, max_packets: int = 20000) -> Config:
    cfg = make_config(ROWS)
    return replace(cfg, external=replace(cfg.external, reassembly_max_fragments_per_packet=max_fragments,
                                         reassembly_max_packets=max_packets),
                   internal=replace(cfg.internal, reassembly_max_fragments_per_packet=max_fragments,
                                    reassembly_max_packets=max_packets))


def _datagram4(ident: int, size: int, to_b4: bool) -> IP:
    """An IPv4 datagram: from the Internet to a softwire, or from a softwire out."""
    port = port_of(1, 4, ident)
    if to_b4:
        return IP(src="203.0.113.9", dst="192.0.2.1", id=ident, ttl=64) / UDP(sport=53, dport=port) / bytes(size)
    return IP(src="192.0.2.1", dst="203.0.113.9", id=ident, ttl=64) / UDP(sport=port, dport=53) / bytes(size)


@st.composite
def fragments(draw, family: int, ident: int):
    """Fragments of one packet, perturbed at random; (frames, kind of perturbation)."""
    size = draw(st.integers(0, 1200))
    inner = _datagram4(ident, size, to_b4=family == 4)
    payload = bytes(inner[IP].payload) if family == 4 else bytes(inner)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(payload) // 8)), max_size=5)))
    bounds = [0] + [c * 8 for c in cuts if c * 8 < len(payload)] + [len(payload)]
    pieces = [(bounds[i], payload[bounds[i]:bounds[i + 1]], i < len(bounds) - 2) for i in range(len(bounds) - 1)]
    how = draw(st.sampled_from(["clean", "clean", "shuffle", "duplicate", "drop", "overlap", "empty", "badsum",
                                "atomic", "after-final"]))
    if how == "duplicate":
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from(pieces)))
    elif how == "drop" and len(pieces) > 1:
        del pieces[draw(st.integers(0, len(pieces) - 1))]
    elif how == "overlap" and len(pieces) > 1 and pieces[1][0] >= 8:
        start, data, more = pieces[1]
        pieces[1] = (start - 8, payload[start - 8:start] + data, more)
    elif how == "empty":
        pieces.insert(0, (0, b"", True))
    elif how == "after-final":
        pieces.append((len(payload) + 8 - len(payload) % 8, b"x" * 8, True))
    elif how == "atomic" and family == 6:
        pieces = [(0, payload, False)]
    if how in ("shuffle", "duplicate", "overlap"):
        pieces = draw(st.permutations(pieces))
    frames = []
    for i, (start, data, more) in enumerate(pieces):
        if family == 4:
            p = ETH4 / IP(src=inner.src, dst=inner.dst, id=ident, ttl=64, proto=17, flags="MF" if more else 0,
                          frag=start // 8) / Raw(data)
            b = bytearray(bytes(p))
            if how == "badsum" and i == 0:
                b[14 + 10] ^= 0x5A
            frames.append(bytes(b))
        else:
            frames.append(bytes(ETH6 / IPv6(src="2001:db8:1::1", dst=BR0, hlim=64) /
                                IPv6ExtHdrFragment(nh=4, offset=start // 8, m=int(more), id=ident) / Raw(data)))
    return frames


@st.composite
def stream(draw):
    """Fragments of a few packets on each side, interleaved with whole frames,
    cut into batches: [(v4 frames, v6 frames)]."""
    v4, v6 = [], []
    for family, out in ((4, v4), (6, v6)):
        for j in range(draw(st.integers(0, 4))):
            frags = draw(fragments(family, 0x100 + j))
            for f in frags:                   # interleave with the other packets' fragments
                out.insert(draw(st.integers(0, len(out))), f)
        for j in range(draw(st.integers(0, 3))):
            whole = _datagram4(0x200 + j, 20, to_b4=family == 4)
            out.insert(draw(st.integers(0, len(out))),
                       bytes(ETH4 / whole) if family == 4 else bytes(ETH6 / IPv6(src="2001:db8:1::1", dst=BR0) / whole))
    n = draw(st.integers(1, 4))
    cut4 = sorted(draw(st.lists(st.integers(0, len(v4)), min_size=n - 1, max_size=n - 1)))
    cut6 = sorted(draw(st.lists(st.integers(0, len(v6)), min_size=n - 1, max_size=n - 1)))
    b4s = [v4[a:b] for a, b in zip([0] + cut4, cut4 + [len(v4)])]
    b6s = [v6[a:b] for a, b in zip([0] + cut6, cut6 + [len(v6)])]
    return list(zip(b4s, b6s)), draw(st.sampled_from([2, 3, 20]))


def _run_both(batches, cfg: Config, kernel: bool = False):
    fast = Engine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    slow = ReferenceEngine(cfg, fragment_id_seeds=IDS, kernel=kernel)
    if kernel:
        for e in (fast, slow):
            e.set_next_hops(bytes.fromhex("020000000011"), bytes.fromhex("020000000022"))
    got4, got6, gotk4, gotk6, want4, want6, wantk4, wantk6 = [], [], [], [], [], [], [], []
    for i, (b4, b6) in enumerate(batches):
        now = 10.0 + i
        out = fast.process(fast.pool.store(b4), fast.pool.store(b6), now)
        for acc, slots in zip((got4, got6, gotk4, gotk6), out.slots()):
            acc += fast.pool.frames(slots)
            fast.pool.free(slots)
        r4, r6, k4, k6, _ = slow.process_frames(b4, b6, now)
        want4 += r4
        want6 += r6
        wantk4 += k4
        wantk6 += k6
    # Each side's frames as sets (the live path's order differs), the kernel's in order.
    return fast, slow, (sorted(got4), sorted(got6), gotk4, gotk6), (sorted(want4), sorted(want6), wantk4, wantk6)


def _slots_accounted(e: Engine) -> bool:
    return int(e.pool.n_free[0]) + e.defrag4.held + e.defrag6.held == e.pool.n_slots


@SETTINGS
@given(stream())
def test_compiled_reassembly_gives_the_references_frames_and_counters(sc):
    batches, max_fragments = sc
    fast, slow, got, want = _run_both(batches, _config(max_fragments))
    assert got == want
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert len(fast.defrag4) == len(slow.slow.reasm4) and len(fast.defrag6) == len(slow.slow.reasm6)
    assert _slots_accounted(fast), "slots leaked"


def _frags4(ident: int, size: int = 1000, dst: str = "192.0.2.1") -> list[bytes]:
    """A datagram from the Internet in fragments of at most 1,400 bytes of data
    (at least two; the last one last)."""
    inner = _datagram4(ident, size, to_b4=True)
    inner[IP].dst = dst
    payload = bytes(inner[IP].payload)
    step = min(1400, (len(payload) // 2) & ~7)
    starts = list(range(0, len(payload), step))
    return [bytes(ETH4 / IP(src=inner.src, dst=dst, id=ident, proto=17, flags="MF" if a + step < len(payload) else 0,
                            frag=a // 8) / Raw(payload[a:a + step])) for a in starts]


def test_reassembly_never_reaches_the_slow_path():
    eng = Engine(_config())
    frames = [f for i in range(20) for f in _frags4(i)]
    o4, o6, *_ = eng.process(eng.pool.store(frames), eng.pool.store([]), 1.0)
    assert len(o6) == 20 and len(o4) == 0
    assert eng.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    c = C.to_dict(eng.counters, nonzero=True)
    assert c["in-ipv4-frag-needs-reassembly"] == 40 and c["in-ipv4-frag-reassembled"] == 20
    assert "in-ipv4-frag-reassembly-unneeded" not in c
    eng.pool.free(o6)
    assert eng.pool.n_free[0] == eng.pool.n_slots


def test_a_fragment_flood_holds_at_most_its_share_of_the_pool():
    """Fragments that never complete are held within a quarter of the pool: beyond
    it, random reassemblies are evicted (counted, alarmed), and whole frames in the
    same batches are all forwarded."""
    from lwaftr.mgmt.alarms import Alarms
    eng = Engine(_config(), pool_slots=1024, max_batch=256)
    alarms = Alarms(eng.counters)
    alarms.check(0.0)
    whole = [bytes(ETH4 / _datagram4(i, 20, to_b4=True)) for i in range(50)]
    forwarded = 0
    for b in range(20):
        firsts = [_frags4(1000 * b + i)[0] for i in range(150)]       # first halves only
        o4, o6, *_ = eng.process(eng.pool.store(firsts + whole), eng.pool.store([]), 1.0 + b * 0.01)
        forwarded += len(o6)
        eng.pool.free(o4)
        eng.pool.free(o6)
        assert eng.defrag4.held <= 1024 // 4
    assert forwarded == 20 * 50
    assert eng.counters[C.DROP_IPV4_FRAG_RANDOM_EVICTED] == 20 * 150 - 1024 // 4
    assert eng.counters[C.DROP_POOL_EXHAUSTED_PACKETS] == 0
    assert [(e.alarm, e.raised) for e in alarms.check(1.0)] == [("reassembly-limit", True)]
    assert _slots_accounted(eng)


def test_reassemblies_time_out_and_give_their_slots_back():
    eng = Engine(_config())
    firsts = [_frags4(i)[0] for i in range(10)]
    o4, o6, *_ = eng.process(eng.pool.store(firsts), eng.pool.store([]), 1.0)
    assert len(o4) == len(o6) == 0 and len(eng.defrag4) == 10 and eng.defrag4.held == 10
    eng.process(eng.pool.store([]), eng.pool.store([]), 1.0 + eng.defrag4.timeout - 0.5)
    assert len(eng.defrag4) == 10
    eng.process(eng.pool.store([]), eng.pool.store([]), 1.0 + eng.defrag4.timeout + 0.5)
    assert len(eng.defrag4) == 0 and eng.pool.n_free[0] == eng.pool.n_slots
    assert eng.counters[C.DROP_IPV4_FRAG_INVALID_REASSEMBLY] == 10


def _cut4(pkt: IP, step: int = 1400) -> list[bytes]:
    """An IPv4 datagram from the Internet in fragments of ``step`` data bytes."""
    pkt = IP(bytes(pkt))
    data = bytes(pkt.payload)
    return [bytes(ETH4 / IP(src=pkt.src, dst=pkt.dst, id=pkt.id, ttl=pkt.ttl, proto=pkt.proto,
                            flags="MF" if a + step < len(data) else 0, frag=a // 8) / Raw(data[a:a + step]))
            for a in range(0, len(data), step)]


def _cut6(inner, src: str = "2001:db8:1::1", nh: int = 4, step: int = 1400) -> list[bytes]:
    """An IPv6 packet from a B4 (to the BR) in fragments of ``step`` data bytes."""
    data = bytes(inner)
    return [bytes(ETH6 / IPv6(src=src, dst=BR0, hlim=64) /
                  IPv6ExtHdrFragment(nh=nh, offset=a // 8, m=int(a + step < len(data)), id=7) / Raw(data[a:a + step]))
            for a in range(0, len(data), step)]


def _big_kinds(size: int) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """Datagrams of ``size`` bytes of data in fragments, one of each way a
    reassembled packet can go: name -> (IPv4 side's frames, IPv6 side's)."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest
    d = bytes(size)
    p = port_of(1, 4, 9)
    aftr = str(ipaddress.IPv4Address(AFTR_V4))
    out = IP(src="192.0.2.1", dst="203.0.113.9", id=6) / UDP(sport=p, dport=53) / d
    return {
        "encapsulated": (_cut4(IP(src="203.0.113.9", dst="192.0.2.1", id=5) / UDP(sport=53, dport=p) / d), []),
        "no softwire": (_cut4(IP(src="203.0.113.9", dst="192.0.2.9", id=5) / UDP(sport=53, dport=p) / d), []),
        "ttl 1": (_cut4(IP(src="203.0.113.9", dst="192.0.2.1", id=5, ttl=1) / UDP(sport=53, dport=p) / d), []),
        "error to a softwire": (_cut4(IP(src="192.0.2.2", dst="192.0.2.9", id=5) / UDP(sport=53, dport=p) / d), []),
        "ping": (_cut4(IP(src="203.0.113.9", dst=aftr, id=5) / ICMP(id=3, seq=1) / d), []),
        "decapsulated": ([], _cut6(out)),
        "decapsulated DF": ([], _cut6(IP(src="192.0.2.1", dst="203.0.113.9", flags="DF") / UDP(sport=p, dport=53) / d)),
        "no source softwire": ([], _cut6(out, src="2001:db8:1::9")),
        "hairpinned": ([], _cut6(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=p, dport=53) / d)),
        "hairpinned ttl 1": ([], _cut6(IP(src="192.0.2.1", dst="192.0.2.2", ttl=1) / UDP(sport=p, dport=53) / d)),
        "hairpinned DF": ([], _cut6(IP(src="192.0.2.1", dst="192.0.2.2", flags="DF") / UDP(sport=p, dport=53) / d)),
        "ping6": ([], _cut6(ICMPv6EchoRequest(id=3, seq=1, data=d), nh=58)),
        "ICMPv6 error": ([], _cut6(ICMPv6DestUnreach(code=1) / IPv6(src=BR0, dst="2001:db8:1::1") /
                                   IP(src="203.0.113.9", dst="192.0.2.1") / UDP(sport=53, dport=p) / d, nh=58)),
    }


def _big_config(mtu4: int, mtu6: int, tagged: bool) -> Config:
    cfg = _config()
    cfg = replace(cfg, external=replace(cfg.external, mtu=mtu4), internal=replace(cfg.internal, mtu=mtu6))
    if tagged:                  # tags, and egress filters that see the whole packet before it is cut
        from lwaftr.dataplane import vlan
        inst = cfg.instance
        cfg = replace(cfg, external=replace(cfg.external, egress_filter="len < 5000"),
                      internal=replace(cfg.internal, egress_filter="len < 5000"),
                      instances=[replace(inst, external=replace(inst.external, vlan_tag=4),
                                         internal=replace(inst.internal, vlan_tag=6))])
    return cfg


def _tagged(frames: list[bytes], vid: int | None) -> list[bytes]:
    from lwaftr.dataplane import vlan
    return frames if vid is None else [vlan.push_tag(f, vid) for f in frames]


@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize("mtus", [(1460, 1500), (1280, 1280)])
@pytest.mark.parametrize("size", [1500, 1800, 4000, 9000])
def test_packets_reassembled_beyond_a_slot_take_the_kernels_passes(size, mtus, tagged):
    """Every way a reassembled packet can go, from just over the MTU to 9,000 bytes
    (beyond a slot from ~1.9 KB: gathered in the big buffer): alone, then all in one
    batch.  The kernels finish each (the slow path is never called with a frame or
    a packet); the frames, in order, and the counters are the reference's, and every
    slot comes back."""
    cfg = _big_config(*mtus, tagged)
    vid4, vid6 = (4, 6) if tagged else (None, None)
    kinds = _big_kinds(size)
    every = ([f for v4, _ in kinds.values() for f in v4], [f for _, v6 in kinds.values() for f in v6])
    for name, (v4, v6) in [*kinds.items(), ("all", every)]:
        v4, v6 = _tagged(v4, vid4), _tagged(v6, vid6)
        fast = Engine(cfg, fragment_id_seeds=IDS)
        slow = ReferenceEngine(cfg, fragment_id_seeds=IDS)
        out = fast.process(fast.pool.store(v4), fast.pool.store(v6), 10.0)
        got = tuple(fast.pool.frames(s) for s in out.slots())
        for s in out.slots():
            fast.pool.free(s)
        want = slow.process_frames(v4, v6, 10.0)
        assert got[:2] == (want.v4, want.v6), name
        assert C.to_dict(fast.counters) == C.to_dict(slow.counters), name
        assert _slots_accounted(fast), name
        if name != "all":
            codes = fast.batch_codes()
            assert len(codes[0]) + len(codes[2]) == 1, name      # the reassembled packet, traced
    assert slow.counters[C.IN_IPV4_FRAG_REASSEMBLED] == 5 and slow.counters[C.IN_IPV6_FRAG_REASSEMBLED] == 8


def test_a_packet_reassembled_beyond_a_slot_for_an_unresolved_next_hop_is_dropped_and_counted():
    """No slot holds it whole until the next hop resolves: dropped, counted as
    the frames beyond the hold limit (the reference, holding bytes, keeps it)."""
    from lwaftr.config.model import NextHop
    cfg = _config()
    inst = cfg.instance
    cfg = replace(cfg, instances=[replace(inst, external=replace(inst.external, next_hop=NextHop(
        ip=ipaddress.IPv4Address("198.51.100.254").packed)), internal=replace(inst.internal, next_hop=NextHop(
        ip=ipaddress.IPv6Address("2001:db8:ffff::fe").packed)))])
    kinds = _big_kinds(4000)
    fast = Engine(cfg, fragment_id_seeds=IDS)
    out = fast.process(fast.pool.store(kinds["encapsulated"][0]),
                       fast.pool.store(kinds["decapsulated"][1] + kinds["hairpinned"][1]), 10.0)
    c = C.to_dict(fast.counters, nonzero=True)
    assert c["drop-no-next-hop-ipv4-packets"] == 1 and c["drop-no-next-hop-ipv6-packets"] == 2
    assert "next-hop-held-packets" not in c
    for s in out.slots():           # (the requests for the next hops)
        fast.pool.free(s)
    assert _slots_accounted(fast)


def test_kernel_mode_passes_fragments_for_the_router_to_the_kernel_unreassembled():
    aftr = str(ipaddress.IPv4Address(AFTR_V4))
    mine = _frags4(3, 600, dst=aftr)
    theirs = _frags4(4, 600)
    fast, slow, got, want = _run_both([(mine + theirs, [])], _config(), kernel=True)
    assert got == want and len(got[1]) == 1
    assert got[2:] == (mine, [])
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)


def test_eviction_when_max_packets_are_in_progress():
    """One more reassembly than ``max-reassembly-packets`` evicts a random one
    (Snabb); counted as the reference counts it."""
    cfg = _config(max_packets=5)
    firsts = [_frags4(i)[0] for i in range(8)]
    fast, slow, got, want = _run_both([(firsts, [])], cfg)
    assert C.to_dict(fast.counters) == C.to_dict(slow.counters)
    assert fast.counters[C.DROP_IPV4_FRAG_RANDOM_EVICTED] == 3 and len(fast.defrag4) == 5
    assert _slots_accounted(fast)


def test_an_engine_replaced_on_its_pool_gives_the_held_slots_back():
    """A reload that rebuilds the engine keeps the pool (AF_XDP's UMEM): the
    fragments the old engine held return to it."""
    old = Engine(_config())
    o4, o6, *_ = old.process(old.pool.store([_frags4(i)[0] for i in range(30)]), old.pool.store([]), 1.0)
    assert old.defrag4.held == 30
    new = Engine(_config(), pool=old.pool)
    old.release()
    assert len(old.defrag4) == 0 and new.pool.n_free[0] == new.pool.n_slots
