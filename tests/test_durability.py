"""Crash test: every acknowledged change survives ``kill -9`` and a restart (needs root).

A client streams softwire changes (adds, B4 changes, removes, all-or-none
batches), MTU changes and compactions into a running ``lwaftr run`` through
its control socket, remembering what was acknowledged; the whole instance
(process group: supervisor, workers, a compaction under way) is killed with
SIGKILL at a random moment; restarted from its files, it must hold every
acknowledged change, and of the requests in flight (several: the client
pipelines them) the first k for some k, each whole.
Run alone (one process writes the journal) and supervised (two workers; the
supervisor writes it, and a worker killed alone catches up from it).
"""
from __future__ import annotations

import ipaddress
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from lwaftr.config.model import BUILT_IN, ControlPlane
from lwaftr.config.snabb import dump_snabb, loads_snabb
from lwaftr.examples import example_config
from lwaftr.io.control import Client, request

NS = f"lwaftr-dur-{os.getpid()}"
SW = "/softwire-config/binding-table/softwire"
MTU = "/softwire-config/external-interface/mtu"
BR = "2001:db8:ffff::1"
#: Rounds of edits and a kill (the benchmark runs more, on a big table).
ROUNDS = 4


def sh(*cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, check=check, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    sh("ip", "netns", "add", NS)
    try:
        for a, b in (("i1", "i0"), ("b1", "b0"), ("s1", "s0"), ("t1", "t0")):
            sh("ip", "-n", NS, "link", "add", a, "type", "veth", "peer", "name", b)
            for d in (a, b):
                sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1")
                sh("ip", "-n", NS, "link", "set", d, "up")
        yield NS
    finally:
        sh("ip", "netns", "del", NS, check=False)


def config(supervised: bool) -> str:
    cfg = replace(example_config(), name=None, control_plane=ControlPlane(mode=BUILT_IN))
    if supervised:
        base = cfg.instances[0]
        cfg = replace(cfg, instances=[replace(base, device="s1"), replace(base, device="t1")])
    return dump_snabb(cfg)


class Lwaftr:
    def __init__(self, tmp_path, supervised: bool) -> None:
        self.conf = tmp_path / "lw.conf"
        self.conf.write_text(config(supervised))
        self.env = dict(os.environ, LWAFTR_RUN_DIR=str(tmp_path / "run"))
        self.sock = tmp_path / "run" / "d" / "control.sock"
        self.supervised = supervised
        self.log = tmp_path / "run.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [] if self.supervised else ["--v4", "i1", "--v6", "b1"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "lwaftr", "run", "--conf",
                                          str(self.conf), "--name", "d", *args], stdout=subprocess.DEVNULL,
                                         stderr=log, env=self.env, start_new_session=True)
        deadline = time.time() + 90
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                r = request(self.sock, {"op": "ping"}, timeout=5)
                if r.get("ok") and all(r.get("workers", {"0": True}).values()):
                    return
            except OSError:
                pass
            assert time.time() < deadline, "not ready: " + self.log.read_text()[-3000:]
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.time() + 30
        while subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True).returncode == 0:
            assert time.time() < deadline, "the instance's processes outlived SIGKILL"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


State = dict  # {"sw": {ipv4: b4}, "mtu": int}


def observed(sock) -> State:
    text = request(sock, {"op": "get-config"}, timeout=60)["text"]
    cfg = loads_snabb(text)
    b = cfg.bindings
    return {"sw": {str(ipaddress.IPv4Address(int(ip))): str(ipaddress.IPv6Address(bytes(b4)))
                   for ip, b4 in zip(b.ipv4, b.b4_ipv6)},
            "mtu": cfg.external.mtu}


def entry(ip: str, b4: str) -> str:
    return f"{{ ipv4 {ip}; psid 0; b4-ipv6 {b4}; br-address {BR}; port-set {{ psid-length 0; }} }}"


def change(rng: random.Random, state: State) -> tuple[dict, State]:
    """A random request and the state it leads to if applied."""
    new = {"sw": dict(state["sw"]), "mtu": state["mtu"]}

    def one(ip: str) -> dict:
        b4 = f"2001:db8:2::{rng.randrange(1, 1 << 16):x}"
        key = f"{SW}[ipv4={ip}][psid=0]"
        if ip not in new["sw"]:
            new["sw"][ip] = b4
            return {"op": "add", "path": SW, "value": entry(ip, b4)}
        if rng.random() < 0.5:
            del new["sw"][ip]
            return {"op": "remove", "path": key}
        new["sw"][ip] = b4
        return {"op": "set", "path": f"{key}/b4-ipv6", "value": b4}

    def address() -> str:
        return f"10.1.{rng.randrange(2)}.{rng.randrange(64)}"

    x = rng.random()
    if x < 0.05:
        new["mtu"] = rng.choice([1400, 1420, 1460, 1480])
        return {"op": "set", "path": MTU, "value": str(new["mtu"])}, new
    if x < 0.2:
        ips = set()
        while len(ips) < 3:
            ips.add(address())
        return {"op": "batch", "requests": [one(ip) for ip in sorted(ips)]}, new
    return one(address()), new


#: Requests a client keeps in flight (those read together share one fsync).
WINDOW = 4


def edits(sock, rng: random.Random, state: State, log: dict, stop: threading.Event) -> None:
    """Send changes, WINDOW at a time, until the connection dies.  ``log["states"]``:
    the state after each request sent but not acknowledged, in order; ``state``
    is kept as the last acknowledged one."""
    c = Client(sock, timeout=60)
    expected: list[str] = []                # per request in flight: "change" or "compact"
    predicted = state
    try:
        while not stop.is_set():
            while len(expected) < WINDOW:
                if rng.random() < 0.05:
                    c.send({"op": "compact"})
                    expected.append("compact")
                    continue
                req, predicted = change(rng, predicted)
                c.send(req)
                log["states"].append(predicted)
                expected.append("change")
            r = c.receive()
            kind = expected.pop(0)
            assert r.get("ok"), (kind, r)
            if kind == "change":
                acked = log["states"].pop(0)
                state.clear()
                state.update(acked)
                log["acked"] += 1
    except (OSError, ConnectionError, ValueError):
        pass                              # killed mid-request
    finally:
        c.close()


@pytest.mark.parametrize("supervised", [False, True], ids=["alone", "supervised"])
def test_acknowledged_changes_survive_kill_9(netns, tmp_path, supervised):
    rng = random.Random(1234 + supervised)
    lw = Lwaftr(tmp_path, supervised)
    state = None
    total = 0
    try:
        lw.start()
        state = observed(lw.sock)
        for rnd in range(ROUNDS):
            log = {"states": [], "acked": 0}
            stop = threading.Event()
            t = threading.Thread(target=edits, args=(lw.sock, rng, state, log, stop))
            t.start()
            time.sleep(rng.uniform(0.5, 2.0))
            lw.kill()
            stop.set()
            t.join(timeout=60)
            total += log["acked"]
            lw.start()
            got = observed(lw.sock)
            # every acknowledged change, and of those in flight the first k (in order, each whole)
            assert got == state or got in log["states"], \
                f"round {rnd}: after {log['acked']} acknowledged changes, the restart differs"
            state.clear()
            state.update(got)
            assert log["acked"] > 0, f"round {rnd}: no change acknowledged before the kill"
        # A reload from the files keeps them.
        before = observed(lw.sock)
        lw.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while "reload" not in lw.log.read_text() or ("configuration reloaded" not in lw.log.read_text()):
            assert time.time() < deadline, lw.log.read_text()[-2000:]
            time.sleep(0.1)
        assert observed(lw.sock) == before
        if supervised:
            # One worker killed alone while changes go on: restarted, it serves the same table.
            w0 = tmp_path / "run" / "d" / "workers" / "0" / "control.sock"
            pid = request(w0, {"op": "ping"})["pid"]
            os.kill(pid, signal.SIGKILL)
            while request(lw.sock, {"op": "ping"})["workers"]["0"]:
                time.sleep(0.01)            # (a change sent while it dies is refused, and taken back)
            for _ in range(20):
                req, new = change(rng, state)
                r = request(lw.sock, req)
                assert r["ok"], r
                state.clear()
                state.update(new)
            deadline = time.time() + 60
            while True:
                try:
                    r = request(w0, {"op": "ping"}, timeout=5)
                    if r["pid"] != pid and request(lw.sock, {"op": "ping"})["workers"]["0"]:
                        break
                except OSError:
                    pass
                assert time.time() < deadline, "worker 0 not restarted"
                time.sleep(0.1)
            for w in ("0", "1"):
                assert observed(tmp_path / "run" / "d" / "workers" / w / "control.sock") == state, f"worker {w}"
    finally:
        lw.stop()
    print(f"\n{total} changes acknowledged over {ROUNDS} kills, all there after each restart")
    assert total > 20
