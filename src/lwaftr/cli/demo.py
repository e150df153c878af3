"""``lwaftr demo``: run the embedded example through the data plane and say what happened."""
from __future__ import annotations

import argparse
import time

import numpy as np

from lwaftr import counters as C
from lwaftr.cli.describe import describe
from lwaftr.dataplane.engine import Engine
from lwaftr.examples import SUBSCRIBERS, example_config, example_traffic


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded example through the data plane")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = example_config()
    t0 = time.perf_counter()
    engine = Engine(cfg)
    print(f"lwAFTR example: {len(cfg.bindings)} softwires, BR 2001:db8:ffff::1, "
          f"engine ready in {time.perf_counter() - t0:.2f} s")
    for name, ipv4, psid, plen, b4 in SUBSCRIBERS:
        print(f"  {name:6s} B4 {b4:16s} owns {ipv4} PSID {psid}/{plen}")
    print()
    for desc, side, frame in example_traffic():
        before = engine.counters.copy()
        v4, v6 = ([frame], []) if side == "v4" else ([], [frame])
        o4, o6 = engine.process_frames(v4, v6, time.monotonic())
        print(f"* {desc}")
        print(f"    in  {side}: {describe(frame)}")
        for iface, frames in (("v4", o4), ("v6", o6)):
            for f in frames:
                print(f"    out {iface}: {describe(f)}")
        delta = engine.counters - before
        moved = ", ".join(f"{C.NAMES[i]} +{int(delta[i])}" for i in np.flatnonzero(delta)
                          if C.NAMES[i].endswith("packets") and C.NAMES[i].startswith(("drop", "hairpin", "out-icmp")))
        if moved:
            print(f"    counted: {moved}")
    print("\nCounters:")
    for name, value in C.to_dict(engine.counters, nonzero=True).items():
        print(f"  {name:45s} {value}")
    return 0
