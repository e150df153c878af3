"""The packet pool: slots handed out in address order however they were freed."""
from __future__ import annotations

import numpy as np
import pytest

from lwaftr.dataplane.pool import PacketPool, in_address_order


def _popped(pool: PacketPool, n: int) -> list[int]:
    top = int(pool.n_free[0])
    return [int(s) for s in pool.free_list[top - n:top][::-1]]


@pytest.mark.parametrize("n_slots, n", [(1024, 512), (1000, 999), (70, 3), (4096, 4096), (64, 2)])
def test_the_next_slots_come_out_ascending_and_nothing_else_moves(n_slots: int, n: int) -> None:
    pool = PacketPool(n_slots)
    rng = np.random.default_rng(n_slots + n)
    pool.free_list[:] = rng.permutation(pool.free_list)
    before = pool.free_list.copy()
    in_address_order(pool.free_list, pool.n_free, n, pool.order_bits)
    top = pool.n_free[0]
    assert top == n_slots
    assert _popped(pool, n) == sorted(before[top - n:])           # the same slots, lowest first
    assert (pool.free_list[:top - n] == before[:top - n]).all()   # the rest of the stack untouched
    assert not pool.order_bits.any()                             # its scratch left clean
    assert pool.alloc(n).tolist() == sorted(before[top - n:])     # and that is what alloc hands out


def test_a_partly_used_pool_orders_only_what_is_free() -> None:
    pool = PacketPool(256)
    taken = pool.alloc(200)
    pool.free(np.random.default_rng(3).permutation(taken)[:150])      # 206 free, shuffled on top
    before = pool.free_list[:206].copy()
    in_address_order(pool.free_list, pool.n_free, 1000, pool.order_bits)   # more than is free: all of it
    assert sorted(pool.free_list[:206]) == sorted(before)
    assert _popped(pool, 206) == sorted(before)
    one = pool.free_list[:206].copy()
    in_address_order(pool.free_list, pool.n_free, 1, pool.order_bits)      # one slot: nothing to do
    assert (pool.free_list[:206] == one).all()


@pytest.mark.parametrize("order", ["ascending", "descending", "one out of place"])
def test_stacks_nearly_in_order_come_out_ascending_too(order: str) -> None:
    pool = PacketPool(300)
    pool.free_list[:] = np.arange(300) if order == "ascending" else np.arange(299, -1, -1)
    if order == "one out of place":
        pool.free_list[[10, 250]] = pool.free_list[[250, 10]]
    before = pool.free_list.copy()
    in_address_order(pool.free_list, pool.n_free, 200, pool.order_bits)
    if order == "ascending":        # a stack ascending: popped in descending order, already in order
        assert _popped(pool, 200) == sorted(before[100:], reverse=True)
    else:
        assert _popped(pool, 200) == sorted(before[100:])
    assert (pool.free_list[:100] == before[:100]).all()
    assert not pool.order_bits.any()
