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
or refused with the reason and nothing changed (exit status 1).  A change is
acknowledged once it is in the configuration's journal on disk
(``CONF.journal``, fsynced; see :mod:`lwaftr.config.journal`): it survives a
restart, a crash and ``lwaftr reload``, and is folded into the file itself in
the background.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli import examples
from lwaftr.cli.counters import pick
from lwaftr.io import state
from lwaftr.io.control import request


def _common(p: argparse.ArgumentParser, value: bool) -> None:
    p.add_argument("--name", help="instance (default: the only one running)")
    p.add_argument("path", metavar="PATH", help="Snabb-style schema path, e.g. /softwire-config/external-interface/mtu")
    if value:
        p.add_argument("value", metavar="VALUE", help="leaf value or data text; - for standard input")


def add_get(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="print part of a running instance's configuration",
                       **examples("lwaftr config get /softwire-config/external-interface/mtu",
                                  "lwaftr config get --name edge1 '/softwire-config/binding-table/softwire[ipv4=192.0.2.1][psid=1]'"))
    _common(p, False)
    p.set_defaults(func=run, op="get")


def add_set(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("set", help="change a leaf or container of a running instance",
                       **examples("lwaftr config set /softwire-config/internal-interface/generate-icmp-errors false"))
    _common(p, True)
    p.set_defaults(func=run, op="set")


def add_add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("add", help="add list entries (softwires) to a running instance",
                       **examples("lwaftr config add /softwire-config/binding-table/softwire "
                                  "'{ ipv4 192.0.2.3; psid 0; b4-ipv6 2001:db8:1::d; br-address 2001:db8:ffff::1; "
                                  "port-set { psid-length 0; } }'"))
    _common(p, True)
    p.set_defaults(func=run, op="add")


def add_remove(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remove", help="remove a list entry (a softwire) from a running instance",
                       **examples("lwaftr config remove '/softwire-config/binding-table/softwire[ipv4=192.0.2.3][psid=0]'"))
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
        # get: the path is absent (1); set, add, remove: the instance refused the change (bad input, 2)
        print(f"lwaftr config {args.op}: {reply.get('error')}", file=sys.stderr)
        return 1 if args.op == "get" else 2
    if args.op == "get":
        value = reply.get("value", "")
        print(value, end="" if value.endswith("\n") else "\n")
    return 0
