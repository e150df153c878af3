"""A worker per receive queue (needs root; namespaces, veths and processes made here).

Namespace ``lw`` holds the lwAFTR on two veth pairs created with two queues
each (``numrxqueues 2 numtxqueues 2``): i1 (Internet side) and b1 (B4 side);
namespace ``peer`` holds i0 and b0, where packet sockets play the Internet
hosts and 256 B4s.  The configuration's instance has two ``queue`` entries,
so the supervisor runs two workers, one per receive queue: AF_XDP sockets on
queues 0 and 1 (native XDP on the veths), or AF_PACKET rings in one fanout
group.  The veth picks the receive queue from the flow hash of the sender,
so the subscribers' flows spread over both workers.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from lwaftr.cli.generate_configuration import generate
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import tunnelled, udp_v4
from lwaftr.io.control import request
from lwaftr.mgmt.snapshot import read

LW, PEER = f"lwaftr-mql-{os.getpid()}", f"lwaftr-mqp-{os.getpid()}"
SELF = bytes.fromhex("02aaaaaaaaaa")        # the generated configuration's lwAFTR MAC (both sides)
MACS = {"i0": "02:00:00:00:01:10", "b0": "02:00:00:00:01:20"}
HOST = ipaddress.IPv4Address("1.2.3.4").packed
FLOWS, PER_FLOW = 256, 4


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


def config():
    """Snabb's synthetic table (16 addresses x 16 port sets) on one instance with two queues."""
    g = generate("193.5.1.100", 16, "fc00::100", "fc00:1:2:3:4:5:0:7e", 4)
    inst = replace(g.config.instances[0], device="b1", external_device="i1")
    queues = [replace(inst, queue_id=q) for q in (0, 1)]
    return g, replace(g.config, instances=queues)


def traffic(g) -> tuple[list[bytes], list[bytes]]:
    """PER_FLOW frames of each of FLOWS subscribers each way, rounds of one frame per flow;
    the payload says (direction, flow, sequence number)."""
    b = g.config.bindings
    v4, v6 = [], []
    for k in range(PER_FLOW):
        for i in range(FLOWS):
            addr = int(b.ipv4[i]).to_bytes(4, "big")
            port = (int(b.psid[i]) & 0xF) << g.shift | 7
            v4.append(udp_v4(HOST, addr, 53, port, f"in {i} {k}".encode().ljust(32), ttl=30,
                             eth_dst=SELF, eth_src=bytes.fromhex(MACS["i0"].replace(":", ""))))
            inner = udp_v4(addr, HOST, port, 53, f"out {i} {k}".encode().ljust(32), ttl=30)
            f = tunnelled(b.b4_ipv6[i].tobytes(), inner, br=b.br_addresses[0])
            v6.append(SELF + bytes.fromhex(MACS["b0"].replace(":", "")) + f[12:])
    return v4, v6


def tag(frame: bytes) -> tuple[str, int, int] | None:
    """(direction, flow, sequence) from a frame's UDP payload; None for another frame."""
    try:
        d, i, k = frame[-32:].decode().split()
        return d, int(i), int(k)
    except (UnicodeDecodeError, ValueError):
        return None


PEER_BODY = textwrap.dedent('''
    import select, socket, sys, time
    frames = {"i0": [], "b0": []}
    for line in open(sys.argv[1]):
        dev, hexed = line.split()
        frames[dev].append(bytes.fromhex(hexed))
    socks = {}
    for dev in ("i0", "b0"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.bind((dev, 3))
        s.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)        # SO_RCVBUFFORCE: hold all that comes
        s.setblocking(False)
        socks[dev] = s
    sent = set(frames["i0"]) | set(frames["b0"])
    for a, b in zip(frames["i0"], frames["b0"]):
        socks["i0"].send(a)
        socks["b0"].send(b)
    seen = []
    deadline, last = time.time() + float(sys.argv[2]), time.time()
    while time.time() < deadline and time.time() - last < 2.0:
        select.select(list(socks.values()), [], [], 0.2)
        for dev, s in socks.items():
            while True:
                try:
                    data, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] != socket.PACKET_OUTGOING and data not in sent:
                    seen.append(dev + " " + data.hex())
                    last = time.time()
    print("\\n".join(seen))
''')


def exchange(tmp_path: Path, v4: list[bytes], v6: list[bytes], seconds: float = 20) -> list[tuple[str, bytes]]:
    """Send the frames from the peer (i0 and b0 alternately) and return, in arrival
    order, what the lwAFTR sent back (device, frame), until 2 s pass without any.
    The frames its kernel control plane sends on its own (MLD reports from the
    TAPs) are left out."""
    f = tmp_path / "frames.txt"
    f.write_text("".join(f"i0 {a.hex()}\nb0 {b.hex()}\n" for a, b in zip(v4, v6)))
    r = subprocess.run(["ip", "netns", "exec", PEER, sys.executable, "-c", PEER_BODY, str(f), str(seconds)],
                       capture_output=True, text=True, timeout=seconds + 60)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        if line.strip():
            dev, hexed = line.split()
            if tag(frame := bytes.fromhex(hexed)) is not None:
                out.append((dev, frame))
    return out


@pytest.fixture
def lab(tmp_path):
    sh("ip", "netns", "add", LW)
    sh("ip", "netns", "add", PEER)
    try:
        for a, b in (("i1", "i0"), ("b1", "b0")):
            sh("ip", "-n", LW, "link", "add", a, "numtxqueues", "2", "numrxqueues", "2", "type", "veth",
               "peer", "name", b, "netns", PEER, "numtxqueues", "2", "numrxqueues", "2")
        for ns, devs in ((LW, ("i1", "b1")), (PEER, ("i0", "b0"))):
            for d in devs:
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1")
                sh("ip", "-n", ns, "link", "set", d, *(("address", MACS[d]) if d in MACS else ()), "up")
        yield tmp_path
    finally:
        sh("ip", "netns", "del", LW, check=False)
        sh("ip", "netns", "del", PEER, check=False)


class Supervised:
    """``lwaftr run --conf F`` (the supervisor and its two workers) in namespace lw."""

    def __init__(self, tmp_path: Path, conf: Path, io: str) -> None:
        self.run_dir = tmp_path / "run"
        self.env = dict(os.environ, LWAFTR_RUN_DIR=str(self.run_dir))
        self.log = tmp_path / "run.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf",
                                          str(conf), "--name", "mq", "--io", io],
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=self.env)
        self.wait_ready()

    def workers(self) -> dict[str, bool]:
        try:
            return request(self.run_dir / "mq" / "control.sock", {"op": "ping"}, timeout=5).get("workers", {})
        except OSError:
            return {}

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not (w := self.workers()) or not all(w.values()):
            assert self.proc.poll() is None and time.time() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def pid(self, worker: str) -> int:
        return int((self.run_dir / "mq" / "workers" / worker / "pid").read_text())

    def counters(self) -> dict[str, dict[str, int]]:
        old = os.environ.get("LWAFTR_RUN_DIR")
        os.environ["LWAFTR_RUN_DIR"] = str(self.run_dir)
        try:
            return read("mq").workers
        finally:
            if old is None:
                del os.environ["LWAFTR_RUN_DIR"]
            else:
                os.environ["LWAFTR_RUN_DIR"] = old

    def stop(self) -> dict[str, int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=90)
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]
        return json.loads(out)


def _forwarded(sup: Supervised) -> dict[str, int]:
    """Frames each worker forwarded (both directions)."""
    return {w: v.get("out-ipv4-packets", 0) + v.get("out-ipv6-packets", 0) for w, v in sup.counters().items()}


@pytest.mark.parametrize("io", ["xdp", "afpacket"])
def test_two_workers_share_the_flows_in_order_as_check_forwards(lab, io):
    from lwaftr.dataplane.engine import Engine

    g, cfg = config()
    conf = lab / "lw.conf"
    conf.write_text(dump_snabb(cfg))
    v4, v6 = traffic(g)
    # What check's path forwards for the same frames (one instance: the queues share it).
    exp4, exp6, *_ = Engine(replace(cfg, instances=cfg.instances[:1])).process_frames(v4, v6, time.monotonic())
    assert len(exp4) == len(exp6) == FLOWS * PER_FLOW
    sup = Supervised(lab, conf, io)
    try:
        log = sup.log.read_text()
        kind = "af_xdp" if io == "xdp" else "af_packet"
        for q in (0, 1):
            assert f"queue {q} of 2" in log and f"i1 ({kind}), b1 ({kind})" in log, log[-3000:]
            if io == "xdp":     # zero copy in user space; the veth driver copies (logged)
                for dev in ("i1", "b1"):
                    assert f"AF_XDP on {dev} queue {q}: the UMEM is the packet pool" in log, log[-3000:]
                    assert f"AF_XDP on {dev} queue {q}: copy mode (native XDP" in log, log[-3000:]
        # Each worker on a core of its own (the default placement: the veths have no NUMA node).
        cores = [os.sched_getaffinity(sup.pid(w)) for w in ("0", "1")]
        assert all(len(c) == 1 for c in cores) and cores[0] != cores[1], cores
        got = exchange(lab, v4, v6)
        # The workers forward exactly what check does: every frame once, nothing else.
        assert Counter(f for d, f in got if d == "i0") == Counter(exp4)
        assert Counter(f for d, f in got if d == "b0") == Counter(exp6)
        # The frames of each flow arrive in the order sent.
        last: dict[tuple[str, int], int] = {}
        for _, f in got:
            d, i, k = tag(f)
            assert last.get((d, i), -1) < k, f"flow {d} {i}: frame {k} after {last[(d, i)]}"
            last[(d, i)] = k
        # Both workers took a good share of the subscribers' flows.
        per = _forwarded(sup)
        total = 2 * FLOWS * PER_FLOW
        assert sum(per.values()) == total, per
        assert min(per.values()) > total // 4, per
    finally:
        totals = sup.stop()
    assert totals["out-ipv4-packets"] == totals["out-ipv6-packets"] == FLOWS * PER_FLOW, totals


@pytest.mark.parametrize("io", ["xdp", "afpacket"])
def test_a_killed_worker_stops_only_its_queue_until_restarted(lab, io):
    """With AF_XDP, the frames of the dead worker's queue are not forwarded (the
    XDP program passes them to the kernel, which has no use for them) while
    the other worker's flows go on; once restarted it forwards its queue again.
    With AF_PACKET, the kernel hands the dead member's flows to the other."""
    g, cfg = config()
    conf = lab / "lw.conf"
    conf.write_text(dump_snabb(cfg))
    v4, v6 = traffic(g)
    sup = Supervised(lab, conf, io)
    try:
        assert len(exchange(lab, v4, v6)) == 2 * FLOWS * PER_FLOW
        before = _forwarded(sup)
        # Hold the supervisor so that the outage lasts until we have looked at it.
        sup_pid = int((sup.run_dir / "mq" / "pid").read_text())
        os.kill(sup_pid, signal.SIGSTOP)
        try:
            victim = sup.pid("1")
            os.kill(victim, signal.SIGKILL)
            deadline = time.time() + 10
            while Path(f"/proc/{victim}").exists() and time.time() < deadline:
                with open(f"/proc/{victim}/stat") as fh:
                    if fh.read().split(")")[1].split()[0] == "Z":     # dead, not yet reaped
                        break
                time.sleep(0.05)
            time.sleep(0.5)                 # its sockets are released
            flows = []
            for _ in range(2):
                got = exchange(lab, v4, v6, 10)
                flows.append({tag(f)[:2] for _, f in got})
            after = _forwarded(sup)
        finally:
            os.kill(sup_pid, signal.SIGCONT)
        alive = after["0"] - before["0"]
        if io == "xdp":
            # Only queue 0's flows, the same ones each time, all of their frames, by worker 0.
            assert 0 < len(flows[0]) < 2 * FLOWS, len(flows[0])
            assert flows[0] == flows[1]
            assert alive == 2 * len(flows[0]) * PER_FLOW
        else:
            assert len(flows[0]) == len(flows[1]) == 2 * FLOWS
            assert alive == 2 * 2 * FLOWS * PER_FLOW
        sup.wait_ready()
        assert sup.pid("1") != victim
        got = exchange(lab, v4, v6)
        assert len(got) == 2 * FLOWS * PER_FLOW and len({tag(f)[:2] for _, f in got}) == 2 * FLOWS
        assert "worker 1 exited" in sup.log.read_text()
        assert "worker 0 exited" not in sup.log.read_text()
    finally:
        sup.stop()
