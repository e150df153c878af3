#!/usr/bin/env python3
"""Binding-table changes while forwarding, on Snabb's 1M-softwire table.

    .venv/bin/python benchmarks/binding_changes.py [--rate N] [--per-request K] [--duration S]

The engine forwards the 550-byte, 10,000-subscriber traffic of
``benchmarks/run.py`` (both directions, batches of 256, as ``bench``),
loaded the way ``lwaftr run`` loads it (the compiled table, mapped), and
between batches it serves control requests exactly as the live loop does
(:class:`~lwaftr.mgmt.service.ConfigService` on the request's JSON text, then
``engine.set_table``): ``add`` requests of K new softwires and ``remove``
requests of softwires added earlier, at N changes per second, plus ``set``
requests (one softwire each) that move a softwire to another B4.  Changed softwires are not the
ones the traffic uses, so every frame offered must come out: any shortfall
is loss caused by the changes.

Prints: changes applied per second, request latency (median, 99th
percentile, max), forwarding rate with changes and without (same run
length), and frames lost.  ``--journal DIR``: each request is also made
durable as the live loop makes it (its record appended to a journal in DIR,
fsynced by a helper thread while forwarding goes on); how long until it is
on disk is printed too.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import TABLE_ARGS, generate  # noqa: E402

from lwaftr import counters as C  # noqa: E402
from lwaftr.config.load import load_table  # noqa: E402
from lwaftr.dataplane.engine import Engine  # noqa: E402
from lwaftr.dataplane.replay import Templates, fill  # noqa: E402
from lwaftr.io.pcap import read_frames  # noqa: E402
from lwaftr.mgmt.service import ConfigService  # noqa: E402

SW = "/softwire-config/binding-table/softwire"
BR = "fc00::100"
NEW_BASE = int(ipaddress.IPv4Address("198.18.0.0"))     # RFC 2544 benchmarking space, unused by the table


def entry(i: int, b4_tag: int = 1) -> str:
    ip = ipaddress.IPv4Address(NEW_BASE + i // 64)
    b4 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:77::")) + (b4_tag << 32) + i)
    return f"{{ ipv4 {ip}; psid {i % 64}; b4-ipv6 {b4}; br-address {BR}; port-set {{ psid-length 6; }} }}"


def key(i: int) -> str:
    return f"{SW}[ipv4={ipaddress.IPv4Address(NEW_BASE + i // 64)}][psid={i % 64}]"


def run(engine: Engine, service: ConfigService | None, t4: Templates, t6: Templates, duration: float, rate: float,
        per_request: int, batch: int = 256, journal=None) -> dict:
    pool = engine.pool
    c = engine.counters
    c[:] = 0
    offered = 0
    changes = 0
    latencies: list[float] = []     # per request
    acks: list = []                 # (sent, ready) of changes waiting for their fsync
    ack_latencies: list[float] = []
    journal_flusher = None
    if journal is not None:
        from lwaftr.config.journal import Flusher
        journal_flusher = Flusher(journal, lambda items, e: (_ for _ in ()).throw(e))
    added: list[int] = []        # live extra softwires, oldest first
    next_new = 0
    n_req = 0
    start = time.perf_counter()
    end = start + duration
    now = start
    while now < end:
        s4 = fill(pool, t4, batch)
        s6 = fill(pool, t6, batch)
        offered += len(s4) + len(s6)
        for s in engine.process(s4, s6, now).slots():
            pool.free(s)
        now = time.perf_counter()
        while acks and acks[0][1]():
            ack_latencies.append(now - acks.pop(0)[0])
        if service is None:
            continue
        # Changes due by now, served between batches as the live loop serves them.
        while changes + per_request <= rate * (now - start):
            kind = n_req % 3
            if kind == 0 or len(added) < 4 * per_request:
                reqs = [{"op": "add", "path": SW,
                         "value": " ".join(entry(next_new + j) for j in range(per_request))}]
                added += range(next_new, next_new + per_request)
                next_new += per_request
            elif kind == 1:             # a path names one softwire: one remove request each
                victims, added = added[:per_request], added[per_request:]
                reqs = [{"op": "remove", "path": key(v)} for v in victims]
            else:                       # move softwires to another B4
                reqs = [{"op": "set", "path": f"{key(v)}/b4-ipv6",
                         "value": str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:78::")) + n_req))}
                        for v in added[:per_request]]
            t0 = time.perf_counter()
            for req in reqs:
                r = service.handle(json.loads(json.dumps(req)))     # the JSON of the control socket
                assert r.reply["ok"], r.reply
                engine.set_table(service.table)
                if journal is not None:                             # acknowledged only once on disk:
                    journal.append(r.record, sync=False)            # fsynced aside, as the live loop does
                    acks.append((time.perf_counter(), journal_flusher.flush([None])))
            latencies.append((time.perf_counter() - t0) / len(reqs))
            changes += per_request
            n_req += 1
    elapsed = now - start
    if journal_flusher is not None:
        journal_flusher.wait()
    out = int(c[C.OUT_IPV4_PACKETS] + c[C.OUT_IPV6_PACKETS])
    ack = np.array(ack_latencies) * 1e3 if ack_latencies else np.zeros(1)
    lat = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return {"seconds": elapsed, "changes": changes, "changes_per_s": changes / elapsed,
            "requests": len(latencies), "latency_ms_p50": float(np.median(lat)),
            "latency_ms_p99": float(np.percentile(lat, 99)), "latency_ms_max": float(lat.max()),
            "mpps": offered / elapsed / 1e6, "offered": offered, "forwarded": out, "lost": offered - out,
            "softwires_at_end": engine.table.count,
            "ack_ms_p50": float(np.median(ack)), "ack_ms_p99": float(np.percentile(ack, 99))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000, help="binding changes per second (default 2000)")
    ap.add_argument("--per-request", type=int, default=10, help="softwires per add/set request (default 10)")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--journal", metavar="DIR", help="make each change durable (journal in DIR, fsynced)")
    args = ap.parse_args()
    conf, v4, v6 = generate("1m-550", TABLE_ARGS, 550, 10000, 10000)
    t0 = time.perf_counter()
    config, table = load_table(conf, private=True)     # as lwaftr run maps it
    at_start = table.count
    print(f"table: {table.count:,} softwires, loaded in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    t4, t6 = Templates(read_frames(v4)), Templates(read_frames(v6))
    base_engine = Engine(config, table=table, max_batch=256, pool_slots=2048)
    run(base_engine, None, t4, t6, 1.0, 0, 1)                       # warm up
    base = run(base_engine, None, t4, t6, args.duration, 0, 1)
    engine = Engine(config, table=table, max_batch=256, pool_slots=2048)
    service = ConfigService(config, table)
    run(engine, None, t4, t6, 0.5, 0, 1)
    journal = None
    if args.journal:
        from lwaftr.config.journal import Journal
        Path(args.journal).mkdir(parents=True, exist_ok=True)
        jpath = Path(args.journal) / "binding_changes.journal"
        jpath.unlink(missing_ok=True)
        journal = Journal(jpath)
    res = run(engine, service, t4, t6, args.duration, args.rate, args.per_request, journal=journal)
    res["baseline_mpps"] = base["mpps"]
    res["baseline_lost"] = base["lost"]
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"binding changes while forwarding ({at_start:,}-softwire table at start, "
          f"{args.per_request} softwires per add/set request, removes one per request"
          + (", each request fsynced to a journal" if journal is not None else "") + ")")
    print(f"  changes applied     {res['changes']:,} in {res['seconds']:.1f} s = {res['changes_per_s']:,.0f}/s "
          f"(target {args.rate:,.0f}/s)")
    print(f"  request latency     median {res['latency_ms_p50']:.3f} ms, p99 {res['latency_ms_p99']:.3f} ms, "
          f"max {res['latency_ms_max']:.3f} ms ({res['requests']:,} requests)")
    if journal is not None:
        print(f"  on disk (fsynced)   median {res['ack_ms_p50']:.2f} ms, p99 {res['ack_ms_p99']:.2f} ms after "
              f"the request (its reply waits for it)")
    print(f"  forwarding          {res['mpps']:.2f} Mpps with changes, {base['mpps']:.2f} Mpps without "
          f"(both directions)")
    print(f"  frames lost         {res['lost']:,} of {res['offered']:,} (without changes: {base['lost']:,})")
    print(f"  softwires at end    {res['softwires_at_end']:,}")
    return 0 if res["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
