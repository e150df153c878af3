"""``lwaftr bench`` runs the same engine as ``check`` and forwards exactly what check does."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from lwaftr import counters as C
from lwaftr.cli.bench import Templates, replay
from lwaftr.cli.check import run_check
from lwaftr.cli.generate_configuration import generate, traffic
from lwaftr.config.load import load_config
from lwaftr.config.snabb import dump_snabb
from lwaftr.dataplane.engine import Engine
from lwaftr.dataplane.fragids import SNABB_CHECK_ID_SEEDS
from lwaftr.io.pcap import write_frames

LWAFTR = [str(Path(sys.executable).with_name("lwaftr"))]
ETH = dict(dst="02:aa:aa:aa:aa:aa", src="02:99:99:99:99:99")


def _lab(tmp_path: Path):
    g = generate("198.18.0.1", 8, "2001:db8:ffff::1", "2001:db8:1::1", 2)
    conf = tmp_path / "lw.conf"
    conf.write_text(dump_snabb(g.config))
    v4, v6 = traffic(g, 200, 64, 20)
    # Slow-path work mixed in: unbound port, TTL 1, ICMP, a spoofed B4, a too-big frame.
    v4 += [bytes(Ether(**ETH) / IP(src="203.0.113.1", dst="198.18.0.1") / UDP(sport=1, dport=1)),
           bytes(Ether(**ETH) / IP(src="203.0.113.1", dst="198.18.0.2", ttl=1) / UDP(sport=1, dport=16384)),
           bytes(Ether(**ETH) / IP(src="203.0.113.1", dst="198.18.0.2") / ICMP(type=0, id=16384)),
           bytes(Ether(**ETH) / IP(src="203.0.113.1", dst="198.18.0.2") / UDP(sport=1, dport=16384) / bytes(1480))]
    v6 += [bytes(Ether(**ETH) / IPv6(src="2001:db8:9::9", dst="2001:db8:ffff::1") /
                 IP(src="198.18.0.1", dst="203.0.113.1") / UDP(sport=16384, dport=1)),
           bytes(Ether(**ETH) / IPv6(src="2001:db8:9::9", dst="2001:db8:ffff::1") / ICMPv6EchoRequest()),
           bytes(Ether(**ETH) / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1") /
                 IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=16384, dport=16384)),   # hairpinned
           bytes(Ether(**ETH) / IPv6(src="2001:db8:1::1", dst="2001:db8:ffff::1", nh=60) /
                 bytes([4, 0, 4, 1, 4, 1, 1, 0]) / IP(src="198.18.0.1", dst="203.0.113.1") / UDP(sport=16384))]
    assert len(v4) == len(v6)   # one batch of each, no wrap-around
    p4, p6 = tmp_path / "v4.pcap", tmp_path / "v6.pcap"
    write_frames(p4, v4)
    write_frames(p6, v6)
    return conf, p4, p6, v4, v6


def test_bench_forwards_exactly_what_check_does(tmp_path):
    conf, p4, p6, v4, v6 = _lab(tmp_path)
    c4, c6, counters = run_check(str(conf), str(p4), str(p6))
    engine = Engine(load_config(conf), fragment_id_seeds=SNABB_CHECK_ID_SEEDS)   # as check's
    got4, got6 = [], []

    def sink(eng, out):
        got4.extend(eng.pool.frames(out.v4))
        got6.extend(eng.pool.frames(out.v6))

    # One pass over both pcaps in one batch each, through bench's own loop.
    sent = np.zeros(4, np.int64)
    replay(engine, Templates(v4), Templates(v6), max(len(v4), len(v6)), time.perf_counter() + 60,
           sink=sink, batches=1, sent=sent)
    assert sorted(got4) == sorted(c4) and sorted(got6) == sorted(c6)
    # What the bench counts as sent is every frame that leaves, fragments one by one (Snabb's sinks).
    assert list(sent) == [len(c4), sum(map(len, c4)), len(c6), sum(map(len, c6))]
    assert engine.pool.n_free[0] == engine.pool.n_slots             # all given back
    assert C.to_dict(engine.counters, nonzero=True) == counters
    # the slow path took part, and so did hairpinning
    assert counters["out-icmpv4-error-packets"] >= 1 and counters["hairpin-ipv4-packets"] >= 1


def test_bench_json(tmp_path):
    conf, p4, p6, _, _ = _lab(tmp_path)
    r = subprocess.run(LWAFTR + ["bench", "--duration", "1", "--json", str(conf), str(p4), str(p6)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"decap_mpps", "encap_mpps", "decap_gbps", "encap_gbps", "workers", "seconds", "sent",
                        "counters"}
    assert out["workers"] == 1 and out["decap_mpps"] > 0 and out["encap_mpps"] > 0
    # The rates are made of the frames sent on each side, whose packets the counters count.
    sent, c, sec = out["sent"], out["counters"], out["seconds"]
    assert round(sent["v4-packets"] / sec / 1e6, 4) == out["decap_mpps"]
    assert round(sent["v6-packets"] / sec / 1e6, 4) == out["encap_mpps"]
    assert round(sent["v4-bytes"] * 8 / sec / 1e9, 4) == out["decap_gbps"]
    assert sent["v4-packets"] >= c["out-ipv4-packets"] > 0
    assert sent["v6-packets"] > c["out-ipv6-packets"] > 0      # (the big frame leaves as two fragments)
