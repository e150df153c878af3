"""Network-order (big-endian) reads and writes of packet fields, from numba.

One copy for every compiled stage (there were six), inlined where it is
called.  ``rd64`` returns ``uint64``: compare it with ``uint64`` values, or
convert it first (numba compares ``uint64`` with ``int64`` as floats).
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def rd16(b, o):
    return (np.int64(b[o]) << 8) | np.int64(b[o + 1])


@numba.njit(cache=True, nogil=True, inline="always")
def rd32(b, o):
    return (np.int64(b[o]) << 24) | (np.int64(b[o + 1]) << 16) | (np.int64(b[o + 2]) << 8) | np.int64(b[o + 3])


@numba.njit(cache=True, nogil=True, inline="always")
def rd64(b, o):
    return (np.uint64(b[o]) << np.uint64(56)) | (np.uint64(b[o + 1]) << np.uint64(48)) \
        | (np.uint64(b[o + 2]) << np.uint64(40)) | (np.uint64(b[o + 3]) << np.uint64(32)) \
        | (np.uint64(b[o + 4]) << np.uint64(24)) | (np.uint64(b[o + 5]) << np.uint64(16)) \
        | (np.uint64(b[o + 6]) << np.uint64(8)) | np.uint64(b[o + 7])


@numba.njit(cache=True, nogil=True, inline="always")
def wr16(b, o, v):
    b[o] = (v >> 8) & 0xFF
    b[o + 1] = v & 0xFF

