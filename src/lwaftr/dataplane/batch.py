"""The engine's compiled state as one object, so that a batch costs one cheap
call from Python.

Calling a compiled function from Python unboxes every argument: about 0.25 us
an array.  :func:`lwaftr.dataplane.kernels.fast_batch` takes some fifty arrays
(the pool, the tables, the scratch, the reassembly state...), which cost ~5 us
a batch, ~20 ns a frame pair at 256 frames a side.  A :class:`BatchState`
holds them once (a numba StructRef): :func:`run_batch` takes it, the received
slots and the time, and unboxes in ~1 us.
"""
from __future__ import annotations

import numba
from numba.core import types
from numba.experimental import structref

from lwaftr.dataplane.kernels import fast_batch

FIELDS = ("buf", "off", "length", "free_list", "n_free", "P", "macs", "addr_tab", "sw_tab", "br_tab", "counters",
          "scratch", "keep", "out4", "out6", "rate", "flt", "fk", "ids", "frags", "reasm",
          "kern4", "kern6", "ids4", "mirror")


@structref.register
class BatchStateType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class BatchState(structref.StructRefProxy):
    """The arrays :func:`~lwaftr.dataplane.kernels.fast_batch` takes, by the
    names of its parameters (:data:`FIELDS`); all are kept and changed in place,
    the binding table's through :func:`set_tables`."""

    def __new__(cls, *arrays):
        return structref.StructRefProxy.__new__(cls, *arrays)


structref.define_proxy(BatchState, BatchStateType, list(FIELDS))


@numba.njit(cache=True)
def _make(buf, off, length, free_list, n_free, P, macs, addr_tab, sw_tab, br_tab, counters, scratch, keep, out4,
          out6, rate, flt, fk, ids, frags, reasm, kern4, kern6, ids4, mirror):
    return BatchState(buf, off, length, free_list, n_free, P, macs, addr_tab, sw_tab, br_tab, counters, scratch,
                      keep, out4, out6, rate, flt, fk, ids, frags, reasm, kern4, kern6, ids4, mirror)


def make(*arrays) -> BatchState:
    """A :class:`BatchState` of ``arrays`` (in :data:`FIELDS` order), built by
    compiled code that numba caches (the proxy's own constructor compiles anew
    in every process: ~1.3 s)."""
    return _make(*arrays)


@numba.njit(cache=True, nogil=True)
def run_batch(st, v4, v6, now):
    """:func:`~lwaftr.dataplane.kernels.fast_batch` over ``st``: one batch of
    received slots each way.  Returns (n_out4, n_out6, n_kern4, n_kern6, n_mirror,
    n_held4, n_held6)."""
    return fast_batch(st.buf, st.off, st.length, st.free_list, st.n_free, v4, v6, st.P, st.macs, st.addr_tab,
                      st.sw_tab, st.br_tab, st.counters, st.scratch, st.keep, st.out4, st.out6, st.rate, now,
                      st.flt, st.fk, st.ids, st.frags, st.reasm, st.kern4, st.kern6, st.ids4, st.mirror)


@numba.njit(cache=True, nogil=True)
def set_tables(st, addr_tab, sw_tab, br_tab):
    """A new binding table's arrays, from the next batch on."""
    st.addr_tab = addr_tab
    st.sw_tab = sw_tab
    st.br_tab = br_tab
