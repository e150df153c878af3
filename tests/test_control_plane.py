"""The kernel as control plane, live (needs root; namespaces made and removed here).

Namespace ``lw`` runs ``lwaftr run``; namespace ``peer`` is a real Linux host
on both links (an upstream router on the Internet side and an IPv6 router on
the B4 side), so everything it sees was answered by the lwAFTR namespace's
kernel through the TAPs: ARP, NDP, ping, a TCP session to the router's own
address, and the next hops it learned from its neighbour table.
"""
from __future__ import annotations

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

LW, PEER = f"lwaftr-cpl-{os.getpid()}", f"lwaftr-cpp-{os.getpid()}"
AFTR4, UP4 = "198.51.100.1", "198.51.100.2"
AFTR6, UP6, BR = "2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:ffff::1"
MAC4, MAC6 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def sh(*cmd: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, check=check, capture_output=True, text=True, timeout=timeout)


def config(stick: bool, **cp) -> str:
    import ipaddress
    base = example_config()
    inst = Instance(device="s1" if stick else "b1", external_device=None if stick else "i1", queue_id=0,
                    external=InterfaceAddresses(ipaddress.IPv4Address(AFTR4).packed, bytes.fromhex(MAC4.replace(":", "")),
                                                NextHop(ip=ipaddress.IPv4Address(UP4).packed)),
                    internal=InterfaceAddresses(ipaddress.IPv6Address(AFTR6).packed, bytes.fromhex(MAC6.replace(":", "")),
                                                NextHop(ip=ipaddress.IPv6Address(UP6).packed)))
    cfg = replace(base, instances=[inst], name=None,
                  control_plane=ControlPlane(external_prefix_length=24, internal_prefix_length=64, **cp))
    return dump_snabb(cfg)


@pytest.fixture(params=["two-interface", "on-a-stick"])
def lab(request, tmp_path):
    stick = request.param == "on-a-stick"
    sh("ip", "netns", "add", LW)
    sh("ip", "netns", "add", PEER)
    proc = None
    try:
        pairs = [("s1", "s0")] if stick else [("i1", "i0"), ("b1", "b0")]
        for a, b in pairs:
            sh("ip", "-n", LW, "link", "add", a, "type", "veth", "peer", "name", b, "netns", PEER)
            sh("ip", "-n", LW, "link", "set", a, "up")
            sh("ethtool", "-K", b, "tx", "off", ns=PEER)
            sh("sysctl", "-qw", f"net.ipv6.conf.{b}.accept_dad=0", ns=PEER)
            sh("ip", "-n", PEER, "link", "set", b, "up")
        up, down = ("s0", "s0") if stick else ("i0", "b0")
        sh("ip", "-n", PEER, "addr", "add", f"{UP4}/24", "dev", up)
        sh("ip", "-n", PEER, "addr", "add", f"{UP6}/64", "dev", down, "nodad")
        sh("ip", "-n", PEER, "route", "add", "192.0.2.0/24", "via", AFTR4)
        sh("ip", "-n", PEER, "-6", "route", "add", f"{BR}/128", "via", AFTR6)
        conf = tmp_path / "lw.conf"
        conf.write_text(config(stick))
        run_dir = tmp_path / "run"
        env = dict(os.environ, LWAFTR_RUN_DIR=str(run_dir))
        ports = ["--on-a-stick", "s1"] if stick else ["--v4", "i1", "--v6", "b1"]
        proc = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-m", "lwaftr", "run", "--conf", str(conf),
                                 "--name", "t", *ports], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        deadline = time.time() + 60
        # The control socket opens after the engine is built (the pid file comes
        # first): the tests talk to it, so it is what "started" means here.
        while not (run_dir / "t" / "control.sock").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "lwaftr run did not start"
            time.sleep(0.1)
        yield {"stick": stick, "proc": proc, "env": env, "conf": conf, "up": up, "down": down}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:      # (the namespaces go all the same)
                proc.kill()
                proc.communicate()
        sh("ip", "netns", "del", LW, check=False)
        sh("ip", "netns", "del", PEER, check=False)


def stop(lab) -> tuple[dict, str]:
    proc = lab["proc"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out), err


def ping(ns: str, addr: str, tries: int = 20) -> bool:
    for _ in range(tries):
        if sh("ping", "-c", "1", "-W", "1", addr, ns=ns, check=False).returncode == 0:
            return True
    return False


def neighbour(ns: str, addr: str) -> str | None:
    out = json.loads(sh("ip", "-j", "neigh", "show", addr, ns=ns).stdout or "[]")
    return out[0].get("lladdr") if out else None


def test_kernel_answers_arp_ndp_ping_and_tcp_through_the_taps(lab):
    # ping the router's IPv4 and IPv6 addresses and a BR address: ARP, NDP and
    # echo all answered by the lwAFTR namespace's kernel, with the instance MACs.
    assert ping(PEER, AFTR4)
    assert ping(PEER, AFTR6)
    assert ping(PEER, BR)
    assert neighbour(PEER, AFTR4) == MAC4
    assert neighbour(PEER, AFTR6) == MAC6
    # A TCP session to the router's own address (a BGP speaker would listen here).
    server = subprocess.Popen(["ip", "netns", "exec", LW, sys.executable, "-c",
                               "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                               f"s.bind(('{AFTR4}', 1179)); s.listen(); c,_=s.accept(); c.sendall(c.recv(100)[::-1])"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = sh(sys.executable, "-c", f"import socket; c=socket.create_connection(('{AFTR4}', 1179), timeout=10);"
                                     "c.sendall(b'open'); print(c.recv(100).decode())", ns=PEER)
        assert r.stdout.strip() == "nepo"
    finally:
        server.kill()
        server.communicate()
    counters, _ = stop(lab)
    assert counters["to-kernel-ipv4-interface-packets"] > 0 and counters["from-kernel-ipv4-interface-packets"] > 0
    assert counters["to-kernel-ipv6-interface-packets"] > 0 and counters["from-kernel-ipv6-interface-packets"] > 0
    assert "out-icmpv4-echo-packets" not in counters and "out-arp-reply-packets" not in counters


#: The longest one of alice's frames may take through the lwAFTR while a reload compiles
#: beside it (a batch, a scheduling slice of a 2-core machine shared with the compiler).
MAX_RELOAD_DELAY = 0.1

STREAM = '''
import json, os, select, socket, struct, sys, time
dev, stop, out = sys.argv[1:4]
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
cap.bind((dev, 0x86dd))
cap.setblocking(False)
app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, got, t0 = [], [], time.time()
while not os.path.exists(stop):
    while t0 + len(sent) * 0.002 <= time.time():
        t = time.time()
        app.sendto(b"alice" + struct.pack("!Id", len(sent), t), ("192.0.2.1", 4100))
        sent.append((len(sent), t))
    if select.select([cap], [], [], 0.001)[0]:
        while True:
            try:
                data = cap.recv(65535)
            except BlockingIOError:
                break
            if data[12:14] == b"\\x86\\xdd" and data[20] == 4 and data[-17:-12] == b"alice":
                got.append((struct.unpack("!I", data[-12:-8])[0], time.time()))
json.dump({"sent": sent, "got": got}, open(out, "w"))
'''

SEND_AND_CAPTURE = '''
import socket, sys, time
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
cap.bind((sys.argv[1], 0x86dd))
cap.settimeout(0.5)
app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.time() + 30
while time.time() < deadline:
    app.sendto(b"to alice", ("192.0.2.1", 4100))
    try:
        data = cap.recv(65535)
    except socket.timeout:
        continue
    if data[12:14] == b"\\x86\\xdd" and data[20] == 4:       # IPv4-in-IPv6
        print(data[0:6].hex(":"), data[-8:].decode())
        break
'''


def test_next_hops_come_from_the_kernel_neighbour_table(lab):
    """Internet -> subscriber: tunnelled to the IPv6 next hop at the MAC the
    kernel resolved (the configuration gives only its IP), and the same the
    other way for the IPv4 next hop (seen by the peer's neighbour table)."""
    down = lab["down"]
    r = sh(sys.executable, "-c", SEND_AND_CAPTURE, down, ns=PEER, timeout=60)
    peer_mac = json.loads(sh("ip", "-j", "link", "show", down, ns=PEER).stdout)[0]["address"]
    assert r.stdout.split() == [peer_mac, "to", "alice"], r.stdout + r.stderr
    # The lwAFTR namespace's kernel holds both next hops, managed (kept resolved).
    lw_neigh = json.loads(sh("ip", "-j", "neigh", "show", ns=LW).stdout)
    by_dst = {n["dst"]: n for n in lw_neigh}
    assert by_dst[UP6]["lladdr"] == peer_mac
    assert by_dst[UP4]["lladdr"] == json.loads(sh("ip", "-j", "link", "show", lab["up"], ns=PEER).stdout)[0]["address"]
    # Counters are readable while it runs, from shared memory.
    live = json.loads(subprocess.run([sys.executable, "-m", "lwaftr", "counters", "t", "--json"], env=lab["env"],
                                     capture_output=True, text=True, check=True).stdout)
    assert live["out-ipv6-packets"] >= 1 and live["in-ipv4-packets"] >= 1
    counters, _ = stop(lab)
    assert counters["out-ipv6-packets"] >= live["out-ipv6-packets"]


def test_a_reload_while_starting_is_applied_not_fatal(lab):
    """The pid file appears while the instance is still being built: a reload
    sent at once (SIGHUP, whose default action kills) waits and is applied."""
    r = subprocess.run([sys.executable, "-m", "lwaftr", "reload", "t"], env=lab["env"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    assert lab["proc"].poll() is None, "lwaftr run died of the reload"
    assert ping(PEER, AFTR4)
    _, err = stop(lab)
    assert "configuration reloaded" in err


def test_reload_command_and_refusals(lab):
    env = lab["env"]
    conf: Path = lab["conf"]
    good = conf.read_text()
    # A configuration that changes an interface address needs a restart: refused.
    conf.write_text(good.replace(AFTR4, "198.51.100.3"))
    r = subprocess.run([sys.executable, "-m", "lwaftr", "reload", "t"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    time.sleep(1)
    conf.write_text(good.replace("hairpinning true", "hairpinning false"))   # a policy change: applied
    subprocess.run([sys.executable, "-m", "lwaftr", "reload", "t"], env=env, check=True, capture_output=True)
    time.sleep(1)
    assert ping(PEER, AFTR4)            # still the running address
    _, err = stop(lab)
    assert "reload refused" in err and "need a restart" in err
    assert "configuration reloaded" in err
    # Once stopped, its state is gone and the commands say so.
    r = subprocess.run([sys.executable, "-m", "lwaftr", "counters", "t"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "no lwaftr instance named 't'" in r.stderr


def test_big_reload_compiles_aside_while_forwarding(lab):
    """A reload of a big file (16,384 more softwires) is compiled by a child
    process; the running table keeps forwarding meanwhile, then the new one
    serves the new subscribers."""
    import ipaddress
    conf: Path = lab["conf"]
    text = conf.read_text()
    extra = []
    for i in range(256 * 64):
        b4 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:5::")) + i)
        extra.append(f"    softwire {{\n      ipv4 203.0.113.{i // 64};\n      psid {i % 64};\n"
                     f"      b4-ipv6 {b4};\n      br-address {BR};\n      port-set {{\n        psid-length 6;\n"
                     f"      }}\n    }}")
    head, tail = text.split("  binding-table {\n", 1)
    conf.write_text(head + "  binding-table {\n" + "\n".join(extra) + "\n" + tail)
    assert conf.stat().st_size > 1 << 20
    sh("ip", "-n", PEER, "route", "add", "203.0.113.0/24", "via", AFTR4)
    # First the path to alice works end to end: the lwAFTR has its IPv6 next hop from the
    # kernel's neighbour table (polled every second; until then frames for the B4s are
    # dropped and counted, which the window below must not mistake for the reload's doing).
    ready = sh(sys.executable, "-c", SEND_AND_CAPTURE, lab["down"], ns=PEER, timeout=60)
    assert ready.stdout.split()[1:] == ["to", "alice"], ready.stdout + ready.stderr
    # alice's traffic, 500 frames a second, each stamped with its sequence number and send
    # time, is captured tunnelled on the B4 side from before the reload until after it.
    work = conf.parent
    stream = subprocess.Popen(["ip", "netns", "exec", PEER, sys.executable, "-c", STREAM, lab["down"],
                               str(work / "stop"), str(work / "stream.json")], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        t_hup = time.time()
        lab["proc"].send_signal(signal.SIGHUP)
        # The new table is in place once 203.0.113.5 port 4100 (psid 4100 >> 10 = 4,
        # softwire 5 * 64 + 4) reaches its new B4.
        want = ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:5::")) + 5 * 64 + 4).packed.hex()
        probe = SEND_AND_CAPTURE.replace('"192.0.2.1", 4100', '"203.0.113.5", 4100').replace(
            'print(data[0:6].hex(":"), data[-8:].decode())', 'print(data[38:54].hex())')
        deadline = time.time() + 60
        while True:
            r = sh(sys.executable, "-c", probe.replace("deadline = time.time() + 30", "deadline = time.time() + 1"),
                   lab["down"], ns=PEER, timeout=60)
            if r.stdout.strip() == want or time.time() > deadline:
                break
        t_done = time.time()
        assert r.stdout.strip() == want, "the reloaded table never served the new subscriber"
        time.sleep(0.5)
    finally:
        (work / "stop").touch()
        assert stream.wait(30) == 0, stream.stderr.read()
    seen = json.loads((work / "stream.json").read_text())
    sent = {seq: t for seq, t in seen["sent"]}
    got = {seq: t for seq, t in seen["got"]}
    during = [seq for seq, t in sent.items() if t_hup <= t <= t_done]
    lost = [seq for seq in during if seq not in got]
    worst = max(got[seq] - sent[seq] for seq in during if seq in got)
    print(f"\nreload compiled aside in {t_done - t_hup:.2f} s: {len(during)} frames of alice's meanwhile, "
          f"{len(lost)} lost, longest in flight {worst * 1000:.1f} ms")
    assert len(during) >= 250
    why = ""
    if lost or worst >= MAX_RELOAD_DELAY:       # where they went: the lwAFTR's counts, its log, the peer's ARP
        counters, err = stop(lab)
        drops = {k: v for k, v in counters.items() if k.startswith(("drop", "next-hop", "in-", "out-"))}
        why = (f"{len(lost)} lost (seq {lost[0]}..{lost[-1]}, sent {sent[lost[0]] - t_hup:+.3f} s from SIGHUP) "
               f"of {len(during)}, longest in flight {worst * 1000:.1f} ms; the lwAFTR's counters: {drops}; "
               f"the peer's neighbours: {sh('ip', 'neigh', ns=PEER).stdout!r}; its log: {err[-3000:]}") if lost \
            else f"longest in flight {worst * 1000:.1f} ms"
    assert not lost and worst < MAX_RELOAD_DELAY, why
    _, err = stop(lab)
    assert "in a child process" in err and "configuration reloaded" in err


def test_control_socket_changes_the_running_instance(lab):
    """A softwire added through the control socket serves traffic at once; a
    policy change is applied; bad changes are refused and change nothing."""
    from lwaftr.io.control import request
    sock = Path(lab["env"]["LWAFTR_RUN_DIR"]) / "t" / "control.sock"
    sw = "/softwire-config/binding-table/softwire"
    sh("ip", "-n", PEER, "route", "add", "203.0.113.0/24", "via", AFTR4)
    new = ("{ ipv4 203.0.113.9; psid 0; b4-ipv6 2001:db8:9::1; br-address 2001:db8:ffff::1;"
           " port-set { psid-length 0; } }")
    assert request(sock, {"op": "add", "path": sw, "value": new}) == {"ok": True, "added": 1}
    probe = SEND_AND_CAPTURE.replace('"192.0.2.1", 4100', '"203.0.113.9", 4100').replace(
        'print(data[0:6].hex(":"), data[-8:].decode())', 'print(data[38:54].hex())')
    r = sh(sys.executable, "-c", probe, lab["down"], ns=PEER, timeout=60)
    assert r.stdout.strip() == "20010db8000900000000000000000001"
    assert request(sock, {"op": "get", "path": f"{sw}[ipv4=203.0.113.9][psid=0]/b4-ipv6"})["value"] == "2001:db8:9::1"
    # Refused: a second layout for the address, an unknown leaf, an interface change.
    bad = request(sock, {"op": "add", "path": sw, "value": new.replace("psid-length 0", "psid-length 4")
                         .replace("psid 0", "psid 1")})
    assert not bad["ok"] and "port-set layout" in bad["error"]
    bad = request(sock, {"op": "set", "path": "/softwire-config/external-interface/mtuu", "value": "1"})
    assert not bad["ok"] and "mtuu" in bad["error"]
    bad = request(sock, {"op": "set", "path": "/softwire-config/instance[device=s1]/queue[id=0]/external-interface/ip"
                         if lab["stick"] else
                         "/softwire-config/instance[device=b1]/queue[id=0]/external-interface/ip",
                         "value": "198.51.100.7"})
    assert not bad["ok"] and "restart" in bad["error"]
    assert request(sock, {"op": "set", "path": "/softwire-config/internal-interface/generate-icmp-errors",
                          "value": "false"}) == {"ok": True}
    text = request(sock, {"op": "get-config", "bindings": False})["text"]
    assert "generate-icmp-errors false;" in text.split("internal-interface")[1]
    # Malformed lines are answered, not fatal.
    import socket as so
    with so.socket(so.AF_UNIX, so.SOCK_STREAM) as c:
        c.connect(str(sock))
        c.sendall(b"{not json\n")
        assert b"malformed request" in c.recv(4096)
    r = sh(sys.executable, "-c", probe, lab["down"], ns=PEER, timeout=60)   # still forwarding
    assert r.stdout.strip() == "20010db8000900000000000000000001"
    request(sock, {"op": "remove", "path": f"{sw}[ipv4=203.0.113.9][psid=0]"})
    counters, err = stop(lab)
    assert "configuration changed through the control socket: set" in err


def test_monitor_one_subscriber_to_a_pcap_and_a_tap(lab, tmp_path):
    import dpkt
    env = lab["env"]
    pcap = tmp_path / "alice.pcap"
    r = subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "192.0.2.1", "--pcap", str(pcap), "--name", "t"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "monitoring 192.0.2.1 to pcap file" in r.stdout, r.stderr
    got = sh(sys.executable, "-c", SEND_AND_CAPTURE, lab["down"], ns=PEER, timeout=60)
    assert got.stdout.split()[1:] == ["to", "alice"]
    r = subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "--off", "--name", "t"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(pcap, "rb") as fh:
        frames = [bytes(buf) for _, buf in dpkt.pcap.Reader(fh)]
    assert frames, "nothing mirrored"
    for f in frames:                # as received from the Internet: IPv4 to 192.0.2.1 port 4100
        ip = dpkt.ethernet.Ethernet(f).data
        assert isinstance(ip, dpkt.ip.IP) and ip.dst == bytes([192, 0, 2, 1]) and ip.data.dport == 4100
    # A TAP for tcpdump: created in the lwAFTR's namespace, gone when monitoring stops.
    r = subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "192.0.2.1", "--name", "t"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "TAP lwmon0" in r.stdout, r.stderr
    assert sh("ip", "link", "show", "lwmon0", ns=LW, check=False).returncode == 0
    subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "--off", "--name", "t"], env=env, check=True,
                   capture_output=True)
    assert sh("ip", "link", "show", "lwmon0", ns=LW, check=False).returncode != 0
    bad = subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "192.0.2.300", "--name", "t"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "lwaftr monitor: '192.0.2.300' is not an IPv4 address" in bad.stderr
    # A TAP name held by another kind of interface, a pcap file that cannot be made: named, exit 2.
    missing = tmp_path / "no" / "such.pcap"
    for target, said in ((["--tap", "lo"], "interface lo (--tap): exists and is not a TAP: name another (--tap NAME)"),
                         (["--pcap", str(missing)], f"{missing}: cannot write: No such file or directory")):
        r = subprocess.run([sys.executable, "-m", "lwaftr", "monitor", "192.0.2.1", *target, "--name", "t"],
                           env=env, capture_output=True, text=True)
        assert (r.returncode, r.stderr) == (2, f"lwaftr monitor: {said}\n")


def test_unresolvable_next_hop_raises_an_alarm_and_a_flushed_one_comes_back(lab):
    tap = "cp6-s1" if lab["stick"] else "cp-b1"
    # Flushed from the kernel's table: re-created and resolved again, no alarm.
    assert ping(PEER, AFTR6)
    r = sh("ip", "neigh", "del", UP6, "dev", tap, ns=LW, check=False)
    assert r.returncode == 0, r.stderr + sh("ip", "neigh", ns=LW).stdout
    time.sleep(1.5)
    assert neighbour(LW, UP6) == json.loads(sh("ip", "-j", "link", "show", lab["down"], ns=PEER).stdout)[0]["address"]
    # The next hop goes away for good: the alarm is raised once, and counted.
    sh("ip", "addr", "del", f"{UP6}/64", "dev", lab["down"], ns=PEER)
    sh("ip", "neigh", "del", UP6, "dev", tap, ns=LW)
    deadline = time.time() + 20
    while True:
        live = json.loads(subprocess.run([sys.executable, "-m", "lwaftr", "counters", "t", "--json"], env=lab["env"],
                                         capture_output=True, text=True, check=True).stdout)
        if live.get("alarm-next-hop-unresolved") or time.time() > deadline:
            break
        time.sleep(0.5)
    counters, err = stop(lab)
    assert counters["alarm-next-hop-unresolved"] == 1
    assert f"alarm raised: next hop {UP6} unresolved" in err


def test_config_cli_and_query_on_the_running_instance(lab):
    def lw(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lwaftr", *args], env=lab["env"], capture_output=True,
                              text=True, input=stdin)
    sw = "/softwire-config/binding-table/softwire"
    assert lw("config", "get", "--name", "t", "/softwire-config/external-interface/mtu").stdout == "1460\n"
    r = lw("config", "add", "--name", "t", sw, "-",
           stdin="{ ipv4 192.0.2.3; psid 0; b4-ipv6 2001:db8:1::d; br-address 2001:db8:ffff::1;"
                 " port-set { psid-length 0; } }")
    assert r.returncode == 0, r.stderr
    assert lw("config", "get", "--name", "t", f"{sw}[ipv4=192.0.2.3][psid=0]/b4-ipv6").stdout == "2001:db8:1::d\n"
    assert lw("config", "set", "--name", "t", "/softwire-config/external-interface/mtu", "1500").returncode == 0
    assert lw("config", "get", "--name", "t", "/softwire-config/external-interface/mtu").stdout == "1500\n"
    bad = lw("config", "set", "--name", "t", "/softwire-config/external-interface/mtu", "99999")
    assert bad.returncode == 2 and "mtu" in bad.stderr
    assert lw("config", "get", "--name", "t", "/softwire-config/external-interface/mtu").stdout == "1500\n"
    assert lw("config", "remove", "--name", "t", f"{sw}[ipv4=192.0.2.3][psid=0]").returncode == 0
    gone = lw("config", "get", "--name", "t", f"{sw}[ipv4=192.0.2.3][psid=0]")
    assert gone.returncode == 1 and "no softwire" in gone.stderr
    assert ping(PEER, AFTR4)
    q = json.loads(lw("query", "t", "kernel", "--json").stdout)
    assert q and all("kernel" in k for k in q) and q["to-kernel-ipv4-interface-packets"] > 0
    text = lw("query", "t").stdout
    assert "to-kernel-ipv4-interface-packets" in text
