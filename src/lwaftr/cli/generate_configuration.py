"""``lwaftr generate-configuration``: a synthetic table (and traffic) for benchmarks.

    lwaftr generate-configuration [--output FILE] [--pcap-v4 FILE --pcap-v6 FILE
        --packet-size N --npackets N --flows N] IPV4 NUM_IPS BR_ADDRESS B4_IPV6 PSID_LENGTH [SHIFT]

The same arguments and the same softwires as Snabb's command of that name:
NUM_IPS addresses from IPV4, each shared by 2^PSID_LENGTH softwires whose B4
addresses count up from B4_IPV6, all answered on BR_ADDRESS.  Snabb numbers
the PSIDs of an address 1..2^k, which makes the last one unreachable (no
port has PSID 2^k); we write it as PSID 0, the PSID Snabb's own traffic
generator uses for it, so every softwire can carry traffic.

The pcaps hold UDP frames with valid checksums: Internet -> subscriber on
the IPv4 side and subscriber -> Internet on the IPv6 side, ``--flows``
softwires spread evenly over the whole table (default: one per packet).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass

import numpy as np

from lwaftr.cli import examples
from lwaftr.config.model import (Bindings, Config, Instance, InterfaceAddresses, InterfacePolicy,
                                 NextHop)
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import tunnelled, udp_v4
from lwaftr.io.pcap import CaptureError, write_frames

INTERNET_HOST = ipaddress.IPv4Address("1.2.3.4").packed
INTERNET_PORT = 12345


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate-configuration", help="write a synthetic configuration and benchmark pcaps",
                       description="Snabb's synthetic binding table: NUM_IPS addresses from IPV4, each "
                                   "split into 2^PSID_LENGTH port sets, B4 addresses counting up from B4_IPV6.",
                       **examples("lwaftr generate-configuration 193.5.1.100 15874 fc00::100 "
                                  "fc00:1:2:3:4:5:0:7e 6 -o big.conf   # 1,015,936 softwires",
                                  "lwaftr generate-configuration -o gen.conf --pcap-v4 v4.pcap --pcap-v6 v6.pcap "
                                  "193.5.1.100 10 fc00::100 fc00:1:2:3:4:5:0:7e 6"))
    p.add_argument("--output", "-o", metavar="FILE", help="configuration file (default: standard output)")
    p.add_argument("--pcap-v4", metavar="FILE", help="write Internet-side traffic here")
    p.add_argument("--pcap-v6", metavar="FILE", help="write subscriber-side traffic here")
    p.add_argument("--packet-size", type=int, default=550, metavar="N", help="frame size of the IPv4 frames")
    p.add_argument("--npackets", type=int, default=1000, metavar="N", help="frames per pcap")
    p.add_argument("--flows", type=int, metavar="N", help="distinct softwires in the traffic (default: npackets)")
    p.add_argument("ipv4", metavar="IPV4", help="first public IPv4 address of the table")
    p.add_argument("num_ips", metavar="NUM_IPS", type=int, help="how many consecutive IPv4 addresses")
    p.add_argument("br_address", metavar="BR_ADDRESS", help="the lwAFTR's IPv6 (BR) address")
    p.add_argument("b4_ipv6", metavar="B4_IPV6", help="first B4 IPv6 address (one more per softwire)")
    p.add_argument("psid_length", metavar="PSID_LENGTH", type=int,
                   help="bits of port-set id: 2^PSID_LENGTH subscribers per address (0-16)")
    p.add_argument("shift", metavar="SHIFT", type=int, nargs="?",
                   help="port-set offset bits (default 16 - PSID_LENGTH)")
    p.set_defaults(func=run)


@dataclass
class Generated:
    config: Config
    shift: int


def generate(ipv4: str, num_ips: int, br: str, b4: str, psid_length: int, shift: int | None = None) -> Generated:
    """The configuration Snabb's generator writes for these arguments."""
    if not 0 <= psid_length <= 16:
        raise ValueError("PSID_LENGTH must be 0..16")
    shift = 16 - psid_length if shift is None else shift
    if psid_length + shift > 16:
        raise ValueError("PSID_LENGTH + SHIFT must not exceed 16")
    per_ip = 1 << psid_length if psid_length else 1
    n = num_ips * per_ip
    first = int(ipaddress.IPv4Address(ipv4))
    idx = np.arange(n, dtype=np.int64)
    v4 = (first + idx // per_ip).astype(np.uint32)
    psid = ((idx % per_ip + 1) % per_ip).astype(np.uint16) if psid_length else np.zeros(n, np.uint16)
    base = int(ipaddress.IPv6Address(b4))
    hi, lo = base >> 64, base & ((1 << 64) - 1)
    lo_arr = np.uint64(lo) + idx.astype(np.uint64)                      # wraps modulo 2^64
    carry = (lo_arr < np.uint64(lo)).astype(np.uint64)
    hi_arr = np.uint64(hi) + carry
    b4s = np.empty((n, 16), np.uint8)
    b4s[:, :8] = hi_arr.astype(">u8").view(np.uint8).reshape(n, 8)
    b4s[:, 8:] = lo_arr.astype(">u8").view(np.uint8).reshape(n, 8)
    bind = Bindings(v4, psid, np.full(n, psid_length, np.uint8),
                    np.full(n, 16 - psid_length - shift, np.uint8), b4s, np.zeros(n, np.uint16),
                    [ipaddress.IPv6Address(br).packed], np.zeros(n, np.int32))
    mac_self, mac_next = bytes.fromhex("02aaaaaaaaaa"), bytes.fromhex("029999999999")
    inst = Instance("test", None, 0,
                    InterfaceAddresses(ipaddress.IPv4Address("10.0.1.1").packed, mac_self, NextHop(mac=mac_next)),
                    InterfaceAddresses(ipaddress.IPv6Address(br).packed, mac_self, NextHop(mac=mac_next)))
    ext = InterfacePolicy(mtu=1460, allow_incoming_icmp=False, error_rate_limit_packets=600000,
                          reassembly_max_fragments_per_packet=40)
    int_ = InterfacePolicy(mtu=1500, allow_incoming_icmp=False, error_rate_limit_packets=600000,
                           reassembly_max_fragments_per_packet=40)
    return Generated(Config(ext, int_, bind, [inst]), shift)


def traffic(g: Generated, packet_size: int, npackets: int, flows: int | None) -> tuple[list[bytes], list[bytes]]:
    """(Internet-side frames, subscriber-side frames) over ``flows`` softwires."""
    b = g.config.bindings
    n = len(b)
    flows = min(n, flows or npackets)
    picks = np.linspace(0, n - 1, flows).astype(np.int64) if flows > 1 else np.zeros(1, np.int64)
    br = b.br_addresses[0]
    pay4 = bytes(b"0" * max(4, packet_size - 14 - 20 - 8))
    pay6 = bytes(b"0" * max(4, packet_size - 14 - 40 - 20 - 8))
    v4, v6 = [], []
    for k in range(npackets):
        i = int(picks[k % flows])
        addr = int(b.ipv4[i]).to_bytes(4, "big")
        port = (int(b.psid[i]) & ((1 << int(b.psid_length[i])) - 1)) << g.shift
        v4.append(udp_v4(INTERNET_HOST, addr, INTERNET_PORT, port, pay4, ttl=15,
                         eth_dst=bytes.fromhex("121212121212"), eth_src=bytes.fromhex("686868686868")))
        v6.append(tunnelled(b.b4_ipv6[i].tobytes(), udp_v4(addr, INTERNET_HOST, port, INTERNET_PORT, pay6, ttl=15),
                            br=br))
    return v4, v6


def run(args: argparse.Namespace) -> int:
    try:
        g = generate(args.ipv4, args.num_ips, args.br_address, args.b4_ipv6, args.psid_length, args.shift)
    except ValueError as e:
        print(f"lwaftr generate-configuration: {e}", file=sys.stderr)
        return 2
    text = dump_snabb(g.config)
    if args.output:
        try:
            with open(args.output, "w") as fh:
                fh.write(text)
        except OSError as e:
            print(f"lwaftr generate-configuration: {args.output}: cannot write: {e.strerror or e}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    try:
        if args.pcap_v4 or args.pcap_v6:
            v4, v6 = traffic(g, args.packet_size, args.npackets, args.flows)
            if args.pcap_v4:
                write_frames(args.pcap_v4, v4)
            if args.pcap_v6:
                write_frames(args.pcap_v6, v6)
    except CaptureError as e:
        print(f"lwaftr generate-configuration: {e}", file=sys.stderr)
        return 2
    if args.output:
        print(f"{len(g.config.bindings)} softwires written to {args.output}", file=sys.stderr)
    return 0
