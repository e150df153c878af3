"""``lwaftr run``: forward live traffic between Linux interfaces.

    lwaftr run --conf FILE (--v4 IFACE --v6 IFACE | --on-a-stick IFACE)

Frames move through AF_PACKET rings (TPACKET_V3 in, TX ring out) and the
same engine as ``check`` and ``bench``.  SIGHUP reloads the configuration
(refused, with a log line, if it does not load: the running one stays);
SIGTERM and SIGINT stop cleanly and print the counters.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from lwaftr.config.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="forward live traffic between Linux interfaces")
    p.add_argument("--conf", required=True, help="snabb-softwire-v3 configuration file")
    p.add_argument("--v4", metavar="IFACE", help="Internet-facing interface")
    p.add_argument("--v6", metavar="IFACE", help="B4-facing interface")
    p.add_argument("--on-a-stick", metavar="IFACE", help="one interface for both sides")
    p.add_argument("--batch", type=int, default=256, help="frames per ring per batch")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.on_a_stick) == bool(args.v4 or args.v6) or (not args.on_a_stick and not (args.v4 and args.v6)):
        print("lwaftr run: give --v4 and --v6, or --on-a-stick", file=sys.stderr)
        return 2
    from lwaftr.io.live import LiveLoop

    try:
        loop = LiveLoop(args.conf, args.v4, args.v6, args.on_a_stick, batch=args.batch)
    except ConfigError as e:
        print(f"lwaftr run: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"lwaftr run: cannot open the interfaces: {e}", file=sys.stderr)
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
