#!/usr/bin/env python3
"""Where a bench run's time goes, by compiled function (issue 12, item 7).

    sudo PYTHONPATH=src .venv/bin/python benchmarks/perf_profile.py [--mix clean] [--duration S]
        [--batch N] [--cpu C]

Runs ``lwaftr bench``'s loop (:func:`lwaftr.cli.bench.replay`) in this process on
the mixes' 1M table and traffic (benchmarks/mixes.py builds them), under
``perf record``, and prints the share of the samples by function.  numba's
cached code carries no symbols, so the kernels are compiled afresh in this
process (an empty numba cache: several minutes) and a perf map
(``/tmp/perf-PID.map``) is written from their code libraries: every function
LLVM did not inline gets its own row.  Needs ``perf`` (linux-perf), as root or
with ``kernel.perf_event_paranoid`` at most 1.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _map_functions(dispatchers) -> dict[int, str]:
    """Start address -> name of every function defined in the dispatchers' code libraries."""
    addrs: dict[int, str] = {}
    for d in dispatchers:
        for cres in d.overloads.values():
            lib = cres.library
            for fn in lib._final_module.functions:
                if fn.is_declaration:
                    continue
                try:
                    a = lib.get_pointer_to_function(fn.name)
                except Exception:       # (not emitted: inlined everywhere)
                    continue
                if a:
                    addrs[a] = fn.name
    return addrs


def _short(name: str) -> str:
    """A numba-mangled name -> module.function."""
    import re
    m = re.match(r"_ZN(.*)", name)
    if not m:
        return name
    parts, rest = [], m.group(1)
    while rest and rest[0].isdigit():
        n = int(re.match(r"\d+", rest).group())
        k = len(str(n))
        parts.append(rest[k:k + n])
        rest = rest[k + n:]
    keep = [p for p in parts if p not in ("lwaftr", "dataplane", "bindingtable", "cpython")
            and not p.startswith("_3clocals_3e")]
    return ".".join(keep[-2:]) if keep else name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mix", default="clean", help="a mix of benchmarks/mixes.py (default clean)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds sampled (default 6)")
    ap.add_argument("--batch", type=int, default=512, help="frames a side a batch (default 512, as bench)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU to run on (default 1)")
    ap.add_argument("--top", type=int, default=25, help="rows to print (default 25)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="lwaftr-profile-")     # compile here: symbols
    sys.path.insert(0, HERE)
    import numpy as np

    import mixes
    from run import TABLE_ARGS, generate
    from lwaftr.bindingtable.table import BindingTable
    from lwaftr.cli import bench
    from lwaftr.cli.bench import load_table
    from lwaftr.io.pcap import read_frames
    from lwaftr.dataplane import batch, replay
    from lwaftr.dataplane.engine import Engine
    from lwaftr.dataplane.replay import Templates

    if args.mix not in mixes.MIXES:
        ap.error(f"unknown mix {args.mix!r} (one of {', '.join(mixes.MIXES)})")
    conf, v4, v6 = generate("1m-550", TABLE_ARGS, 550, 10_000, 10_000)
    f4, f6 = mixes.build_mix(args.mix, 1, read_frames(v4), read_frames(v6), *mixes.interface_ips(conf))
    if args.mix == "filter":
        conf = mixes.filter_variant(conf)
    config, table = load_table(str(conf))
    table = BindingTable(np.array(table.addr_tab), np.array(table.sw_tab), np.array(table.br_tab), table.count)
    t4, t6 = Templates(f4), Templates(f6)
    engine = Engine(config, table=table, max_batch=args.batch, pool_slots=max(1024, 4 * args.batch))
    print("compiling the kernels (an empty cache)...", file=sys.stderr, flush=True)
    bench.replay(engine, t4, t6, args.batch, time.perf_counter() + 1.0)
    addrs = _map_functions([batch.run_batch, replay._cycle])
    pts = sorted(addrs)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as fh:
        for i, a in enumerate(pts):
            end = pts[i + 1] if i + 1 < len(pts) else a + 65536
            fh.write(f"{a:x} {end - a:x} {_short(addrs[a])}\n")
    data = os.path.join(tempfile.mkdtemp(prefix="lwaftr-perf-"), "perf.data")
    perf = subprocess.Popen(["perf", "record", "-F", "4999", "-p", str(os.getpid()), "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    sent = np.zeros(4, np.int64)
    took = bench.replay(engine, t4, t6, args.batch, time.perf_counter() + args.duration, sent=sent)
    perf.send_signal(2)
    perf.wait()
    print(f"# {args.mix}: {sent[0] / took / 1e6:.3f} / {sent[2] / took / 1e6:.3f} Mpps (decap / encap) under perf, "
          f"batch {args.batch}, CPU {args.cpu}")
    rep = subprocess.run(["perf", "report", "-i", data, "--sort", "sym", "--stdio", "--percent-limit", "0.3"],
                         capture_output=True, text=True)
    rows = [line for line in rep.stdout.splitlines() if line.strip() and not line.startswith("#")]
    print("\n".join(rows[:args.top]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
