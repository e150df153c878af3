"""The packet pool: slots handed out in address order however they were freed."""
from __future__ import annotations

import numpy as np
import pytest

from lwaftr.dataplane.pool import PacketPool, in_address_order


def _popped(pool: PacketPool, n: int) -> list[int]:
    top = int(pool.n_free[0])
    return [int(s) for s in pool.free_list[top - n:top][::-1]]


@pytest.mark.parametrize("n_slots, n, window", [(1024, 512, 1024), (1024, 512, 512), (1000, 499, 998),
                                                (70, 3, 6), (4096, 2048, 4096), (64, 2, 4), (64, 2, 2)])
def test_the_lowest_slots_of_the_window_come_out_first_and_nothing_else_moves(n_slots: int, n: int,
                                                                                window: int) -> None:
    pool = PacketPool(n_slots)
    rng = np.random.default_rng(n_slots + n + window)
    pool.free_list[:] = rng.permutation(pool.free_list)
    before = pool.free_list.copy()
    in_address_order(pool.free_list, pool.n_free, n, pool.order_bits, window)
    top = pool.n_free[0]
    assert top == n_slots
    ranked = sorted(before[top - window:])
    assert _popped(pool, window) == ranked[:n][::-1] + ranked[n:][::-1]   # the lowest n first, each part descending
    assert (pool.free_list[:top - window] == before[:top - window]).all()  # the rest of the stack untouched
    assert not pool.order_bits.any()                                      # its scratch left clean
    assert pool.alloc(n).tolist() == ranked[:n][::-1]                     # and that is what alloc hands out


def test_a_partly_used_pool_orders_only_what_is_free() -> None:
    pool = PacketPool(256)
    taken = pool.alloc(200)
    pool.free(np.random.default_rng(3).permutation(taken)[:150])      # 206 free, shuffled on top
    before = pool.free_list[:206].copy()
    before_rest = pool.free_list[206:].copy()
    in_address_order(pool.free_list, pool.n_free, 1000, pool.order_bits, 2000)   # more than is free: all of it
    assert sorted(pool.free_list[:206]) == sorted(before)
    assert _popped(pool, 206) == sorted(before, reverse=True)
    one = pool.free_list[:206].copy()
    in_address_order(pool.free_list, pool.n_free, 1, pool.order_bits, 1)      # one slot: nothing to do
    assert (pool.free_list[:206] == one).all()
    in_address_order(pool.free_list, pool.n_free, 0, pool.order_bits, 100)    # none taken: nothing to do
    assert (pool.free_list[:206] == one).all() and (pool.free_list[206:] == before_rest).all()


@pytest.mark.parametrize("order", ["arranged", "arranged, descending", "ascending", "one out of place",
                                   "halves overlap", "a few out of turn"])
def test_stacks_nearly_in_order(order: str) -> None:
    """A window already arranged, either way, is only read; if only the order of
    the slots handed out first is off, only they are sorted; else the whole window."""
    pool = PacketPool(300)
    # The window is the top 200 (n = 100): 100..199 below, 0..99 on top, each rising.
    arranged = np.concatenate((np.arange(200, 300), np.arange(100, 200), np.arange(0, 100)))
    pool.free_list[:] = {"arranged": arranged, "ascending": np.arange(300),
                         "arranged, descending": np.arange(299, -1, -1), "one out of place": arranged,
                         "halves overlap": arranged, "a few out of turn": arranged}[order]
    if order == "one out of place":
        pool.free_list[[150, 250]] = pool.free_list[[250, 150]]
    if order == "halves overlap":
        pool.free_list[[150, 250]] = pool.free_list[[250, 150]]    # 50 <-> 150: each half still rises
        pool.free_list[100:200].sort()
        pool.free_list[200:].sort()
    if order == "a few out of turn":            # frames that left on their own side, then the rest
        pool.free_list[200:] = np.concatenate(([7, 40, 93], np.setdiff1d(np.arange(100), [7, 40, 93])))
    before = pool.free_list.copy()
    in_address_order(pool.free_list, pool.n_free, 100, pool.order_bits, 200)
    ranked = sorted(before[100:])
    if order.startswith("arranged"):
        assert (pool.free_list == before).all()
        assert sorted(_popped(pool, 100)) == ranked[:100]
    else:
        assert _popped(pool, 200) == ranked[:100][::-1] + ranked[100:][::-1]
    if order == "a few out of turn":
        assert (pool.free_list[100:200] == before[100:200]).all()
    assert (pool.free_list[:100] == before[:100]).all()
    assert not pool.order_bits.any()


def test_each_side_keeps_its_slots_when_frames_leave_on_the_side_they_came_from() -> None:
    """Two interfaces receive a batch each; a few frames of each leave on the side
    they came in on (ARP replies, echo replies, errors) and the rest on the other
    side, and all is given back in the order it leaves.  Each side still gets the
    same slots every batch: the lower half of those given back, then the upper."""
    pool = PacketPool(4096)
    n = 512
    rng = np.random.default_rng(5)
    seen4 = seen6 = None
    for _ in range(50):
        in_address_order(pool.free_list, pool.n_free, n, pool.order_bits, 2 * n)
        s4 = pool.alloc(n)
        in_address_order(pool.free_list, pool.n_free, n, pool.order_bits, 2 * n)
        s6 = pool.alloc(n)
        for s in (s4, s6):
            assert (np.diff(s) < 0).all() or (np.diff(s) > 0).all()
        if seen4 is None:
            seen4, seen6 = set(s4.tolist()), set(s6.tolist())
        assert set(s4.tolist()) == seen4 and set(s6.tolist()) == seen6
        back4 = rng.random(n) < 0.05                # leave on the side they came from
        back6 = rng.random(n) < 0.05
        out4 = np.concatenate((s4[back4], s6[~back6]))
        out6 = np.concatenate((s6[back6], s4[~back4]))
        pool.free(out4)
        pool.free(out6)
    assert seen4 == set(range(n)) and seen6 == set(range(n, 2 * n))
