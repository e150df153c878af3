"""On a stick: which side each frame of the one port belongs to, the same rule
for the live loop's pool slots and for ``check``'s frames."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from lwaftr import counters as C
from lwaftr import wire as W
from lwaftr.dataplane.engine import Engine

from packets import make_config

ROWS = [("192.0.2.1", 1, 4, "2001:db8:1::1", 0)]
ETHERTYPES = [W.ETHERTYPE_IPV4, W.ETHERTYPE_ARP, W.ETHERTYPE_IPV6, 0x88CC, W.ETHERTYPE_VLAN]


def expected_side(frame: bytes, vid4: int | None, vid6: int | None) -> int:
    """The rule as Snabb's V4V6 app has it (0: neither side, dropped)."""
    tagged = len(frame) >= 18 and frame[12:14] == b"\x81\x00"
    if vid4 != vid6:
        vid = int.from_bytes(frame[14:16], "big") & 0xFFF if tagged else None
        return 4 if vid == vid4 else 6 if vid == vid6 else 0
    et = frame[16:18] if tagged else frame[12:14]
    return 4 if int.from_bytes(et, "big") in (W.ETHERTYPE_IPV4, W.ETHERTYPE_ARP) else 6


@st.composite
def frames(draw):
    tag = draw(st.sampled_from([None, 5, 7, 9]))
    head = bytes(12)
    if tag is not None:
        head += W.ETHERTYPE_VLAN.to_bytes(2, "big") + (0xA000 | tag).to_bytes(2, "big")
    head += draw(st.sampled_from(ETHERTYPES)).to_bytes(2, "big")
    frame = head + draw(st.binary(max_size=40))
    return frame[:draw(st.integers(0, len(frame)))] if draw(st.integers(0, 5)) == 0 else frame


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(None, None), (5, 5), (5, 7), (None, 7), (5, None)]), st.lists(frames(), max_size=20))
def test_slots_and_frames_are_split_by_one_rule(vids, batch):
    vid4, vid6 = vids
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, vlan_tag=vid4), internal=replace(cfg.internal, vlan_tag=vid6))
    engine = Engine(cfg)
    want = [expected_side(f, vid4, vid6) for f in batch]
    f4, f6 = engine.split_stick(batch)
    assert f4 == [f for f, s in zip(batch, want) if s == 4] and f6 == [f for f, s in zip(batch, want) if s == 6]
    assert engine.counters[C.DROP_WRONG_VLAN_PACKETS] == want.count(0)
    s4, s6 = engine.split_stick_slots(engine.pool.store(batch))
    assert engine.pool.frames(s4) == f4 and engine.pool.frames(s6) == f6
    assert engine.counters[C.DROP_WRONG_VLAN_PACKETS] == 2 * want.count(0)
    engine.pool.free(s4)
    engine.pool.free(s6)
    assert engine.pool.n_free[0] == engine.pool.n_slots


def test_one_tag_for_both_sides_splits_by_the_inner_ethertype():
    """Both sides on VLAN 5: a tagged IPv4 frame is the IPv4 side's (the live
    loop once read the outer ethertype, 0x8100, and gave it to the IPv6 side)."""
    ipv4 = bytes(12) + b"\x81\x00\x00\x05\x08\x00" + bytes(20)
    ipv6 = bytes(12) + b"\x81\x00\x00\x05\x86\xdd" + bytes(40)
    cfg = make_config(ROWS)
    cfg = replace(cfg, external=replace(cfg.external, vlan_tag=5), internal=replace(cfg.internal, vlan_tag=5))
    engine = Engine(cfg)
    s4, s6 = engine.split_stick_slots(engine.pool.store([ipv4, ipv6]))
    assert engine.pool.frames(s4) == [ipv4] and engine.pool.frames(s6) == [ipv6]
