#!/usr/bin/env python3
"""Live benchmark: the lwAFTR forwarding between veth pairs, beside the kernel.

    .venv/bin/python benchmarks/live.py [--duration S] [--size 64,550] [--cases encap,decap,both]
                                        [--rate MPPS] [--search N] [--runs N] [--rps] [--json]
                                        [--gen-only] [--no-kernel] [--lwaftr-args '--io xdp']
                                        [--queues N] [--workers N] [--worker-cpus 0,1]

Needs root.  Three network namespaces (names carry this process's id; they
are always deleted, on Ctrl-C too)::

    inet ns            dut ns               b4 ns
    i0  ---- veth ---- v4 [DUT] v6 ---- veth ---- b0

* ``encap``: IPv4 frames from the Internet side (generated on i0, to the
  lwAFTR's MAC) leave towards the B4s as IPv4-in-IPv6 and are counted on b0.
* ``decap``: IPv4-in-IPv6 frames from the B4s (generated on b0) leave as IPv4,
  counted on i0.
* ``both``: both at once (the offered rate split evenly).

The DUT is either ``lwaftr run --conf F --v4 v4 --v6 v6`` (a 4,096-softwire
table from ``lwaftr generate-configuration``, next hops as static MACs) or
the Linux kernel routing the very same frames (``ip_forward=1``,
``forwarding=1``, a route to the sink side through a static neighbour with
the lwAFTR's next-hop MAC): plain IPv4 and IPv6 forwarding between the same
veths, the ceiling of that path.  The traffic covers every softwire (one
frame per softwire, 4,096 frames repeated).

The generator is one process filling ``PACKET_TX_RING``s (qdisc bypass) with
prebuilt frames from compiled code, one ``send()`` per batch, flat out or
paced to ``--rate``; it opens the rings of both sides itself (``setns``).
The sinks do not run anything: frames arrive for a MAC that is not theirs
and the sinks' kernels drop them on sight; we read the veths' counters.

Figures per trial: offered = frames into the DUT per second, forwarded =
frames out of it into the sinks per second (both over the steady part of the
run); drops inside the DUT = frames that entered the DUT after the warm-up
and never came out, counted once the DUT has drained (what a DUT loses while
it starts is reported apart, as ``startup_drops`` in ``--json``).  For the
lwAFTR the drops are split with its counters (``lwaftr counters --json``
before and after; the JSON it prints on SIGTERM if that is not available):
rx = entered the interface but never reached the engine (the receive ring
was full), engine = the engine's own drops, tx = the engine sent it but it
never reached the sink (transmit ring refused).

``--search N``: where a DUT dropped at the offered rate, also find the
highest rate it forwards with no drop at all (N halving steps between 0 and
the flat-out offered rate, as RFC 2544's throughput test; a step counts at
the rate the generator really offered).  The VM is shared: a trial during
which other work took more than ``--max-other`` of the CPUs is run again.

Several queues, several workers: ``--queues N`` creates the veths with N
queues each way (``numrxqueues N numtxqueues N``); the generator then sends
through the qdisc layer (no ``PACKET_QDISC_BYPASS``), so each frame's
transmit queue, hence the DUT's receive queue, comes from its flow hash (with
the bypass it would come from the generator's CPU: one queue).
``--workers N`` runs the lwAFTR under its supervisor with the instance's
``queue`` list 0..N-1 (a worker per receive queue: AF_XDP sockets, or an
AF_PACKET fanout group), the workers pinned to ``--worker-cpus``.

Placement on a small machine: the generator runs on ``--gen-cpu`` and the
DUT (the ``lwaftr run`` process, or with ``--rps`` the kernel's receive
processing of the DUT's interfaces) on ``--dut-cpu``.  A veth delivers a
frame in the sender's context, so without ``--rps`` the DUT's receive work
(the copy into the lwAFTR's ring, or the whole kernel forwarding) runs on
the generator's CPU.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from lwaftr.io.afpacket import (O_T2_LEN, O_T2_SNAPLEN, O_T2_STATUS, PACKET_QDISC_BYPASS, SOL_PACKET, T2_DATA,
                                TxRing)
from lwaftr.io.pcap import read_frames, write_frames

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
TABLE_ARGS = ["193.5.1.100", "64", "fc00::100", "fc00:1:2:3:4:5:0:7e", "6"]   # 64 x 64 = 4,096 softwires
FLOWS = 4096                     # one frame per softwire; divides the TX ring (4,096 frames)
SELF_MAC = "02:aa:aa:aa:aa:aa"   # the lwAFTR's MAC in the generated configuration (both sides)
NEXT_MAC = "02:99:99:99:99:99"   # its next hop on both sides (static)
MACS = {"i0": "02:00:00:00:01:00", "b0": "02:00:00:00:02:00",   # not NEXT_MAC: sinks drop on sight
        "v4": "02:dd:00:00:00:04", "v6": "02:dd:00:00:00:06"}   # lwAFTR mode: not SELF_MAC, the kernel ignores
CLONE_NEWNET = 0x40000000

# direction -> (generator interfaces, sink interfaces, DUT ingress, DUT egress towards the sinks)
CASES = {
    "encap": (["i0"], ["b0"], ["v4"], ["v6"]),
    "decap": (["b0"], ["i0"], ["v6"], ["v4"]),
    "both": (["i0", "b0"], ["b0", "i0"], ["v4", "v6"], ["v6", "v4"]),
}


# ---------------------------------------------------------------------------- generator (a child process)

@numba.njit(cache=True, nogil=True)
def _put32(ring, o, v):
    ring[o] = v & 0xFF
    ring[o + 1] = (v >> 8) & 0xFF
    ring[o + 2] = (v >> 16) & 0xFF
    ring[o + 3] = (v >> 24) & 0xFF


@numba.njit(cache=True, nogil=True)
def mark(ring, frame_size, frame_nr, state, lens, n):
    """Hand up to n prebuilt TX ring frames to the kernel (status SEND_REQUEST)."""
    k = 0
    while k < n:
        f = state[0] * frame_size
        if ring[f + O_T2_STATUS] | ring[f + O_T2_STATUS + 1] | ring[f + O_T2_STATUS + 2] \
                | ring[f + O_T2_STATUS + 3]:
            break                                       # still the kernel's: the ring is full
        m = lens[state[0]]
        _put32(ring, f + O_T2_LEN, m)
        _put32(ring, f + O_T2_SNAPLEN, m)
        _put32(ring, f + O_T2_STATUS, 1)
        state[0] = (state[0] + 1) % frame_nr
        k += 1
    return k


def _gen_main(argv: list[str]) -> int:
    """``live.py _gen CPU BATCH HASH NS:IF:FRAMES.pcap ...``; commands on stdin:
    ``run PPS SECONDS IF[,IF]`` (PPS 0 = flat out) -> ``go`` ... ``done SENT ELAPSED``; ``quit``.
    HASH 1: through the qdisc layer (transmit queue from the flow hash)."""
    cpu, batch, spread = int(argv[0]), int(argv[1]), argv[2] == "1"
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    rings = {}
    for spec in argv[3:]:
        ns, ifname, pcap = spec.split(":", 2)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        os.close(fd)
        tx = TxRing(ifname)                               # opened (and bound) inside that namespace
        if spread:
            tx.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 0)
        libc.setns(home, CLONE_NEWNET)
        frames = read_frames(pcap)
        if tx.frame_nr % len(frames):
            raise SystemExit(f"{len(frames)} frames do not divide the TX ring ({tx.frame_nr})")
        view = tx.ring.reshape(tx.frame_nr, tx.frame_size)
        lens = np.zeros(tx.frame_nr, np.int64)
        for i in range(tx.frame_nr):
            f = frames[i % len(frames)]
            view[i, T2_DATA:T2_DATA + len(f)] = np.frombuffer(f, np.uint8)
            lens[i] = len(f)
        rings[ifname] = (tx, lens)
    for tx, lens in rings.values():                       # compile (or load) before saying ready
        mark(tx.ring, tx.frame_size, tx.frame_nr, tx.state, lens, 0)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        pps, seconds = float(cmd[1]), float(cmd[2])
        use = [rings[n] for n in cmd[3].split(",")]
        step = batch if pps == 0 else max(8, min(batch, int(pps * 100e-6)))   # paced: ~100 us bursts
        slack = int(pps * 2e-3) + step                    # catch up at most 2 ms of lateness
        sent = 0
        print("go", flush=True)
        start = now = time.perf_counter()
        end = start + seconds
        while now < end:
            if pps:
                due = int(pps * (now - start)) - sent
                if due > slack:                           # fell far behind (descheduled): no long burst
                    start += (due - slack) / pps
                    due = slack
                if due < step:
                    time.sleep(max(0.0, min((step - due) / pps, end - now)))
                    now = time.perf_counter()
                    continue
                n = min(due, batch)
            else:
                n = batch
            for tx, lens in use:
                k = mark(tx.ring, tx.frame_size, tx.frame_nr, tx.state, lens, max(1, n // len(use)))
                sent += k
                try:
                    tx.sock.send(b"")                     # blocking: returns once the kernel took them
                except OSError:
                    pass
            now = time.perf_counter()
        print(f"done {sent} {now - start:.6f}", flush=True)
    return 0


# ---------------------------------------------------------------------------- the lab

def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Lab:
    """Three namespaces and two veth pairs; ``close`` deletes everything it made."""

    def __init__(self, tag: str, queues: int = 1) -> None:
        self.ns = {k: f"lwlive-{os.getpid()}-{tag}-{k}" for k in ("inet", "dut", "b4")}
        self.queues = queues
        q = ["numtxqueues", str(queues), "numrxqueues", str(queues)]
        self.of = {"i0": self.ns["inet"], "b0": self.ns["b4"], "v4": self.ns["dut"], "v6": self.ns["dut"]}
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []
        self.holders: dict[str, int] = {}
        try:
            for ns in self.ns.values():
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
            sh("ip", "-n", self.ns["inet"], "link", "add", "i0", *q, "type", "veth", "peer", "name", "v4",
               "netns", self.ns["dut"], *q)
            sh("ip", "-n", self.ns["b4"], "link", "add", "b0", *q, "type", "veth", "peer", "name", "v6",
               "netns", self.ns["dut"], *q)
            for dev, ns in self.of.items():
                self.sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6", 1)
                sh("ip", "-n", ns, "link", "set", dev, "address", MACS[dev], "up")
            for k, ns in self.ns.items():    # a process in each namespace: its /proc/PID/net/dev
                p = self.spawn(["ip", "netns", "exec", ns, "sleep", "infinity"], stdout=subprocess.DEVNULL)
                self.holders[k] = p.pid
        except BaseException:
            self.close()
            raise

    @staticmethod
    def sysctl(ns: str, key: str, value) -> None:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")

    def spawn(self, cmd: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def counters(self) -> dict[str, dict[str, int]]:
        """Every veth end: rx/tx packets and drops (from /proc/PID/net/dev of a process in its namespace)."""
        out: dict[str, dict[str, int]] = {}
        for k in ("inet", "dut", "b4"):
            with open(f"/proc/{self.holders[k]}/net/dev") as fh:
                for line in fh.readlines()[2:]:
                    name, rest = line.split(":", 1)
                    name = name.strip()
                    if name in MACS:
                        v = list(map(int, rest.split()))
                        out[name] = {"rx": v[1], "rx_drop": v[3], "tx": v[9], "tx_drop": v[11]}
        out["t"] = time.perf_counter()  # type: ignore[assignment]
        return out

    def set_rps(self, cpu: int | None) -> None:
        mask = "0" if cpu is None else format(1 << cpu, "x")
        for dev in ("v4", "v6"):
            for q in range(self.queues):
                sh("ip", "netns", "exec", self.ns["dut"], "sh", "-c",
                   f"echo {mask} > /sys/class/net/{dev}/queues/rx-{q}/rps_cpus")

    def kernel_router(self) -> None:
        """The DUT namespace as a plain IPv4/IPv6 router with the lwAFTR's MACs and next hops."""
        d = self.ns["dut"]
        for dev in ("v4", "v6"):
            for key, val in (("accept_dad", 0), ("router_solicitations", 0), ("addr_gen_mode", 1),
                             ("disable_ipv6", 0), ("forwarding", 1)):
                self.sysctl(d, f"net.ipv6.conf.{dev}.{key}", val)
            self.sysctl(d, f"net.ipv4.conf.{dev}.rp_filter", 0)
            sh("ip", "-n", d, "link", "set", dev, "address", SELF_MAC)
        self.sysctl(d, "net.ipv4.ip_forward", 1)
        self.sysctl(d, "net.ipv6.conf.all.forwarding", 1)
        self.sysctl(d, "net.ipv4.conf.all.rp_filter", 0)
        # Internet -> B4 side: the softwires' IPv4 addresses; B4 -> Internet: the BR address.
        sh("ip", "-n", d, "addr", "add", "10.0.1.1/24", "dev", "v4")
        sh("ip", "-n", d, "addr", "add", "10.0.2.1/24", "dev", "v6")
        sh("ip", "-n", d, "neigh", "add", "10.0.2.2", "lladdr", NEXT_MAC, "dev", "v6", "nud", "permanent")
        sh("ip", "-n", d, "route", "add", "193.5.0.0/16", "via", "10.0.2.2", "dev", "v6")
        sh("ip", "-n", d, "-6", "neigh", "add", "fe80::99", "lladdr", NEXT_MAC, "dev", "v4", "nud", "permanent")
        sh("ip", "-n", d, "-6", "route", "add", "fc00::100/128", "via", "fe80::99", "dev", "v4")
        # Enabling IPv6 forwarding joins the all-routers groups: a few MLD reports leave
        # towards the sinks in the next seconds.  Let them pass before counting.
        quiet, deadline = 0, time.time() + 8
        prev = self.counters()
        while quiet < 15 and time.time() < deadline:
            time.sleep(0.1)
            cur = self.counters()
            quiet = quiet + 1 if all(cur[x]["rx"] == prev[x]["rx"] for x in ("i0", "b0")) else 0
            prev = cur

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.made:
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


class Generator:
    def __init__(self, lab: Lab, pcaps: dict[str, Path], cpu: int, batch: int) -> None:
        specs = [f"{lab.of[dev]}:{dev}:{pcaps[dev]}" for dev in ("i0", "b0")]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        spread = "1" if lab.queues > 1 else "0"
        self.p = lab.spawn([sys.executable, str(Path(__file__).resolve()), "_gen", str(cpu), str(batch), spread,
                            *specs],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.expect("ready", 300)

    def expect(self, word: str, timeout: float) -> list[str]:
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if r else ""
        if not line.startswith(word):
            raise RuntimeError(f"generator: expected {word!r}, got {line!r} (exit {self.p.poll()})")
        return line.split()

    def start(self, pps: float, seconds: float, devs: list[str]) -> None:
        self.p.stdin.write(f"run {pps} {seconds} {','.join(devs)}\n")
        self.p.stdin.flush()
        self.expect("go", 30)

    def finish(self, seconds: float) -> int:
        return int(self.expect("done", seconds + 60)[1])

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass


class LwaftrDut:
    """``lwaftr run`` in the DUT namespace, one process per trial (its counters come on SIGTERM)."""

    def __init__(self, lab: Lab, conf: Path, cpu: int, workdir: Path, py_args: list[str],
                 log: str | None = None, extra: list[str] | None = None, workers: int = 1,
                 worker_cpus: tuple[int, ...] = ()) -> None:
        """``workers`` > 1: under the supervisor, a worker per queue 0..workers-1 on ``worker_cpus``."""
        self.lab, self.conf, self.cpu, self.workdir, self.py_args, self.log = lab, conf, cpu, workdir, py_args, log
        self.extra = extra or []
        self.workers = workers
        if workers > 1:
            from dataclasses import replace
            from lwaftr.config.snabb import dump_snabb, load_snabb
            cfg = load_snabb(str(conf))
            inst = replace(cfg.instances[0], device="v6", external_device="v4")
            self.conf = workdir / f"{conf.stem}-{workers}q.conf"
            self.conf.write_text(dump_snabb(replace(cfg, instances=[replace(inst, queue_id=q) for q in range(workers)],
                                                    cpus=tuple(worker_cpus[:workers]))))

    def start(self) -> None:
        self.out = open(self.workdir / "lwaftr.out", "w+")
        self.err = open(self.workdir / "lwaftr.err", "w+")
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu >= 0 and self.workers == 1 else []
        ifaces = ["--v4", "v4", "--v6", "v6"] if self.workers == 1 else ["--name", "bench"]
        self.env = dict(os.environ, LWAFTR_RUN_DIR=str(self.workdir / "run"),   # our own instance state
                        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
        env = self.env
        self.p = self.lab.spawn(["ip", "netns", "exec", self.lab.ns["dut"], *pin, sys.executable, *self.py_args,
                                 "run", "--conf", str(self.conf), *ifaces, *self.extra],
                                stdout=self.out, stderr=self.err, env=env)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"lwaftr run exited {self.p.returncode}: {self._text(self.err)[-2000:]}")
            if self._text(self.err).count("forwarding") >= self.workers:
                return
            time.sleep(0.05)
        raise RuntimeError("lwaftr run did not start in 300 s")

    def pids(self) -> list[int]:
        """The lwAFTR's processes (under a supervisor: it and its workers)."""
        out = [self.p.pid]
        for f in (self.workdir / "run").glob("*/workers/*/pid"):
            try:
                out.append(int(f.read_text()))
            except (OSError, ValueError):
                pass
        return out

    def snapshot(self) -> dict[str, int] | None:
        """The running instance's counters (``lwaftr counters --json``), or None if that is not possible."""
        try:
            r = subprocess.run([sys.executable, "-m", "lwaftr", "counters", "--json"], env=self.env,
                               capture_output=True, text=True, timeout=60)
            d = json.loads(r.stdout)
            return {k: int(v) for k, v in d.items() if isinstance(v, int)}
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    @staticmethod
    def _text(fh) -> str:
        fh.flush()
        fh.seek(0)
        return fh.read()

    def stop(self) -> dict[str, int]:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise RuntimeError("lwaftr run did not stop on SIGTERM")
        text = self._text(self.out)
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(self._text(self.err))
        try:
            return json.loads(text[text.index("{"):])
        except ValueError:
            raise RuntimeError(f"lwaftr run printed no counters: {text[-500:]!r} {self._text(self.err)[-2000:]}")


# ---------------------------------------------------------------------------- trials

def cpu_times() -> list[list[int]]:
    """Per CPU: user+nice, system, irq+softirq, idle+iowait (clock ticks), from /proc/stat."""
    out = []
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3].isdigit():
                v = list(map(int, line.split()[1:]))
                out.append([v[0] + v[1], v[2], v[5] + v[6], v[3] + v[4]])
    return out


def cpu_busy(a: list[list[int]], b: list[list[int]]) -> list[dict[str, float]]:
    res = []
    for x, y in zip(a, b):
        d = [q - p for p, q in zip(x, y)]
        t = max(1, sum(d))
        res.append({"user": round(d[0] / t, 3), "sys": round(d[1] / t, 3), "softirq": round(d[2] / t, 3),
                    "idle": round(d[3] / t, 3)})
    return res


def proc_ticks(pids: list[int]) -> int:
    """CPU time (clock ticks) used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def wait_quiet(limit: float = 120.0, busy_max: float = 0.10) -> float:
    """Wait (up to ``limit`` s) until the machine is idle apart from us; returns the busy share seen last."""
    deadline = time.time() + limit
    while True:
        a = cpu_times()
        time.sleep(0.5)
        b = cpu_times()
        busy = sum(1 - c["idle"] for c in cpu_busy(a, b)) / max(1, len(a))
        if busy <= busy_max or time.time() > deadline:
            return busy
        time.sleep(2)


def _delta(a: dict, b: dict, devs: list[str], key: str) -> int:
    return sum(b[d][key] - a[d][key] for d in devs)


def _drain(lab: Lab, devs: list[str], limit: float = 5.0) -> dict:
    """Wait until the sinks' counters stop moving (the DUT has emptied its rings)."""
    prev = lab.counters()
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(0.1)
        cur = lab.counters()
        if all(cur[d]["rx"] == prev[d]["rx"] for d in devs):
            return cur
        prev = cur
    return prev


def _settled(lab: Lab, dut: LwaftrDut | None, devs: list[str]) -> tuple[dict, dict | None]:
    """Interface counters and the lwAFTR's, taken while no frame moved on ``devs``
    (its control plane's own frames come and go at any time)."""
    for _ in range(10):
        a = lab.counters()
        k = dut.snapshot() if dut else None
        b = lab.counters()
        if all(a[d]["rx"] == b[d]["rx"] for d in devs):
            return b, k
    return b, k


def _split(r: dict, k0: dict, k1: dict, into: int, out: int) -> None:
    """Where the lwAFTR's drops were: its counters between two snapshots beside the interfaces'.

    Frames its kernel side sent (the control plane's TAPs: MLD, neighbour
    discovery...) reached the sinks too but were never offered: they are
    taken off what came out; frames it passed to its kernel are not drops."""
    def d(name: str) -> int:
        return k1.get(name, 0) - k0.get(name, 0)
    eng_in = d("in-ipv4-packets") + d("in-ipv6-packets")
    eng_out = d("out-ipv4-packets") + d("out-ipv6-packets")
    from_kernel = d("from-kernel-ipv4-interface-packets") + d("from-kernel-ipv6-interface-packets")
    to_kernel = d("to-kernel-ipv4-interface-packets") + d("to-kernel-ipv6-interface-packets")
    out -= from_kernel
    r.update(ring_drops=into - eng_in, engine_drops=eng_in - eng_out - to_kernel, tx_drops=eng_out - out,
             from_kernel=from_kernel, to_kernel=to_kernel, drops=into - out - to_kernel, frames_out=out)


def trial(lab: Lab, gen: Generator, dut: LwaftrDut | None, case: str, pps: float, seconds: float) -> dict:
    """One run: (DUT start,) warm-up, traffic at ``pps`` (0: flat out), drain, figures.

    Drops count from the end of the warm-up: a DUT may lose frames while it
    starts (the lwAFTR's rings are open before its loop runs); those are
    reported apart (``startup_drops``)."""
    gdevs, sdevs, ins, outs = CASES[case]
    quiet = wait_quiet()
    if dut:
        dut.start()
    c_start = lab.counters()
    if dut:                         # wait until frames come through at all
        deadline = time.time() + 120
        while _delta(c_start, lab.counters(), sdevs, "rx") == 0:
            if dut.p.poll() is not None:
                raise RuntimeError(f"lwaftr run exited {dut.p.returncode}: {dut._text(dut.err)[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError("the lwAFTR forwarded nothing in 120 s")
            gen.start(2_000, 0.1, gdevs)
            gen.finish(0.1)
            time.sleep(0.2)
    # Warm-up at a low rate: the DUT's first batches (caches, page faults) are not what we measure.
    gen.start(20_000, 0.5, gdevs)
    gen.finish(0.5)
    c0, k0 = _settled(lab, dut, ins + sdevs)
    gen.start(pps, seconds, gdevs)
    t0 = time.perf_counter()
    skip = min(1.0, seconds / 4)
    time.sleep(skip)
    ours = [gen.p.pid] + (dut.pids() if dut else [])
    a, ca, pa = lab.counters(), cpu_times(), proc_ticks(ours)
    time.sleep(max(0.1, seconds - skip - 0.25 - (time.perf_counter() - t0 - skip)))
    b, cb, pb = lab.counters(), cpu_times(), proc_ticks(ours)
    gen.finish(seconds)
    _drain(lab, sdevs)
    end, k1 = _settled(lab, dut, ins + sdevs)
    dt = b["t"] - a["t"]
    into = _delta(c0, end, ins, "rx")                  # what entered the DUT's interfaces after the warm-up
    out = _delta(c0, end, sdevs, "rx")                 # what reached the sinks
    r = {"case": case, "offered_mpps": _delta(a, b, ins, "rx") / dt / 1e6,
         "forwarded_mpps": _delta(a, b, sdevs, "rx") / dt / 1e6,
         "pps_asked": pps, "frames_in": into, "frames_out": out, "drops": into - out,
         "startup_drops": _delta(c_start, c0, ins, "rx") - _delta(c_start, c0, sdevs, "rx"),
         "veth_drops": _delta(c0, end, gdevs + outs, "tx_drop") + _delta(c0, end, ins + sdevs, "rx_drop"),
         "cpu": cpu_busy(ca, cb), "busy_before": round(quiet, 3)}
    # Other work on the machine during the window: busy time that is neither our processes nor softirq.
    ticks = sum(sum(y) - sum(x) for x, y in zip(ca, cb))
    other = sum((y[0] + y[1]) - (x[0] + x[1]) for x, y in zip(ca, cb)) - (pb - pa)
    r["other_load"] = round(max(0, other) / max(1, ticks), 3)
    if dut:
        cnt = dut.stop()
        if k0 is not None and k1 is not None:
            _split(r, k0, k1, into, out)
        else:                       # lifetime figures only: the split includes the start
            keep = {k: r[k] for k in ("drops", "frames_out")}
            _split(r, {}, cnt, _delta(c_start, end, ins, "rx"), _delta(c_start, end, sdevs, "rx"))
            r.update(keep)
        r["counters"] = {k: v for k, v in cnt.items() if k.startswith("drop") or "packets" in k}
    return r


# ---------------------------------------------------------------------------- main

def cpu_str(r: dict) -> str:
    return " ".join(f"{1 - c['idle']:.0%}" for c in r["cpu"])


def search(run, top: float, steps: int, say) -> dict | None:
    """The highest rate forwarded without a drop, in ``steps`` halvings of [0, top] Mpps
    (RFC 2544's throughput): a rate counts as passed at what the generator really offered."""
    lo, hi, best = 0.0, top, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        t = run(mid * 1e6)
        say(f"   search {mid:.3f} Mpps: offered {t['offered_mpps']:.3f}, forwarded {t['forwarded_mpps']:.3f}, "
            f"drops {t['drops']:,d}" + (f" (rx {t['ring_drops']:,d}, engine {t['engine_drops']:,d}, "
                                        f"tx {t['tx_drops']:,d}, from its kernel {t['from_kernel']})"
                                        if "ring_drops" in t else "")
            + f", cpu busy {cpu_str(t)}, other {t['other_load']:.0%}")
        if t["drops"] == 0:
            lo = max(lo, min(mid, t["offered_mpps"]))
            if best is None or t["forwarded_mpps"] > best["forwarded_mpps"]:
                best = t
        else:
            hi = mid
    return best


def generate(size: int) -> tuple[Path, Path, Path]:
    """Configuration and traffic (``lwaftr generate-configuration``), cached in benchmarks/out/."""
    conf, v4, v6 = (OUT / f"live-{size}.conf", OUT / f"live-{size}-v4.pcap", OUT / f"live-{size}-v6.pcap")
    if not (conf.exists() and v4.exists() and v6.exists()):
        OUT.mkdir(exist_ok=True)
        sh(sys.executable, "-m", "lwaftr", "generate-configuration", "--output", str(conf), "--pcap-v4", str(v4),
           "--pcap-v6", str(v6), "--packet-size", str(size), "--npackets", str(FLOWS), "--flows", str(FLOWS),
           *TABLE_ARGS)
    return conf, v4, v6


def retarget(pcap: Path, src_mac: str, out: Path) -> Path:
    """The frames addressed to the lwAFTR's MAC from the generator's."""
    head = bytes.fromhex(SELF_MAC.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    write_frames(out, [head + f[12:] for f in read_frames(pcap)])
    return out


def fmt_row(r: dict) -> str:
    kd = "" if r.get("ratio") is None else f"{r['ratio']:.2f}"
    parts = f"{r['drops']:>10,d}"
    if "ring_drops" in r:
        parts += f"  (rx {r['ring_drops']:,d}, engine {r['engine_drops']:,d}, tx {r['tx_drops']:,d})"
    return (f"{r['label']:34s} {r['offered_mpps']:8.3f} {r['forwarded_mpps']:10.3f} {kd:>6s}  {parts}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_gen":
        return _gen_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, metavar="S", help="seconds per trial (default 5)")
    ap.add_argument("--size", default="64,550", help="IPv4 frame sizes, comma-separated (default 64,550)")
    ap.add_argument("--cases", default="encap,decap,both", help="any of encap,decap,both")
    ap.add_argument("--rate", type=float, default=0.0, metavar="MPPS", help="offered rate (default: flat out)")
    ap.add_argument("--search", type=int, default=0, metavar="N",
                    help="where a DUT dropped, also find its zero-drop rate in N halving steps")
    ap.add_argument("--runs", type=int, default=1, help="repeat each trial N times (median shown)")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel-forwarding reference")
    ap.add_argument("--gen-only", action="store_true", help="also measure the generator alone (nothing forwards)")
    ap.add_argument("--no-lwaftr", action="store_true", help="skip the lwAFTR")
    ap.add_argument("--gen-cpu", type=int, default=0, help="CPU for the generator (-1: any)")
    ap.add_argument("--dut-cpu", type=int, default=1, help="CPU for the DUT (-1: any)")
    ap.add_argument("--rps", action="store_true",
                    help="steer the DUT's receive processing to --dut-cpu (RPS), for both DUTs")
    ap.add_argument("--batch", type=int, default=256, help="generator frames per send() (default 256)")
    ap.add_argument("--lwaftr-args", default="", help="more arguments for lwaftr run (e.g. '--io xdp')")
    ap.add_argument("--max-other", type=float, default=0.05,
                    help="repeat a trial (up to 3 times) when other work took more of the CPUs (default 0.05)")
    ap.add_argument("--queues", type=int, default=1, help="queues of each veth, each way (default 1)")
    ap.add_argument("--workers", type=int, default=1,
                    help="lwAFTR workers, one per queue, under the supervisor (default 1: one process)")
    ap.add_argument("--worker-cpus", default="0,1", help="cores of the workers with --workers > 1 (default 0,1)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--dut-python-args", default="-m lwaftr", help=argparse.SUPPRESS)   # e.g. a profiling wrapper
    ap.add_argument("--dut-log", metavar="FILE", help="append the lwAFTR's standard error to FILE")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("live.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sizes = [int(s) for s in args.size.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    work = Path(tempfile.mkdtemp(prefix="lwlive-"))
    rows: list[dict] = []
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))
    lab = None
    try:
        for size in sizes:
            conf, p4, p6 = generate(size)
            pcaps = {"i0": retarget(p4, MACS["i0"], work / f"{size}-i0.pcap"),
                     "b0": retarget(p6, MACS["b0"], work / f"{size}-b0.pcap")}
            modes = (["gen-only"] if args.gen_only else []) + ([] if args.no_kernel else ["kernel"]) \
                + ([] if args.no_lwaftr else ["lwaftr"])
            kernel_rate: dict[str, float] = {}
            for mode in modes:
                lab = Lab(f"{size}{mode[0]}", args.queues)
                if mode == "kernel":
                    lab.kernel_router()
                if args.rps:
                    lab.set_rps(args.dut_cpu)
                gen = Generator(lab, pcaps, args.gen_cpu, args.batch)
                dut = LwaftrDut(lab, conf, args.dut_cpu, work, args.dut_python_args.split(),
                                args.dut_log, args.lwaftr_args.split(), args.workers,
                                tuple(int(c) for c in args.worker_cpus.split(","))) if mode == "lwaftr" else None
                for case in cases:
                    def one(pps: float, seconds: float) -> dict:
                        """A trial; again (up to 3 times) if other work took more than --max-other of the CPUs."""
                        tries = []
                        for _ in range(4):
                            tries.append(trial(lab, gen, dut, case, pps, seconds))
                            if tries[-1]["other_load"] <= args.max_other:
                                break
                            say(f"   (other load {tries[-1]['other_load']:.0%} during the trial: again)")
                        return min(tries, key=lambda t: t["other_load"])

                    def run(pps: float, label: str, seconds: float = args.duration, runs: int = args.runs):
                        got = [one(pps, seconds) for _ in range(runs)]
                        got.sort(key=lambda r: r["forwarded_mpps"])
                        r = dict(got[len(got) // 2])
                        r.update(label=label, size=size, mode=mode,
                                 runs_forwarded_mpps=[round(g["forwarded_mpps"], 4) for g in got],
                                 runs_drops=[g["drops"] for g in got])
                        return r
                    if mode == "gen-only":
                        r = run(args.rate * 1e6, f"{size}B {case}: generator alone")
                        r["forwarded_mpps"] = r["offered_mpps"]      # nothing forwards: what the generator reached
                        r["runs_forwarded_mpps"] = []
                        r["drops"] = 0
                    else:
                        who = mode if mode != "lwaftr" else f"lwaftr x{args.workers}"
                        r = run(args.rate * 1e6, f"{size}B {case}: {who}" + (" (flat out)" if not args.rate
                                                                              else f" at {args.rate} Mpps"))
                    if mode == "kernel":
                        kernel_rate[case] = r["forwarded_mpps"]
                    r["ratio"] = (r["forwarded_mpps"] / kernel_rate[case]) if mode == "lwaftr" and \
                        kernel_rate.get(case) else None
                    rows.append(r)
                    say(fmt_row(r), "  runs:", r["runs_forwarded_mpps"], "drops:", r["runs_drops"], "cpu busy:",
                        cpu_str(r), f"other {r['other_load']:.0%}")
                    if args.search and mode != "gen-only" and r["drops"] > 0:
                        best = search(lambda pps: run(pps, f"{size}B {case}: {mode} zero-drop", runs=1),
                                      r["offered_mpps"], args.search, say)
                        if best is not None:
                            if mode == "kernel":
                                kernel_rate[case] = best["forwarded_mpps"]
                            best["ratio"] = (best["forwarded_mpps"] / kernel_rate[case]) \
                                if mode == "lwaftr" and kernel_rate.get(case) else None
                            rows.append(best)
                            say(fmt_row(best))
                gen.close()
                lab.close()
                lab = None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if lab is not None:
            lab.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print()
    print(f"{'case':34s} {'offered':>8s} {'forwarded':>10s} {'ratio':>6s}  {'drops inside DUT':>10s}")
    print(f"{'':34s} {'Mpps':>8s} {'Mpps':>10s} {'kernel':>6s}")
    for r in rows:
        print(fmt_row(r))
    print(f"\n(machine: {os.cpu_count()} CPUs, kernel {os.uname().release}; generator on CPU {args.gen_cpu}, "
          + (f"DUT on CPU {args.dut_cpu}" if args.workers == 1 else f"{args.workers} workers on CPUs {args.worker_cpus}")
          + f"{', RPS to the DUT CPU' if args.rps else ''}; {args.queues} queue(s) per veth; "
          f"{args.duration:g} s per trial, median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
