"""``lwaftr reload [NAME]``: ask a running instance to reload its configuration.

The same as sending it SIGHUP: it loads the file (with its journal of the
changes made while running, see :mod:`lwaftr.config.journal`) aside and
swaps it in between batches, or refuses it (and says why in its log) and
keeps the running one.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from lwaftr.cli import examples
from lwaftr.cli.counters import pick
from lwaftr.io import state


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reload", help="make a running instance reload its configuration",
                       description="The same as SIGHUP.  Exit 1 when the instance is not running.",
                       **examples("lwaftr reload", "lwaftr reload edge1"))
    p.add_argument("name", nargs="?", help="instance name (default: the only one running)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        name = pick(args.name)
        os.kill(state.pid_of(name), signal.SIGHUP)
    except (LookupError, OSError) as e:
        print(f"lwaftr reload: {e}", file=sys.stderr)
        return 1
    print(f"reload requested of instance {name!r} (its log says whether it was applied)")
    return 0
