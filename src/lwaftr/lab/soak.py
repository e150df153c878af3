"""A soak in the lab: TCP transfers from two subscribers while the lwAFTR is reconfigured.

Lab only (``tests/test_soak.py``, ``benchmarks/soak.py``), not part of the router.

On a built :class:`~lwaftr.lab.topology.Topology` with ``lwaftr run``
started: the Internet host serves connections concurrently (each: ``size``
bytes each way); alice's and bob's LAN hosts (sharing 192.0.2.1) each make
one connection after another for ``duration`` seconds (longer if a
reconfiguration is still under way then), with a socket timeout
of ``timeout`` seconds.  Meanwhile, at even intervals, the lwAFTR is
reloaded (SIGHUP) and its binding table changed through ``lwaftr config``
(carol's softwire added and removed on the running instance, then the file
rewritten with and without her and reloaded), and the RSS of ``lwaftr run``
is sampled.

:func:`soak` returns a report: every transfer (ok or not, duration, the
longest wait for data on either side and for the connection), the longest
gap in forwarding seen by any end point, transfers per second and
throughput, RSS samples, the lwAFTR's counters over the soak, and every lab
namespace's IPv4 and TCP error counters (a frame the lwAFTR mangles shows
up there: a bad IPv4 header checksum as ``InHdrErrors``).
"""
from __future__ import annotations

import json
import signal
import sys
import time

from lwaftr.lab.netns import LabError
from lwaftr.lab.topology import BR, INTERNET, Topology

APPS = (sys.executable, "-m", "lwaftr.lab.apps")
PORT = 5001
SERVER_SEED = 1
CLIENTS = (("alice", 2), ("bob", 3))
CAROL = ("{ ipv4 192.0.2.2; psid 0; b4-ipv6 2001:db8:1::c; br-address %s; port-set { psid-length 0; } }" % BR)
SOFTWIRES = "/softwire-config/binding-table/softwire"
#: Counters that must stay zero in a soak: anything lost or mangled by the
#: rings, the engine's malformed-input drops, frames for the kernel it refused.
MUST_BE_ZERO = ("drop-rx-ring-full-packets", "drop-rx-too-big-packets", "drop-tx-full-packets",
                "drop-tx-too-big-packets", "drop-tx-invalid-packets", "drop-to-kernel-packets",
                "drop-malformed-ipv4-packets", "drop-malformed-ipv6-packets", "ingress-packet-drops",
                "drop-no-source-softwire-ipv6-packets", "drop-no-next-hop-ipv4-packets",
                "drop-no-next-hop-ipv6-packets")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LabError(f"no VmRSS for {pid}")


def lwaftr_cli(topo: Topology, *args: str, stdin: str | None = None):
    return topo.aftr.run(sys.executable, "-m", "lwaftr", *args, input=stdin, check=False, timeout=60)


def counters(topo: Topology) -> dict[str, int]:
    r = lwaftr_cli(topo, "counters", "--json", topo.instance_name)
    if r.returncode != 0:
        raise LabError(f"lwaftr counters: {r.stderr}")
    return json.loads(r.stdout)


def ip_errors(topo: Topology) -> dict[str, dict[str, int]]:
    """Per lab namespace: IPv4 header/address errors, discards, TCP checksum errors."""
    out = {}
    for ns in topo.lab.namespaces:
        if ns.short == "aftr":
            continue
        lines = ns.run("cat", "/proc/net/snmp").stdout.splitlines()
        tables = {}
        for head, vals in zip(lines[::2], lines[1::2]):
            name = head.split(":")[0]
            tables[name] = dict(zip(head.split()[1:], map(int, vals.split()[1:])))
        out[ns.short] = {"InHdrErrors": tables["Ip"]["InHdrErrors"], "InAddrErrors": tables["Ip"]["InAddrErrors"],
                         "InDiscards": tables["Ip"]["InDiscards"], "TcpInCsumErrors": tables["Tcp"]["InCsumErrors"]}
    return out


def _events(topo: Topology, name: str) -> list[tuple[str, callable]]:
    """Reconfigurations done during a soak, in order (each must succeed)."""
    def sighup() -> None:
        if not topo.reload():
            raise LabError("reload refused")

    def add_carol() -> None:
        r = lwaftr_cli(topo, "config", "add", "--name", name, SOFTWIRES, "-", stdin=CAROL)
        if r.returncode != 0:
            raise LabError(f"lwaftr config add: {r.stderr}")

    def remove_carol() -> None:
        r = lwaftr_cli(topo, "config", "remove", "--name", name, f"{SOFTWIRES}[ipv4=192.0.2.2][psid=0]")
        if r.returncode != 0:
            raise LabError(f"lwaftr config remove: {r.stderr}")

    def file_with_carol() -> None:
        topo.write_config(names={"alice", "bob", "carol"})
        sighup()

    def file_without_carol() -> None:
        topo.write_config(names={"alice", "bob"})
        sighup()

    return [("reload (SIGHUP)", sighup), ("config add carol", add_carol), ("config remove carol", remove_carol),
            ("file with carol, SIGHUP", file_with_carol), ("file without carol, SIGHUP", file_without_carol)]


def soak(topo: Topology, duration: float, *, size: int = 256 * 1024, timeout: float = 10,
         reconfigure: bool = True, rss_every: float = 0.5) -> dict:
    """Run the soak on ``topo`` (the lwAFTR running); return the report."""
    name = topo.instance_name
    pid = topo.lwaftr.pid
    server = topo.inet.popen(*APPS, "soak-serve", "--port", str(PORT), "--send", str(size), "--seed",
                             str(SERVER_SEED), "--timeout", str(timeout), label="soak-serve")
    server.wait_for("listening", timeout=30)
    before = counters(topo)
    errors_before = ip_errors(topo)
    t0 = time.monotonic()
    stop = topo.lab.workdir / f"soak-stop-{t0}"
    # The clients go on until told to stop: after ``duration`` and every event (a slow
    # ``lwaftr config`` on a loaded machine must not push an event past the transfers).
    clients = {n: topo.lan[n].popen(*APPS, "soak", INTERNET, str(PORT), "--send", str(size), "--seed", str(seed),
                                    "--expect", str(size), "--peer-seed", str(SERVER_SEED),
                                    "--duration", str(duration + 300), "--timeout", str(timeout),
                                    "--stop-file", str(stop), label=f"soak-{n}")
               for n, seed in CLIENTS}
    events = _events(topo, name) if reconfigure else []
    due = [t0 + duration * (i + 1) / (len(events) + 1) for i in range(len(events))]
    done_events: list[dict] = []
    rss: list[tuple[float, int]] = []
    next_rss = t0
    while any(c.alive() for c in clients.values()):
        now = time.monotonic()
        if now >= next_rss:
            rss.append((round(now - t0, 2), rss_kib(pid)))
            next_rss = now + rss_every
        if events and now >= due[0]:
            what, do = events.pop(0)
            due.pop(0)
            s = time.monotonic()
            do()
            done_events.append({"at": round(s - t0, 2), "what": what, "took": round(time.monotonic() - s, 3)})
        if not events and now >= t0 + duration and not stop.exists():
            stop.touch()
        if time.monotonic() > t0 + duration + 300 + 3 * timeout:
            raise LabError("soak clients did not finish")
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    rss.append((round(time.monotonic() - t0, 2), rss_kib(pid)))
    time.sleep(0.3)                 # the server's last lines; the counters' last poll
    server.stop(signal.SIGTERM)
    after = counters(topo)
    transfers = {n: [json.loads(line) for line in c.stdout.splitlines() if line.strip()] for n, c in clients.items()}
    served = [json.loads(line) for line in server.stdout.splitlines() if line.strip()]
    every = [t for ts in transfers.values() for t in ts]
    gaps = [t.get("max_gap", 0) for t in every] + [t.get("connect", 0) for t in every] \
        + [s.get("max_gap", 0) for s in served]
    durations = sorted(t["duration"] for t in every)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    errors_after = ip_errors(topo)
    return {
        "duration": round(elapsed, 2),
        "transfers": {n: len(ts) for n, ts in transfers.items()},
        "failed": [dict(t, client=n) for n, ts in transfers.items() for t in ts if not t["ok"]],
        "served_failed": [s for s in served if s.get("recv_error") or s.get("send_error")
                          or s["received"] != size],
        "longest_gap": max(gaps, default=0.0),
        "transfer_seconds": {"median": durations[len(durations) // 2] if durations else None,
                             "p99": durations[int(len(durations) * 0.99)] if durations else None,
                             "max": durations[-1] if durations else None},
        "transfers_per_second": round(len(every) / elapsed, 2),
        "mbit_per_second": round(sum(t["received"] + t["sent"] for t in every) * 8 / elapsed / 1e6, 1),
        "events": done_events,
        "rss_kib": rss,
        "counters": {k: v for k, v in sorted(delta.items()) if v},
        "must_be_zero": {k: delta.get(k, 0) for k in MUST_BE_ZERO if delta.get(k, 0)},
        "ip_errors": {ns: {k: v - errors_before[ns][k] for k, v in e.items() if v - errors_before[ns][k]}
                      for ns, e in errors_after.items() if any(v - errors_before[ns][k] for k, v in e.items())},
    }
