#!/usr/bin/env python3
"""Traffic-mix benchmarks (issue 12): ours against Snabb lwAFTR, interleaved.

    PYTHONPATH=src .venv/bin/python benchmarks/mixes.py [--snabb PATH/TO/snabb]
        [--duration S] [--pairs N] [--mixes clean,filter,...] [--seed N] [--cpu C]

The table is Snabb's 1M example (``generate-configuration 193.5.1.100 15874
fc00::100 fc00:1:2:3:4:5:0:7e 6``: 1,015,936 softwires), made by
benchmarks/run.py's ``generate`` into benchmarks/out/ with its traffic
(550-byte frames over 10,000 subscribers, 10,000 frames per side).  Each mix
rewrites some of those frames (deterministically, from ``--seed``):

* clean    the generated traffic as is
* filter   the same, with ``ingress-filter "ip"`` (external) and ``"ip6"``
           (internal) in a configuration variant
* miss1    1 Internet frame in 100 to an address outside the table (198.18.0.0/15);
           ICMP errors are on in the generated configuration (both interfaces)
* miss100  every Internet frame outside the table: what is left is the
           B4->Internet (decapsulation) direction, plus the ICMP errors
* frag5    5 % of the frames on each side are fragments: IPv4 fragments (546 +
           554 bytes) of a 1052-byte datagram to a bound softwire, IPv6
           fragments (2 x 550 bytes) of a 976-byte IPv4 packet from a B4
* echo5    5 % ICMP echo requests on each side: to the external IPv4 address
           from the Internet, to the internal IPv6 address (here also the BR
           address) from the B4s
* ttl1     1 % of the Internet frames with TTL 1 (ICMP time exceeded)
* arp5     5 % ARP requests for the external IPv4 address from the Internet
           side (60-byte frames) and 5 % Neighbour Solicitations for the
           internal IPv6 address (with a source link-layer address option)
           from the B4 side: a neighbour flood on the built-in control plane
* junk5    5 % of the frames on each side malformed or misplaced, in turn:
           Internet side, a bad IPv4 header checksum, cut to 34 bytes (its
           total length beyond the frame), the IPv6 ethertype; B4 side, UDP
           instead of IPv4 in the IPv6 packet, the IPv4 ethertype, IP version 5

For each mix, ours (``lwaftr bench --json``, one worker) and Snabb
(``snabb lwaftr bench --cpu C -b CSV``, both directions on one core) run in
turn, ours first, ``--pairs`` times, both pinned to CPU ``--cpu``.  "decap" is
what leaves the IPv4 interface, "encap" what leaves the IPv6 one, for both
programs (so ICMP errors and echo replies count on the side they leave).
Snabb's figure for one run is the median of its per-second CSV rows after it
has loaded (its ``-D`` counts loading, so it is given plenty and stopped once
``--duration`` full rows are in); ours is its average over ``--duration``.
The table gives medians [min-max] over the pairs and ratios of the medians.

Counters: ours from one pass of each pcap through the engine in this process
(the bench does not report them); Snabb's from its shared-memory counters
(/var/run/snabb/WORKER/apps/*/) over the measured seconds of its last run.
Each is given as a percentage of the frames offered on its side.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import LWAFTR, OUT, TABLE_ARGS, generate  # noqa: E402

MIXES = ("clean", "filter", "miss1", "miss100", "frag5", "echo5", "ttl1", "arp5", "junk5")
ETH = 14
INTERNET_HOST = bytes([1, 2, 3, 4])
MISS_NET = (198 << 24) | (18 << 16)            # 198.18.0.0/15 (RFC 2544): in no softwire
MISS_SPAN = 1 << 17
BATCH = 512                                     # our bench's default batch per side
SNABB_LOAD_ALLOWANCE = 900                      # seconds Snabb may spend loading before it is given up

# Counters shown for each mix (besides the in/out and drop-all ones).
SHOWN = {
    "clean": [],
    "filter": ["drop-ingress-filter-ipv4-packets", "drop-ingress-filter-ipv6-packets"],
    "miss1": ["drop-no-dest-softwire-ipv4-packets", "out-icmpv4-error-packets",
              "drop-over-rate-limit-icmpv4-packets"],
    "miss100": ["drop-no-dest-softwire-ipv4-packets", "out-icmpv4-error-packets",
                "drop-over-rate-limit-icmpv4-packets"],
    "frag5": ["in-ipv4-frag-needs-reassembly", "in-ipv4-frag-reassembled", "drop-ipv4-frag-invalid-reassembly",
              "in-ipv6-frag-needs-reassembly", "in-ipv6-frag-reassembled", "drop-ipv6-frag-invalid-reassembly"],
    "echo5": ["in-icmpv4-echo-packets", "out-icmpv4-echo-packets", "in-icmpv6-echo-packets",
              "out-icmpv6-echo-packets"],
    "ttl1": ["drop-ttl-zero-ipv4-packets", "out-icmpv4-error-packets"],
    "arp5": ["in-arp-request-packets", "out-arp-reply-packets", "in-ndp-ns-packets", "out-ndp-na-packets",
             "drop-over-budget-packets"],
    "junk5": ["drop-malformed-ipv4-packets", "drop-misplaced-not-ipv4-packets", "drop-unknown-protocol-ipv6-packets",
              "drop-misplaced-not-ipv6-packets", "drop-malformed-ipv6-packets", "drop-over-budget-packets"],
}
ALWAYS = ["in-ipv4-packets", "out-ipv4-packets", "in-ipv6-packets", "out-ipv6-packets",
          "drop-all-ipv4-iface-packets", "drop-all-ipv6-iface-packets"]


# -- frames ---------------------------------------------------------------------------------------------------
def csum(data: bytes, start: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, ``start`` folded in."""
    if len(data) & 1:
        data += b"\0"
    s = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, proto: int, total: int, ident: int = 0, frag: int = 0,
                ttl: int = 15) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, frag, ttl, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]


def udp4(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    n = 8 + len(data)
    u = struct.pack("!HHHH", sport, dport, n, 0) + data
    c = csum(u, sum(struct.unpack("!4H", src + dst)) + 17 + n) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]


def parse_v4(f: bytes) -> tuple[bytes, bytes, bytes, int, int, int]:
    """(ethernet header, src, dst, sport, dport, ttl) of an untagged IPv4/UDP frame."""
    ihl = (f[ETH] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", f, ETH + ihl)
    return f[:ETH], f[ETH + 12:ETH + 16], f[ETH + 16:ETH + 20], sport, dport, f[ETH + 8]


def v4_udp_frame(eth: bytes, src: bytes, dst: bytes, sport: int, dport: int, size: int, ttl: int) -> bytes:
    data = bytes(size - ETH - 20 - 8)
    return eth + ipv4_header(src, dst, 17, size - ETH, ttl=ttl) + udp4(src, dst, sport, dport, data)


def retarget(f: bytes, dst: bytes) -> bytes:
    eth, src, _, sport, dport, ttl = parse_v4(f)
    return v4_udp_frame(eth, src, dst, sport, dport, len(f), ttl)


def with_ttl(f: bytes, ttl: int) -> bytes:
    eth, src, dst, sport, dport, _ = parse_v4(f)
    return v4_udp_frame(eth, src, dst, sport, dport, len(f), ttl)


def v4_fragments(f: bytes, ident: int) -> list[bytes]:
    """Two fragments (546 and 554-byte frames) of a 1052-byte UDP datagram to ``f``'s softwire."""
    eth, src, dst, sport, dport, ttl = parse_v4(f)
    payload = udp4(src, dst, sport, dport, bytes(1024))           # 1032 bytes of IP payload
    cut = 512
    return [eth + ipv4_header(src, dst, 17, 20 + cut, ident, 0x2000, ttl) + payload[:cut],
            eth + ipv4_header(src, dst, 17, 20 + len(payload) - cut, ident, cut // 8, ttl) + payload[cut:]]


def v6_parts(f: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(ethernet header, first 4 bytes of the IPv6 header, B4 address, BR address) of a B4 frame."""
    return f[:ETH], f[ETH:ETH + 4], f[ETH + 8:ETH + 24], f[ETH + 24:ETH + 40]


def v6_fragments(f: bytes, ident: int) -> list[bytes]:
    """Two 550-byte IPv6 fragments of a 976-byte IPv4/UDP packet from ``f``'s softwire."""
    eth, vtf, b4, br = v6_parts(f)
    inner4 = f[ETH + 40:]
    _, src, dst, sport, dport, ttl = parse_v4(f[:ETH] + inner4)
    inner = ipv4_header(src, dst, 17, 976, ttl=ttl) + udp4(src, dst, sport, dport, bytes(976 - 28))
    out = []
    for off, more in ((0, 1), (488, 0)):
        piece = inner[off:off + 488]
        fh = struct.pack("!BBHI", 4, 0, (off // 8) << 3 | more, ident)
        out.append(eth + vtf + struct.pack("!HBB", 8 + len(piece), 44, 64) + b4 + br + fh + piece)
    return out


def v4_echo(eth: bytes, dst: bytes, ident: int, seq: int, size: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + bytes(size - ETH - 20 - 8)
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return eth + ipv4_header(INTERNET_HOST, dst, 1, 20 + len(body), ttl=64) + body


def v6_echo(f: bytes, dst: bytes, ident: int, seq: int) -> bytes:
    eth, vtf, b4, _ = v6_parts(f)
    body = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + bytes(len(f) - ETH - 40 - 8)
    pseudo = sum(struct.unpack("!16H", b4 + dst)) + len(body) + 58
    body = body[:2] + struct.pack("!H", csum(body, pseudo)) + body[4:]
    return eth + vtf + struct.pack("!HBB", len(body), 58, 64) + b4 + dst + body


def arp_request(eth_src: bytes, spa: bytes, tpa: bytes) -> bytes:
    """A broadcast "who has ``tpa``" (RFC 826), padded to the 60-byte minimum frame."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, eth_src, spa, bytes(6), tpa)
    return (b"\xff" * 6 + eth_src + b"\x08\x06" + arp).ljust(60, b"\0")


def v6_ns(f: bytes, target: bytes) -> bytes:
    """A Neighbour Solicitation for ``target`` from ``f``'s B4, to its solicited-node
    group, with a source link-layer address option (RFC 4861 4.3)."""
    eth, vtf, b4, _ = v6_parts(f)
    group = bytes.fromhex("ff0200000000000000000001ff") + target[13:]
    body = struct.pack("!BBHI16sBB6s", 135, 0, 0, 0, target, 1, 1, eth[6:12])
    pseudo = sum(struct.unpack("!16H", b4 + group)) + len(body) + 58
    body = body[:2] + struct.pack("!H", csum(body, pseudo)) + body[4:]
    mac = b"\x33\x33" + group[12:]
    return mac + eth[6:] + vtf + struct.pack("!HBB", len(body), 58, 255) + b4 + group + body


def junk4(f: bytes, kind: int) -> bytes:
    """An Internet frame made malformed or misplaced: a bad IPv4 header checksum (0),
    cut to its IPv4 header (1: its total length is beyond the frame), the IPv6 ethertype (2)."""
    if kind == 0:
        return f[:ETH + 10] + bytes([f[ETH + 10] ^ 0xFF]) + f[ETH + 11:]
    if kind == 1:
        return f[:ETH + 20]
    return f[:12] + b"\x86\xdd" + f[ETH:]


def junk6(f: bytes, kind: int) -> bytes:
    """A B4 frame made malformed or misplaced: UDP in place of IPv4 as the IPv6 next
    header (0), the IPv4 ethertype (1), IP version 5 (2)."""
    if kind == 0:
        return f[:ETH + 6] + b"\x11" + f[ETH + 7:]
    if kind == 1:
        return f[:12] + b"\x08\x00" + f[ETH:]
    return f[:ETH] + bytes([0x50 | (f[ETH] & 0x0F)]) + f[ETH + 1:]


def addr4(n: int) -> bytes:
    return struct.pack("!I", n)


def build_mix(name: str, seed: int, base4: list[bytes], base6: list[bytes], ext_ip: bytes, int_ip: bytes
              ) -> tuple[list[bytes], list[bytes]]:
    """The (Internet-side, B4-side) frames of mix ``name``; the same for the same seed."""
    rng = random.Random(seed * 1009 + MIXES.index(name))
    f4, f6 = list(base4), list(base6)
    n4, n6 = len(f4), len(f6)
    if name in ("clean", "filter"):
        pass
    elif name == "miss1":
        for i in sorted(rng.sample(range(n4), n4 // 100)):
            f4[i] = retarget(f4[i], addr4(MISS_NET + rng.randrange(MISS_SPAN)))
    elif name == "miss100":
        f4 = [retarget(f, addr4(MISS_NET + rng.randrange(MISS_SPAN))) for f in f4]
    elif name == "ttl1":
        for i in rng.sample(range(n4), n4 // 100):
            f4[i] = with_ttl(f4[i], 1)
    elif name == "frag5":
        # 5 % of the frames of each side are fragments, two per datagram, adjacent.
        for frames, split in ((f4, v4_fragments), (f6, v6_fragments)):
            pairs = rng.sample(range(len(frames) // 2), len(frames) * 5 // 200)
            for k in pairs:
                frames[2 * k:2 * k + 2] = split(frames[2 * k], rng.randrange(1, 1 << 16))
    elif name == "echo5":
        eth4 = f4[0][:ETH]
        for j, i in enumerate(sorted(rng.sample(range(n4), n4 * 5 // 100))):
            f4[i] = v4_echo(eth4, ext_ip, 0x4C57, j, len(f4[i]))
        for j, i in enumerate(sorted(rng.sample(range(n6), n6 * 5 // 100))):
            f6[i] = v6_echo(f6[i], int_ip, 0x4C57, j)
    elif name == "arp5":
        for i in sorted(rng.sample(range(n4), n4 * 5 // 100)):
            f4[i] = arp_request(f4[i][6:12], INTERNET_HOST, ext_ip)
        for i in sorted(rng.sample(range(n6), n6 * 5 // 100)):
            f6[i] = v6_ns(f6[i], int_ip)
    elif name == "junk5":
        for j, i in enumerate(sorted(rng.sample(range(n4), n4 * 5 // 100))):
            f4[i] = junk4(f4[i], j % 3)
        for j, i in enumerate(sorted(rng.sample(range(n6), n6 * 5 // 100))):
            f6[i] = junk6(f6[i], j % 3)
    else:
        raise ValueError(name)
    return f4, f6


# -- configurations -------------------------------------------------------------------------------------------
def conf_tail(conf: Path, size: int = 1 << 14) -> str:
    """The end of the configuration (everything after the binding table)."""
    with open(conf, "rb") as fh:
        fh.seek(max(0, conf.stat().st_size - size))
        return fh.read().decode()


def interface_ips(conf: Path) -> tuple[bytes, bytes]:
    import ipaddress
    tail = conf_tail(conf)
    ext = re.search(r"\n\s*external-interface \{\s*\n\s*ip ([0-9.]+);", tail[tail.index("instance {"):])
    intl = re.search(r"\n\s*internal-interface \{\s*\n\s*ip ([0-9a-fA-F:]+);", tail[tail.index("instance {"):])
    return ipaddress.IPv4Address(ext.group(1)).packed, ipaddress.IPv6Address(intl.group(1)).packed


def filter_variant(conf: Path) -> Path:
    """``conf`` with ``ingress-filter "ip"`` / ``"ip6"`` on the external / internal interface (made once)."""
    out = conf.with_name(conf.stem + "-filter.conf")
    if out.exists() and out.stat().st_mtime >= conf.stat().st_mtime:
        return out
    text = conf.read_text()
    for iface, flt in (("external-interface", "ip"), ("internal-interface", "ip6")):
        head = f"\n  {iface} {{\n"                       # softwire-config's, not the instance queue's
        at = text.rindex(head) + len(head)
        text = text[:at] + f'    ingress-filter "{flt}";\n' + text[at:]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def icmp_errors_on(conf: Path) -> bool:
    tail = conf_tail(conf)
    tail = tail[:tail.index("instance {")]
    return re.findall(r"generate-icmp-errors (\w+);", tail) == ["true", "true"]


# -- ours -----------------------------------------------------------------------------------------------------
def pin(cpu: int | None):
    return (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None


def ours_run(conf: Path, v4: Path, v6: Path, duration: float, cpu: int | None) -> dict:
    r = subprocess.run(LWAFTR + ["bench", "--json", "--duration", str(duration), str(conf), str(v4), str(v6)],
                       check=True, text=True, capture_output=True, preexec_fn=pin(cpu))
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours_counters(conf: Path, v4: Path, v6: Path) -> tuple[dict[str, int], int, int]:
    """Counters after one pass of each pcap through the engine (and frames offered per side)."""
    import numpy as np

    from lwaftr import counters as C
    from lwaftr.cli.bench import replay
    from lwaftr.config.load import load_table
    from lwaftr.dataplane.engine import Engine
    from lwaftr.dataplane.replay import Templates
    from lwaftr.io.pcap import read_frames
    config, table = load_table(str(conf))
    frames4, frames6 = read_frames(v4), read_frames(v6)
    engine = Engine(config, table=table, max_batch=BATCH, pool_slots=8 * BATCH)
    batches = math.ceil(max(len(frames4), len(frames6)) / BATCH)
    replay(engine, Templates(frames4), Templates(frames6), BATCH, float("inf"), batches=batches)
    c = np.asarray(engine.counters)
    return {n: int(c[i]) for n, i in C.INDEX.items()}, batches * BATCH, batches * BATCH


# -- Snabb ----------------------------------------------------------------------------------------------------
def _csv_rows(path: Path) -> list[list[float]]:
    rows = []
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return rows
    for line in lines:
        try:
            r = [float(x) for x in line.split(",")]
        except ValueError:
            break
        if len(r) != 5:
            break
        rows.append(r)
    return rows


def _ppid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> set[int]:
    return {int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _ppid(d.name) == pid}


def _is_worker_of(pid: int, manager_pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
    return "snabb worker" in cmd and f"for {manager_pid}]" in cmd


def _stop_workers(manager_pid: int, workers: set[int]) -> None:
    """End any data-plane worker of ``manager_pid`` that outlived it (only those we saw it start)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        alive = [w for w in workers if _is_worker_of(w, manager_pid)]
        if not alive:
            return
        for w in alive:
            try:
                os.kill(w, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and any(_is_worker_of(w, manager_pid) for w in alive):
            time.sleep(0.1)
    print(f"snabb: worker(s) of {manager_pid} would not stop", file=sys.stderr)


def snabb_counters(manager_pid: int) -> dict[str, int]:
    """The counters of the data-plane worker of Snabb process ``manager_pid``: every app's
    ``*.counter`` by name, plus ``offered-v4`` / ``offered-v6`` (frames its reassemblers took in)."""
    out: dict[str, int] = {}
    for d in Path("/var/run/snabb").iterdir():
        if not d.name.isdigit() or _ppid(d.name) != manager_pid or not (d / "apps" / "lwaftr").is_dir():
            continue
        for f in d.glob("apps/*/*.counter"):
            try:
                out[f.stem] = out.get(f.stem, 0) + int.from_bytes(f.read_bytes()[:8], "little")
            except OSError:
                pass
        break
    for side in ("4", "6"):   # what entered the lwAFTR: every frame passes its reassembler first
        out[f"offered-v{side}"] = (out.get(f"in-ipv{side}-frag-needs-reassembly", 0)
                                   + out.get(f"in-ipv{side}-frag-reassembly-unneeded", 0))
    return out


def snabb_run(binary: str, conf: Path, v4: Path, v6: Path, duration: float, cpu: int, log: Path) -> dict | None:
    """One ``snabb lwaftr bench`` run: median of its first ``duration`` per-second CSV rows after loading
    (the first row with traffic is partial and left out), and its counters over those seconds."""
    n = max(1, round(duration))
    csv = OUT / "snabb-mixes.csv"
    csv.unlink(missing_ok=True)
    cmd = [binary, "lwaftr", "bench", "--cpu", str(cpu), "--duration", str(n + SNABB_LOAD_ALLOWANCE),
           "-b", str(csv), str(conf), str(v4), str(v6)]
    with open(log, "w") as fh:
        # Snabb's worker dies with its manager through PR_SET_PDEATHSIG (SIGHUP): not if we
        # inherited SIGHUP ignored (nohup), so its default is restored.
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    first = c0 = c1 = None
    workers: set[int] = set()
    t0 = time.monotonic()
    try:
        while p.poll() is None and time.monotonic() - t0 < SNABB_LOAD_ALLOWANCE + n:
            workers |= _children(p.pid)
            rows = _csv_rows(csv)
            if first is None:
                first = next((i for i, r in enumerate(rows) if r[1] + r[3] > 0), None)
                if first is not None:
                    c0 = (time.monotonic(), snabb_counters(p.pid))
            if first is not None and len(rows) >= first + 1 + n:
                c1 = (time.monotonic(), snabb_counters(p.pid))
                break
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)               # Snabb cleans up its shared memory on SIGTERM
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _stop_workers(p.pid, workers)
    rows = _csv_rows(csv)
    steady = rows[first + 1:first + 1 + n] if first is not None else []
    if len(steady) < n:
        print(f"snabb: only {len(steady)} steady rows (see {log})", file=sys.stderr)
        if not steady:
            return None
    counters, seconds = {}, 0.0
    if c0 and c1:
        seconds = c1[0] - c0[0]
        counters = {k: v - c0[1].get(k, 0) for k, v in c1[1].items()}
    return {"decap_mpps": statistics.median(r[1] for r in steady),
            "encap_mpps": statistics.median(r[3] for r in steady),
            "counters": counters, "seconds": seconds}


def snabb_compile(binary: str, conf: Path) -> None:
    """Compile ``conf`` for Snabb (``CONF.o`` beside it) unless already done; minutes for 1M softwires."""
    o = conf.with_suffix(".o")
    if o.exists() and o.stat().st_mtime >= conf.stat().st_mtime:
        return
    t = time.monotonic()
    subprocess.run([binary, "lwaftr", "compile-configuration", str(conf)], check=True,
                   capture_output=True, text=True)
    print(f"snabb: compiled {conf.name} in {time.monotonic() - t:.0f} s", flush=True)


# -- report ---------------------------------------------------------------------------------------------------
def machine_line() -> str:
    model = "?"
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} vCPUs, kernel {platform.release()}, Python {platform.python_version()}"


def fmt_range(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}–{max(xs):.3f}]"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or statistics.median(b) == 0:
        return "–"
    return f"{statistics.median(a) / statistics.median(b):.2f}"


def counters_line(counters: dict[str, int], names: list[str], offered4: int, offered6: int) -> str:
    parts = []
    for n in names:
        if n not in counters:                              # not a counter of that program
            continue
        v = counters.get(n, 0)
        base = offered6 if ("ipv6" in n or "icmpv6" in n) else offered4
        pct = f" ({100 * v / base:.1f} %)" if base else ""
        parts.append(f"{n}={v}{pct}")
    return ", ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snabb", help="path to a snabb binary (without it: ours only)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    ap.add_argument("--pairs", type=int, default=3, help="runs of each program per mix (default 3)")
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"comma-separated subset of {','.join(MIXES)}")
    ap.add_argument("--seed", type=int, default=1, help="seed of the frame selection (default 1)")
    ap.add_argument("--cpu", type=int, default=1, help="the CPU both programs run on (default 1)")
    args = ap.parse_args()
    mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    bad = [m for m in mixes if m not in MIXES]
    if bad:
        ap.error(f"unknown mix(es): {', '.join(bad)}")

    from lwaftr.io.pcap import read_frames, write_frames
    started = time.monotonic()
    print(f"# Traffic mixes, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine_line()}; load average {os.getloadavg()[0]:.2f}")
    try:
        rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        rev = "?"
    snabb_version = ""
    if args.snabb:
        snabb_version = subprocess.run([args.snabb, "--version"], capture_output=True, text=True
                                       ).stdout.splitlines()[0]
    print(f"# lwaftr {rev}; {snabb_version or 'no Snabb'}; {args.duration:g} s runs, {args.pairs} pairs "
          f"(ours, Snabb, ours, ...), CPU {args.cpu}, seed {args.seed}", flush=True)

    conf, v4, v6 = generate("1m-550", TABLE_ARGS, 550, 10_000, 10_000)
    if not icmp_errors_on(conf):
        print(f"{conf}: generate-icmp-errors is not true on both interfaces", file=sys.stderr)
        return 2
    base4, base6 = read_frames(v4), read_frames(v6)
    ext_ip, int_ip = interface_ips(conf)
    confs = {m: (filter_variant(conf) if m == "filter" else conf) for m in mixes}
    if args.snabb:
        for c in sorted(set(confs.values())):
            snabb_compile(args.snabb, c)

    results = {}
    for mix in mixes:
        f4, f6 = build_mix(mix, args.seed, base4, base6, ext_ip, int_ip)
        p4, p6 = OUT / f"mix-{mix}-s{args.seed}-v4.pcap", OUT / f"mix-{mix}-s{args.seed}-v6.pcap"
        write_frames(p4, f4)
        write_frames(p6, f6)
        c = confs[mix]
        oc = ours_counters(c, p4, p6)                     # also compiles our table for c the first time
        ours_r, snabb_r = [], []
        for i in range(args.pairs):
            r = ours_run(c, p4, p6, args.duration, args.cpu)
            ours_r.append(r)
            line = f"{mix} #{i + 1}: ours decap {r['decap_mpps']:.3f} encap {r['encap_mpps']:.3f} Mpps"
            if args.snabb:
                s = snabb_run(args.snabb, c, p4, p6, args.duration, args.cpu, OUT / f"snabb-{mix}.log")
                if s:
                    snabb_r.append(s)
                    line += f"   snabb decap {s['decap_mpps']:.3f} encap {s['encap_mpps']:.3f} Mpps"
            print(line, flush=True)
        results[mix] = (ours_r, snabb_r, oc)

    print(f"\n## Results ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}; "
          f"load average {os.getloadavg()[0]:.2f})\n")
    print("Mpps per direction, median [min–max] of the runs; decap = leaving the IPv4 side, "
          "encap = leaving the IPv6 side; ratio = ours / Snabb (medians).\n")
    print("| mix | ours decap | ours encap | Snabb decap | Snabb encap | decap ratio | encap ratio |")
    print("|---|---|---|---|---|---|---|")
    for mix, (o, s, _) in results.items():
        od, oe = [r["decap_mpps"] for r in o], [r["encap_mpps"] for r in o]
        sd, se = [r["decap_mpps"] for r in s], [r["encap_mpps"] for r in s]
        print(f"| {mix} | {fmt_range(od)} | {fmt_range(oe)} | {fmt_range(sd)} | {fmt_range(se)} "
              f"| {ratio(od, sd)} | {ratio(oe, se)} |")

    print("\n## Counters (percent of the frames offered on that side)\n")
    for mix, (o, s, (oc, off4, off6)) in results.items():
        names = ALWAYS + SHOWN[mix]
        print(f"- {mix}, ours (one pass, {off4} frames a side): {counters_line(oc, names, off4, off6)}")
        if s and s[-1]["counters"]:
            sc = s[-1]["counters"]
            so4, so6 = sc.get("offered-v4", 0), sc.get("offered-v6", 0)
            print(f"- {mix}, Snabb (last run, {s[-1]['seconds']:.1f} s, {so4} / {so6} frames offered): "
                  f"{counters_line(sc, names, so4, so6)}")
        if mix == "miss100":
            # What leaves the IPv4 side is the B4->Internet traffic plus the ICMP errors the rate
            # limiter lets out; split it with each run's own counters over its measured seconds.
            def forwarded(runs: list[dict]) -> list[float]:
                return [(r["counters"].get("out-ipv4-packets", 0) - r["counters"].get("out-icmpv4-error-packets", 0))
                        / r["seconds"] / 1e6 for r in runs if r.get("counters") and r.get("seconds")]
            of, sf = forwarded(o), forwarded(s)
            text = "- miss100, B4->Internet forwarded only (each run's counters over its measured seconds): " \
                   f"ours {fmt_range(of) if of else '?'} Mpps, Snabb {fmt_range(sf) if sf else '?'} Mpps"
            if of and sf:
                text += f", ratio {ratio(of, sf)}"
            clean = results.get("clean")
            if of and clean and clean[0]:
                share = statistics.median(of) / statistics.median(r["decap_mpps"] for r in clean[0])
                text += f"; ours keeps {100 * share:.0f} % of its clean decap rate"
            print(text)
    print(f"\n(total time {(time.monotonic() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
