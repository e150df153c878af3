"""Monitoring one subscriber: its frames are copied as received, forwarding unchanged."""
from __future__ import annotations

import ipaddress

import pytest

from lwaftr import counters as C
from lwaftr.dataplane.engine import Engine
from lwaftr.examples import example_config, example_traffic

SHARED = int(ipaddress.IPv4Address("192.0.2.1"))


@pytest.mark.parametrize("strict", [True, False])
def test_monitor_copies_one_address_and_changes_nothing(strict):
    traffic = example_traffic()
    plain, watched = Engine(example_config()), Engine(example_config())
    watched.set_monitor(SHARED)
    mirrored = []
    for _, side, frame in traffic * 3:
        v4, v6 = ([frame], []) if side == "v4" else ([], [frame])
        if strict:
            got, want = watched.process_frames(v4, v6, 0.0), plain.process_frames(v4, v6, 0.0)
            assert got._replace(mirrored=[]) == want and want.mirrored == []
            mirrored += got.mirrored
        else:
            outs = []
            for e in (watched, plain):
                out = e.process(e.pool.store(v4), e.pool.store(v6), 0.0)
                outs.append((e.pool.frames(out.v4), e.pool.frames(out.v6)))
                for s in out.slots():
                    e.pool.free(s)
                if e is watched:
                    mirrored += out.mirrored
                else:
                    assert out.mirrored == []
            assert outs[0] == outs[1]
    assert (watched.counters == plain.counters).all()
    # To 192.0.2.1 from the Internet (3 frames), and from alice's and bob's B4s with
    # 192.0.2.1 inside (2); not carol's (192.0.2.2), nor the frame to 192.0.2.2.
    expected = [f for _, side, f in traffic
                if (side == "v4" and f[30:34] == SHARED.to_bytes(4, "big"))
                or (side == "v6" and f[66:70] == SHARED.to_bytes(4, "big"))]
    assert len(expected) == 5
    assert mirrored == expected * 3
    watched.set_monitor(None)
    for _, side, frame in traffic:
        assert watched.process_frames(*(([frame], []) if side == "v4" else ([], [frame])), 0.0).mirrored == []


@pytest.mark.parametrize("limit", ["budget", "pool"])
def test_the_kernels_copy_within_a_budget_and_count_the_rest(limit):
    """The watched frames take the compiled path like any other; at most the engine's
    mirror_budget copies a batch, and none while the pool is short: the rest are
    counted, and forwarding goes on."""
    traffic = example_traffic()
    theirs = [f for _, side, f in traffic if side == "v4" and f[30:34] == SHARED.to_bytes(4, "big")]
    others = [f for _, side, f in traffic if side == "v4" and f[30:34] != SHARED.to_bytes(4, "big")]
    batch = theirs * 2 + others
    if limit == "budget":
        eng = Engine(example_config(), mirror_budget=4)
        copied = 4
    else:
        eng = Engine(example_config(), pool_slots=len(batch) + 2)
        copied = 2
    ref = Engine(example_config())
    eng.set_monitor(SHARED)
    out = eng.process(eng.pool.store(batch), eng.pool.store([]), 0.05)
    assert eng.counters[C.DROP_UNCLASSIFIED_PACKETS] == 0
    assert out.mirrored == batch[:copied]
    assert eng.counters[C.MONITOR_SKIPPED_PACKETS] == len(theirs) * 2 - copied
    want = ref.process_frames(batch, [], 0.05)
    assert sorted(eng.pool.frames(out.v4)) == sorted(want.v4)
    assert sorted(eng.pool.frames(out.v6)) == sorted(want.v6)
    for s in out.slots():
        eng.pool.free(s)
    assert eng.pool.n_free[0] == eng.pool.n_slots, "slots leaked"
    got, exp = C.to_dict(eng.counters), C.to_dict(ref.counters)
    assert got.pop("monitor-skipped-packets") == len(theirs) * 2 - copied
    assert exp.pop("monitor-skipped-packets") == 0 and got == exp
