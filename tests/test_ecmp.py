"""Two workers announced by BGP, ECMP over them, and failover (needs root and
bird2; every namespace, veth and process is made and removed here).

Documentation addresses (RFC 5737, RFC 3849) and private AS numbers::

   net                up (BIRD, AS 65010)            lw: lwaftr run (AS 65001)             b6 (BIRD, AS 65020)
   203.0.113.7 ── n0|n1 203.0.113.1                                                        B4-side router:
                      u1 198.51.100.2/26 ──── i1 [worker 0] b1 ──── c1 2001:db8:0:1::2/64   counts tunnelled
                         (BGP + BFD)         198.51.100.1     2001:db8:0:1::1               frames per link
                      u2 198.51.100.66/26 ─── i2 [worker 1] b2 ──── c2 2001:db8:0:2::2/64
                         (BGP, hold 3 s)     198.51.100.65    2001:db8:0:2::1

``lwaftr run --conf`` runs one worker per instance and BIRD with a session per
worker interface: the IPv4 sessions announce 192.0.2.16/28 (the softwires'
addresses, aggregated) to ``up``, the IPv6 ones the BR address to ``b6``.
``up`` installs an ECMP route over both workers (L4 hashing), the Internet
host sends to 256 subscribers (16 addresses x 16 port sets), and ``b6`` counts
what each worker tunnels.  Killing a worker (SIGKILL) takes its TAP and so its
sessions away: ``up`` withdraws its path (BFD on worker 0's session, the hold
timer alone on worker 1's) and everything flows through the other; the
supervisor restarts it (held back here until the failover has been seen),
the sessions come back and so does the load.  A hung
worker (SIGSTOP) passes no keepalives: withdrawn when the hold timer expires.
Killing BIRD withdraws both paths until the supervisor has restarted it; a
reload announces new subscribers' addresses; a clean stop withdraws at once.
The loss window of each failure is printed (``pytest -s``).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from lwaftr.config.model import (Bgp, BgpPeer, Bindings, ControlPlane, Instance, InterfaceAddresses,
                                 NextHop)
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config
from lwaftr.lab.netns import Lab, unavailable

LOCAL_AS, UP_AS, B6_AS = 65001, 65010, 65020
BR = "2001:db8:ffff::1"
PREFIX = "192.0.2.16/28"
#: worker: (v4 dev, upstream dev, lwAFTR IPv4, upstream IPv4, v6 dev, b6 dev, lwAFTR IPv6, b6 IPv6)
LINKS = [("i1", "u1", "198.51.100.1", "198.51.100.2", "b1", "c1", "2001:db8:0:1::1", "2001:db8:0:1::2"),
         ("i2", "u2", "198.51.100.65", "198.51.100.66", "b2", "c2", "2001:db8:0:2::1", "2001:db8:0:2::2")]
FLOWS, RATE = 256, 1000          # flows cycled through, packets per second
BFD_DETECT = 0.3                 # the upstream's BFD: 100 ms intervals, multiplier 3 (router_conf)
HOLD_TIME = 3.0                  # BGP hold time on both sides (ROUTER_TIMERS, lwaftr's BIRD)
DETECT_SLACK = 0.5               # BIRD acting on it and the kernel installing the route
HELD = 1.0                       # s a failed worker is kept from coming back after its withdrawal
MIN_SETTLED = int(0.8 * HELD * RATE)   # packets that must fall between a withdrawal and the return


def _why_not() -> str | None:
    why = unavailable()
    if why is None and shutil.which("bird") is None and not os.path.exists("/usr/sbin/bird"):
        why = "BIRD 2 is not installed (apt-get install bird2)"
    if why is None and shutil.which("ethtool") is None:
        why = "ethtool is not installed"
    return why


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def config(more: int = 0) -> str:
    """16 addresses (192.0.2.16/28) of 16 port sets each, and ``more`` from 192.0.2.32 on."""
    addrs = [int(ipaddress.IPv4Address("192.0.2.16")) + i for i in range(16 + more)]
    n = len(addrs) * 16
    b = Bindings(ipv4=np.repeat(np.array(addrs, np.uint32), 16), psid=np.tile(np.arange(16, dtype=np.uint16), len(addrs)),
                 psid_length=np.full(n, 4, np.uint8), reserved_ports_bit_count=np.zeros(n, np.uint8),
                 b4_ipv6=np.array([list(ipaddress.IPv6Address(f"2001:db8:1::{i + 1:x}").packed) for i in range(n)],
                                  np.uint8),
                 br_index=np.zeros(n, np.uint16), br_addresses=[ipaddress.IPv6Address(BR).packed],
                 line=np.zeros(n, np.int32))
    insts = [Instance(device=v6, external_device=v4, queue_id=0,
                      external=InterfaceAddresses(ipaddress.IPv4Address(a4).packed, bytes.fromhex(f"020000000{i}01"),
                                                  NextHop(ip=ipaddress.IPv4Address(p4).packed)),
                      internal=InterfaceAddresses(ipaddress.IPv6Address(a6).packed, bytes.fromhex(f"020000000{i}02"),
                                                  NextHop(ip=ipaddress.IPv6Address(p6).packed)))
             for i, (v4, _, a4, p4, v6, _, a6, p6) in enumerate(LINKS)]
    bgp = Bgp(enable=True, local_as=LOCAL_AS, peer_as=UP_AS, bfd=True,
              peers=tuple(BgpPeer(v6, ipv6_peer_as=B6_AS) for _, _, _, _, v6, *_ in LINKS))
    return dump_snabb(replace(example_config(), bindings=b, instances=insts, name=None, bgp=bgp,
                              control_plane=ControlPlane(external_prefix_length=26, internal_prefix_length=64)))


# Routers: BIRD with one session per worker, routes merged into ECMP in the kernel.
# Peers of a lwAFTR need short timers too: no long back-off after a failure.
ROUTER_TIMERS = ("direct; hold time 3; keepalive time 1; connect delay time 1; connect retry time 2; "
                 "error wait time 1, 8; error forget time 30;")


def router_conf(router_id: str, family: int, local_as: int, sessions: list[tuple], bfd_on: set[str]) -> str:
    fam = f"ipv{family}"
    out = ["log stderr all;", f"router id {router_id};", "protocol device { scan time 10; }",
           f"protocol kernel {{ {fam} {{ import none; export all; }}; merge paths on; }}"]
    if bfd_on:
        out.append("protocol bfd { interface " + ", ".join(f'"{d}"' for d in sorted(bfd_on))
                   + " { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }")
    for name, dev, local, peer in sessions:
        out.append(f'protocol bgp {name} {{ local {local} as {local_as}; neighbor {peer} as {LOCAL_AS}; '
                   f'interface "{dev}"; {ROUTER_TIMERS} {"bfd on; " if dev in bfd_on else ""}'
                   f'{fam} {{ import all; export none; }}; }}')
    return "\n".join(out) + "\n"


SENDER = r'''
import json, os, socket, struct, sys, time
flows, rate, stop, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dests = [(f"192.0.2.{16 + f % 16}", (f // 16) * 4096 + 1000 + f) for f in range(flows)]
socks = {}
times = []
t0 = time.time()
seq = 0
while True:
    if seq % 100 == 0 and os.path.exists(stop):
        break
    due = t0 + seq / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
    f = seq % flows
    if f not in socks:                     # one source port per flow
        socks[f] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks[f].bind(("203.0.113.7", 20000 + f))
    t = time.time()
    socks[f].sendto(struct.pack("!IHd", seq, f, t), dests[f])
    times.append(t)
    seq += 1
with open(out, "w") as fh:
    json.dump(times, fh)
'''

RECEIVER = r'''
import json, os, select, socket, struct, sys, time
devs, stop, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
socks = []
for d in devs:
    c = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
    c.bind((d, 0x86dd))
    c.setblocking(False)
    socks.append(c)
print("ready", flush=True)
rec = []
end = None
while end is None or time.time() < end:          # on for 0.5 s after the sender stopped
    if end is None and os.path.exists(stop):
        end = time.time() + 0.5
    ready, _, _ = select.select(socks, [], [], 0.1)
    for c in ready:
        link = socks.index(c)
        while True:
            try:
                data = c.recv(65535)
            except BlockingIOError:
                break
            if len(data) < 54 + 20 + 8 + 14 or data[12:14] != b"\x86\xdd" or data[20] != 4:
                continue
            ihl = (data[54] & 15) * 4
            if data[54 + 9] != 17:
                continue
            seq, flow, _ = struct.unpack_from("!IHd", data, 54 + ihl + 8)
            rec.append((link, seq, flow, time.time()))
with open(out, "w") as fh:
    json.dump(rec, fh)
'''


def nexthops(ns, prefix: str, key: str = "gateway") -> list[str]:
    """The gateways (or devices) of ``prefix`` in ``ns``'s kernel table (several for ECMP)."""
    six = ":" in prefix
    r = ns.run("ip", "-6" if six else "-4", "-j", "route", "show", prefix, check=False)
    out = []
    for rt in json.loads(r.stdout or "[]"):
        out += [nh.get(key) for nh in rt.get("nexthops", [rt])]
    return sorted(map(str, out))


def wait_for(what: str, cond, timeout: float, step: float = 0.02):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.time() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(step)


def diagnose(lab: Lab, tmp_path) -> None:
    """What the routers and the lwAFTR saw (printed when the test fails)."""
    for ns in lab.namespaces:
        for ctl in [tmp_path / f"{ns.short}.ctl", tmp_path / "run" / "e" / "bird" / "bird.ctl"]:
            if ctl.exists() and (ns.short != "lw") == (ctl.name != "bird.ctl"):
                print(f"--- {ns.short}: birdc show protocols all\n"
                      + ns.run("birdc", "-s", str(ctl), "show", "protocols", "all", check=False).stdout)
        print(f"--- {ns.short}: routes\n" + ns.run("ip", "-4", "route", check=False).stdout
              + ns.run("ip", "-6", "route", check=False).stdout)
    for p in lab.processes:
        print(f"--- {p.err_path.name}\n{p.stderr[-5000:]}")


@pytest.fixture
def lab():
    with Lab(prefix="ecmp") as lab:
        yield lab


def test_ecmp_spread_failover_and_recovery(lab, tmp_path, monkeypatch):
    try:
        scenario(lab, tmp_path, monkeypatch)
    except BaseException:
        diagnose(lab, tmp_path)
        raise


def scenario(lab: Lab, tmp_path, monkeypatch) -> None:
    up, net, lw, b6 = lab.netns("up"), lab.netns("net"), lab.netns("lw"), lab.netns("b6")
    for ns in (up, lw, b6):
        ns.quiet_ipv6()
    lab.veth(net, "n0", up, "n1")
    net.addr("n0", "203.0.113.7/24")
    net.route("default", "203.0.113.1")
    net.ethtool_tx_off("n0")
    up.addr("n1", "203.0.113.1/24")
    up.sysctl("net.ipv4.ip_forward", 1)
    up.sysctl("net.ipv4.fib_multipath_hash_policy", 1)        # L4 hashing: flows spread by ports too
    for v4, u, _, p4, v6, c, _, p6 in LINKS:
        lab.veth(lw, v4, up, u)
        lab.veth(lw, v6, b6, c)
        up.addr(u, f"{p4}/26")
        b6.addr(c, f"{p6}/64")
        up.ethtool_tx_off(u)             # (a local stack over veth leaves checksums unfinished;
        b6.ethtool_tx_off(c)             # the data plane completes only IPv4 ones)

    conf = tmp_path / "lw.conf"
    conf.write_text(config())
    run_dir = tmp_path / "run"
    monkeypatch.setenv("LWAFTR_RUN_DIR", str(run_dir))
    aftr = lw.popen("env", f"LWAFTR_RUN_DIR={run_dir}", sys.executable, "-m", "lwaftr", "run",
                    "--conf", str(conf), "--name", "e", label="lwaftr")
    up_conf, b6_conf = tmp_path / "up.conf", tmp_path / "b6.conf"
    up_conf.write_text(router_conf("198.51.100.2", 4, UP_AS,
                                   [(f"w{i}", u, p4, a4) for i, (_, u, a4, p4, *_) in enumerate(LINKS)],
                                   bfd_on={"u1"}))                 # worker 0: BFD; worker 1: hold timer
    b6_conf.write_text(router_conf("198.51.100.200", 6, B6_AS,
                                   [(f"w{i}", c, p6, a6) for i, (*_, c, a6, p6) in enumerate(LINKS)], set()))
    for ns, f in ((up, up_conf), (b6, b6_conf)):
        ns.popen("bird", "-f", "-c", str(f), "-s", str(tmp_path / f"{ns.short}.ctl"), label=f"bird-{ns.short}")

    gateways = sorted(p[2] for p in LINKS)
    t_start = time.time()
    wait_for("ECMP route to the softwires on the upstream", lambda: nexthops(up, PREFIX) == gateways, 90, 0.2)
    wait_for("ECMP route to the BR on the B4 side", lambda: nexthops(b6, f"{BR}/128", "dev") == ["c1", "c2"], 30, 0.2)
    print(f"\nboth workers announced and routed by ECMP {time.time() - t_start:.1f} s after start")

    # Traffic: the Internet host sends to 256 subscribers; b6 records what each worker tunnels.
    stop = tmp_path / "stop"
    rx = b6.popen_python(RECEIVER, "c1,c2", str(stop), str(tmp_path / "rx.json"), label="rx")
    rx.wait_for("ready", stream="stdout", timeout=30)
    tx = net.popen_python(SENDER, str(FLOWS), str(RATE), str(stop), str(tmp_path / "tx.json"), label="tx")
    from lwaftr.mgmt.snapshot import read

    def worker_out() -> dict[str, int]:
        return {w: c.get("out-ipv6-packets", 0) for w, c in read("e").workers.items()}

    def pid_of(w: str) -> int:
        return int((run_dir / "e" / "workers" / w / "pid").read_text())

    time.sleep(3)
    spread_counters = worker_out()
    # Three failures: worker 0 killed (its upstream session has BFD), worker 1 killed
    # (hold timer only: nothing reaches its BIRD session any more), worker 1 hung
    # (SIGSTOP: its TAP stays, but nothing passes, keepalives included, until the hold
    # timer expires).  A killed worker's restart is held back (the supervisor stopped)
    # until the failover has been seen for HELD s: a restart within the hold time would
    # let its session come back at once, and leave no failover to check.
    supervisor = int((run_dir / "e" / "pid").read_text())
    events = []
    for victim, how, sig in (("0", "killed, BFD", signal.SIGKILL), ("1", "killed, hold timer", signal.SIGKILL),
                             ("1", "hung (SIGSTOP), hold timer", signal.SIGSTOP)):
        before = worker_out()
        pid = pid_of(victim)
        survivor_gw = LINKS[1 - int(victim)][2]
        if sig == signal.SIGKILL:
            os.kill(supervisor, signal.SIGSTOP)
        try:
            t_fail = time.time()
            os.kill(pid, sig)
            wait_for(f"worker {victim}'s path withdrawn", lambda: nexthops(up, PREFIX) == [survivor_gw],
                     HOLD_TIME + 2 * DETECT_SLACK)
            t_withdrawn = time.time()
            time.sleep(HELD)
        finally:
            os.kill(supervisor, signal.SIGCONT)
        if sig == signal.SIGKILL:
            wait_for(f"worker {victim} restarted", lambda: (run_dir / "e" / "workers" / victim / "pid").exists()
                     and pid_of(victim) != pid, 30, 0.05)
        else:
            os.kill(pid, signal.SIGCONT)
        t_resumed = time.time()
        wait_for(f"worker {victim}'s path back", lambda: nexthops(up, PREFIX) == gateways, 60)
        t_back = time.time()
        time.sleep(3)                    # traffic through both again
        after = worker_out()
        events.append(dict(victim=int(victim), how=how, fail=t_fail, withdrawn=t_withdrawn, resumed=t_resumed,
                           back=t_back, carried=after[victim] - before[victim]))
    # BIRD itself killed: its TCP connections close, so the upstream withdraws every
    # path of the box at once; the supervisor restarts BIRD, which announces again.
    bird_pid = int((run_dir / "e" / "bird" / "bird.pid").read_text())
    t_bird = time.time()
    os.kill(bird_pid, signal.SIGKILL)
    wait_for("all paths withdrawn after BIRD died", lambda: nexthops(up, PREFIX) == [], HOLD_TIME + DETECT_SLACK)
    t_bird_gone = time.time()
    wait_for("paths back after BIRD's restart", lambda: nexthops(up, PREFIX) == gateways, 60)
    t_bird_back = time.time()
    time.sleep(2)
    stop.touch()
    assert tx.popen.wait(30) == 0, tx.stderr
    assert rx.popen.wait(30) == 0, rx.stderr
    sent = json.loads((tmp_path / "tx.json").read_text())
    got = json.loads((tmp_path / "rx.json").read_text())
    t_sent = np.array(sent)
    link_of = np.full(len(sent), -1)
    t_recv = np.full(len(sent), np.inf)
    for link, seq, _flow, t in got:
        link_of[seq], t_recv[seq] = link, t
    ok = t_recv - t_sent < 0.5           # delivered (a hung worker's backlog arrives late: lost too)
    flow = np.arange(len(sent)) % FLOWS

    # Spread: before any failure, both workers carry a fair share of the flows.
    pre = (t_sent > t_sent[0] + 0.5) & (t_sent < events[0]["fail"] - 0.1) & ok
    flows_on = [set(flow[pre & (link_of == k)].tolist()) for k in (0, 1)]
    print(f"spread: {len(flows_on[0])} flows via worker 0, {len(flows_on[1])} via worker 1 "
          f"(of {FLOWS}); per-worker counters out-ipv6-packets {spread_counters}")
    assert not flows_on[0] & flows_on[1]                          # a flow sticks to one path
    assert min(map(len, flows_on)) >= FLOWS // 5, flows_on
    assert len(spread_counters) == 2 and min(spread_counters.values()) > 0

    for ev in events:
        v, s = ev["victim"], 1 - ev["victim"]
        rel = {k: ev[k] - ev["fail"] for k in ("withdrawn", "resumed", "back")}
        period = (t_sent >= ev["fail"]) & (t_sent < ev["back"] + 3)
        lost_t = np.sort(t_sent[period & ~ok])
        # The loss window: from the failure to the last packet of the burst of losses it
        # caused (losses less than 0.3 s apart); what is lost later is lost around the return.
        burst = np.flatnonzero(np.diff(lost_t) > 0.3)
        end = lost_t[burst[0]] if burst.size else (lost_t[-1] if lost_t.size else ev["fail"])
        loss_window = float(end - ev["fail"])
        n_burst = int((lost_t <= end).sum())
        moved = (t_sent >= ev["fail"]) & ok & (link_of == s) & np.isin(flow, list(flows_on[v]))
        first_moved = float(t_recv[moved].min() - ev["fail"]) if moved.any() else None
        tail = (t_sent > ev["back"] + 1) & (t_sent < ev["back"] + 3) & ok
        via = {k: int((tail & (link_of == k)).sum()) for k in (0, 1)}
        print(f"worker {v} {ev['how']}: path withdrawn by the upstream after {rel['withdrawn']:.2f} s; "
              f"loss window {loss_window:.2f} s ({n_burst} packets lost), its flows through worker {s} after "
              f"{'never' if first_moved is None else f'{first_moved:.2f} s'}; worker back after "
              f"{rel['resumed']:.2f} s, path back after {rel['back']:.2f} s ({len(lost_t) - n_burst} packets lost "
              f"around the return); then {via[0]} and {via[1]} packets through workers 0 and 1 in 2 s")
        # Detection is bounded by the configured timers: BFD (3 x 100 ms) on worker 0's
        # session, the hold time (3 s) on worker 1's; DETECT_SLACK covers BIRD and the
        # kernel installing the route on a busy 2-core machine.
        detect = BFD_DETECT if ev["how"].endswith("BFD") else HOLD_TIME
        assert rel["withdrawn"] < detect + DETECT_SLACK, rel
        assert first_moved is not None and first_moved < detect + DETECT_SLACK, "its flows did not move in time"
        assert loss_window < detect + DETECT_SLACK
        # Failed over: from the withdrawal until the path is back (polled every 20 ms, so
        # 0.1 s before it was seen back), every packet arrives, through the survivor.
        settled = (t_sent > ev["withdrawn"]) & (t_sent < ev["back"] - 0.1)
        assert settled.sum() >= MIN_SETTLED, f"only {int(settled.sum())} packets between withdrawal and return"
        assert ok[settled].all(), f"{int((~ok[settled]).sum())} packets lost after the failover"
        assert set(link_of[settled].tolist()) == {s}
        # Recovered: both workers carry traffic again.
        assert via[0] > 0 and via[1] > 0, via
        assert ev["carried"] > 0

    gap = (t_sent >= t_bird) & (t_sent < t_bird_back + 2)
    after_bird = (t_sent > t_bird_back + 0.5) & ok
    print(f"BIRD killed: all paths withdrawn by the upstream after {t_bird_gone - t_bird:.2f} s, back after "
          f"{t_bird_back - t_bird:.2f} s ({int((gap & ~ok).sum())} packets lost); then "
          f"{[int((after_bird & (link_of == k)).sum()) for k in (0, 1)]} packets through workers 0 and 1")
    assert all(int((after_bird & (link_of == k)).sum()) > 0 for k in (0, 1))
    assert int((~ok[t_sent > t_bird_back + 0.5]).sum()) == 0

    # A reload with more subscribers announces their addresses too.
    conf.write_text(config(more=4))
    aftr.send_signal(signal.SIGHUP)
    t_reload = time.time()
    wait_for("the new prefix announced", lambda: nexthops(up, "192.0.2.32/30") == gateways, 30)
    print(f"reload adding 192.0.2.32/30: announced by both workers after {time.time() - t_reload:.2f} s")
    assert nexthops(up, PREFIX) == gateways

    # A clean stop withdraws the routes (BIRD closes its sessions first).
    aftr.send_signal(signal.SIGTERM)
    assert aftr.popen.wait(60) == 0, aftr.stderr[-3000:]
    wait_for("routes withdrawn after the stop", lambda: nexthops(up, PREFIX) == [], 5)
    log = aftr.stderr
    assert "BIRD started" in log and "BIRD stopped" in log and "BGP: reconfigured" in log
    assert "BIRD exited with status -9; restarting" in log
    for i in (0, 1):
        assert f"BGP session up: w{i}_v4" in log and f"BGP session up: w{i}_v6" in log
        assert f"BGP session down: w{i}_v4" in log
    assert not (run_dir / "e").exists()
