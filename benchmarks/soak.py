#!/usr/bin/env python3
"""Soak: TCP transfers through ``lwaftr run`` in the namespace lab, with reloads.

    .venv/bin/python benchmarks/soak.py [--duration 150] [--mode two-interfaces|on-a-stick]
                                        [--control-plane kernel|built-in] [--io afpacket|xdp]
                                        [--size BYTES] [--timeout S] [--no-reconfigure] [--json]

Needs root.  Builds the lab of ``lwaftr demo`` (:mod:`lwaftr.lab.topology`;
namespaces named after this process, always deleted), starts ``lwaftr run``
and runs :func:`lwaftr.lab.soak.soak`: alice's and bob's LAN hosts make
256 KiB-each-way TCP transfers to the Internet host, one after another, for
``--duration`` seconds, while the lwAFTR is reloaded and its binding table
changed through ``lwaftr config``.  Prints the rate (transfers/s, Mbit/s),
transfer latency (median, p99, max), the longest gap in forwarding any end
point saw, every failed transfer, RSS over time, the lwAFTR's counters
and any IP error counter that moved in the lab's namespaces.  Exit status
1 if any transfer failed or a must-be-zero counter moved.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from lwaftr.lab.netns import Lab, unavailable           # noqa: E402
from lwaftr.lab.soak import soak                        # noqa: E402
from lwaftr.lab.topology import INTERNET, MODES, Topology   # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=150)
    p.add_argument("--mode", choices=MODES, default=MODES[0])
    p.add_argument("--control-plane", choices=["kernel", "built-in"], default="kernel")
    p.add_argument("--io", choices=["afpacket", "xdp"], default="afpacket")
    p.add_argument("--size", type=int, default=256 * 1024, help="bytes each way per transfer")
    p.add_argument("--timeout", type=float, default=30, help="socket timeout of every transfer")
    p.add_argument("--no-reconfigure", action="store_true", help="no reloads or binding changes")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    a = p.parse_args()
    why = unavailable()
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2
    with Lab() as lab:
        topo = Topology(lab, a.mode, control_plane=a.control_plane, io=a.io).build()
        try:
            topo.start_lwaftr()
            for name in ("alice", "bob"):       # next hops resolved, paths shown working
                topo.ping(name, INTERNET, count=1)
            r = soak(topo, a.duration, size=a.size, timeout=a.timeout, reconfigure=not a.no_reconfigure)
        finally:
            topo.close()
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{a.mode}, {a.control_plane} control plane, {a.io}: {r['duration']} s")
        print(f"  transfers {r['transfers']} ({r['transfers_per_second']}/s, {r['mbit_per_second']} Mbit/s "
              f"both ways), failed {len(r['failed'])}, server-side failures {len(r['served_failed'])}")
        ts = r["transfer_seconds"]
        print(f"  transfer time: median {ts['median']} s, p99 {ts['p99']} s, max {ts['max']} s")
        print(f"  longest gap in forwarding: {r['longest_gap']} s")
        rss = r["rss_kib"]
        print(f"  RSS of lwaftr run: {rss[0][1]} KiB at the start, {max(v for _, v in rss)} KiB at most, "
              f"{rss[-1][1]} KiB at the end")
        print(f"  events: {', '.join(e['what'] + ' @' + str(e['at']) for e in r['events'])}")
        print(f"  must-be-zero counters that moved: {r['must_be_zero'] or 'none'}")
        print(f"  IP errors in the lab: {r['ip_errors'] or 'none'}")
        for f in r["failed"][:10]:
            print(f"  FAILED: {json.dumps(f)}")
        print("  counters: " + json.dumps(r["counters"]))
    return 1 if r["failed"] or r["served_failed"] or r["must_be_zero"] or r["ip_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
