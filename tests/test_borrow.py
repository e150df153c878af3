"""``borrowed``: the same arrays, without numba's reference counting."""
from __future__ import annotations

import re

import numba
import numpy as np

from lwaftr.dataplane.borrow import borrowed


@numba.njit(inline="always")
def _member(tab, x) -> bool:
    for j in range(tab.shape[0]):
        if tab[j] == x:
            return True
    return False


def _scan(buf, tab, pair):
    """A per-row loop shaped like the kernels': a view per row, an array handed to
    an inlined helper on some paths.  numba's pruning leaves counts in it."""
    a, (b, k) = pair
    total = 0
    for s in range(buf.shape[0]):
        row = buf[s]
        if row[1] == 3:
            continue
        if row[2] > 5 and _member(tab, row[0]):
            row[5] = 1                   # writes reach the caller's array
            total += a[0]
        elif row[3] > 2 and _member(tab, row[1]):
            total += b[0] + k
    return total


_counted = numba.njit(_scan)


@numba.njit
def _borrowing(buf, tab, pair):
    buf, tab, pair = borrowed((buf, tab, pair))
    return _counted(buf, tab, pair)


_scan_inlined = numba.njit(inline="always")(_scan)


@numba.njit
def _borrowing_inline(buf, tab, pair):
    buf, tab, pair = borrowed((buf, tab, pair))
    return _scan_inlined(buf, tab, pair)      # the loop compiled into this function, borrowed


def _refcount_calls(fn) -> int:
    """``NRT_incref``/``NRT_decref`` calls in ``fn``'s own compiled code (not its Python wrapper)."""
    ir = next(iter(fn.inspect_llvm().values()))
    head = lambda f: f.split("\n")[0]                    # noqa: E731
    own = [f for f in re.split(r"\n(?=define )", ir)
           if f.startswith("define") and fn.__name__ in head(f) and "cpython" not in head(f) and "cfunc." not in head(f)]
    assert own
    return sum(f.count("call void @NRT_incref") + f.count("call void @NRT_decref") for f in own)


def test_same_arrays_without_counts() -> None:
    rng = np.random.default_rng(7)
    buf = rng.integers(0, 10, (64, 6))
    tab = np.array([1, 4, 8])
    pair = (np.array([7]), (np.array([9]), 3))
    want = buf.copy()
    ref = _counted(want, tab, pair)
    assert _borrowing(buf, tab, pair) == ref and (buf == want).all() and (buf[:, 5] == 1).any()
    buf2 = rng.integers(0, 10, (64, 6))
    want2 = buf2.copy()
    assert _borrowing_inline(buf2, tab, pair) == _counted(want2, tab, pair) and (buf2 == want2).all()
    assert _refcount_calls(_counted) > 0          # what borrowing removes is there without it
    assert _refcount_calls(_borrowing_inline) == 0


def test_scalars_pass_through() -> None:
    @numba.njit
    def f(x, t):
        x, t = borrowed((x, t))
        return x + t[0] + t[1][0]
    assert f(2, (3, np.array([4]))) == 9
