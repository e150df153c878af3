"""``lwaftr monitor``: copy one subscriber's traffic out of a running instance.

    lwaftr monitor IPV4 [--tap NAME | --pcap FILE] [--name INSTANCE]
    lwaftr monitor --off [--name INSTANCE]

Every frame to IPV4 from the Internet and every IPv4-in-IPv6 frame from its
B4s (with IPV4 as the inner source), as received, is copied to a TAP
interface (default ``lwmon0``: ``tcpdump -i lwmon0`` works) or appended to a
pcap file written by the instance.  One subscriber at a time; off by
default.  The data plane copies at most 64 frames a batch and counts the
rest (``monitor-skipped-packets``); the frames themselves are forwarded as
any other (:mod:`lwaftr.dataplane.monitor`).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from lwaftr.cli import examples
from lwaftr.cli.counters import pick
from lwaftr.io import state
from lwaftr.io.control import request
from lwaftr.io.interfaces import InterfaceError, valid_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="copy one subscriber's traffic to a TAP or a pcap file",
                       description="Exit 1 when the instance is not running, 2 when it refuses the "
                                   "address, TAP name or file.",
                       **examples("lwaftr monitor 192.0.2.1            # then: tcpdump -i lwmon0",
                                  "lwaftr monitor 192.0.2.1 --pcap /tmp/sub.pcap",
                                  "lwaftr monitor --off"))
    p.add_argument("ipv4", nargs="?", help="the subscriber's public IPv4 address")
    p.add_argument("--off", action="store_true", help="stop monitoring")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tap", metavar="NAME", help="TAP interface to create (default lwmon0)")
    g.add_argument("--pcap", metavar="FILE", help="pcap file the instance writes")
    p.add_argument("--name", help="instance (default: the only one running)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.ipv4) == bool(args.off):
        print("lwaftr monitor: give an IPv4 address, or --off", file=sys.stderr)
        return 2
    if args.ipv4:
        try:
            ipaddress.IPv4Address(args.ipv4)
        except ValueError:
            print(f"lwaftr monitor: {args.ipv4!r} is not an IPv4 address", file=sys.stderr)
            return 2
    if args.tap is not None and not valid_name(args.tap):
        print(f"lwaftr monitor: {InterfaceError(args.tap, 'is not a valid interface name', '--tap')}",
              file=sys.stderr)
        return 2
    req = {"op": "monitor", "ipv4": None if args.off else args.ipv4}
    if not args.off:
        if args.pcap:
            req["pcap"] = os.path.abspath(args.pcap)
        else:
            req["tap"] = args.tap or "lwmon0"
    try:
        name = pick(args.name)
        state.pid_of(name)
        reply = request(state.run_dir() / name / "control.sock", req)
    except (LookupError, OSError) as e:
        print(f"lwaftr monitor: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):             # the instance refused the address, TAP or file
        print(f"lwaftr monitor: {reply.get('error')}", file=sys.stderr)
        return 2
    print("monitoring stopped" if args.off else f"monitoring {args.ipv4} to {reply['target']}")
    return 0
