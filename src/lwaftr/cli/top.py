"""``lwaftr top [NAME] [--interval S] [--iterations N] [--plain] [--all]``: live rates.

Rates per second over the interval and totals of the non-zero counters of a
running instance (summed over its workers), traffic first, then the rest,
then drops; read from shared memory (``lwaftr.mgmt.top``).  On a terminal
the view is redrawn in place; ``--plain`` (or output that is not a
terminal) prints one snapshot per interval for scripts.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli import examples
from lwaftr.cli.counters import pick


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live rates and totals of a running instance's counters",
                       **examples("lwaftr top", "lwaftr top edge1 --plain --iterations 3"))
    p.add_argument("name", nargs="?", help="instance name (default: the only one running)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.add_argument("--iterations", type=int, default=None, metavar="N", help="stop after N refreshes (default: never)")
    p.add_argument("--plain", action="store_true", help="plain snapshots one after another, no escapes")
    p.add_argument("--all", action="store_true", help="zero counters too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lwaftr.mgmt import top

    if args.interval <= 0 or (args.iterations is not None and args.iterations < 0):
        print("lwaftr top: --interval must be positive and --iterations not negative", file=sys.stderr)
        return 2
    try:
        name = pick(args.name)
        return top.watch(name, args.interval, args.iterations,
                         plain=args.plain or not sys.stdout.isatty(), show_all=args.all)
    except (LookupError, OSError, ValueError) as e:
        print(f"lwaftr top: {e}", file=sys.stderr)
        return 1
