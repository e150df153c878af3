"""A worker per instance under a supervisor (needs root; namespaces made here).

Two instances on a stick each (s1 and t1 in namespace ``lw``), one real
Linux host ``peer`` on both links.  Each worker forwards for the routes the
peer sends its way; a killed worker is restarted and gets the changes made
through the control socket while it was down; counters are per worker and
summed.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lwaftr.config.model import ControlPlane, Instance, InterfaceAddresses, NextHop
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config

LW, PEER = f"lwaftr-svl-{os.getpid()}", f"lwaftr-svp-{os.getpid()}"
#: (lwAFTR device, peer device, lwAFTR IPv4, peer IPv4, lwAFTR IPv6, peer IPv6)
LINKS = [("s1", "s0", "198.51.100.1", "198.51.100.2", "2001:db8:0:1::1", "2001:db8:0:1::2"),
         ("t1", "t0", "198.51.100.65", "198.51.100.66", "2001:db8:0:2::1", "2001:db8:0:2::2")]
BR = "2001:db8:ffff::1"


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, timeout=timeout)


def config() -> str:
    insts = [Instance(device=dev, external_device=None, queue_id=0,
                      external=InterfaceAddresses(ipaddress.IPv4Address(a4).packed, bytes.fromhex(f"0200000001{i}1"),
                                                  NextHop(ip=ipaddress.IPv4Address(p4).packed)),
                      internal=InterfaceAddresses(ipaddress.IPv6Address(a6).packed, bytes.fromhex(f"0200000001{i}2"),
                                                  NextHop(ip=ipaddress.IPv6Address(p6).packed)))
             for i, (dev, _, a4, p4, a6, p6) in enumerate(LINKS)]
    return dump_snabb(replace(example_config(), instances=insts, name=None,
                              control_plane=ControlPlane(external_prefix_length=26, internal_prefix_length=64)))


@pytest.fixture
def lab(tmp_path):
    sh("ip", "netns", "add", LW)
    sh("ip", "netns", "add", PEER)
    proc = None
    try:
        for dev, peer, _, p4, _, p6 in LINKS:
            sh("ip", "-n", LW, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", PEER)
            sh("ip", "-n", LW, "link", "set", dev, "up")
            sh("ethtool", "-K", peer, "tx", "off", ns=PEER)
            sh("sysctl", "-qw", f"net.ipv6.conf.{peer}.accept_dad=0", ns=PEER)
            sh("ip", "-n", PEER, "link", "set", peer, "up")
            sh("ip", "-n", PEER, "addr", "add", f"{p4}/26", "dev", peer)
            sh("ip", "-n", PEER, "addr", "add", f"{p6}/64", "dev", peer, "nodad")
        # 192.0.2.1 (alice, bob) through worker 0, 192.0.2.2 (carol) and 203.0.113.0/24 through worker 1.
        sh("ip", "-n", PEER, "route", "add", "192.0.2.1/32", "via", LINKS[0][2])
        sh("ip", "-n", PEER, "route", "add", "192.0.2.2/32", "via", LINKS[1][2])
        sh("ip", "-n", PEER, "route", "add", "203.0.113.0/24", "via", LINKS[1][2])
        conf = tmp_path / "lw.conf"
        conf.write_text(config())
        env = dict(os.environ, LWAFTR_RUN_DIR=str(tmp_path / "run"))
        proc = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf", str(conf),
                                 "--name", "s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lab = {"proc": proc, "env": env, "sock": tmp_path / "run" / "s" / "control.sock"}
        wait_ready(lab)
        yield lab
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        sh("ip", "netns", "del", LW, check=False)
        sh("ip", "netns", "del", PEER, check=False)


def wait_ready(lab, timeout: float = 60) -> dict:
    from lwaftr.io.control import request
    deadline = time.time() + timeout
    while True:
        assert lab["proc"].poll() is None, lab["proc"].communicate()[1]
        try:
            r = request(lab["sock"], {"op": "ping"}, timeout=5)
            if all(r["workers"].values()):
                return r
        except OSError:
            pass
        assert time.time() < deadline, "workers not ready"
        time.sleep(0.2)


CAPTURE = '''
import socket, sys, time
dev, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
cap.bind((dev, 0x86dd))
cap.settimeout(0.3)
app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.time() + 20
while time.time() < deadline:
    app.sendto(b"x", (dst, port))
    try:
        data = cap.recv(65535)
    except socket.timeout:
        continue
    if data[20] == 4:
        print(socket.inet_ntop(socket.AF_INET6, data[38:54]))
        break
'''


def tunnelled_to(dev: str, dst: str, port: int) -> str:
    return sh(sys.executable, "-c", CAPTURE, dev, dst, str(port), ns=PEER, timeout=60).stdout.strip()


def worker_pids(lab) -> dict[str, int]:
    base = Path(lab["env"]["LWAFTR_RUN_DIR"]) / "s" / "workers"
    return {d.name: int((d / "pid").read_text()) for d in base.iterdir() if (d / "pid").exists()}


def test_workers_forward_restart_and_stay_in_step(lab):
    from lwaftr.io.control import request
    # Each worker serves its own link.
    assert tunnelled_to("s0", "192.0.2.1", 4100) == "2001:db8:1::a"
    assert tunnelled_to("t0", "192.0.2.2", 80) == "2001:db8:1::c"
    # A softwire added through the supervisor reaches every worker.
    new = ("{ ipv4 203.0.113.9; psid 0; b4-ipv6 2001:db8:9::1; br-address 2001:db8:ffff::1;"
           " port-set { psid-length 0; } }")
    assert request(lab["sock"], {"op": "add", "path": "/softwire-config/binding-table/softwire",
                                 "value": new})["ok"]
    assert tunnelled_to("t0", "203.0.113.9", 80) == "2001:db8:9::1"
    # Kill worker 1 hard: the supervisor restarts it, and it still has the added softwire.
    before = worker_pids(lab)
    os.kill(before["1"], signal.SIGKILL)
    deadline = time.time() + 30
    while worker_pids(lab).get("1") in (None, before["1"]):
        assert time.time() < deadline, "worker 1 was not restarted"
        time.sleep(0.2)
    wait_ready(lab)
    assert worker_pids(lab)["0"] == before["0"]               # the other one never stopped
    assert tunnelled_to("t0", "203.0.113.9", 80) == "2001:db8:9::1"
    assert tunnelled_to("t0", "192.0.2.2", 80) == "2001:db8:1::c"
    # Counters: per worker files, summed by `lwaftr counters`.
    total = json.loads(subprocess.run([sys.executable, "-m", "lwaftr", "counters", "s", "--json"], env=lab["env"],
                                      capture_output=True, text=True, check=True).stdout)
    os.environ["LWAFTR_RUN_DIR"] = lab["env"]["LWAFTR_RUN_DIR"]
    try:
        from lwaftr.mgmt.snapshot import read
        per_worker = read("s").workers
    finally:
        del os.environ["LWAFTR_RUN_DIR"]
    assert sorted(per_worker) == ["0", "1"]
    # Nothing but the test's probes crosses the data plane, so the data-plane counters stand
    # still between the two reads: the sum printed is the sum of the workers' own files.
    for name in ("in-ipv4-packets", "in-ipv4-bytes", "out-ipv6-packets", "out-ipv6-bytes"):
        assert total[name] == sum(w.get(name, 0) for w in per_worker.values()), name
    # Worker 0 tunnelled the probe on s0, worker 1 the three on t0 (its counters survive its restart).
    assert per_worker["0"]["out-ipv6-packets"] >= 1 and per_worker["1"]["out-ipv6-packets"] >= 3
    lab["proc"].send_signal(signal.SIGTERM)
    out, err = lab["proc"].communicate(timeout=60)
    assert lab["proc"].returncode == 0, err
    assert "worker 1 exited" in err and "restarting" in err
    final = json.loads(out)
    assert final["out-ipv6-packets"] >= total["out-ipv6-packets"]
    assert not (Path(lab["env"]["LWAFTR_RUN_DIR"]) / "s").exists()
