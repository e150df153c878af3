"""``lwaftr metrics [--listen ADDR:PORT] [--name NAME ...]``: a Prometheus endpoint.

Every scrape reads the running instances' counters from shared memory
(``lwaftr.mgmt.metrics``); SIGTERM or SIGINT stops it.
"""
from __future__ import annotations

import argparse
import sys

from lwaftr.cli import LOG_LEVEL_HELP, examples
from lwaftr import logs
from lwaftr.mgmt.metrics import DEFAULT_LISTEN


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="serve the running instances' counters to Prometheus",
                       **examples("lwaftr metrics --listen 127.0.0.1:9417 &   # curl -s 127.0.0.1:9417/metrics",
                                  "lwaftr metrics --name edge1 edge2"))
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"address to serve /metrics on (default {DEFAULT_LISTEN}; [::1]:PORT for IPv6)")
    p.add_argument("--name", action="extend", nargs="+", metavar="NAME",
                   help="only these instances, reported down when not running (default: every instance)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help=LOG_LEVEL_HELP)
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="log lines as plain text or one JSON object each (default text)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lwaftr.mgmt import metrics

    logs.setup(args.log_level, args.log_format)
    try:
        return metrics.serve(args.listen, args.name)
    except (ValueError, OSError) as e:
        print(f"lwaftr metrics: {e}", file=sys.stderr)
        return 1
