"""``lwaftr run``: forward live traffic between Linux interfaces.

    lwaftr run --conf FILE (--v4 IFACE --v6 IFACE | --on-a-stick IFACE)
               [--name NAME] [--io afpacket|xdp] [--control-plane kernel|built-in]

Frames move through AF_PACKET rings (TPACKET_V3 in, TX ring out; or AF_XDP
with ``--io xdp`` where the kernel allows it) and the same engine as
``check`` and ``bench``.  With the kernel as control plane (the default),
a TAP per data interface carries the router's own addresses and the kernel
answers ARP, NDP and ping and resolves the next hops.  SIGHUP (or
``lwaftr reload NAME``) reloads the configuration (refused, with a log line,
if it does not load: the running one stays); ``lwaftr counters NAME`` reads
the counters while it runs; SIGTERM and SIGINT stop cleanly and print them.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from lwaftr import logs
from lwaftr.config.errors import ConfigError
from lwaftr.config.model import BUILT_IN, KERNEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="forward live traffic between Linux interfaces")
    p.add_argument("--conf", required=True, help="configuration file (snabb-softwire-v3 syntax)")
    p.add_argument("--v4", metavar="IFACE", help="Internet-facing interface")
    p.add_argument("--v6", metavar="IFACE", help="B4-facing interface")
    p.add_argument("--on-a-stick", metavar="IFACE", help="one interface for both sides")
    p.add_argument("--name", help="instance name for 'lwaftr counters' and 'lwaftr reload' "
                                  "(default: the configuration's name, else 'lwaftr')")
    p.add_argument("--io", choices=["afpacket", "xdp"], default="afpacket",
                   help="xdp: AF_XDP where the kernel allows it, else AF_PACKET (logged)")
    p.add_argument("--control-plane", choices=[KERNEL, BUILT_IN],
                   help="override the configuration's control-plane mode")
    p.add_argument("--batch", type=int, default=256, help="frames per ring per batch")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    if bool(args.on_a_stick) == bool(args.v4 or args.v6) or (not args.on_a_stick and not (args.v4 and args.v6)):
        print("lwaftr run: give --v4 and --v6, or --on-a-stick", file=sys.stderr)
        return 2
    from lwaftr.io.live import LiveLoop
    from lwaftr.io.state import InstanceBusy

    try:
        loop = LiveLoop(args.conf, args.v4, args.v6, args.on_a_stick, batch=args.batch, io=args.io,
                        control_plane=args.control_plane, name=args.name)
    except ConfigError as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 2
    except InstanceBusy as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 1
    except (OSError, IndexError) as e:
        print(f"lwaftr run: cannot set up the interfaces: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGHUP, lambda *_: loop.request_reload())
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())
    logging.getLogger("lwaftr.run").info("forwarding (%s)", f"on a stick: {args.on_a_stick}" if args.on_a_stick
                                         else f"v4 {args.v4}, v6 {args.v6}")
    try:
        loop.run()
    finally:
        counters = loop.counters()
        loop.close()
    print(json.dumps(counters, indent=1, sort_keys=True))
    return 0
