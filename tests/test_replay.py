"""The bench's NIC: templates replayed into fresh slots, the batch before given back."""
from __future__ import annotations

import numpy as np
import pytest

from lwaftr.dataplane.pool import HEADROOM, PacketPool
from lwaftr.dataplane.replay import Replay, Templates


def _frames(tag: int, n: int) -> list[bytes]:
    return [bytes([tag, i]) * (30 + i) for i in range(n)]


def test_batches_wrap_and_give_back() -> None:
    pool = PacketPool(n_slots=16)
    f4, f6 = _frames(4, 3), _frames(6, 5)
    nic = Replay(pool, Templates(f4), Templates(f6), 4)
    s4, s6 = nic.next()
    assert pool.n_free[0] == 8
    assert [pool.frame(s) for s in s4] == [f4[0], f4[1], f4[2], f4[0]]     # wraps around the templates
    assert [pool.frame(s) for s in s6] == f6[:4]
    assert all(pool.off[s] == HEADROOM for s in np.concatenate((s4, s6)))
    sent = (s4[:2].copy(), s6.copy(), s4[2:].copy(), np.empty(0, np.int32))    # what the engine produced
    s4, s6 = nic.next(sent)
    assert pool.n_free[0] == 8                                            # the 8 given back, 8 taken
    assert [pool.frame(s) for s in s4] == [f4[1], f4[2], f4[0], f4[1]]
    assert [pool.frame(s) for s in s6] == [f6[4], f6[0], f6[1], f6[2]]


def test_one_side_only_and_exhaustion() -> None:
    pool = PacketPool(n_slots=8)
    nic = Replay(pool, Templates([]), Templates(_frames(6, 2)), 4)
    s4, s6 = nic.next()
    assert len(s4) == 0 and len(s6) == 4 and pool.n_free[0] == 4
    kept = s6.copy()                                                      # never given back
    nic.next((np.empty(0, np.int32),) * 4)
    with pytest.raises(RuntimeError, match="exhausted"):
        nic.next((np.empty(0, np.int32),) * 4)
    assert pool.n_free[0] == 0 and len(kept) == 4


def test_what_leaves_each_side_is_counted_as_sent() -> None:
    pool = PacketPool(n_slots=16)
    f4, f6 = _frames(4, 3), _frames(6, 5)
    sent = np.zeros(4, np.int64)
    nic = Replay(pool, Templates(f4), Templates(f6), 4, sent)
    assert nic.sent is sent
    s4, s6 = nic.next()
    # the IPv4 side sends two slots, the IPv6 side three; one goes to a TAP (freed, not sent)
    done = (s4[:2].copy(), np.concatenate((s4[2:3], s6[:2])), s4[3:].copy(), np.empty(0, np.int32))
    want = [2, int(pool.length[done[0]].sum()), 3, int(pool.length[done[1]].sum())]
    nic.next(done)
    assert list(sent) == want
    last = (s4[:1].copy(), np.empty(0, np.int32), s4[1:].copy(), s6.copy())
    more = int(pool.length[last[0]].sum())
    nic.finish(last)
    assert list(sent) == [3, want[1] + more, 3, want[3]]
    assert pool.n_free[0] == 16 - 2                    # (the first batch's last two IPv6 slots were kept)


def _monotonic(slots: np.ndarray) -> bool:
    d = np.diff(slots)
    return bool((d > 0).all() or (d < 0).all())


def test_slots_are_taken_in_address_order_after_frees_out_of_order() -> None:
    """Drops and replies free slots out of the order they came in; the NIC stand-in
    still receives each side's frames into slots in address order, and each side
    into the same slots batch after batch (pool.in_address_order)."""
    pool = PacketPool(n_slots=64)
    f = _frames(4, 7)
    nic = Replay(pool, Templates(f), Templates(_frames(6, 5)), 8)
    s4, s6 = nic.next()
    first4, first6 = set(s4.tolist()), set(s6.tolist())
    rng = np.random.default_rng(11)
    for _ in range(20):
        assert _monotonic(s4) and _monotonic(s6), (s4, s6)
        assert set(s4.tolist()) == first4 and set(s6.tolist()) == first6
        both = rng.permutation(np.concatenate((s4, s6)))
        s4, s6 = nic.next((both[:5].copy(), both[5:12].copy(), both[12:].copy(), np.empty(0, np.int32)))
    assert pool.n_free[0] == 64 - 16
