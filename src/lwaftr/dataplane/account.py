"""Counting drops: the one place compiled stages turn an error code into counters.

A stage that drops a packet (or does not send the ICMP error or reply it
made) calls :func:`account` with the code from :data:`lwaftr.counters.ERRORS`
and the packet's length; the table says which counters that adds to,
``drop-all-*`` totals included.  No stage writes a drop counter itself.
"""
from __future__ import annotations

import numba

from lwaftr import counters as C

_IDX = C.ERROR_COUNTERS       # frozen into the compiled code as constants
_BYTES = C.ERROR_BYTES
_WIDTH = C.ERROR_WIDTH


@numba.njit(cache=True, nogil=True, inline="always")
def account(counters, code, nbytes):
    """Add what one packet of ``nbytes`` dropped for ``code`` counts."""
    for j in range(_WIDTH):
        c = _IDX[code, j]
        if c < 0:
            break
        counters[c] += nbytes if _BYTES[code, j] else 1
