"""``lwaftr bench``: replay pcaps through the real engine in a loop, report rates.

    lwaftr bench [--duration S] [--workers N] [--batch B] [--json] CONF IN_V4.pcap IN_V6.pcap

Both directions run at once, as in Snabb's ``lwaftr bench``: every batch
takes B frames from each pcap (wrapping around), the engine processes them
exactly as ``run`` would (same kernels; nothing skipped), and
what leaves is counted and freed.  Decapsulation is what leaves the IPv4
interface, encapsulation what leaves the IPv6 one, every frame as a NIC
would send it (forwarded packets, fragments, ICMP errors, echo, ARP and NDP
replies), as Snabb's bench counts its sinks; Gbps count frame bytes.

``--workers N`` forks N processes that share one copy of the binding table
(loaded from the compiled ``CONF.lwbt`` before forking, shared
copy-on-write) and reports the sum.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass

import numpy as np

from lwaftr.cli import examples
from lwaftr import counters as C
from lwaftr.bindingtable.table import BindingTable
from lwaftr.config.errors import ConfigError
from lwaftr.config.load import load_table
from lwaftr.config.model import Config
from lwaftr.dataplane.engine import Engine
from lwaftr.dataplane.replay import Replay, Templates
from lwaftr.io.pcap import CaptureError, read_frames

#: The JSON's names for :class:`~lwaftr.dataplane.replay.Replay`'s ``sent`` fields, in their order.
_SENT = ("v4-packets", "v4-bytes", "v6-packets", "v6-bytes")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="replay pcaps through the data plane and report Mpps/Gbps",
                       **examples("lwaftr generate-configuration -o gen.conf --pcap-v4 v4.pcap --pcap-v6 v6.pcap "
                                  "193.5.1.100 1000 fc00::100 fc00:1:2:3:4:5:0:7e 6",
                                  "lwaftr bench --duration 5 --workers 2 gen.conf v4.pcap v6.pcap"))
    p.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds to run (default 10)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--batch", type=int, default=512, metavar="B",
                   help="frames per side per batch (default 512, as run)")
    p.add_argument("--json", action="store_true",
                   help="print the final figures, and the run's counters, as one JSON object")
    p.add_argument("conf", metavar="CONF", help="configuration (snabb-softwire-v3, or RFC 8676 XML/JSON)")
    p.add_argument("in_v4", metavar="IN_V4", help="Internet-side frames to replay (pcap or pcapng)")
    p.add_argument("in_v6", metavar="IN_V6", help="B4-side frames to replay (pcap or pcapng)")
    p.set_defaults(func=run)


@dataclass
class Totals:
    """What left each side (in the order of :class:`~lwaftr.dataplane.replay.Replay`'s ``sent``)."""

    decap_packets: int = 0
    decap_bytes: int = 0
    encap_packets: int = 0
    encap_bytes: int = 0

    def rates(self, seconds: float) -> dict[str, float]:
        s = max(seconds, 1e-9)
        return {"decap_mpps": self.decap_packets / s / 1e6, "encap_mpps": self.encap_packets / s / 1e6,
                "decap_gbps": self.decap_bytes * 8 / s / 1e9, "encap_gbps": self.encap_bytes * 8 / s / 1e9}


def replay(engine: Engine, t4: Templates, t6: Templates, batch: int, deadline: float,
           shared: np.ndarray | None = None, sink=None, batches: int | None = None,
           sent: np.ndarray | None = None) -> float:
    """Run until ``deadline`` (perf_counter) or for ``batches`` batches; returns
    the elapsed seconds.  ``shared`` (if given) gets a copy of the counters every few
    batches; ``sink(engine, output)`` (if given) sees each batch's
    :class:`~lwaftr.dataplane.engine.Output` before its slots are freed; ``sent``
    (if given) counts what leaves each side (:class:`~lwaftr.dataplane.replay.Replay`)."""
    nic = Replay(engine.pool, t4, t6, batch, sent)
    start = now = time.perf_counter()
    i = 0
    c = engine.counters
    done = None
    while now < deadline and (batches is None or i < batches):
        s4, s6 = nic.next(done)                 # (the batch before given back)
        out = engine.process(s4, s6, now)
        if sink is not None:
            sink(engine, out)
        done = out.slots()
        i += 1
        if i & 7 == 0:
            now = time.perf_counter()
            if shared is not None:
                shared[:] = c
    if done is not None:
        nic.finish(done)
    if shared is not None:
        shared[:] = c
    return now - start


def _worker(config: Config, table: BindingTable, t4: Templates, t6: Templates, batch, barrier, duration,
            shared_base, sent_base, idx):
    shared = np.frombuffer(shared_base, np.uint64).reshape(-1, C.N_COUNTERS)[idx]
    sent = np.frombuffer(sent_base, np.int64).reshape(-1, 4)[idx]
    engine = Engine(config, table=table, max_batch=batch, pool_slots=max(1024, 4 * batch))
    replay(engine, t4, t6, batch, time.perf_counter() + 0.5)   # warm: kernels compiled/loaded, pages touched
    engine.counters[:] = 0
    barrier.wait()                                              # everyone starts together
    replay(engine, t4, t6, batch, time.perf_counter() + duration, shared, sent=sent)


def _print_line(label: str, r: dict[str, float]) -> None:
    print(f"{label}: decap {r['decap_mpps']:6.3f} Mpps {r['decap_gbps']:6.3f} Gbps   "
          f"encap {r['encap_mpps']:6.3f} Mpps {r['encap_gbps']:6.3f} Gbps", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        config, table = load_table(args.conf)
    except ConfigError as e:
        print(f"lwaftr bench: {e}", file=sys.stderr)
        return 2
    try:
        frames4, frames6 = read_frames(args.in_v4), read_frames(args.in_v6)
    except CaptureError as e:
        print(f"lwaftr bench: {e}", file=sys.stderr)
        return 2
    if not frames4 and not frames6:
        print("lwaftr bench: both pcaps are empty", file=sys.stderr)
        return 2
    # Copy the mapped table into anonymous memory before forking: the workers
    # share it copy-on-write (never written), and anonymous memory gets
    # transparent huge pages, which a file mapping does not (TLB misses on
    # random rows cost ~15 % here).
    table = BindingTable(np.array(table.addr_tab), np.array(table.sw_tab), np.array(table.br_tab), table.count)
    n = max(1, args.workers)
    shared_base = mp.RawArray("Q", C.N_COUNTERS * n)    # each worker's counters, copied every few batches
    shared = np.frombuffer(shared_base, np.uint64).reshape(n, C.N_COUNTERS)
    sent_base = mp.RawArray("q", 4 * n)                 # what each worker's NIC sent, live
    sent = np.frombuffer(sent_base, np.int64).reshape(n, 4)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n + 1)
    # Built before forking, so the workers read one copy of the frames (and of the table).
    t4, t6 = Templates(frames4), Templates(frames6)
    procs = [ctx.Process(target=_worker, args=(config, table, t4, t6, args.batch, barrier, args.duration,
                                                shared_base, sent_base, i), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    start_at = time.perf_counter()
    prev, t_prev = np.zeros(4, np.int64), start_at
    end = start_at + args.duration
    while any(p.is_alive() for p in procs):
        time.sleep(min(1.0, max(0.0, end - time.perf_counter())) or 0.05)
        now = time.perf_counter()
        cur = sent.sum(axis=0)
        if not args.json and now - t_prev >= 0.5 and now <= end + 0.5:
            d = cur - prev
            _print_line(f"{now - start_at:5.1f}s", Totals(*map(int, d)).rates(now - t_prev))
            prev, t_prev = cur.copy(), now
        if now > end + 30:
            break
    for p in procs:
        p.join(timeout=5)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        print(f"lwaftr bench: {len(failed)} worker(s) failed", file=sys.stderr)
        return 1
    counters = shared.sum(axis=0)
    total = Totals(*map(int, sent.sum(axis=0)))
    rates = total.rates(args.duration)
    if args.json:
        # With what was sent and every counter of the run: what the rates are made of
        # (forwarded packets, ICMP errors, echo replies...).
        print(json.dumps({**{k: round(v, 4) for k, v in rates.items()}, "workers": n, "seconds": args.duration,
                          "sent": dict(zip(_SENT, map(int, sent.sum(axis=0)))),
                          "counters": C.to_dict(counters, nonzero=True)}))
    else:
        _print_line(f"total ({n} worker{'s' if n > 1 else ''}, {args.duration:g} s)", rates)
    return 0
