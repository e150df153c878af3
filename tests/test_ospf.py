"""Two workers announced by OSPF (OSPFv2 and OSPFv3, BIRD), ECMP over them, and
a killed worker's routes withdrawn (needs root and bird2; every namespace,
veth and process is made and removed here).  Documentation addresses::

   up (BIRD OSPFv2, ECMP)                    lw: lwaftr run                        b6 (BIRD OSPFv3, ECMP)
      u1 198.51.100.2/26 ─── i1 [worker 0] b1 ─── c1 2001:db8:0:1::2/64
      u2 198.51.100.66/26 ── i2 [worker 1] b2 ─── c2 2001:db8:0:2::2/64

``lwaftr run --conf`` with ``lwaftr { ospf { enable true; } }`` runs per worker
an OSPFv2 router on its IPv4 TAP and an OSPFv3 router on its IPv6 TAP: ``up``
learns the softwires' addresses (192.0.2.1/32, 192.0.2.2/32) from both
workers and installs them with two next hops, ``b6`` the BR address.  A
killed worker's adjacencies time out (dead interval 4 s) and its paths go;
once the supervisor has restarted it they come back; a clean stop takes all.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time
from dataclasses import replace

import pytest

from lwaftr.config.model import ControlPlane, Instance, InterfaceAddresses, NextHop, Ospf
from lwaftr.config.snabb import dump_snabb
from lwaftr.examples import example_config
from lwaftr.lab.netns import Lab

from test_ecmp import _why_not, nexthops, wait_for

BR = "2001:db8:ffff::1"
V4 = ["192.0.2.1/32", "192.0.2.2/32"]
#: worker: (v4 dev, upstream dev, lwAFTR IPv4, upstream IPv4, v6 dev, b6 dev, lwAFTR IPv6, b6 IPv6)
LINKS = [("i1", "u1", "198.51.100.1", "198.51.100.2", "b1", "c1", "2001:db8:0:1::1", "2001:db8:0:1::2"),
         ("i2", "u2", "198.51.100.65", "198.51.100.66", "b2", "c2", "2001:db8:0:2::1", "2001:db8:0:2::2")]
DEAD = 4                   # the dead interval, both sides
SLACK = 2.0                # SPF, BIRD and the kernel installing the route on a busy 2-core machine

pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def config() -> str:
    insts = [Instance(device=v6, external_device=v4, queue_id=0,
                      external=InterfaceAddresses(ipaddress.IPv4Address(a4).packed, bytes.fromhex(f"020000000{i}01"),
                                                  NextHop(ip=ipaddress.IPv4Address(p4).packed)),
                      internal=InterfaceAddresses(ipaddress.IPv6Address(a6).packed, bytes.fromhex(f"020000000{i}02"),
                                                  NextHop(ip=ipaddress.IPv6Address(p6).packed)))
             for i, (v4, _, a4, p4, v6, _, a6, p6) in enumerate(LINKS)]
    return dump_snabb(replace(example_config(), instances=insts, name=None,
                              ospf=Ospf(enable=True, hello_interval=1, dead_interval=DEAD),
                              control_plane=ControlPlane(external_prefix_length=26, internal_prefix_length=64)))


def router_conf(router_id: str, family: int, devs: list[str]) -> str:
    fam = f"ipv{family}"
    return "\n".join([
        "log stderr all;", f"router id {router_id};", "protocol device { scan time 10; }",
        f"protocol kernel {{ {fam} {{ import none; export all; }}; }}",
        f"protocol ospf v{2 if family == 4 else 3} {{ ecmp yes; merge external yes; {fam} {{ import all; export none; }}; "
        f"area 0 {{ interface {', '.join(map(repr, devs)).replace(chr(39), chr(34))} "
        f"{{ type ptp; hello 1; dead {DEAD}; }}; }}; }}", ""])


def test_ospf_ecmp_and_withdrawal(tmp_path, monkeypatch):
    with Lab(prefix="ospf") as lab:
        try:
            scenario(lab, tmp_path, monkeypatch)
        except BaseException:
            for ns in lab.namespaces:
                print(f"--- {ns.short}: routes\n" + ns.run("ip", "-4", "route", check=False).stdout
                      + ns.run("ip", "-6", "route", check=False).stdout)
                for ctl in (tmp_path / f"{ns.short}.ctl", tmp_path / "run" / "o" / "bird" / "bird.ctl"):
                    if ctl.exists():
                        print(ns.run("birdc", "-s", str(ctl), "show", "protocols", "all", check=False).stdout)
            for p in lab.processes:
                print(f"--- {p.err_path.name}\n{p.stderr[-4000:]}")
            raise


def scenario(lab: Lab, tmp_path, monkeypatch) -> None:
    up, lw, b6 = lab.netns("up"), lab.netns("lw"), lab.netns("b6")
    for ns in (up, lw, b6):
        ns.quiet_ipv6()
    # OSPF neighbours agree on the MTU (a larger one on the far side refuses the
    # database exchange): the links' MTU is the lwAFTR's, which its TAPs carry.
    policy = example_config()
    for v4, u, _, p4, v6, c, _, p6 in LINKS:
        lab.veth(lw, v4, up, u, mtu=policy.external.mtu)
        lab.veth(lw, v6, b6, c, mtu=policy.internal.mtu)
        up.addr(u, f"{p4}/26")
        b6.addr(c, f"{p6}/64")
    conf = tmp_path / "lw.conf"
    conf.write_text(config())
    run_dir = tmp_path / "run"
    monkeypatch.setenv("LWAFTR_RUN_DIR", str(run_dir))
    aftr = lw.popen("env", f"LWAFTR_RUN_DIR={run_dir}", sys.executable, "-m", "lwaftr", "run",
                    "--conf", str(conf), "--name", "o", label="lwaftr")
    for ns, rid, fam, devs in ((up, "198.51.100.254", 4, ["u1", "u2"]), (b6, "198.51.100.253", 6, ["c1", "c2"])):
        f = tmp_path / f"{ns.short}.conf"
        f.write_text(router_conf(rid, fam, devs))
        ns.popen("bird", "-f", "-c", str(f), "-s", str(tmp_path / f"{ns.short}.ctl"), label=f"bird-{ns.short}")

    gateways = sorted(p[2] for p in LINKS)
    t0 = time.time()
    for prefix in V4:
        wait_for(f"ECMP route to {prefix} on the upstream", lambda: nexthops(up, prefix) == gateways, 90, 0.2)
    wait_for("ECMP route to the BR on the B4 side", lambda: nexthops(b6, f"{BR}/128", "dev") == ["c1", "c2"], 60, 0.2)
    print(f"\nboth workers' routes installed with ECMP {time.time() - t0:.1f} s after start")

    # Worker 0 killed; its restart held back (the supervisor stopped) until the withdrawal is seen.
    supervisor = int((run_dir / "o" / "pid").read_text())
    pid = int((run_dir / "o" / "workers" / "0" / "pid").read_text())
    os.kill(supervisor, signal.SIGSTOP)
    try:
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_for("worker 0's IPv4 paths withdrawn", lambda: all(nexthops(up, p) == [LINKS[1][2]] for p in V4),
                 DEAD + SLACK, 0.05)
        t_v4 = time.time() - t_kill
        wait_for("worker 0's IPv6 path withdrawn", lambda: nexthops(b6, f"{BR}/128", "dev") == ["c2"],
                 DEAD + SLACK, 0.05)
        t_v6 = time.time() - t_kill
    finally:
        os.kill(supervisor, signal.SIGCONT)
    print(f"worker 0 killed: withdrawn by the upstream after {t_v4:.2f} s (IPv4), {t_v6:.2f} s (IPv6)")
    t_back = time.time()
    for prefix in V4:
        wait_for(f"{prefix} through both workers again", lambda: nexthops(up, prefix) == gateways, 60, 0.2)
    wait_for("the BR through both workers again", lambda: nexthops(b6, f"{BR}/128", "dev") == ["c1", "c2"], 60, 0.2)
    print(f"worker 0 restarted: its paths back {time.time() - t_back:.1f} s after the supervisor resumed")

    aftr.send_signal(signal.SIGTERM)
    assert aftr.popen.wait(60) == 0, aftr.stderr[-3000:]
    wait_for("routes withdrawn after the stop", lambda: all(nexthops(up, p) == [] for p in V4), DEAD + SLACK)
    wait_for("BR withdrawn after the stop", lambda: nexthops(b6, f"{BR}/128", "dev") == [], DEAD + SLACK)
    log = aftr.stderr
    assert "BIRD started" in log and "2 OSPF routers" not in log and "4 OSPF routers" in log
    for name in ("w0_ospf4", "w0_ospf6", "w1_ospf4", "w1_ospf6"):
        assert f"OSPF up: {name}" in log
    assert not (run_dir / "o").exists()
