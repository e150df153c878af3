"""Monitoring one subscriber: its frames are copied as received, forwarding unchanged."""
from __future__ import annotations

import ipaddress

import pytest

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
