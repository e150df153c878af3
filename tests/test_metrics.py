"""``lwaftr metrics``: the Prometheus endpoint over the instances' shared memory.

No root: LWAFTR_RUN_DIR points at a temporary directory, instances are
StateDirs of this very process (their pid is ours) or multi-worker layouts
written by hand, and their counters are set from here.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lwaftr import counters as C
from lwaftr.io.state import StateDir
from lwaftr.mgmt import metrics, snapshot


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("LWAFTR_RUN_DIR", str(d))
    return d


def make_workers(run_dir, name, per_worker: dict[str, dict[str, int]], *, pid=None,
                 started=1_700_000_000.0, stray_top_level=False, own_names=()):
    """The multi-worker layout: NAME/{pid,counters.json}, NAME/workers/ID/counters."""
    d = run_dir / name
    (d / "workers").mkdir(parents=True)
    (d / "counters.json").write_text(json.dumps({"names": list(C.NAMES), "pid": pid or os.getpid(),
                                                 "started": started}))
    for w, values in per_worker.items():
        wd = d / "workers" / w
        wd.mkdir()
        names = list(C.NAMES)
        if w in own_names:          # a worker with its own (here: reversed) order of names
            names.reverse()
            (wd / "counters.json").write_text(json.dumps({"names": names}))
        arr = np.zeros(len(names), np.uint64)
        for k, v in values.items():
            arr[names.index(k)] = v
        arr.tofile(wd / "counters")
    if stray_top_level:             # an aggregate the workers' files take precedence over
        arr = np.full(C.N_COUNTERS, 999_999, np.uint64)
        arr.tofile(d / "counters")
    (d / "pid").write_text(f"{pid or os.getpid()}\n")
    return d


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def key(metric: str, **labels) -> tuple[str, frozenset]:
    return (metric, frozenset(labels.items()))


# --- reading the state: both layouts -------------------------------------------------------------

def test_snapshot_single_process_layout(run_dir):
    sd = StateDir("one")
    try:
        sd.counters[C.INDEX["in-ipv4-packets"]] = 7
        snap = snapshot.read("one")
        assert snap.pid == os.getpid()
        assert list(snap.workers) == ["0"]
        assert snap.workers["0"]["in-ipv4-packets"] == 7
        assert len(snap.workers["0"]) == C.N_COUNTERS
        assert snap.started and abs(snap.started - time.time()) < 60
    finally:
        sd.close()
    with pytest.raises(LookupError):
        snapshot.read("one")


def test_snapshot_multi_worker_layout(run_dir):
    make_workers(run_dir, "multi", {"0": {"in-ipv4-packets": 10, "out-ipv6-bytes": 5},
                                    "1": {"in-ipv4-packets": 3},
                                    "10": {"in-ipv4-packets": 1, "drop-ttl-zero-ipv4-packets": 2}},
                 stray_top_level=True, own_names=("1",))
    snap = snapshot.read("multi")
    assert list(snap.workers) == ["0", "1", "10"]     # numeric order
    assert snap.workers["1"]["in-ipv4-packets"] == 3   # read with its own names
    assert snap.workers["1"]["out-ipv6-bytes"] == 0
    totals = snap.totals()
    assert totals["in-ipv4-packets"] == 14             # summed; the top-level file is not read
    assert totals["out-ipv6-bytes"] == 5
    assert totals["drop-ttl-zero-ipv4-packets"] == 2
    assert snap.started == 1_700_000_000.0


def test_snapshot_refuses_dead_and_listing_marks_it(run_dir):
    make_workers(run_dir, "dead", {"0": {}}, pid=dead_pid())
    with pytest.raises(LookupError, match="not running"):
        snapshot.read("dead")
    assert [(n, a) for n, _, a in snapshot.listing()] == [("dead", False)]


# --- the collector -------------------------------------------------------------------------------

def test_metric_names_and_listen_parsing():
    assert metrics.metric_name("in-ipv4-packets") == "lwaftr_in_ipv4_packets"
    assert metrics.parse_listen("127.0.0.1:9417") == ("127.0.0.1", 9417)
    assert metrics.parse_listen("[::1]:0") == ("::1", 0)
    assert metrics.parse_listen(":9417") == ("0.0.0.0", 9417)
    for bad in ("9417", "host:", "host:port", "h:70000"):
        with pytest.raises(ValueError):
            metrics.parse_listen(bad)


def test_collector_reports_every_counter_with_help_and_labels(run_dir):
    sd = StateDir("a")
    make_workers(run_dir, "m", {"0": {"in-ipv6-packets": 4}, "1": {"in-ipv6-packets": 6}})
    make_workers(run_dir, "stale", {"0": {"in-ipv6-packets": 99}}, pid=dead_pid())
    try:
        sd.counters[C.INDEX["in-ipv4-packets"]] = 12
        sd.counters[C.INDEX["drop-no-dest-softwire-ipv4-packets"]] = 2 ** 40
        text = generate_latest(metrics.registry()).decode()
    finally:
        sd.close()
    fams, got = families(text), samples(text)
    for name, help_ in C.COUNTERS:                      # every counter, as a counter, with its HELP
        fam = fams[metrics.metric_name(name)]
        assert fam.type == "counter" and fam.documentation == help_
        assert key(metrics.metric_name(name) + "_total", instance="a", worker="0") in got
    assert got[key("lwaftr_in_ipv4_packets_total", instance="a", worker="0")] == 12
    assert got[key("lwaftr_drop_no_dest_softwire_ipv4_packets_total", instance="a", worker="0")] == 2 ** 40
    assert got[key("lwaftr_in_ipv6_packets_total", instance="m", worker="0")] == 4
    assert got[key("lwaftr_in_ipv6_packets_total", instance="m", worker="1")] == 6
    assert got[key("lwaftr_instance_up", instance="a")] == 1
    assert got[key("lwaftr_instance_up", instance="m")] == 1
    assert got[key("lwaftr_instance_up", instance="stale")] == 0    # died without cleaning up
    assert got[key("lwaftr_instance_start_time_seconds", instance="m")] == 1_700_000_000.0
    assert abs(got[key("lwaftr_instance_start_time_seconds", instance="a")] - time.time()) < 60
    assert not any(dict(lbl).get("instance") == "stale" for (n, lbl) in got if n.endswith("_total"))


def test_collector_named_instances_only(run_dir):
    sd, other = StateDir("a"), StateDir("b")
    try:
        text = generate_latest(metrics.registry(["a", "missing"])).decode()
    finally:
        sd.close()
        other.close()
    got = samples(text)
    assert got[key("lwaftr_instance_up", instance="a")] == 1
    assert got[key("lwaftr_instance_up", instance="missing")] == 0
    assert {dict(lbl).get("instance") for _, lbl in got} == {"a", "missing"}


def test_collector_skips_an_instance_still_starting(run_dir):
    d = run_dir / "starting"
    d.mkdir()
    (d / "pid").write_text(f"{os.getpid()}\n")
    (d / "counters").write_bytes(b"")                   # created, not yet sized
    got = samples(generate_latest(metrics.registry()).decode())
    assert got == {key("lwaftr_instance_up", instance="starting"): 0}


# --- the endpoint, as an operator runs it ---------------------------------------------------------

def _start(*args) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "lwaftr", "metrics", "--listen", "127.0.0.1:0", *args],
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    if not m:
        p.kill()
        pytest.fail(f"no listening line: {line!r} {p.stderr.read()}")
    return p, int(m.group(1))


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def test_endpoint_follows_instances_and_stops_on_sigterm(run_dir):
    a = StateDir("a")
    p, port = _start()
    try:
        a.counters[C.INDEX["in-ipv4-packets"]] = 5
        got = samples(_scrape(port))
        assert got[key("lwaftr_in_ipv4_packets_total", instance="a", worker="0")] == 5
        assert got[key("lwaftr_instance_up", instance="a")] == 1

        b = StateDir("b")                                # appears between scrapes
        make_workers(run_dir, "m", {"0": {"out-ipv4-packets": 1}, "1": {"out-ipv4-packets": 2}})
        a.counters[C.INDEX["in-ipv4-packets"]] += 1000
        b.counters[C.INDEX["drop-ttl-zero-ipv4-packets"]] = 3
        got = samples(_scrape(port))
        assert got[key("lwaftr_in_ipv4_packets_total", instance="a", worker="0")] == 1005
        assert got[key("lwaftr_drop_ttl_zero_ipv4_packets_total", instance="b", worker="0")] == 3
        assert got[key("lwaftr_out_ipv4_packets_total", instance="m", worker="1")] == 2
        assert got[key("lwaftr_instance_up", instance="b")] == 1

        b.close()                                        # stops: disappears
        got = samples(_scrape(port))
        assert not any(dict(lbl).get("instance") == "b" for _, lbl in got)
        assert got[key("lwaftr_instance_up", instance="a")] == 1
    finally:
        a.close()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        err = p.stderr.read()
    assert rc == 0, err
    assert "stopped" in err


def test_endpoint_refuses_a_bad_listen_address(run_dir):
    r = subprocess.run([sys.executable, "-m", "lwaftr", "metrics", "--listen", "nonsense"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ADDR:PORT" in r.stderr
