"""Next hops from the kernel's neighbour table (needs root; a namespace made here)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

NS = f"lwaftr-nh-{os.getpid()}"

BODY = textwrap.dedent('''
    import subprocess, time
    from pyroute2 import IPRoute
    from lwaftr.io.neighbors import NextHops

    def ip(*a):
        subprocess.run(["ip", *a], check=True)

    ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    ip("link", "set", "va", "up")
    ipr = IPRoute()
    idx = ipr.link_lookup(ifname="va")[0]
    hops = NextHops(ipr, [(idx, bytes([192, 0, 2, 5])), (idx, bytes.fromhex("20010db8" + "00" * 11 + "05"))],
                    refresh=3600)             # only events (and the first read) can tell it anything
    t = 1000.0
    print("start", hops.poll(t), hops.macs())
    ip("neigh", "replace", "192.0.2.5", "lladdr", "02:00:00:00:00:05", "dev", "va", "nud", "permanent")
    time.sleep(0.1)
    print("learned", hops.poll(t + 1), hops.macs()[0].hex(":"), hops.macs()[1])
    print("quiet", hops.poll(t + 2))
    ip("neigh", "replace", "192.0.2.5", "lladdr", "02:00:00:00:00:06", "dev", "va", "nud", "stale")
    time.sleep(0.1)
    print("moved", hops.poll(t + 3), hops.macs()[0].hex(":"))
    ip("neigh", "del", "192.0.2.5", "dev", "va")
    time.sleep(0.1)
    print("gone", hops.poll(t + 4), hops.macs()[0])
    # Without events, the periodic refresh finds a change.
    quiet = NextHops(ipr, [(idx, bytes([192, 0, 2, 7]))], refresh=5)
    quiet.poll(t)
    quiet.events.close()
    quiet.events = type("NoEvents", (), {"fileno": lambda self: -1})()
    import select
    real = select.select
    select.select = lambda r, w, x, timeout=None: ([], [], [])
    ip("neigh", "replace", "192.0.2.7", "lladdr", "02:00:00:00:00:07", "dev", "va", "nud", "reachable")
    print("before-interval", quiet.poll(t + 1), quiet.macs()[0])
    print("after-interval", quiet.poll(t + 6), quiet.macs()[0].hex(":"))
''')


def test_next_hops_follow_neighbour_events_and_refresh():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", BODY], capture_output=True, text=True,
                           timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "start False [None, None]",
        "learned True 02:00:00:00:00:05 None",
        "quiet False",
        "moved True 02:00:00:00:00:06",
        "gone True None",
        "before-interval False None",
        "after-interval True 02:00:00:00:00:07",
    ]
