"""pcap filters: the numba BPF interpreter against libpcap's own interpreter.

Every verdict of :func:`lwaftr.dataplane.bpf.bpf_run` is compared with
``pcap_offline_filter`` (through the same libpcap binding, cypcap) on
scapy-crafted frames, their truncations, the conformance vectors' frames and
random frames; hand-written and random BPF programs cover every opcode,
with the exact value of ``ret a`` checked through a probe program.
"""
from __future__ import annotations

import re

import cypcap
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, LLC, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Raw

from lwaftr.dataplane import bpf as B
from lwaftr.dataplane.bpf import (
    FilterError, PacketFilter, bpf_exec, bpf_run, compile_filter, filter_slots, matches,
)
from lwaftr.dataplane.pool import HEADROOM, PacketPool
from lwaftr.io.pcap import read_frames

from conftest import VECTORS

SNAPLEN = 65535

# -- filters -------------------------------------------------------------------

BRIEF_FILTERS = [
    "ip", "ip6", "arp", "tcp", "udp port 53", "tcp port 80 or tcp port 443", "icmp", "icmp6",
    "not ip", "src net 10.0.0.0/8", "dst host 192.0.2.1", "ip[6:2] & 0x1fff != 0",
    "ip6 and dst host 2001:db8::1", "len > 100", "tcp[tcpflags] & tcp-syn != 0", "vlan",
    "ether host 12:12:12:12:12:12", "ip and (tcp or udp)",
]

# More of the language, chosen so libpcap emits every opcode class: X-source
# ALU (MUL DIV MOD SUB OR XOR LSH RSH), NEG, ST/STX and MEM loads, IND and MSH
# loads, JSET, JGE/JGT, backward JA (protochain), LEN; geneve's variable-length
# header makes libpcap keep offsets in scratch memory (STX, LDX MEM).
EXTRA_FILTERS = [
    "ip proto 4", "ip6 proto 4", "ip6 and ip6[6] = 44", "ip6 protochain 6", "ip protochain 17",
    "ether broadcast", "ether multicast", "ip multicast", "ip6 multicast",
    "ether proto 0x86dd", "ether src 12:12:12:12:12:12", "arp and arp[6:2] = 1",
    "vlan 100", "vlan and ip", "vlan 100 and udp port 53", "vlan and vlan",
    "host 10.1.2.3 and not port 22", "net 2001:db8::/32", "src or dst portrange 1000-2000",
    "udp dst portrange 50-60", "icmp[icmptype] = icmp-echo", "icmp6 and ip6[40] = 128",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn", "ip[0] & 0xf != 5", "greater 100", "less 64",
    "ip[2:2] - ip[0] > 30", "ip[8] * ip[9] > 500", "ip[2:2] / ip[8] > 3", "ip[2:2] % 7 = 3",
    "ip[2:2] % ip[9] = 0", "ip[0] ^ 0x45 = 0", "ip[1] << 2 > 0x40", "ip[2:2] >> ip[0] > 0",
    "ip[0] << ip[1] > 1", "ip[8] | ip[9] = 0x47", "-ip[0] > 3", "ip[ip[0] & 0xf] = 1",
    "tcp[(tcp[12] >> 4) * 4] = 0x47", "udp[8:4] = 0x12345678", "len >= 60 and len <= 1500",
    "len - 14 = ip[2:2]", "ip[2:2] + 14 != len", "ip6[4:2] + 54 = len",
    "(ip[2:2] * 3 + ip[8]) / (ip[9] + 1) > 25", "ip[2:2] & ip[4:2] != 0",
    "ip[2:2] > ip[4:2]", "ip[2:2] >= ip[4:2]", "ip[2:2] = ip[4:2]", "ether[0:4] & ether[6:4] != 0",
    "ip6[8:4] = 0x20010db8", "not (tcp or udp or icmp or icmp6 or arp)",
    "(ip[2:2] - ip[0]) * (ip[8] + ip[9]) > ip[4:2] * ip[6:2]",
    "ip[ip[2:2] % 20] * ip[ip[3] % 20] = ip[ip[4] % 20]",
    "geneve and ip", "geneve and tcp port 80", "mpls and ip", "pppoes and tcp port 80",
    "vlan and tcp port 80", "ip6 protochain 6 and vlan",
]


def conf_filters() -> list[str]:
    """Every ingress-filter/egress-filter expression of the conformance configs."""
    out: set[str] = set()
    for conf in sorted(VECTORS.glob("*.conf")):
        for m in re.finditer(r'\b(?:ingress|egress)-filter\s+("(?:[^"\\]|\\.)*"|[^;]+?)\s*;', conf.read_text()):
            expr = m.group(1)
            if expr.startswith('"'):
                expr = expr[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out.add(expr)
    return sorted(out)


CONF_FILTERS = conf_filters()
FILTERS = list(dict.fromkeys(BRIEF_FILTERS + CONF_FILTERS + EXTRA_FILTERS))


def libpcap_program(expr: str) -> cypcap.BpfProgram:
    """libpcap's own compiled program (kept by libpcap, run by pcap_offline_filter)."""
    with cypcap.open_dead(cypcap.DatalinkType.EN10MB, SNAPLEN) as pcap:
        return pcap.compile(expr, True, cypcap.NETMASK_UNKNOWN)


def ref(code: cypcap.BpfProgram, frame: bytes) -> bool:
    return bool(code.offline_filter(cypcap.Pkthdr(caplen=len(frame), len=len(frame)), frame))


def ours(prog: np.ndarray, frame: bytes, off: int = 0, tail: int = 0) -> int:
    """bpf_run on ``frame`` placed at ``off`` in a row with ``tail`` junk bytes after it."""
    row = np.full(off + len(frame) + tail, 0xA5, np.uint8)
    row[off:off + len(frame)] = np.frombuffer(frame, np.uint8)
    return int(bpf_run(prog, row, off, len(frame)))


# -- frames --------------------------------------------------------------------

MAC_A = "12:12:12:12:12:12"
MAC_B = "02:00:00:00:00:02"


def crafted_frames() -> list[bytes]:
    e = Ether(src=MAC_A, dst=MAC_B)
    e2 = Ether(src=MAC_B, dst=MAC_A)
    pay = Raw(b"\x47" * 120)
    pkts = [
        e / IP(src="10.1.2.3", dst="192.0.2.1") / TCP(sport=40000, dport=80, flags="S"),
        e / IP(src="10.1.2.3", dst="192.0.2.1") / TCP(sport=40000, dport=443, flags="A") / pay,
        e2 / IP(src="192.0.2.1", dst="10.1.2.3") / TCP(sport=443, dport=40000, flags="SA"),
        e / IP(src="198.51.100.7", dst="192.0.2.9") / TCP(sport=22, dport=1500, flags="PA") / Raw(b"x" * 30),
        e / IP(src="10.0.0.53", dst="192.0.2.1") / UDP(sport=5353, dport=53) / Raw(b"\x12\x34\x56\x78dns"),
        e2 / IP(src="192.0.2.1", dst="10.0.0.53") / UDP(sport=53, dport=55) / pay,
        e / IP(src="172.16.0.1", dst="203.0.113.5") / UDP(sport=1999, dport=1000),
        e / IP(src="10.9.9.9", dst="192.0.2.1") / ICMP(type=8) / Raw(b"ping"),
        e / IP(src="192.0.2.1", dst="10.9.9.9") / ICMP(type=0) / Raw(b"pong"),
        e / IP(src="10.1.2.3", dst="192.0.2.1", options=[IPOption_Router_Alert()]) / TCP(dport=80, flags="S"),
        e / IP(src="10.1.2.3", dst="192.0.2.1", options=[IPOption_RR(routers=["1.2.3.4"] * 5)]) / UDP(dport=53),
        e / IP(src="10.1.2.3", dst="192.0.2.1", flags="MF", frag=0, id=7) / TCP(dport=80, flags="S")
        / Raw(b"a" * 8),
        e / IP(src="10.1.2.3", dst="192.0.2.1", frag=185, id=7, proto=6) / Raw(b"b" * 40),
        e / IP(src="10.1.2.3", dst="224.0.0.5", ttl=1) / UDP(dport=520),
        e / IP(src="10.1.2.3", dst="192.0.2.1", proto=47) / Raw(b"gre!" * 3),
        Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / TCP(sport=1234, dport=80, flags="S"),
        e / IPv6(src="2001:db8::1", dst="2001:db8:0:1::2") / TCP(sport=443, dport=1234, flags="SA") / pay,
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::53") / UDP(sport=3000, dport=53),
        e / IPv6(src="fe80::1", dst="2001:db8::1") / ICMPv6EchoRequest(data=b"hi"),
        Ether(src=MAC_A, dst="33:33:ff:00:00:01") / IPv6(src="fe80::1", dst="ff02::1:ff00:1")
        / ICMPv6ND_NS(tgt="2001:db8::1"),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / TCP(dport=443, flags="S"),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / IPv6ExtHdrRouting(addresses=["2001:db8::9"])
        / UDP(dport=53),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / IPv6ExtHdrFragment(m=1, offset=0, id=9)
        / UDP(sport=1, dport=53) / Raw(b"f" * 16),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / IPv6ExtHdrFragment(m=0, offset=3, id=9, nh=17)
        / Raw(b"g" * 16),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(nh=6)
        / TCP(dport=80),
        # lwAFTR softwire traffic: IPv4 in IPv6
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8:ffff::1", nh=4)
        / IP(src="10.1.2.3", dst="192.0.2.1") / TCP(dport=80, flags="S"),
        e / IPv6(src="2001:db8:0:1::2", dst="2001:db8:ffff::1", nh=4)
        / IP(src="10.1.2.3", dst="192.0.2.1") / ICMP(type=8),
        Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2"),
        Ether(src=MAC_B, dst=MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc="10.0.0.2", pdst="10.0.0.1"),
        e / Dot1Q(vlan=100) / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(dport=53),
        e / Dot1Q(vlan=200) / IPv6(src="2001:db8:0:1::2", dst="2001:db8::1") / TCP(dport=80),
        e / Dot1Q(vlan=100) / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"),
        e / Dot1AD(vlan=7) / Dot1Q(vlan=100) / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(dport=53),
        e / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(sport=999, dport=6081) / GENEVE(proto=0x6558)
        / Ether(src=MAC_B, dst=MAC_A) / IP(src="10.7.7.7", dst="10.8.8.8") / TCP(dport=80),
        e / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(sport=999, dport=6081)
        / GENEVE(proto=0x0800, optionlen=2, options=b"\x00" * 8)
        / IP(src="10.7.7.7", dst="10.8.8.8") / TCP(dport=80),
        e / IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(dport=6081) / GENEVE(proto=0x86DD)
        / IPv6(src="2001:db8::7", dst="2001:db8::8") / UDP(dport=53),
        e / MPLS(label=5, s=0) / MPLS(label=6, s=1) / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(dport=53),
        e / PPPoE(sessionid=1) / PPP(proto=0x21) / IP(src="10.1.2.3", dst="192.0.2.1") / TCP(dport=80),
        Dot3(src=MAC_A, dst="01:80:c2:00:00:00") / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 35),
    ]
    frames = [bytes(p) for p in pkts]
    # Hand-broken headers: IHL < 5, IHL claiming options that are not there,
    # a non-IP ethertype, a frame of zeros, and a jumbo frame.
    ip = bytearray(bytes(pkts[0]))
    ip[14] = 0x42
    frames.append(bytes(ip))
    ip[14] = 0x4F
    frames.append(bytes(ip))
    frames.append(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x88B5) / Raw(b"\x45" * 60)))
    frames.append(bytes(60))
    frames.append(bytes(e / IP(src="10.1.2.3", dst="192.0.2.1") / UDP(dport=53) / Raw(b"J" * 8900)))
    return frames


CRAFTED = crafted_frames()
# Every prefix of the small frames: each header boundary, for every load.
TRUNCATED = [f[:n] for f in CRAFTED if len(f) <= 200 for n in range(0, min(len(f), 90))]
VECTOR_FRAMES = [f for p in sorted(VECTORS.glob("*.pcap")) for f in read_frames(p)]
ALL_FRAMES = CRAFTED + TRUNCATED + VECTOR_FRAMES


# -- differential tests: compiled filters --------------------------------------

def test_corpus_is_there() -> None:
    assert len(CRAFTED) >= 40 and len(TRUNCATED) > 1000
    assert VECTOR_FRAMES, f"no conformance pcaps under {VECTORS}"
    assert set(CONF_FILTERS) >= {"ip", "ip6", "len < 0"}


@pytest.mark.parametrize("expr", FILTERS)
def test_filter_matches_libpcap(expr: str) -> None:
    code = libpcap_program(expr)
    prog = compile_filter(expr)
    assert prog.dtype == np.uint32 and prog.shape == (len(code), 4)
    assert prog.tolist() == [list(i) for i in code]
    assert {int(k) for c, _, _, k in prog if c == B.BPF_RET | B.BPF_K} <= {0, SNAPLEN}
    mismatches = []
    for i, frame in enumerate(ALL_FRAMES):
        want = ref(code, frame)
        got = ours(prog, frame)
        assert got in (0, SNAPLEN)
        if (got != 0) != want:
            mismatches.append((i, frame.hex(), want))
        # Same verdict at an offset inside a bigger row (as in the packet
        # pool): nothing before off or after off + length is read.
        if i % 7 == 0:
            assert (ours(prog, frame, off=HEADROOM, tail=64) != 0) == want
    assert not mismatches, mismatches[:5]


def test_filters_exercise_every_opcode() -> None:
    """The compiled filters alone reach every opcode family libpcap emits."""
    codes = {int(c) for expr in FILTERS for c in compile_filter(expr)[:, 0]}
    L = {
        B.BPF_LD | B.BPF_W | B.BPF_ABS, B.BPF_LD | B.BPF_H | B.BPF_ABS, B.BPF_LD | B.BPF_B | B.BPF_ABS,
        B.BPF_LD | B.BPF_H | B.BPF_IND, B.BPF_LD | B.BPF_B | B.BPF_IND, B.BPF_LD | B.BPF_W | B.BPF_LEN,
        B.BPF_LD | B.BPF_MEM, B.BPF_LDX | B.BPF_MSH | B.BPF_B, B.BPF_LDX | B.BPF_W | B.BPF_MEM,
        B.BPF_ST, B.BPF_STX, B.BPF_MISC | B.BPF_TAX, B.BPF_MISC | B.BPF_TXA,
        B.BPF_ALU | B.BPF_NEG, B.BPF_JMP | B.BPF_JA, B.BPF_RET | B.BPF_K,
    }
    L |= {B.BPF_ALU | op | B.BPF_X for op in (B.BPF_ADD, B.BPF_SUB, B.BPF_MUL, B.BPF_DIV, B.BPF_MOD,
                                              B.BPF_AND, B.BPF_OR, B.BPF_LSH, B.BPF_RSH)}
    L |= {B.BPF_JMP | op | B.BPF_K for op in (B.BPF_JEQ, B.BPF_JGT, B.BPF_JGE, B.BPF_JSET)}
    # (libpcap never emits jset x: its optimizer folds only "and #k; jeq #0"
    # into jset; the hand-written programs cover it.)
    L |= {B.BPF_JMP | op | B.BPF_X for op in (B.BPF_JEQ, B.BPF_JGT, B.BPF_JGE)}
    assert L <= codes, sorted(L - codes)


# -- differential tests: hand-written programs, exact return values ------------

def I(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:  # noqa: E743
    return (code, jt, jf, k & 0xFFFFFFFF)


RET_A = I(B.BPF_RET | B.BPF_A)


def probe(insns: list[tuple[int, int, int, int]], value: int) -> list[tuple[int, int, int, int]]:
    """``insns`` (ending in ``ret a``) with the return replaced by ``A == value``."""
    assert insns[-1] == RET_A
    return insns[:-1] + [I(B.BPF_JMP | B.BPF_JEQ | B.BPF_K, value, 0, 1),
                         I(B.BPF_RET | B.BPF_K, 1), I(B.BPF_RET | B.BPF_K, 0)]


def check_exact(insns: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """Assert bpf_run agrees with libpcap on ``insns`` (ending in ``ret a``) and
    on the probe for bpf_run's own result; that pins A exactly."""
    prog = np.array(insns, np.uint32).reshape(-1, 4)
    got = ours(prog, frame, off=5, tail=8)
    assert (got != 0) == ref(cypcap.BpfProgram(insns), frame), (insns, frame.hex(), got)
    p = probe(insns, got)
    got_p = ours(np.array(p, np.uint32), frame)
    assert (got_p != 0) == ref(cypcap.BpfProgram(p), frame), (insns, frame.hex(), got)
    return got


ALU_NAMES = {B.BPF_ADD: "add", B.BPF_SUB: "sub", B.BPF_MUL: "mul", B.BPF_DIV: "div", B.BPF_MOD: "mod",
             B.BPF_AND: "and", B.BPF_OR: "or", B.BPF_XOR: "xor", B.BPF_LSH: "lsh", B.BPF_RSH: "rsh"}
JMP_NAMES = {B.BPF_JEQ: "jeq", B.BPF_JGT: "jgt", B.BPF_JGE: "jge", B.BPF_JSET: "jset"}
SIZE_NAMES = {B.BPF_W: "w", B.BPF_H: "h", B.BPF_B: "b"}
ALU_OPS = list(ALU_NAMES)
JMP_OPS = list(JMP_NAMES)
PROBE_FRAMES = [bytes(range(256))[:n] for n in (0, 1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18, 40, 64, 255)] + [
    bytes([0xFF] * 40), bytes([0x80, 0, 0, 1] * 10), CRAFTED[0], CRAFTED[16]]
A_VALUES = [0, 1, 2, 7, 31, 32, 33, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x12345678, 0xDEADBEEF]


def hand_programs() -> list[tuple[str, list[tuple[int, int, int, int]]]]:
    out: list[tuple[str, list]] = []
    for op in ALU_OPS:
        for a in A_VALUES:
            for v in A_VALUES:
                if op in (B.BPF_DIV, B.BPF_MOD) and v == 0:
                    pass  # K = 0 is UB in libpcap (SIGFPE); X = 0 is tested below
                elif not (op in (B.BPF_LSH, B.BPF_RSH) and v >= 32):  # K >= 32: see own-semantics test
                    out.append((f"{ALU_NAMES[op]}_k a={a:#x} k={v:#x}",
                                [I(B.BPF_LD | B.BPF_IMM, a), I(B.BPF_ALU | op | B.BPF_K, v), RET_A]))
                out.append((f"{ALU_NAMES[op]}_x a={a:#x} x={v:#x}",
                            [I(B.BPF_LD | B.BPF_IMM, a), I(B.BPF_LDX | B.BPF_W | B.BPF_IMM, v),
                             I(B.BPF_ALU | op | B.BPF_X), RET_A]))
    for a in A_VALUES:
        out.append((f"neg {a:#x}", [I(B.BPF_LD | B.BPF_IMM, a), I(B.BPF_ALU | B.BPF_NEG), RET_A]))
    for op in JMP_OPS:
        for a in A_VALUES[:8]:
            for v in A_VALUES[:8]:
                for src in (B.BPF_K, B.BPF_X):
                    out.append((f"{JMP_NAMES[op]}_{'x' if src else 'k'} a={a:#x} v={v:#x}", [
                        I(B.BPF_LDX | B.BPF_W | B.BPF_IMM, v), I(B.BPF_LD | B.BPF_IMM, a),
                        I(B.BPF_JMP | op | src, v, 1, 0),
                        I(B.BPF_LD | B.BPF_IMM, 0x1111), I(B.BPF_JMP | B.BPF_JA, 1),
                        I(B.BPF_LD | B.BPF_IMM, 0x2222), RET_A]))
    # Loads of every size and mode, at offsets around the frame end.
    for size in (B.BPF_W, B.BPF_H, B.BPF_B):
        for k in (0, 1, 2, 3, 12, 13, 14, 15, 16, 38, 39, 40, 62, 63, 64, 254, 255, 256, 0xFFFFFFFF, 0x80000000):
            out.append((f"ld_{SIZE_NAMES[size]}_abs {k}", [I(B.BPF_LD | size | B.BPF_ABS, k), RET_A]))
            for x in (0, 1, 14, 0xFFFFFFFF):
                out.append((f"ld_{SIZE_NAMES[size]}_ind x={x} k={k}", [
                    I(B.BPF_LDX | B.BPF_W | B.BPF_IMM, x), I(B.BPF_LD | size | B.BPF_IND, k), RET_A]))
    for k in (0, 1, 14, 15, 39, 40, 63, 64, 255):
        out.append((f"ldx_msh {k}", [I(B.BPF_LDX | B.BPF_MSH | B.BPF_B, k), I(B.BPF_MISC | B.BPF_TXA), RET_A]))
    out.append(("ld_len", [I(B.BPF_LD | B.BPF_W | B.BPF_LEN), RET_A]))
    out.append(("ldx_len", [I(B.BPF_LDX | B.BPF_W | B.BPF_LEN), I(B.BPF_MISC | B.BPF_TXA), RET_A]))
    out.append(("ld_imm", [I(B.BPF_LD | B.BPF_IMM, 0xCAFEF00D), RET_A]))
    out.append(("tax_txa", [I(B.BPF_LD | B.BPF_IMM, 77), I(B.BPF_MISC | B.BPF_TAX), I(B.BPF_LD | B.BPF_IMM, 5),
                        I(B.BPF_ALU | B.BPF_ADD | B.BPF_X), RET_A]))
    # Scratch memory: every word, written by ST and STX, read by LD and LDX.
    mem = []
    for i in range(B.BPF_MEMWORDS):
        mem += [I(B.BPF_LD | B.BPF_IMM, 1000 + 7 * i), I(B.BPF_ST, i),
                I(B.BPF_LDX | B.BPF_W | B.BPF_IMM, 3 * i + 1), I(B.BPF_STX, 15 - i)]
    mem += [I(B.BPF_LD | B.BPF_IMM, 0)]
    for i in range(B.BPF_MEMWORDS):
        mem += [I(B.BPF_LDX | B.BPF_W | B.BPF_MEM, i), I(B.BPF_ALU | B.BPF_MUL | B.BPF_K, 31),
                I(B.BPF_ALU | B.BPF_ADD | B.BPF_X)]
        mem += [I(B.BPF_MISC | B.BPF_TAX), I(B.BPF_LD | B.BPF_MEM, i), I(B.BPF_ALU | B.BPF_XOR | B.BPF_X)]
    out.append(("st_stx_ld_ldx_mem", mem + [RET_A]))
    return out


HAND = hand_programs()
HAND_GROUPS: dict[str, list[list]] = {}
for _name, _insns in HAND:
    HAND_GROUPS.setdefault(_name.split()[0], []).append(_insns)


@pytest.mark.parametrize("group", sorted(HAND_GROUPS))
def test_hand_programs_exact(group: str) -> None:
    """One test per opcode (ALU op x source, jump op x source, load form, ...)."""
    for insns in HAND_GROUPS[group]:
        for frame in PROBE_FRAMES:
            check_exact(insns, frame)


def test_hand_programs_cover_every_opcode() -> None:
    codes = {c for _, p in HAND for c, _, _, _ in p}
    every = {B.BPF_LD | s | m for s in (B.BPF_W, B.BPF_H, B.BPF_B) for m in (B.BPF_ABS, B.BPF_IND)}
    every |= {B.BPF_LD | B.BPF_W | B.BPF_LEN, B.BPF_LD | B.BPF_IMM, B.BPF_LD | B.BPF_MEM,
              B.BPF_LDX | B.BPF_W | B.BPF_IMM, B.BPF_LDX | B.BPF_W | B.BPF_MEM, B.BPF_LDX | B.BPF_W | B.BPF_LEN,
              B.BPF_LDX | B.BPF_MSH | B.BPF_B, B.BPF_ST, B.BPF_STX, B.BPF_ALU | B.BPF_NEG,
              B.BPF_JMP | B.BPF_JA, B.BPF_RET | B.BPF_K, B.BPF_RET | B.BPF_A,
              B.BPF_MISC | B.BPF_TAX, B.BPF_MISC | B.BPF_TXA}
    every |= {B.BPF_ALU | op | src for op in ALU_OPS for src in (B.BPF_K, B.BPF_X)}
    every |= {B.BPF_JMP | op | src for op in JMP_OPS for src in (B.BPF_K, B.BPF_X)}
    assert every <= codes | {B.BPF_RET | B.BPF_K}, sorted(every - codes)


# -- own semantics where libpcap's interpreter is undefined or never returns ---

def run(insns: list, frame: bytes = b"") -> int:
    prog = np.array(insns, np.uint32).reshape(-1, 4)
    return int(bpf_run(prog, np.frombuffer(frame, np.uint8).copy(), 0, len(frame)))


def test_undefined_cases_drop() -> None:
    imm = I(B.BPF_LD | B.BPF_IMM, 12345)
    assert run([imm, I(B.BPF_ALU | B.BPF_DIV | B.BPF_K, 0), RET_A]) == 0   # libpcap: SIGFPE
    assert run([imm, I(B.BPF_ALU | B.BPF_MOD | B.BPF_K, 0), RET_A]) == 0
    assert run([imm, I(B.BPF_ALU | B.BPF_LSH | B.BPF_K, 32), RET_A]) == 0  # C shift UB
    assert run([imm, I(B.BPF_ALU | B.BPF_RSH | B.BPF_K, 40), RET_A]) == 0
    assert run([imm, I(B.BPF_ALU | B.BPF_LSH | B.BPF_K, 31), RET_A]) == 0x80000000
    assert run([imm, (0xB4, 0, 0, 0), RET_A]) == 0                         # unknown ALU op
    assert run([imm, (B.BPF_ALU | B.BPF_NEG | B.BPF_X, 0, 0, 0), RET_A]) == 0
    assert run([imm, (B.BPF_LD | 0x18 | B.BPF_ABS, 0, 0, 0), RET_A], b"abcdefgh") == 0  # no 64-bit load
    assert run([imm, (B.BPF_RET | B.BPF_X, 0, 0, 0)]) == 0
    assert run([imm, (0x1FF, 0, 0, 0), RET_A]) == 0                        # code wider than 8 bits
    assert run([imm, I(B.BPF_ST, 16), RET_A]) == 0                         # scratch index out of range
    assert run([imm, I(B.BPF_LD | B.BPF_MEM, 99), RET_A]) == 0
    assert run([imm]) == 0                                                 # falls off the end
    assert run([imm, I(B.BPF_JMP | B.BPF_JA, 5), RET_A]) == 0              # jumps out of the program
    assert run([imm, I(B.BPF_JMP | B.BPF_JEQ | B.BPF_K, 12345, 9, 0), RET_A]) == 0
    assert run([imm, I(B.BPF_JMP | B.BPF_JA, -1), RET_A]) == 0             # self-loop (libpcap hangs)
    assert run([imm, I(B.BPF_JMP | B.BPF_JA, -2), RET_A]) == 0             # endless loop: cut off
    assert run([I(B.BPF_JMP | B.BPF_JA, -5), RET_A]) == 0                  # before the program
    assert run([]) == 0


def test_backward_jumps_within_budget() -> None:
    """A counted loop (protochain loops like this): A += 1 until A == n, which
    takes n - 1 backward jumps; MAX_BACKWARD_JUMPS of them are allowed."""
    def loop(n: int) -> list:
        return [I(B.BPF_ALU | B.BPF_ADD | B.BPF_K, 1), I(B.BPF_JMP | B.BPF_JEQ | B.BPF_K, n, 1, 0),
                I(B.BPF_JMP | B.BPF_JA, -3), RET_A]
    n = B.MAX_BACKWARD_JUMPS + 1
    assert run(loop(n)) == n
    assert run(loop(n + 1)) == 0


def test_lengths_and_offsets() -> None:
    """A load reaches exactly to the end of the frame, and only there."""
    prog = np.array([I(B.BPF_LD | B.BPF_W | B.BPF_ABS, 4), RET_A], np.uint32)
    row = np.arange(32, dtype=np.uint8)
    assert bpf_run(prog, row, 10, 8) == 0x0E0F1011
    assert bpf_run(prog, row, 10, 7) == 0
    assert bpf_run(prog, row, 24, 100) == 0x1C1D1E1F  # length beyond the row: clipped to the row
    assert bpf_run(prog, row, 25, 100) == 0
    assert bpf_run(prog, row, 40, 8) == 0
    lenp = np.array([I(B.BPF_LD | B.BPF_W | B.BPF_LEN), RET_A], np.uint32)
    assert bpf_run(lenp, row, 3, 9) == 9
    assert bpf_run(lenp, row, 24, 100) == 100  # len is the frame's length (wirelen), not what fits
    lenx = np.array([I(B.BPF_LDX | B.BPF_W | B.BPF_LEN), I(B.BPF_MISC | B.BPF_TXA), RET_A], np.uint32)
    assert bpf_run(lenx, row, 24, 100) == 100
    mem = np.empty(16, np.int64)
    assert bpf_exec(prog, row, 10, 8, mem) == 0x0E0F1011


# -- random programs and random frames (hypothesis) ----------------------------

U32 = st.integers(0, 0xFFFFFFFF)
SMALL = st.one_of(st.integers(0, 70), st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x80000000]))


@st.composite
def straight_insn(draw) -> tuple[int, int, int, int]:
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return I(B.BPF_LD | draw(st.sampled_from([B.BPF_W, B.BPF_H, B.BPF_B])) | B.BPF_ABS, draw(SMALL))
    if kind == 1:
        return I(B.BPF_LD | draw(st.sampled_from([B.BPF_W, B.BPF_H, B.BPF_B])) | B.BPF_IND, draw(SMALL))
    if kind == 2:
        return draw(st.sampled_from([I(B.BPF_LD | B.BPF_W | B.BPF_LEN), I(B.BPF_LDX | B.BPF_W | B.BPF_LEN),
                                     I(B.BPF_MISC | B.BPF_TAX), I(B.BPF_MISC | B.BPF_TXA),
                                     I(B.BPF_ALU | B.BPF_NEG)]))
    if kind == 3:
        return I(draw(st.sampled_from([B.BPF_LD | B.BPF_IMM, B.BPF_LDX | B.BPF_W | B.BPF_IMM])),
                 draw(st.one_of(SMALL, U32)))
    if kind == 4:
        return I(draw(st.sampled_from([B.BPF_LD | B.BPF_MEM, B.BPF_LDX | B.BPF_W | B.BPF_MEM,
                                       B.BPF_ST, B.BPF_STX])), draw(st.integers(0, 15)))
    if kind == 5:
        return I(B.BPF_LDX | B.BPF_MSH | B.BPF_B, draw(SMALL))
    if kind in (6, 7):
        return I(B.BPF_ALU | draw(st.sampled_from(ALU_OPS)) | B.BPF_X)
    op = draw(st.sampled_from(ALU_OPS))
    if op in (B.BPF_LSH, B.BPF_RSH):
        k = draw(st.integers(0, 31))
    elif op in (B.BPF_DIV, B.BPF_MOD):
        k = draw(st.one_of(st.integers(1, 20), st.integers(1, 0xFFFFFFFF)))
    else:
        k = draw(st.one_of(SMALL, U32))
    return I(B.BPF_ALU | op | B.BPF_K, k)


@st.composite
def random_program(draw) -> list[tuple[int, int, int, int]]:
    """Initialised scratch memory, then a body with forward jumps, then ``ret a``."""
    prologue = []
    for i in range(B.BPF_MEMWORDS):
        prologue += [I(B.BPF_LD | B.BPF_IMM, draw(U32)), I(B.BPF_ST, i)]
    prologue += [I(B.BPF_LD | B.BPF_IMM, draw(U32))]
    m = draw(st.integers(1, 25))
    body = []
    for j in range(m):
        left = m - j - 1  # instructions between this one and ret a
        if left > 0 and draw(st.integers(0, 4)) == 0:
            if draw(st.booleans()):
                body.append(I(B.BPF_JMP | B.BPF_JA, draw(st.integers(0, left))))
            else:
                op = draw(st.sampled_from(JMP_OPS)) | draw(st.sampled_from([B.BPF_K, B.BPF_X]))
                body.append(I(B.BPF_JMP | op, draw(st.one_of(SMALL, U32)),
                              draw(st.integers(0, min(left, 255))), draw(st.integers(0, min(left, 255)))))
        else:
            body.append(draw(straight_insn()))
    return prologue + body + [RET_A]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_program(), st.binary(max_size=80))
def test_random_programs_exact(insns: list, frame: bytes) -> None:
    check_exact(insns, frame)


COMPILED = [(libpcap_program(e), compile_filter(e)) for e in FILTERS]


def all_filters_agree(frame: bytes) -> None:
    for (code, prog), expr in zip(COMPILED, FILTERS):
        assert (ours(prog, frame) != 0) == ref(code, frame), (expr, frame.hex())


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=160))
def test_random_bytes(frame: bytes) -> None:
    all_filters_agree(frame)


# Ethertypes and next-header bytes the filters branch on, to steer random
# frames into the interesting paths.
ETHERTYPES = [b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00", b"\x88\xa8", b"\x91\x00", b"\x00\x40"]


@st.composite
def mutated_frame(draw) -> bytes:
    f = bytearray(draw(st.sampled_from(CRAFTED + VECTOR_FRAMES[:60])))
    for _ in range(draw(st.integers(0, 6))):
        what = draw(st.integers(0, 4))
        if what == 0 and f:  # overwrite a byte, mostly in the headers
            i = draw(st.integers(0, min(len(f), 80) - 1))
            f[i] = draw(st.integers(0, 255))
        elif what == 1 and f:  # flip a bit
            i = draw(st.integers(0, len(f) - 1))
            f[i] ^= 1 << draw(st.integers(0, 7))
        elif what == 2:  # truncate
            f = f[:draw(st.integers(0, len(f)))]
        elif what == 3:  # extend
            f += draw(st.binary(max_size=40))
        elif len(f) >= 14:  # swap in another ethertype (also inside a VLAN tag)
            at = draw(st.sampled_from([12, 16, 20]))
            f[at:at + 2] = draw(st.sampled_from(ETHERTYPES))
    return bytes(f)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frame())
def test_mutated_packets(frame: bytes) -> None:
    all_filters_agree(frame)


# -- API -----------------------------------------------------------------------

@pytest.mark.parametrize("expr,message", [
    ("tcp port", "syntax error"),
    ("port 99999", "illegal port number 99999 > 65535"),
    ("ip broadcast", "netmask not known"),
    ("ip[0] << 33 > 1", "shift by more than 31 bits"),
    ("ether host 12:12:12:12:12", "bogus ethernet address"),
    ("tcp port 80 and vlan", "expression rejects all packets"),
])
def test_bad_expression(expr: str, message: str) -> None:
    with pytest.raises(FilterError) as ei:
        compile_filter(expr)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.expr == expr and message in e.message and message in str(e)
    with pytest.raises(cypcap.Error) as li:  # the very text libpcap gives
        libpcap_program(expr)
    assert li.value.msg == e.message
    with pytest.raises(FilterError):
        PacketFilter(expr)


def test_packet_filter_and_matches() -> None:
    f = PacketFilter("udp port 53")
    assert f.expr == "udp port 53" and repr(f) == "PacketFilter('udp port 53')"
    dns, web = CRAFTED[4], CRAFTED[0]
    assert f(dns) and not f(web)
    assert matches(f.prog, dns) and not matches(f.prog, web)
    assert not f(b"") and not PacketFilter("len < 0")(dns)
    assert PacketFilter("")(b"")  # the empty expression accepts everything
    assert compile_filter("ip", snaplen=1500)[-2:, 3].tolist() == [1500, 0]


def test_filter_slots_on_the_pool() -> None:
    pool = PacketPool(n_slots=64)
    frames = [f for f in CRAFTED + VECTOR_FRAMES if len(f) <= pool.max_frame][:64]
    slots = pool.store(frames)
    for s in slots[::3]:  # frames need not sit at the default offset
        o, n = int(pool.off[s]), int(pool.length[s])
        pool.buf[s, o - 4:o - 4 + n] = pool.buf[s, o:o + n].copy()
        pool.off[s] = o - 4
    keep = np.empty(len(slots), np.uint8)
    for expr in ("ip", "ip6", "udp port 53", "vlan", "len < 0"):
        f = PacketFilter(expr)
        n = filter_slots(f.prog, pool.buf, pool.off, pool.length, slots, keep)
        want = [f(x) for x in frames]
        assert keep.tolist() == [int(w) for w in want] and n == sum(want)
