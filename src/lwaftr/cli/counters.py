"""``lwaftr counters [NAME] [--json] [--all]``: a running instance's counters.

Read from the instance's shared memory (``lwaftr.io.state``) while it
forwards; with no NAME, the only running instance.
"""
from __future__ import annotations

import argparse
import json
import sys

from lwaftr.cli import examples
from lwaftr.io import state


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("counters", help="print a running instance's counters",
                       description="Exit 1 when the instance is not running.",
                       **examples("lwaftr counters", "lwaftr counters edge1 --json"))
    p.add_argument("name", nargs="?", help="instance name (default: the only one running)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--all", action="store_true", help="zero counters too")
    p.set_defaults(func=run)


def pick(name: str | None) -> str:
    """``name``, or the one running instance (LookupError otherwise)."""
    if name:
        return name
    running = state.instances()
    if len(running) != 1:
        raise LookupError("no lwaftr instance is running" if not running
                          else f"several instances are running ({', '.join(running)}): name one")
    return running[0]


def run(args: argparse.Namespace) -> int:
    try:
        name = pick(args.name)
        values = state.read_counters(name)
    except (LookupError, OSError, ValueError) as e:
        print(f"lwaftr {getattr(args, 'command', None) or 'counters'}: {e}", file=sys.stderr)
        return 1
    pattern = getattr(args, "pattern", None)
    shown = {k: v for k, v in values.items() if (v or args.all) and (not pattern or pattern in k)}
    if args.json:
        print(json.dumps(shown, indent=1, sort_keys=True))
    else:
        width = max((len(k) for k in shown), default=0)
        for k in sorted(shown):
            print(f"{k:<{width}}  {shown[k]:>20,}")
    return 0
