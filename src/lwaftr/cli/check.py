"""``lwaftr check``: run pcaps through the data plane, write what comes out.

    lwaftr check [--on-a-stick] [--counters EXPECTED.json] CONF IN_V4.pcap IN_V6.pcap OUT_V4.pcap OUT_V6.pcap

With ``--counters``, the run fails (exit 1) and prints the difference when
the counters after the run differ from the JSON object; ``snabb-softwire-v3``
counters it does not name must stay 0 (our extension counters, such as
``drop-ingress-filter-*``, are compared only when named).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from lwaftr.cli import examples
from lwaftr import counters as C
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_config
from lwaftr.config.model import Config
from lwaftr.dataplane import vlan
from lwaftr.dataplane.engine import Engine, slot_size
from lwaftr.dataplane.pool import HEADROOM, PacketPool
from lwaftr.dataplane.fragids import SNABB_CHECK_ID_SEEDS
from lwaftr.io.pcap import CaptureError, read_frames, write_frames
from lwaftr import wire as W


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="run pcaps through the data plane and write the output pcaps",
                       description="Feed IN_V4 and IN_V6 through the data plane once and write what leaves each "
                                   "side.  Captures are read as pcap or pcapng, written as pcap.  Exit 1 when "
                                   "--counters differ, 2 for a bad configuration or capture.",
                       **examples("lwaftr check lwaftr.conf from-inet.pcap from-b4.pcap to-inet.pcap to-b4.pcap",
                                  "lwaftr check --counters expected.json lwaftr.conf in4.pcapng empty.pcap o4.pcap o6.pcap"))
    p.add_argument("--on-a-stick", action="store_true", help="one interface carries both families")
    p.add_argument("--control-plane", choices=("built-in", "kernel"), default="built-in",
                   help="built-in (default): ARP, NDP and ping answered by the data plane, as Snabb's check; "
                        "kernel: as lwaftr run's default, frames for the router itself go to the kernel "
                        "(counted as to-kernel-*; their number is printed) and next hops are the configured MACs")
    p.add_argument("--counters", metavar="EXPECTED.json", help="compare counters with this JSON object")
    p.add_argument("conf", metavar="CONF", help="configuration (snabb-softwire-v3, or RFC 8676 XML/JSON)")
    p.add_argument("in_v4", metavar="IN_V4", help="frames arriving on the Internet (IPv4) side: pcap or pcapng")
    p.add_argument("in_v6", metavar="IN_V6", help="frames arriving on the B4 (IPv6) side: pcap or pcapng")
    p.add_argument("out_v4", metavar="OUT_V4", help="pcap to write with what leaves the IPv4 side")
    p.add_argument("out_v6", metavar="OUT_V6", help="pcap to write with what leaves the IPv6 side")
    p.set_defaults(func=run)


def run_check(conf_path: str, in_v4: str, in_v6: str, on_a_stick: bool = False, kernel: bool = False
              ) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """Run one check; returns (frames out of v4, frames out of v6, counters).

    ``kernel``: the kernel control-plane graph of ``lwaftr run`` (frames for
    the router itself are counted as passed to the kernel's TAPs)."""
    cfg = load_config(conf_path)
    v4, v6 = read_frames(in_v4), read_frames(in_v6)       # bad captures are said before the engine is built
    engine = Engine(cfg, fragment_id_seeds=SNABB_CHECK_ID_SEEDS, kernel=kernel, pool=_pool_for(cfg, v4 + v6),
                    max_batch=max(4096, len(v4), len(v6)))
    now = time.monotonic()
    if on_a_stick:
        out = engine.process_stick(v4 + v6, now)
        o4 = [f for f in out if vlan.inner_ethertype(f) in (W.ETHERTYPE_IPV4, W.ETHERTYPE_ARP)]
        o6 = [f for f in out if vlan.inner_ethertype(f) not in (W.ETHERTYPE_IPV4, W.ETHERTYPE_ARP)]
    else:
        out = engine.process_frames(v4, v6, now)
        o4, o6 = out.v4, out.v6
    return o4, o6, C.to_dict(engine.counters, nonzero=True)


def _pool_for(cfg: Config, frames: list[bytes]) -> PacketPool:
    """A packet pool that takes the whole capture as one batch (Snabb's check is one
    breath): slots for its largest frame, and enough of them for every frame and
    what the frames become (fragments, errors)."""
    largest = max(map(len, frames), default=0)
    slot = max(slot_size(cfg), -(-(HEADROOM + largest) // 64) * 64)
    return PacketPool(max(4096, 8 * len(frames)), slot)


def _expected(path: str) -> dict[str, int]:
    """The ``--counters`` JSON object (ValueError naming the file otherwise)."""
    try:
        with open(path) as fh:
            expected = json.load(fh)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(expected, dict) or not all(isinstance(v, int) for v in expected.values()):
        raise ValueError(f"{path}: not a JSON object of counter names to integers")
    return expected


def run(args: argparse.Namespace) -> int:
    try:
        expected = _expected(args.counters) if args.counters else None
    except ValueError as e:
        print(f"lwaftr check: {e}", file=sys.stderr)
        return 2
    try:
        o4, o6, counters = run_check(args.conf, args.in_v4, args.in_v6, args.on_a_stick,
                                     kernel=args.control_plane == "kernel")
        write_frames(args.out_v4, o4)
        write_frames(args.out_v6, o6)
    except (ConfigError, CaptureError) as e:
        print(f"lwaftr check: {e}", file=sys.stderr)
        return 2
    if args.control_plane == "kernel":
        print(f"{counters.get('to-kernel-ipv4-interface-packets', 0)} frame(s) of the IPv4 side and "
              f"{counters.get('to-kernel-ipv6-interface-packets', 0)} of the IPv6 side went to the kernel",
              file=sys.stderr)
    if expected is not None:
        # Our own counters beyond snabb-softwire-v3 are compared only when named.
        d = {k: v for k, v in C.diff(counters, expected).items()
             if k not in C.EXTENSIONS or k in expected}
        if d:
            print("counters differ (name: expected -> actual):", file=sys.stderr)
            for name, (e, a) in d.items():
                print(f"  {name}: {e} -> {a}", file=sys.stderr)
            return 1
    return 0
