"""Compile the numba kernels into the image's cache at build time (``docker build``).

``lwaftr.dataplane.warmup`` compiles the engine's kernels; ``lwaftr run``
also calls the AF_PACKET ring kernels and the checksum completion, which are
compiled here by calling them through the same classes on ``lo`` (an
AF_PACKET socket needs only CAP_NET_RAW, which ``docker build`` steps have).
Nothing is sent.  Where no packet socket can be opened, those kernels are
left to the first start (about a second) and this says so.  AF_XDP's kernels
need an XDP socket, so they are compiled on the first start with
``LWAFTR_IO=xdp``.

numba caches under ``$NUMBA_CACHE_DIR``, keyed by source hash and by
``NUMBA_CPU_NAME`` (``generic``: a cache any x86-64 CPU can use), so both
must be the same at run time: the image sets them.
"""
from __future__ import annotations

import sys


def main() -> int:
    from lwaftr.bindingtable.table import BindingTable
    from lwaftr.dataplane.warmup import warm_up
    from lwaftr.examples import example_config
    from lwaftr.mgmt.service import warm_up as warm_up_requests

    warm_up()
    # The table lookups the control requests use, which lwaftr run loads at start:
    # on writable arrays and on read-only ones (a mapped compiled table), which numba
    # compiles apart.
    for writable in (True, False):
        table = BindingTable.build(example_config().bindings)
        for a in (table.addr_tab, table.sw_tab, table.br_tab):
            a.setflags(write=writable)
        warm_up_requests(table)

    from lwaftr.dataplane.checksum import complete_flagged
    from lwaftr.dataplane.engine import Engine
    from lwaftr.io.afpacket import TP_STATUS_CSUMNOTREADY, RxRing, TxRing

    pool = Engine(example_config()).pool
    try:
        rx, tx = RxRing("lo"), TxRing("lo")
    except OSError as e:
        print(f"prime: AF_PACKET kernels not compiled ({e}); lwaftr run compiles them when it starts",
              file=sys.stderr)
        return 0
    try:
        slots, flags = rx.receive(pool, 256)
        complete_flagged(pool.buf, pool.off, pool.length, slots, flags, TP_STATUS_CSUMNOTREADY)
        tx.send(pool, slots[:0])                        # compiles tx_burst; queues nothing
        pool.free(slots)
    finally:
        rx.close()
        tx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
