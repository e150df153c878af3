"""``lwaftr top``: the pure rate arithmetic, the rendering, and the command.

No root: LWAFTR_RUN_DIR points at a temporary directory and the instance is
a StateDir of this process whose counters the test moves.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from lwaftr import counters as C
from lwaftr.io.state import StateDir
from lwaftr.mgmt import snapshot, top
from lwaftr.mgmt.top import Row

from test_metrics import make_workers  # noqa: F401  (the multi-worker layout)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("LWAFTR_RUN_DIR", str(d))
    return d


# --- pure ---------------------------------------------------------------------------------------

def test_rates_per_second():
    prev = {"in-ipv4-packets": 100, "in-ipv4-bytes": 6400, "drop-ttl-zero-ipv4-packets": 5}
    cur = {"in-ipv4-packets": 300, "in-ipv4-bytes": 19200, "drop-ttl-zero-ipv4-packets": 5}
    assert top.rates(prev, cur, 2.0) == {"in-ipv4-packets": 100.0, "in-ipv4-bytes": 6400.0,
                                         "drop-ttl-zero-ipv4-packets": 0.0}
    assert top.rates(prev, cur, 0.5)["in-ipv4-packets"] == 400.0


def test_rates_after_a_restart_and_for_new_counters():
    # went down: the instance restarted, counted from 0; missing before: from 0
    assert top.rates({"in-ipv4-packets": 1000}, {"in-ipv4-packets": 30, "new": 8}, 1.0) == \
        {"in-ipv4-packets": 30.0, "new": 8.0}
    assert top.rates({}, {"a": 10}, 4.0) == {"a": 2.5}
    with pytest.raises(ValueError):
        top.rates({}, {"a": 1}, 0.0)


def test_rows_order_traffic_other_drops_and_skip_zeros():
    totals = {n: 0 for n in C.NAMES}
    totals.update({"drop-ttl-zero-ipv4-packets": 9, "drop-no-dest-softwire-ipv4-packets": 4,
                   "drop-all-ipv4-iface-packets": 13, "out-ipv6-packets": 50, "in-ipv4-packets": 50,
                   "in-ipv4-bytes": 3200, "out-arp-reply-packets": 1, "to-kernel-ipv4-interface-packets": 2,
                   "ingress-packet-drops": 1})
    per_second = {n: 0.0 for n in C.NAMES}
    per_second.update({"drop-no-dest-softwire-ipv4-packets": 4.0, "in-ipv4-packets": 10.0})
    got = top.rows(totals, per_second)
    assert [r.name for r in got] == [
        "in-ipv4-packets", "in-ipv4-bytes", "out-ipv6-packets",           # traffic, fixed order
        "to-kernel-ipv4-interface-packets", "out-arp-reply-packets",      # the rest, biggest first
        "drop-all-ipv4-iface-packets",                                    # drops: the sum first,
        "drop-no-dest-softwire-ipv4-packets",                             # then the moving one,
        "drop-ttl-zero-ipv4-packets", "ingress-packet-drops",             # then by total
    ]
    assert got[0] == Row("in-ipv4-packets", 50, 10.0)
    assert len(top.rows(totals, per_second, show_all=True)) == C.N_COUNTERS
    # before the first interval: totals, no rates
    assert all(r.rate is None for r in top.rows(totals, None))


def test_human_numbers():
    assert [top.human(x) for x in (0, 7, 2.5, 999, 1000, 12345, 4.56e6, 7.891e9)] == \
        ["0", "7", "2.5", "999", "1k", "12.3k", "4.56M", "7.89G"]


def _snap(**workers):
    return snapshot.Snapshot(name="x", pid=42, started=1000.0, workers=workers or {"0": {}})


def test_render_plain_and_screen():
    table = [Row("in-ipv4-packets", 1005, 1000.0), Row("drop-ttl-zero-ipv4-packets", 2, 0.0)]
    text = top.render_plain(_snap(), table, 1.0, now=0.0)
    lines = text.splitlines()
    assert lines[0] == "# lwaftr top: instance=x pid=42 workers=1 interval=1.000s at=1970-01-01T00:00:00Z"
    assert lines[1].startswith("#")
    assert [ln.split() for ln in lines[2:4]] == [["in-ipv4-packets", "1000.00", "1005"],
                                                  ["drop-ttl-zero-ipv4-packets", "0.00", "2"]]
    assert text.endswith("\n\n")
    assert "every counter is zero" in top.render_plain(_snap(), [], None)

    screen = top.render_screen(_snap(), table, 1.0, width=60, height=24, now=1000.0 + 90061)
    assert "up 1d 01:01:01" in screen[0]
    assert all(len(ln) <= 60 for ln in screen)
    assert screen[3].split() == ["in-ipv4-packets", "1k", "1,005"]
    narrow = top.render_screen(_snap(), table, 1.0, width=50, height=24)
    assert narrow[3].split() == ["in-ipv4-packets", "1k", "1,005"]
    assert narrow[5].split() == ["drop-ttl-zero-i…", "0", "2"]
    assert screen[4] == ""                                   # a gap between traffic and drops
    many = [Row(f"in-{i}", i + 1, None) for i in range(100)]
    cut = top.render_screen(_snap(), many, None, width=80, height=10)
    assert len(cut) == 9 and cut[-1].startswith("… ")


# --- the loop, deterministic: a fake clock, the counters moved while it "sleeps" ----------------

def test_watch_plain_with_a_fake_clock(run_dir):
    sd = StateDir("t")
    now = [100.0]

    def sleep(s):
        now[0] += s
        sd.counters[C.INDEX["in-ipv4-packets"]] += 250
        sd.counters[C.INDEX["in-ipv4-bytes"]] += 250 * 64

    out = io.StringIO()
    try:
        sd.counters[C.INDEX["drop-ttl-zero-ipv4-packets"]] = 3
        assert top.watch("t", 0.5, 2, plain=True, out=out, clock=lambda: now[0], sleep=sleep) == 0
    finally:
        sd.close()
    shots = [s for s in out.getvalue().split("\n\n") if s]
    assert len(shots) == 2
    for i, shot in enumerate(shots, 1):
        body = [ln.split() for ln in shot.splitlines() if not ln.startswith("#")]
        assert body == [["in-ipv4-packets", "500.00", str(250 * i)],
                        ["in-ipv4-bytes", "32000.00", str(250 * 64 * i)],
                        ["drop-ttl-zero-ipv4-packets", "0.00", "3"]]
        assert "interval=0.500s" in shot


def test_watch_sums_workers_and_notices_a_stop(run_dir):
    d = make_workers(run_dir, "mw", {"0": {"out-ipv4-packets": 10}, "1": {"out-ipv4-packets": 20}})
    now = [0.0]

    def sleep(s):
        now[0] += s
        (d / "pid").unlink()                             # stops during the first interval

    out = io.StringIO()
    assert snapshot.read("mw").totals()["out-ipv4-packets"] == 30
    assert top.watch("mw", 1.0, 3, plain=True, out=out, clock=lambda: now[0], sleep=sleep) == 1
    assert out.getvalue() == ""


# --- the command ---------------------------------------------------------------------------------

def _lwaftr(*args):
    return [sys.executable, "-m", "lwaftr", *args]


def test_top_plain_iterations_shows_a_rate(run_dir):
    sd = StateDir("live")
    try:
        sd.counters[C.INDEX["in-ipv6-packets"]] = 7
        p = subprocess.Popen(_lwaftr("top", "--plain", "--interval", "1", "--iterations", "2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "LWAFTR_RUN_DIR": str(run_dir)})
        first = []
        while (line := p.stdout.readline()) not in ("\n", ""):
            first.append(line)
        # between the first snapshot and the second: 1000 more, over one interval
        sd.counters[C.INDEX["in-ipv6-packets"]] += 1000
        rest, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    finally:
        sd.close()
    assert first[0].startswith("# lwaftr top: instance=live ")
    assert [ln.split() for ln in first if not ln.startswith("#")] == [["in-ipv6-packets", "0.00", "7"]]
    second = rest.strip("\n").splitlines()
    interval = float(second[0].split("interval=")[1].split("s")[0])
    (name, rate, total), = [ln.split() for ln in second if not ln.startswith("#")]
    assert (name, total) == ("in-ipv6-packets", "1007")
    assert float(rate) == pytest.approx(1000 / interval, rel=0.01)
    assert 0.9 < interval < 2.0


def test_top_without_an_instance(run_dir):
    r = subprocess.run(_lwaftr("top", "--plain", "--iterations", "1"), capture_output=True, text=True,
                       timeout=60, env={**os.environ, "LWAFTR_RUN_DIR": str(run_dir)})
    assert r.returncode == 1 and "no lwaftr instance is running" in r.stderr
    r = subprocess.run(_lwaftr("top", "nope", "--plain"), capture_output=True, text=True,
                       timeout=60, env={**os.environ, "LWAFTR_RUN_DIR": str(run_dir)})
    assert r.returncode == 1 and "nope" in r.stderr
