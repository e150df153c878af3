"""``lwaftr config get|set|add|remove``: the running configuration of an instance.

    lwaftr config get    [--name N] PATH
    lwaftr config set    [--name N] PATH VALUE
    lwaftr config add    [--name N] PATH VALUE
    lwaftr config remove [--name N] PATH

Paths are Snabb's (``/softwire-config/external-interface/mtu``,
``/softwire-config/binding-table/softwire[ipv4=192.0.2.1][psid=1]``);
VALUE is a leaf value or data text (``'{ ipv4 ...; psid ...; ... }'``, one
or more entries for ``add``; ``-`` reads it from standard input).  The
request goes to the instance's control socket (a supervisor passes it to
every worker); a change is validated whole and applied between two batches,
or refused with the reason and nothing changed (exit status 1).  Changes live
in the running instance: the file is not rewritten, and a reload from the
file replaces them.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli.counters import pick
from lwaftr.io import state
from lwaftr.io.control import request


def _common(p: argparse.ArgumentParser, value: bool) -> None:
    p.add_argument("--name", help="instance (default: the only one running)")
    p.add_argument("path", metavar="PATH")
    if value:
        p.add_argument("value", metavar="VALUE", help="leaf value or data text; - for standard input")


def add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="print part of a running instance's configuration")
    _common(p, False)
    p.set_defaults(func=run, op="get")


def add_set(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("set", help="change a leaf or container of a running instance")
    _common(p, True)
    p.set_defaults(func=run, op="set")


def add_add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("add", help="add list entries (softwires) to a running instance")
    _common(p, True)
    p.set_defaults(func=run, op="add")


def add_remove(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remove", help="remove a list entry (a softwire) from a running instance")
    _common(p, False)
    p.set_defaults(func=run, op="remove")


def run(args: argparse.Namespace) -> int:
    req = {"op": args.op, "path": args.path}
    if getattr(args, "value", None) is not None:
        req["value"] = sys.stdin.read() if args.value == "-" else args.value
    try:
        name = pick(args.name)
        state.pid_of(name)
        reply = request(state.run_dir() / name / "control.sock", req)
    except (LookupError, OSError) as e:
        print(f"lwaftr config {args.op}: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"lwaftr config {args.op}: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.op == "get":
        value = reply.get("value", "")
        print(value, end="" if value.endswith("\n") else "\n")
    return 0
