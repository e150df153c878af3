#!/usr/bin/env python3
"""Loading Snabb's 1M-softwire table as an RFC 8676 configuration.

    .venv/bin/python benchmarks/config_load.py [--slow N] [--repeat R]

Generates the table of ``lwaftr generate-configuration 193.5.1.100 15874
fc00::100 fc00:1:2:3:4:5:0:7e 6`` (1,015,936 softwires, the project's
generator code), writes it as snabb-softwire-v3 text and as RFC 8676
(+ lwaftr-softwire-ext) XML and JSON, and times ``load_config`` on each (best
of R, default 3): format detection, libyang validation of everything but the
binding entries, the entries through the fast path, every check.  With
``--slow N`` it also times full libyang validation (``fast=False``) of the
first N softwires (default 100,000) in both paths, for comparison.

Prints one line per measurement: format, softwires, file size, seconds.
Files go to ``benchmarks/out/`` (kept, like the other benchmarks').
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

from lwaftr.cli.generate_configuration import generate  # noqa: E402
from lwaftr.config import ietf  # noqa: E402
from lwaftr.config.load import load_config  # noqa: E402
from lwaftr.config.model import Bindings  # noqa: E402
from lwaftr.config.snabb import dump_snabb  # noqa: E402

TABLE_ARGS = ("193.5.1.100", 15874, "fc00::100", "fc00:1:2:3:4:5:0:7e", 6)   # Snabb's 1M example


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def head(b: Bindings, n: int) -> Bindings:
    return Bindings(b.ipv4[:n], b.psid[:n], b.psid_length[:n], b.reserved_ports_bit_count[:n],
                    b.b4_ipv6[:n], b.br_index[:n], b.br_addresses, b.line[:n])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, metavar="R")
    ap.add_argument("--slow", type=int, nargs="?", const=100_000, default=0, metavar="N",
                    help="also time full libyang validation on N softwires (default 100000)")
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    config = generate(*TABLE_ARGS).config
    n = len(config.bindings)
    files = {}
    for fmt, suffix in ((ietf.SNABB, "conf"), (ietf.XML, "xml"), (ietf.JSON, "json")):
        path = OUT / f"1m-ietf.{suffix}"
        t = time.perf_counter()
        text = dump_snabb(config) if fmt == ietf.SNABB else ietf.dumps_ietf(config, fmt)
        path.write_text(text)
        print(f"write {fmt:5} {n} softwires  {path.stat().st_size / 1e6:7.1f} MB  "
              f"{time.perf_counter() - t:6.2f} s", flush=True)
        files[fmt] = path
    for fmt, path in files.items():
        loaded = []
        s = best(lambda: loaded.append(load_config(path)), args.repeat)
        assert loaded[-1].bindings == config.bindings, "loaded table differs"
        print(f"load  {fmt:5} {n} softwires  {path.stat().st_size / 1e6:7.1f} MB  {s:6.2f} s", flush=True)
    if args.slow:
        small = replace(config, bindings=head(config.bindings, args.slow))
        for fmt in (ietf.XML, ietf.JSON):
            text = ietf.dumps_ietf(small, fmt)
            for fast in (True, False):
                s = best(lambda: ietf.loads_ietf(text, fmt=fmt, fast=fast), 1)
                print(f"load  {fmt:5} {len(small.bindings)} softwires  {len(text) / 1e6:7.1f} MB  {s:6.2f} s  "
                      f"({'fast path' if fast else 'all through libyang'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
