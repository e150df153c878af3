"""``lwaftr demo``: live traffic through ``lwaftr run`` in a namespace lab, and what happened.

    lwaftr demo [--on-a-stick]     build the lab (needs root), run traffic, print, tear down
    lwaftr demo --offline          the embedded example through the data plane, no lab

The live demo builds :mod:`lwaftr.lab.topology` (an Internet host, the
lwAFTR, an IPv6 router, two lwB4s sharing 192.0.2.1 with LAN hosts behind
them, and a third one a reload adds), sends ping, TCP, hairpinned and refused
traffic through it, prints an account and the lwAFTR's counters, and tears
the lab down.  Without root or network namespaces it says so and shows the
offline example instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import time

import numpy as np

from lwaftr import counters as C
from lwaftr.cli import examples


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run live traffic through lwaftr run in a namespace lab (needs root); "
                                    "--offline: the embedded example through the data plane",
                       **examples("lwaftr demo", "lwaftr demo --on-a-stick", "lwaftr demo --offline"))
    p.add_argument("--offline", action="store_true",
                   help="no lab: run the embedded example frames through the data plane")
    p.add_argument("--on-a-stick", action="store_true", help="the lwAFTR on one interface instead of two")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "offline", False):
        return run_offline()
    from lwaftr.lab.netns import unavailable
    reason = unavailable()
    if reason:
        print(f"lwaftr demo: no live lab here: {reason}.\n"
              f"Showing the offline example instead (lwaftr demo --offline).\n", flush=True)
        return run_offline()
    return run_live(on_a_stick=getattr(args, "on_a_stick", False))


# --- the live lab ---------------------------------------------------------------------------------

APPS = (sys.executable, "-m", "lwaftr.lab.apps")
MIB = 1 << 20


class _Stop(Exception):
    pass


def _on_sigterm(*_) -> None:
    raise _Stop


class _Account:
    """Prints the steps and remembers whether any failed."""

    def __init__(self) -> None:
        self.failed = 0
        self.n = 0

    def step(self, title: str) -> None:
        self.n += 1
        print(f"\n{self.n}. {title}", flush=True)

    def ok(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failed += 1
        print(f"   FAILED: {text}", flush=True)


def _ports(s) -> str:
    first, last = s.ports
    return "all ports" if s.psid_length == 0 else f"ports {first}-{last}"


def _owner(topo, addr: str, port: int) -> str:
    names = [s.name for s in topo.subscribers.values() if s.owns(addr, port)]
    return names[0] if names else "nobody"


def run_live(on_a_stick: bool = False) -> int:
    from lwaftr.lab import apps
    from lwaftr.lab import topology as T
    from lwaftr.lab.netns import Lab, LabError

    mode = T.ON_A_STICK if on_a_stick else T.TWO_INTERFACES
    old = signal.signal(signal.SIGTERM, _on_sigterm)       # a SIGTERM still tears the lab down
    acct = _Account()
    t0 = time.monotonic()
    try:
        with Lab() as lab:
            try:
                topo = T.Topology(lab, mode).build()
            except LabError as e:
                print(f"lwaftr demo: could not build the lab: {e}\n"
                      f"Showing the offline example instead (lwaftr demo --offline).\n", flush=True)
                lab.close()
                return run_offline()
            _header(topo, T, time.monotonic() - t0)
            t1 = time.monotonic()
            topo.start_lwaftr()
            print(f"lwAFTR running in its namespace ({' '.join(topo.lwaftr_argv()[3:])}): "
                  f"forwarding after {time.monotonic() - t1:.1f} s", flush=True)
            try:
                _traffic(topo, T, apps, acct)
            except LabError as e:
                acct.fail(str(e))
            counters = topo.stop_lwaftr()
            _counters(counters)
    except (_Stop, KeyboardInterrupt):
        print("\nlwaftr demo: interrupted; the lab is torn down.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f"\nLab torn down; {time.monotonic() - t0:.1f} s in all.  "
          + ("Everything behaved as it should." if not acct.failed else f"{acct.failed} step(s) FAILED."))
    return 1 if acct.failed else 0


def _header(topo, T, built: float) -> None:
    print(f"lwAFTR live demo: a namespace lab ({topo.mode}; namespaces {topo.lab.tag}-*), "
          f"built in {built:.1f} s\n")
    print(f"  Internet host {T.INTERNET}")
    print(f"     |  lwAFTR: {T.AFTR_V4} to the Internet, BR {T.BR} to the B4s (lwaftr run)")
    print(f"     |  IPv6 router {T.ROUTER6}")
    for s in topo.subscribers.values():
        note = "" if s.initially_configured else "   (not configured yet: a reload adds her)"
        print(f"     +-- lwB4 {s.name:5s} {s.b4:14s} {s.ipv4} {_ports(s):17s} "
              f"LAN host {s.host}{note}")
    print("\n  Each B4 is a user-space tunnel (TUN <-> raw IPv6 socket) with nftables NAPT of its LAN\n"
          f"  into its address and port set; alice forwards port {T.PORT_FORWARD} to her LAN host.\n",
          flush=True)


def _ping_count(out: str) -> str:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return f"{m.group(2)}/{m.group(1)} answered" if m else out.strip().splitlines()[-1]


def _traffic(topo, T, apps, acct: _Account) -> None:
    inet, lan = topo.inet, topo.lan

    acct.step(f"ping from each LAN host to the Internet host {T.INTERNET}")
    watch = inet.popen(*APPS, "icmp-watch", label="icmp-watch")
    watch.wait_for("listening")
    for name in ("alice", "bob"):
        before = len(watch.stdout.splitlines())
        out = topo.ping(name, count=3)
        time.sleep(0.05)
        seen = [json.loads(x) for x in watch.stdout.splitlines()[before:] if x.strip()]
        ids = sorted({(e["from"], e["id"]) for e in seen})
        owners = {_owner(topo, a, i) for a, i in ids}
        text = ", ".join(f"{a} echo id {i}" for a, i in ids[:3])
        line = (f"{name} ({topo.subscribers[name].host}): {_ping_count(out)}; "
                f"the Internet host saw {text} ({'/'.join(sorted(owners))}'s port set)")
        (acct.ok if owners == {name} else acct.fail)(line)
    watch.stop()

    n = 4 * MIB
    acct.step(f"TCP to the Internet host, {n // MIB} MiB each way at once on one connection, SHA-256 checked")
    server = inet.popen(*APPS, "tcp-serve", "--port", "5001", "--send", str(n), "--seed", "1", "--count", "2",
                        label="tcp-serve")
    server.wait_for("listening")
    clients = {}
    for seed, name in ((2, "alice"), (3, "bob")):
        t = time.monotonic()
        clients[name] = (json.loads(lan[name].run(*APPS, "tcp-connect", T.INTERNET, "5001", "--send", str(n),
                                                  "--seed", str(seed), timeout=120).stdout),
                         seed, time.monotonic() - t)
    server.popen.wait(30)
    for (name, (cl, seed, took)), srv in zip(clients.items(),
                                             [json.loads(x) for x in server.stdout.splitlines() if x.strip()]):
        good = (cl["received_sha256"] == apps.expected(n, 1) and srv["received_sha256"] == apps.expected(n, seed))
        peer = f"{srv['peer'][0]}:{srv['peer'][1]}"
        line = (f"{name}: up {srv['received'] / MIB:.1f} MiB, down {cl['received'] / MIB:.1f} MiB in {took:.2f} s, "
                f"{'content intact' if good else 'CONTENT DIFFERS'}; the server saw {peer} "
                f"({_owner(topo, *srv['peer'])}'s port set)")
        (acct.ok if good and _owner(topo, *srv["peer"]) == name else acct.fail)(line)

    acct.step("Internet -> 192.0.2.1 port 40000, in nobody's port set")
    r = json.loads(inet.run(*APPS, "unreachable-probe", "192.0.2.1", "40000").stdout)
    if r.get("from") == T.AFTR_V4:
        acct.ok(f"not tunnelled: the lwAFTR dropped it and answered ICMP destination unreachable "
                f"(type {r['type']} code {r['code']}) from {r['from']}")
    else:
        acct.fail(f"no ICMP error from the lwAFTR: {r}")

    acct.step(f"hairpin: bob -> 192.0.2.1:{T.PORT_FORWARD} (alice's port forward, on their shared address)")
    server = lan["alice"].popen(*APPS, "tcp-serve", "--port", str(T.PORT_FORWARD), "--send", str(MIB),
                                "--seed", "5", label="hairpin-serve")
    server.wait_for("listening")
    cl = json.loads(lan["bob"].run(*APPS, "tcp-connect", "192.0.2.1", str(T.PORT_FORWARD), "--send", str(MIB),
                                   "--seed", "6", timeout=60).stdout)
    server.popen.wait(30)
    srv = json.loads(server.stdout)
    good = cl["received_sha256"] == apps.expected(MIB, 5) and srv["received_sha256"] == apps.expected(MIB, 6)
    line = (f"turned round inside the lwAFTR, 1 MiB each way {'intact' if good else 'DIFFERS'}; alice's LAN host "
            f"saw {srv['peer'][0]}:{srv['peer'][1]} ({_owner(topo, *srv['peer'])}'s port set)")
    (acct.ok if good and _owner(topo, *srv["peer"]) == "bob" else acct.fail)(line)

    acct.step("a spoofer on the B4 side: bob's B4 address with alice's port (from the IPv6 router)")
    listener = inet.popen(*APPS, "udp-serve", "--port", "9999", "--count", "100", label="udp-9999")
    listener.wait_for("listening")
    for _ in range(40):
        inet_saw = listener.stdout
        if "legit" in inet_saw:
            break
        topo.router.run(*APPS, "inject", "to-aftr", T.MAC_V6, T.BR, T.INTERNET,
                        "2001:db8:1::b,4100,spoofed", "2001:db8:1::b,8200,legit")
        time.sleep(0.05)
    listener.stop()
    heads = [json.loads(x)["head"] for x in listener.stdout.splitlines() if x.strip()]
    if heads and all(h == "legit" for h in heads):
        acct.ok("dropped (drop-no-source-softwire-ipv6 below); the packet sent after it, bob's own port, "
                "went through")
    else:
        acct.fail(f"the Internet host received {heads}")

    acct.step("reload (SIGHUP) with carol's softwire added, the lwAFTR running on")
    topo.write_config(names=set(topo.subscribers))
    if topo.reload():
        out = topo.ping("carol", count=3)
        acct.ok(f"configuration reloaded; carol ({topo.subscribers['carol'].ipv4}, all ports) pings: "
                f"{_ping_count(out)}")
    else:
        acct.fail("the reload was refused")

    acct.step("1500-byte IPv4 packets from the Internet to alice (lwAFTR internal MTU "
              f"{topo.internal_mtu}: 1540 bytes once in IPv6)")
    r = json.loads(inet.run(*APPS, "big-udp", "192.0.2.1", str(T.PORT_FORWARD), "--df").stdout)
    if r.get("from") == T.AFTR_V4:
        acct.ok(f"DF set: ICMP fragmentation needed from {r['from']}, MTU {r['mtu']}")
    else:
        acct.fail(f"DF set: no ICMP fragmentation needed came back: {r}")
    listener = lan["alice"].popen(*APPS, "udp-serve", "--port", str(T.PORT_FORWARD), label="udp-big")
    listener.wait_for("listening")
    for _ in range(40):
        if listener.stdout.strip():
            break
        inet.run(*APPS, "big-udp", "192.0.2.1", str(T.PORT_FORWARD), "--no-df")
        time.sleep(0.05)
    got = listener.stdout.strip()
    listener.stop()
    if got and json.loads(got.splitlines()[0])["sha256"] == hashlib.sha256(apps.BIG_PAYLOAD).hexdigest():
        acct.ok("DF clear: fragmented in IPv6 by the lwAFTR, reassembled by alice's B4, delivered intact "
                "to her LAN host")
    else:
        acct.fail(f"DF clear: alice's LAN host got {got!r}")


def _counters(counters: dict[str, int]) -> None:
    print("\nlwAFTR counters (printed by lwaftr run on SIGTERM):")
    for name, value in sorted(counters.items()):
        print(f"  {name:45s} {value}")


# --- the offline example ----------------------------------------------------------------------

def run_offline() -> int:
    from lwaftr.cli.describe import describe
    from lwaftr.dataplane.engine import Engine
    from lwaftr.examples import SUBSCRIBERS, example_config, example_traffic

    cfg = example_config()
    t0 = time.perf_counter()
    engine = Engine(cfg)
    print(f"lwAFTR example: {len(cfg.bindings)} softwires, BR 2001:db8:ffff::1, "
          f"engine ready in {time.perf_counter() - t0:.2f} s")
    for name, ipv4, psid, plen, b4 in SUBSCRIBERS:
        print(f"  {name:6s} B4 {b4:16s} owns {ipv4} PSID {psid}/{plen}")
    print()
    for desc, side, frame in example_traffic():
        before = engine.counters.copy()
        v4, v6 = ([frame], []) if side == "v4" else ([], [frame])
        out = engine.process_frames(v4, v6, time.monotonic())
        o4, o6 = out.v4, out.v6
        print(f"* {desc}")
        print(f"    in  {side}: {describe(frame)}")
        for iface, frames in (("v4", o4), ("v6", o6)):
            for f in frames:
                print(f"    out {iface}: {describe(f)}")
        delta = engine.counters - before
        moved = ", ".join(f"{C.NAMES[i]} +{int(delta[i])}" for i in np.flatnonzero(delta)
                          if C.NAMES[i].endswith("packets") and C.NAMES[i].startswith(("drop", "hairpin", "out-icmp")))
        if moved:
            print(f"    counted: {moved}")
    print("\nCounters:")
    for name, value in C.to_dict(engine.counters, nonzero=True).items():
        print(f"  {name:45s} {value}")
    return 0
