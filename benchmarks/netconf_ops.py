#!/usr/bin/env python3
"""NETCONF operations and durable changes on a running instance with Snabb's 1M-softwire table.

    .venv/bin/python benchmarks/netconf_ops.py [--ops N] [--big] [--full] [--changes N] [--window W]

As an operator would: ``lwaftr run`` on two veth pairs in a namespace,
``lwaftr netconf`` beside it, ncclient as the client, one operation at a
time.  For each operation of issue 13, N times (each on a new entry): latency
p50 / p99 / max, and the first one on a fresh session:

* get-config, bind-instance names only
* edit-config: add one binding entry; get-config of it (subtree filter on its
  key); change its PSID; delete it
* get of the counters (traffic-stat)

Then: resident memory of the NETCONF server (peak) and of ``lwaftr run``
(before and after the edits), durable binding changes per second through the
control socket (each acknowledged after fsync; one at a time, then W in
flight), and, with ``--full``, one full get-config of the table.  ``--big``:
the 4M table instead.  The crash test (``kill -9`` during a stream of edits)
is ``tests/test_durability.py``, on a small table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import BIG_ARGS, TABLE_ARGS, generate  # noqa: E402

from lwaftr.io.control import Client, request  # noqa: E402
from lwaftr.mgmt.netconf_auth import hash_password  # noqa: E402

NS = f"lwaftr-ncb-{os.getpid()}"
BR_NS = "urn:ietf:params:xml:ns:yang:ietf-softwire-br"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
PASSWORD = "bench"
BR = "fc00::100"


def sh(*cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, check=check, capture_output=True, timeout=60)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_socket(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"lwaftr run exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if request(path, {"op": "ping"}, timeout=5).get("ok"):
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit("lwaftr run not ready")
        time.sleep(0.2)


def bi(inner: str) -> str:
    return (f'<config xmlns="{NC}"><br-instances xmlns="{BR_NS}"><binding><bind-instance><name>{NAME}</name>'
            f'{inner}</bind-instance></binding></br-instances></config>')


def entry(i: int, psid: int, op: str = "") -> str:
    attr = f' xmlns:nc="{NC}" nc:operation="{op}"' if op else ""
    return (f"<binding-table><binding-entry{attr}><binding-ipv6info>2001:db8:77::{i:x}</binding-ipv6info>"
            f"<binding-ipv4-addr>198.18.{i >> 8 & 255}.{i & 255}</binding-ipv4-addr><port-set><psid-len>6"
            f"</psid-len><psid>{psid}</psid></port-set><br-ipv6-addr>{BR}</br-ipv6-addr></binding-entry>"
            f"</binding-table>")


def key_filter(i: int) -> tuple[str, str]:
    return ("subtree", f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><binding-table><binding-entry>'
                       f'<binding-ipv6info>2001:db8:77::{i:x}</binding-ipv6info></binding-entry></binding-table>'
                       f'</bind-instance></binding></br-instances>')


NAMES = ("subtree", f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><name/></bind-instance></binding>'
                    f'</br-instances>')
COUNTERS = ("subtree", f'<br-instances xmlns="{BR_NS}"><binding><bind-instance><traffic-stat/></bind-instance>'
                       f'</binding></br-instances>')
NAME = "lwaftr"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> int:
    global NAME
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--full", action="store_true", help="also one full get-config of the table")
    ap.add_argument("--window", type=int, default=32, help="requests in flight for the pipelined run")
    ap.add_argument("--tick", type=float, default=0.001, help="ncclient's polling interval (its default: 0.1 s)")
    ap.add_argument("--changes", type=int, default=5000, help="durable changes through the control socket")
    args = ap.parse_args()
    from ncclient import manager
    from ncclient.transport import session
    # ncclient's session thread looks for queued requests every TICK (0.1 s) when nothing
    # arrives: ~100 ms a request of the client's own.  Measure the server instead.
    session.TICK = args.tick
    conf0, _, _ = generate("4m-550" if args.big else "1m-550", BIG_ARGS if args.big else TABLE_ARGS, 550,
                           10_000, 10_000)
    tmp = Path(tempfile.mkdtemp(prefix="ncbench-"))
    conf = tmp / "lw.conf"
    for suffix in ("", ".lwbt", ".lwbt.rest"):          # the compiled table too, if there is one (mtimes kept)
        if Path(str(conf0) + suffix).exists():
            shutil.copy2(str(conf0) + suffix, str(conf) + suffix)
    env = dict(os.environ, LWAFTR_RUN_DIR=str(tmp / "run"))
    sh("ip", "netns", "add", NS)
    procs: list[subprocess.Popen] = []
    try:
        for a, b in (("i1", "i0"), ("b1", "b0")):
            sh("ip", "-n", NS, "link", "add", a, "type", "veth", "peer", "name", b)
            for d in (a, b):
                sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1")
                sh("ip", "-n", NS, "link", "set", d, "up")
        t0 = time.time()
        run = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "lwaftr", "run", "--conf", str(conf),
                                "--name", "nb", "--v4", "i1", "--v6", "b1", "--control-plane", "built-in"],
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "run.log", "w"), env=env)
        procs.append(run)
        sock = tmp / "run" / "nb" / "control.sock"
        wait_socket(sock, run, 900)
        print(f"lwaftr run ready in {time.time() - t0:.1f} s (compiling the table the first time)", flush=True)
        text = request(sock, {"op": "get-config", "bindings": False})
        print(f"{text['softwires']} softwires", flush=True)
        rss_run0 = rss_mib(run.pid)
        users = tmp / "users"
        users.write_text(f"admin:{hash_password(PASSWORD, ln=12)}\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        nc = subprocess.Popen([sys.executable, "-m", "lwaftr", "netconf", "--listen", f"127.0.0.1:{port}",
                               "--name", "nb", "--host-key", str(tmp / "host_key"), "--users", str(users)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "netconf.log", "w"), env=env)
        procs.append(nc)
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and nc.poll() is None, "lwaftr netconf did not start"
                time.sleep(0.1)

        def connect():
            return manager.connect(host="127.0.0.1", port=port, username="admin", password=PASSWORD,
                                   hostkey_verify=False, look_for_keys=False, allow_agent=False, timeout=600)

        lat: dict[str, list[float]] = {k: [] for k in ("names", "add", "get-entry", "change-psid", "delete",
                                                        "counters")}
        first: dict[str, float] = {}
        with connect() as m:
            names = m.get_config("running", filter=NAMES).data_xml
            NAME = names.split("<name>")[1].split("</name>")[0]
        # The first operation of each kind, each on a fresh session.
        for kind in lat:
            with connect() as m:
                first[kind] = timed(lambda: op(m, kind, 0))
        with connect() as m:
            for i in range(1, args.ops + 1):
                for kind in lat:
                    lat[kind].append(timed(lambda: op(m, kind, i)))
        print(f"\n{args.ops} operations each, one at a time (ms; ncclient polling every {args.tick * 1e3:g} ms):")
        print(f"{'operation':<14} {'first':>8} {'p50':>8} {'p99':>8} {'max':>8}")
        for kind, xs in lat.items():
            print(f"{kind:<14} {first[kind] * 1e3:8.1f} {pct(xs, 50) * 1e3:8.1f} {pct(xs, 99) * 1e3:8.1f} "
                  f"{max(xs) * 1e3:8.1f}")
        print(f"\nNETCONF server resident: {rss_mib(nc.pid):.0f} MiB (peak {rss_mib(nc.pid, 'VmHWM'):.0f} MiB)")
        print(f"lwaftr run resident: {rss_run0:.0f} MiB before the edits, {rss_mib(run.pid):.0f} MiB after")
        # Durable changes through the control socket: each acknowledged after fsync; one at a
        # time, then WINDOW requests in flight (those read together share one fsync).
        for window in (1, args.window):
            c = Client(sock)
            t = time.perf_counter()
            sent = done = 0
            base = 0 if window == 1 else args.changes
            while done < args.changes:
                while sent < args.changes and sent - done < window:
                    i = base + sent
                    c.send({"op": "add", "path": "/softwire-config/binding-table/softwire",
                            "value": f"{{ ipv4 198.19.{i >> 8 & 255}.{i & 255}; psid {i >> 16}; "
                                     f"b4-ipv6 2001:db8:78::{i:x}; br-address {BR}; "
                                     f"port-set {{ psid-length 6; }} }}"})
                    sent += 1
                r = c.receive()
                assert r["ok"], r
                done += 1
            dt = time.perf_counter() - t
            c.close()
            print(f"durable changes through the control socket, {window} in flight: {args.changes / dt:.0f} per "
                  f"second ({args.changes} adds; acknowledged once fsynced)", flush=True)
        print(f"lwaftr run resident after them: {rss_mib(run.pid):.0f} MiB; journal "
              f"{(Path(str(conf) + '.journal')).stat().st_size / 1e6:.1f} MB")
        if args.full:
            with connect() as m:
                t = time.perf_counter()
                data = m.get_config("running").data_xml
                print(f"full get-config: {time.perf_counter() - t:.1f} s, {len(data) / 1e6:.0f} MB; NETCONF server "
                      f"peak resident {rss_mib(nc.pid, 'VmHWM'):.0f} MiB")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        sh("ip", "netns", "del", NS, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def op(m, kind: str, i: int) -> None:
    if kind == "names":
        m.get_config("running", filter=NAMES)
    elif kind == "add":
        m.edit_config(target="running", config=bi(entry(i, 1)))
    elif kind == "get-entry":
        d = m.get_config("running", filter=key_filter(i)).data_xml
        assert "<psid>1</psid>" in d or i == 0, d
    elif kind == "change-psid":
        m.edit_config(target="running", config=bi(entry(i, 2)))
    elif kind == "delete":
        m.edit_config(target="running", config=bi(entry(i, 2, op="delete")))
    elif kind == "counters":
        m.get(filter=COUNTERS)


if __name__ == "__main__":
    sys.exit(main())
