"""``lwaftr query [NAME] [--json] [--all] [PATTERN]``: a running instance's counters.

The same figures as ``lwaftr counters`` (shared memory, summed over
workers), optionally only those whose name contains PATTERN.
"""
from __future__ import annotations

import argparse

from lwaftr.cli import counters, examples


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="print a running instance's counters (optionally matching PATTERN)",
                       description="Exit 1 when the instance is not running.",
                       **examples("lwaftr query lwaftr drop", "lwaftr query edge1 --json --all"))
    p.add_argument("name", nargs="?", help="instance name (default: the only one running)")
    p.add_argument("pattern", nargs="?", help="only counters whose name contains this")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--all", action="store_true", help="zero counters too")
    p.set_defaults(func=counters.run)
