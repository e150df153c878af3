"""Soak: TCP transfers through ``lwaftr run`` in the lab while it is reconfigured (needs root).

Issue 17: transfers hung for 30 s and more where Snabb passed thousands.
The cause was a wrong IPv4 header checksum after the TTL decrement on about
one frame in 256 towards the B4s (their kernels dropped those frames; a TCP
segment whose retransmissions all fell in that range stalled for good).

Here, for each combination, alice's and bob's LAN hosts make 256 KiB-each-way
transfers to the Internet host one after another for :data:`SOAK` seconds
(socket timeout :data:`TIMEOUT`), while the lwAFTR is reloaded by SIGHUP
and its binding table changed through ``lwaftr config`` (see
:mod:`lwaftr.lab.soak`).  Every transfer must complete intact, no
must-be-zero counter may move (ring drops and refusals, malformed input,
next hops, frames for the kernel), no namespace of the lab may count an IP
header or TCP checksum error, and the RSS of ``lwaftr run`` may not grow by
more than :data:`RSS_GROWTH_KIB`.  The longest gap in forwarding that any
end point saw is printed.

All eight combinations of I/O (AF_PACKET, AF_XDP), control plane (kernel,
built-in) and placement (two interfaces, on a stick) run (about two minutes
with the labs); a longer run of any one is ``benchmarks/soak.py``.
"""
from __future__ import annotations

import itertools
import json
import sys

import pytest

from lwaftr.config.model import BUILT_IN, KERNEL
from lwaftr.lab.netns import Lab, unavailable
from lwaftr.lab.soak import soak
from lwaftr.lab.topology import INTERNET, ON_A_STICK, TWO_INTERFACES, Topology

#: Seconds of transfers per combination.
SOAK = 8.0
#: Socket timeout of every transfer: a stall this long fails it.
TIMEOUT = 10.0
#: RSS growth of lwaftr run allowed over a soak (~300,000 frames, five reconfigurations):
#: a leak of 100 bytes a frame would exceed it.
RSS_GROWTH_KIB = 32 * 1024

COMBINATIONS = list(itertools.product(("afpacket", "xdp"), (KERNEL, BUILT_IN), (TWO_INTERFACES, ON_A_STICK)))


@pytest.mark.parametrize("io,control_plane,mode", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_soak_every_transfer_completes_across_reloads_and_binding_changes(io, control_plane, mode):
    reason = unavailable()
    if reason:
        pytest.fail(f"the lab cannot run here: {reason}")
    with Lab() as lab:
        topo = Topology(lab, mode, control_plane=control_plane, io=io).build()
        try:
            topo.start_lwaftr()
            kind = "af_xdp" if io == "xdp" else "af_packet"
            ports = ["stick"] if mode == ON_A_STICK else ["v4", "v6"]
            assert all(f"{p} ({kind})" in topo.lwaftr.stderr for p in ports), topo.lwaftr.stderr[-3000:]
            for name in ("alice", "bob"):       # next hops resolved, both paths working
                topo.ping(name, INTERNET, count=1)
            r = soak(topo, SOAK, timeout=TIMEOUT)
        finally:
            topo.close()
    rss = [v for _, v in r["rss_kib"]]
    print(f"\n{io} {control_plane} {mode}: transfers {r['transfers']}, longest gap in forwarding "
          f"{r['longest_gap']} s, transfer time {r['transfer_seconds']}, RSS {rss[0]} -> {rss[-1]} KiB "
          f"(max {max(rss)}), events {[e['what'] for e in r['events']]}", file=sys.stderr)
    assert not r["failed"], json.dumps(r["failed"][:5])
    assert not r["served_failed"], json.dumps(r["served_failed"][:5])
    assert all(n > 0 for n in r["transfers"].values()), r["transfers"]
    assert len(r["events"]) == 5, r["events"]
    assert not r["must_be_zero"], r["must_be_zero"]
    assert not r["ip_errors"], r["ip_errors"]
    assert max(rss) - rss[0] <= RSS_GROWTH_KIB, r["rss_kib"]
