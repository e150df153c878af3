#!/usr/bin/env python3
"""The speed benchmarks: prints a table of figures (see docs/performance.md).

    .venv/bin/python benchmarks/run.py [--duration S] [--snabb PATH/TO/snabb] [--quick] [--big]

Cases (tables and traffic made with ``lwaftr generate-configuration`` into
benchmarks/out/, reused when present):

* load    1M-softwire snabb-softwire-v3 text -> compiled table, and a start from it
* 550B    1,015,936 softwires, 550-byte frames over 10,000 subscribers, 1 worker
* 100B    the same table, 100-byte frames, one flow per subscriber (cache-hostile)
* 2w      as 550B with 2 workers
* 4M      a 4,063,744-softwire table, 550-byte frames (with --big)

With ``--snabb``, Snabb's ``lwaftr bench`` runs on the very same
configuration and pcaps right after ours, for a side-by-side ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
LWAFTR = [sys.executable, "-m", "lwaftr"]
TABLE_ARGS = ["193.5.1.100", "15874", "fc00::100", "fc00:1:2:3:4:5:0:7e", "6"]   # Snabb's 1M example
BIG_ARGS = ["193.5.1.100", "63496", "fc00::100", "fc00:1:2:3:4:5:0:7e", "6"]      # 4,063,744 softwires


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def generate(name: str, table: list[str], size: int, npackets: int, flows: int) -> tuple[Path, Path, Path]:
    conf, v4, v6 = OUT / f"{name}.conf", OUT / f"{name}-v4.pcap", OUT / f"{name}-v6.pcap"
    if not (conf.exists() and v4.exists() and v6.exists()):
        OUT.mkdir(exist_ok=True)
        sh(LWAFTR + ["generate-configuration", "--output", str(conf), "--pcap-v4", str(v4), "--pcap-v6", str(v6),
                     "--packet-size", str(size), "--npackets", str(npackets), "--flows", str(flows)] + table)
    return conf, v4, v6


def ours(conf: Path, v4: Path, v6: Path, duration: float, workers: int = 1) -> dict:
    r = sh(LWAFTR + ["bench", "--json", "--duration", str(duration), "--workers", str(workers),
                     str(conf), str(v4), str(v6)])
    return json.loads(r.stdout.strip().splitlines()[-1])


def snabb(binary: str, conf: Path, v4: Path, v6: Path, duration: float) -> dict | None:
    """Medians of Snabb's per-second CSV rows (``bench -b``), once it is past loading."""
    csv = OUT / "snabb-bench.csv"
    try:
        subprocess.run([binary, "lwaftr", "bench", "--cpu", "1", "--duration", str(duration), "-b", str(csv),
                        str(conf), str(v4), str(v6)], text=True, capture_output=True, timeout=duration + 900)
        rows = [list(map(float, line.split(","))) for line in csv.read_text().splitlines()[1:] if line.strip()]
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        print(f"snabb: {e}", file=sys.stderr)
        return None
    first = next((i for i, r in enumerate(rows) if r[1] >= 1.0), None)
    steady = rows[first + 1:] if first is not None else []
    if not steady:
        print("snabb: no steady-state rows in its CSV", file=sys.stderr)
        return None
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"decap_mpps": med([r[1] for r in steady]), "encap_mpps": med([r[3] for r in steady])}


def load_times(conf: Path) -> dict:
    """Seconds to load the text into a table (no compiled file), then to start from the compiled file."""
    code = ("import time,sys; t=time.perf_counter(); from lwaftr.config.load import load_table; "
            "c,tb=load_table(sys.argv[1]); print(time.perf_counter()-t, tb.count, "
            "(tb.sw_tab.nbytes+tb.addr_tab.nbytes)/max(tb.count,1))")
    compiled = [p for p in conf.parent.glob(conf.name + ".*") if p.suffix in (".lwbt",)]
    for p in compiled:
        p.unlink()
    cold = sh([sys.executable, "-c", code, str(conf)]).stdout.split()
    warm = sh([sys.executable, "-c", code, str(conf)]).stdout.split()
    return {"text_to_table_s": float(cold[0]), "from_compiled_s": float(warm[0]), "softwires": int(cold[1]),
            "table_bytes_per_softwire": float(cold[2])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--snabb", help="path to a snabb binary to compare with, side by side")
    ap.add_argument("--quick", action="store_true", help="3-second runs, no load timings")
    ap.add_argument("--big", action="store_true", help="also the 4M-softwire table")
    args = ap.parse_args()
    dur = 3.0 if args.quick else args.duration
    rows = []
    conf, v4, v6 = generate("1m-550", TABLE_ARGS, 550, 10_000, 10_000)
    if not args.quick:
        lt = load_times(conf)
        print(f"load: {lt['softwires']} softwires, text -> table {lt['text_to_table_s']:.2f} s, "
              f"start from compiled {lt['from_compiled_s']:.2f} s, "
              f"{lt['table_bytes_per_softwire']:.1f} table bytes per softwire", flush=True)
    cases = [("550B, 10k flows, 1 worker", conf, v4, v6, 1)]
    c100 = generate("1m-100", TABLE_ARGS, 100, 1_015_936, 1_015_936)
    cases.append(("100B, 1M flows, 1 worker", *c100, 1))
    cases.append(("550B, 10k flows, 2 workers", conf, v4, v6, 2))
    if args.big:
        cases.append(("4M table, 550B, 10k flows, 1 worker", *generate("4m-550", BIG_ARGS, 550, 10_000, 10_000), 1))
    for name, c, p4, p6, w in cases:
        r = ours(c, p4, p6, dur, w)
        s = snabb(args.snabb, c, p4, p6, dur) if args.snabb and w == 1 else None
        rows.append((name, r, s))
        print(f"{name}: decap {r['decap_mpps']:.2f} Mpps, encap {r['encap_mpps']:.2f} Mpps"
              + (f"   snabb decap {s['decap_mpps']:.2f}, encap {s['encap_mpps']:.2f}" if s else ""), flush=True)
    print()
    print(f"{'case':40s} {'decap Mpps':>10s} {'encap Mpps':>10s} {'decap Gbps':>10s} {'encap Gbps':>10s}"
          f" {'snabb dec':>9s} {'snabb enc':>9s} {'ratio':>6s}")
    for name, r, s in rows:
        ratio = min(r["decap_mpps"] / s["decap_mpps"], r["encap_mpps"] / s["encap_mpps"]) if s else None
        print(f"{name:40s} {r['decap_mpps']:10.2f} {r['encap_mpps']:10.2f} {r['decap_gbps']:10.2f} "
              f"{r['encap_gbps']:10.2f} {s['decap_mpps'] if s else float('nan'):9.2f} "
              f"{s['encap_mpps'] if s else float('nan'):9.2f} {ratio if ratio else float('nan'):6.2f}")
    one = next(r for n, r, _ in rows if n.startswith("550B") and n.endswith("1 worker"))
    two = next(r for n, r, _ in rows if n.endswith("2 workers"))
    print(f"\n2 workers / 1 worker: decap {two['decap_mpps'] / one['decap_mpps']:.2f}x, "
          f"encap {two['encap_mpps'] / one['encap_mpps']:.2f}x   (machine: {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
